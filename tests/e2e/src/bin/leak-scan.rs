//! `leak-scan RUN_DIR`: after the whole end-to-end run, proves that no Secret value written
//! during the run ever appeared in an Event, in the status of an external-secrets.io object or in
//! a ConfigMap refsync wrote.
//!
//! Input: the kube-apiserver audit logs under `RUN_DIR/audit/` (every apiserver the tests start
//! writes one when `REFSYNC_RUN_DIR` is set, with request bodies of writes to Secrets,
//! ConfigMaps, Events and external-secrets.io objects). Every value of every Secret created,
//! updated or patched (by the tests or by a controller), and every remote value a fake-provider
//! store holds, is a needle; every Event, status write
//! and refsync-written ConfigMap is a haystack. Values shorter than 8 bytes are skipped (`true`,
//! `1`, short keys appear in messages legitimately). Fails, naming the object and the Secret
//! the value came from (never the value), on any hit, and fails too when the logs hold too little
//! to mean anything.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aho_corasick::AhoCorasick;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

/// Shortest value checked.
const MIN_LEN: usize = 8;
/// Longest needle: longer values are checked by their first bytes.
const MAX_NEEDLE: usize = 4096;
/// Fewer needles or haystacks than this means the audit logs are missing or nearly empty.
const MIN_SAMPLES: usize = 20;

#[derive(Default)]
struct Scan {
    /// Needle bytes → where it came from (`ns/name key`).
    values: BTreeMap<Vec<u8>, String>,
    /// (what, text) of every Event / status / ConfigMap write.
    haystacks: Vec<(String, String)>,
    lines: usize,
    unparsed: usize,
}

fn object_ref(ev: &Value) -> String {
    let r = &ev["objectRef"];
    let mut s = format!(
        "{} {}/{}",
        r["resource"].as_str().unwrap_or("?"),
        r["namespace"].as_str().unwrap_or(""),
        r["name"].as_str().unwrap_or("")
    );
    if let Some(sub) = r["subresource"].as_str() {
        s.push('/');
        s.push_str(sub);
    }
    s
}

impl Scan {
    fn add_secret_values(&mut self, ev: &Value, body: &Value) {
        let from = object_ref(ev);
        let mut add = |key: &str, bytes: Vec<u8>| {
            if bytes.len() >= MIN_LEN {
                let mut needle = bytes;
                needle.truncate(MAX_NEEDLE);
                self.values
                    .entry(needle)
                    .or_insert_with(|| format!("{from} key {key}"));
            }
        };
        if let Some(data) = body["data"].as_object() {
            for (k, v) in data {
                if let Some(b) = v.as_str().and_then(|s| B64.decode(s).ok()) {
                    add(k, b);
                }
            }
        }
        if let Some(data) = body["stringData"].as_object() {
            for (k, v) in data {
                if let Some(s) = v.as_str() {
                    add(k, s.as_bytes().to_vec());
                }
            }
        }
    }

    fn line(&mut self, line: &str) {
        self.lines += 1;
        let Ok(ev) = serde_json::from_str::<Value>(line) else {
            self.unparsed += 1;
            return;
        };
        let Some(body) = ev.get("requestObject") else {
            return;
        };
        let r = &ev["objectRef"];
        let resource = r["resource"].as_str().unwrap_or_default();
        let group = r["apiGroup"].as_str().unwrap_or_default();
        let sub = r["subresource"].as_str().unwrap_or_default();
        let uri = ev["requestURI"].as_str().unwrap_or_default();
        match (group, resource) {
            ("", "secrets") => self.add_secret_values(&ev, body),
            (_, "events") => {
                // Events of the External Secrets Operator (the migration tests run it) are its
                // own business.
                let text = body.to_string();
                let reporter = [
                    &body["reportingController"],
                    &body["reportingComponent"],
                    &body["source"]["component"],
                ];
                if !reporter
                    .iter()
                    .any(|r| r.as_str().is_some_and(|s| s.contains("external-secrets")))
                {
                    self.haystacks.push((object_ref(&ev), text));
                }
            }
            ("external-secrets.io", "secretstores" | "clustersecretstores") if sub.is_empty() => {
                let from = object_ref(&ev);
                for entry in body["spec"]["provider"]["fake"]["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let key = entry["key"].as_str().unwrap_or_default();
                    let mut values: Vec<&str> = entry["value"].as_str().into_iter().collect();
                    if let Some(m) = entry["valueMap"].as_object() {
                        values.extend(m.values().filter_map(Value::as_str));
                    }
                    for v in values.into_iter().filter(|v| v.len() >= MIN_LEN) {
                        let mut needle = v.as_bytes().to_vec();
                        needle.truncate(MAX_NEEDLE);
                        self.values
                            .entry(needle)
                            .or_insert_with(|| format!("{from} fake key {key}"));
                    }
                }
            }
            ("external-secrets.io", _) if sub == "status" => {
                self.haystacks.push((object_ref(&ev), body.to_string()));
            }
            ("", "configmaps") if uri.contains("fieldManager=refsync") => {
                self.haystacks.push((object_ref(&ev), body.to_string()));
            }
            _ => {}
        }
    }
}

fn audit_logs(run_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = run_dir.join("audit");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

fn main() -> ExitCode {
    let Some(run_dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: leak-scan RUN_DIR");
        return ExitCode::from(2);
    };
    let logs = match audit_logs(&run_dir) {
        Ok(l) if !l.is_empty() => l,
        Ok(_) | Err(_) => {
            eprintln!(
                "leak-scan: no audit logs under {}/audit (is REFSYNC_RUN_DIR set for the tests?)",
                run_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let mut scan = Scan::default();
    for path in &logs {
        let Ok(f) = std::fs::File::open(path) else {
            eprintln!("leak-scan: cannot open {}", path.display());
            return ExitCode::FAILURE;
        };
        for line in std::io::BufReader::new(f).lines() {
            match line {
                Ok(l) => scan.line(&l),
                Err(_) => scan.unparsed += 1,
            }
        }
    }
    println!(
        "leak-scan: {} audit logs, {} entries ({} unparsed), {} distinct Secret values of ≥ {MIN_LEN} bytes, {} Events/status/ConfigMap writes",
        logs.len(),
        scan.lines,
        scan.unparsed,
        scan.values.len(),
        scan.haystacks.len()
    );
    if scan.values.len() < MIN_SAMPLES || scan.haystacks.len() < MIN_SAMPLES {
        eprintln!(
            "leak-scan: too little to check (need ≥ {MIN_SAMPLES} of each): the audit logs do not cover the run"
        );
        return ExitCode::FAILURE;
    }
    let (needles, sources): (Vec<Vec<u8>>, Vec<String>) = scan.values.into_iter().unzip();
    let ac = match AhoCorasick::new(&needles) {
        Ok(ac) => ac,
        Err(e) => {
            eprintln!("leak-scan: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut leaks = 0usize;
    for (what, text) in &scan.haystacks {
        for m in ac.find_iter(text.as_bytes()) {
            leaks += 1;
            if leaks <= 20 {
                eprintln!(
                    "leak-scan: LEAK: {what} contains the value of {} ({} bytes)",
                    sources[m.pattern().as_usize()],
                    needles[m.pattern().as_usize()].len()
                );
            }
        }
    }
    if leaks > 0 {
        eprintln!("leak-scan: {leaks} secret values found outside Secrets");
        return ExitCode::FAILURE;
    }
    println!("leak-scan: no Secret value in any Event, status or ConfigMap");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(resource: &str, group: &str, sub: Option<&str>, body: Value) -> String {
        serde_json::json!({
            "requestURI": "/x?fieldManager=refsync",
            "objectRef": {"resource": resource, "apiGroup": group, "namespace": "ns",
                          "name": "n", "subresource": sub},
            "requestObject": body
        })
        .to_string()
    }

    #[test]
    fn finds_a_value_in_a_status_and_ignores_short_ones() {
        let mut s = Scan::default();
        s.line(&ev(
            "secrets",
            "",
            None,
            serde_json::json!({"data": {"a": B64.encode("long-enough-value"), "b": B64.encode("short")},
                               "stringData": {"c": "another-long-value"}}),
        ));
        s.line(&ev(
            "externalsecrets",
            "external-secrets.io",
            Some("status"),
            serde_json::json!({"status": {"message": "boom another-long-value short"}}),
        ));
        s.line(&ev(
            "events",
            "events.k8s.io",
            None,
            serde_json::json!({"note": "ok", "reportingController": "refsync"}),
        ));
        s.line("not json");
        assert_eq!(s.values.len(), 2);
        assert_eq!(s.haystacks.len(), 2);
        assert_eq!(s.unparsed, 1);
        let (needles, _): (Vec<Vec<u8>>, Vec<String>) = s.values.clone().into_iter().unzip();
        let ac = AhoCorasick::new(&needles).unwrap();
        let hits: usize = s
            .haystacks
            .iter()
            .map(|(_, t)| ac.find_iter(t.as_bytes()).count())
            .sum();
        assert_eq!(hits, 1);
    }
}
