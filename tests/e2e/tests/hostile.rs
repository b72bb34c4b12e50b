//! The hostile-manifest corpus (`tests/hostile/`, indexed by its README) through `refsync
//! render`, `refsync validate` and a running `refsync controller` on the real kube-apiserver.
//!
//! For every case and front end: the expected exit status, an error naming the object and the
//! field from the index, no panic, no canary value, and bounds on CPU time, wall time and peak
//! memory of the child process. CPU time (user + system, from `/proc/<pid>/stat`, read while the
//! child is a zombie, before it is reaped) is the bound that matters: wall time on the shared
//! 2-core CI machine mostly measures other people's builds, so it only has a generous cap
//! (the child is killed past it). Peak RSS is `VmHWM` from `/proc/<pid>/status`, sampled every
//! few milliseconds while the child runs (a high-water mark: only growth in the last few
//! milliseconds before exit can be missed).
//!
//! The controller part applies the cases the apiserver accepts (index column `controller`):
//! each must reach `Ready=False` (ESO's generic status message) with a Warning `UpdateFailed`
//! Event and a log line naming the field; the controller must stay up and healthy, never panic,
//! and a good ExternalSecret in the same namespace must still sync. No garbage collector runs in
//! the test environment; nothing here relies on one.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use refsync_api::ExternalSecret;
use refsync_e2e::ControllerProcess;
use refsync_testenv::KubeEnv;
use serde_json::{Value, json};

/// Never printed anywhere: a value of the corpus' fake store.
const CANARY: &str = "canary-hostile-value";
/// CPU seconds one `render`/`validate` run may use (debug build).
const MAX_CPU: Duration = Duration::from_secs(5);
/// Wall-clock cap: the child is killed past it (generous: the CI machine is shared).
const MAX_WALL: Duration = Duration::from_secs(90);
/// Peak resident memory of one run.
const MAX_RSS_KIB: u64 = 512 * 1024;
/// Text that means a panic or an abort.
const CRASH_MARKERS: &[&str] = &[
    "panicked at",
    "overflowed its stack",
    "fatal runtime error",
    "memory allocation of",
    "RUST_BACKTRACE",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// `render` and `validate` both fail.
    Error,
    /// Only `render` fails (found when values are fetched or templates run).
    Render,
    /// Valid: both succeed.
    Ok,
}

#[derive(Clone, Debug)]
struct Case {
    file: String,
    expect: Expect,
    /// Alternatives (`Kind ns/name`); empty: the file is named instead.
    objects: Vec<String>,
    field: String,
    controller: bool,
    what: String,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hostile")
}

/// The index table of `tests/hostile/README.md`.
fn cases() -> Vec<Case> {
    let readme = std::fs::read_to_string(corpus_dir().join("README.md")).expect("README.md");
    let mut out = Vec::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | case | expect | object | field | controller | what |
        if cells.len() != 8 || cells[1] == "case" || cells[1].starts_with("---") {
            continue;
        }
        let expect = match cells[2] {
            "error" => Expect::Error,
            "render" => Expect::Render,
            "ok" => Expect::Ok,
            other => panic!("README: unknown expect {other:?} in {line}"),
        };
        let objects = if cells[3] == "-" {
            Vec::new()
        } else {
            cells[3].split(" or ").map(str::to_string).collect()
        };
        out.push(Case {
            file: cells[1].to_string(),
            expect,
            objects,
            field: cells[4].to_string(),
            controller: cells[5] == "yes",
            what: cells[6].to_string(),
        });
    }
    out
}

/// Expands a `.gen` description: `%%REPEAT n%%body%%END%%` (`{i}`, `{ind}`), `{{`/`}}`.
fn expand(text: &str) -> String {
    fn unescape(s: &str) -> String {
        s.replace("{{", "\u{1}")
            .replace("}}", "\u{2}")
            .replace('\u{1}', "{")
            .replace('\u{2}', "}")
    }
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("%%REPEAT ") {
        out.push_str(&unescape(&rest[..start]));
        let after = &rest[start + "%%REPEAT ".len()..];
        let (n, after) = after.split_once("%%").expect("%%REPEAT n%%");
        let n: usize = n.parse().expect("repeat count");
        let (body, after) = after.split_once("%%END%%").expect("%%END%%");
        if body.contains("{i}") || body.contains("{ind}") {
            for i in 0..n {
                let b = body
                    .replace("{i}", &i.to_string())
                    .replace("{ind}", &"  ".repeat(i + 2));
                out.push_str(&unescape(&b));
            }
        } else {
            out.push_str(&unescape(body).repeat(n));
        }
        rest = after;
    }
    out.push_str(&unescape(rest));
    out
}

/// The case's bytes as the front ends read them, and the file name they see.
fn materialize(case: &Case) -> (String, Vec<u8>) {
    let raw = std::fs::read(corpus_dir().join(&case.file))
        .unwrap_or_else(|e| panic!("{}: {e}", case.file));
    match case.file.strip_suffix(".gen") {
        Some(name) => (
            name.to_string(),
            expand(std::str::from_utf8(&raw).expect(".gen is UTF-8")).into_bytes(),
        ),
        None => (case.file.clone(), raw),
    }
}

/// One measured child run.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    output: String,
    cpu: Duration,
    wall: Duration,
    peak_rss_kib: u64,
    killed: bool,
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// `(state, utime + stime)` from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((
        state,
        Duration::from_millis(ticks * 1000 / clock_ticks().max(1)),
    ))
}

/// `VmHWM` (KiB) from `/proc/<pid>/status`.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `cmd` with stdout and stderr in files, sampling its CPU time and peak RSS.
fn run_measured(mut cmd: Command, scratch: &Path) -> Run {
    let out_path = scratch.join("stdout");
    let err_path = scratch.join("stderr");
    cmd.stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .stdin(Stdio::null());
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("spawn refsync");
    let pid = child.id();
    let mut peak = 0;
    let mut cpu = Duration::ZERO;
    let mut killed = false;
    while let Some((state, used)) = proc_stat(pid) {
        cpu = used;
        if state == 'Z' {
            break;
        }
        if let Some(hwm) = peak_rss(pid) {
            peak = peak.max(hwm);
        }
        if t0.elapsed() > MAX_WALL {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    let status = child.wait().expect("wait");
    let wall = t0.elapsed();
    let mut output = Vec::new();
    for p in [&out_path, &err_path] {
        std::fs::File::open(p)
            .unwrap()
            .read_to_end(&mut output)
            .unwrap();
        output.push(b'\n');
    }
    Run {
        code: status.code(),
        output: String::from_utf8_lossy(&output).into_owned(),
        cpu,
        wall,
        peak_rss_kib: peak,
        killed,
    }
}

/// Text without ANSI colour sequences.
fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Every problem with one case under one command.
fn check_run(case: &Case, file_name: &str, cmd: &str, run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let text = plain(&run.output);
    let tail = || {
        let t: String = text
            .lines()
            .filter(|l| !l.starts_with("  ") && !l.is_empty())
            .take(6)
            .collect::<Vec<_>>()
            .join("\n      ");
        t.chars().take(1500).collect::<String>()
    };
    let mut fail = |p: String| problems.push(format!("{} [{cmd}]: {p}", case.file));
    if run.killed {
        fail(format!("killed after {:?} of wall time", run.wall));
    }
    if let Some(m) = CRASH_MARKERS.iter().find(|m| text.contains(*m)) {
        fail(format!("crash marker {m:?} in output:\n      {}", tail()));
    }
    if text.contains(CANARY) {
        fail("the canary value appears in the output".into());
    }
    if run.cpu > MAX_CPU {
        fail(format!("used {:?} of CPU (bound {MAX_CPU:?})", run.cpu));
    }
    if run.peak_rss_kib > MAX_RSS_KIB {
        fail(format!(
            "peak RSS {} MiB (bound {} MiB)",
            run.peak_rss_kib / 1024,
            MAX_RSS_KIB / 1024
        ));
    }
    let should_fail = match case.expect {
        Expect::Error => true,
        Expect::Render => cmd == "render",
        Expect::Ok => false,
    };
    match run.code {
        None => fail("killed by a signal".into()),
        Some(0) if should_fail => fail(format!("exit 0, expected an error:\n      {}", tail())),
        Some(c) if c != 0 && !should_fail => {
            fail(format!("exit {c}, expected success:\n      {}", tail()))
        }
        _ => {}
    }
    if should_fail {
        // One line names both the object (or, for unreadable files, the file) and the field.
        let names: Vec<&str> = if case.objects.is_empty() {
            vec![file_name]
        } else {
            case.objects.iter().map(String::as_str).collect()
        };
        let named = text
            .lines()
            .any(|l| l.contains(&case.field) && names.iter().any(|n| l.contains(n)));
        if !named {
            fail(format!(
                "no line names {} and {:?}:\n      {}",
                names.join(" or "),
                case.field,
                tail()
            ));
        }
    }
    problems
}

#[test]
fn corpus_index_is_complete() {
    let cases = cases();
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let mut listed: Vec<String> = cases.iter().map(|c| c.file.clone()).collect();
    listed.sort();
    let mut dup = listed.clone();
    dup.dedup();
    assert_eq!(dup.len(), listed.len(), "a case is listed twice");
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "README.md")
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, listed, "files and README index differ");
    for c in &cases {
        let size = std::fs::metadata(corpus_dir().join(&c.file)).unwrap().len();
        assert!(
            size <= 64 * 1024,
            "{} is {size} bytes: describe it as a .gen",
            c.file
        );
        assert!(!c.what.is_empty() && !c.field.is_empty(), "{}", c.file);
    }
}

#[test]
fn render_and_validate_refuse_every_hostile_case_cleanly() {
    let bin = refsync_e2e::refsync_bin();
    let t0 = Instant::now();
    let cases = cases();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::<(String, String, Run, Vec<String>)>::new());
    // Two at a time: the machine has two cores (and CPU time, not wall time, is bounded).
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    let dir = tempfile::tempdir().unwrap();
                    let (name, bytes) = materialize(case);
                    let manifests = dir.path().join("manifests");
                    std::fs::create_dir(&manifests).unwrap();
                    std::fs::write(manifests.join(&name), bytes).unwrap();
                    for cmd in ["render", "validate"] {
                        let mut c = Command::new(&bin);
                        c.args([cmd, "--manifests"]).arg(&manifests);
                        let run = run_measured(c, dir.path());
                        let problems = check_run(case, &name, cmd, &run);
                        results.lock().unwrap().push((
                            case.file.clone(),
                            cmd.to_string(),
                            run,
                            problems,
                        ));
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut problems = Vec::new();
    let (mut max_cpu, mut max_rss, mut max_wall) = (
        (Duration::ZERO, String::new()),
        (0, String::new()),
        (Duration::ZERO, String::new()),
    );
    for (file, cmd, run, p) in &results {
        let who = format!("{file} [{cmd}]");
        if run.cpu > max_cpu.0 {
            max_cpu = (run.cpu, who.clone());
        }
        if run.peak_rss_kib > max_rss.0 {
            max_rss = (run.peak_rss_kib, who.clone());
        }
        if run.wall > max_wall.0 {
            max_wall = (run.wall, who.clone());
        }
        problems.extend(p.iter().cloned());
    }
    let total_cpu: Duration = results.iter().map(|r| r.2.cpu).sum();
    eprintln!(
        "{} runs of {} cases in {:?}, {total_cpu:?} CPU in all; max CPU {:?} ({}), max peak RSS {} MiB ({}), max wall {:?} ({})",
        results.len(),
        cases.len(),
        t0.elapsed(),
        max_cpu.0,
        max_cpu.1,
        max_rss.0 / 1024,
        max_rss.1,
        max_wall.0,
        max_wall.1
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// `refsync controller` confined to `ns` and its own controller class, without leader election.
fn start_controller(env: &KubeEnv, ns: &str) -> ControllerProcess {
    ControllerProcess::builder("hostile")
        .kubeconfig_of(&env.kubeconfig())
        .log_level(Some("info,kube=warn"))
        .args(["--leader-elect=false", "--namespace", ns])
        .args(["--controller-class", &format!("class-{ns}")])
        .env("NO_COLOR", "1")
        .start()
}

/// `group/version` + `kind` → the API resource (plural: lowercase kind + `s`, true for every
/// kind in the corpus).
fn api_resource(doc: &Value) -> ApiResource {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        group,
        version,
        doc["kind"].as_str().unwrap_or_default(),
    ))
}

async fn apply(client: &kube::Client, ns: &str, doc: &Value) -> Result<(), kube::Error> {
    let ar = api_resource(doc);
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    api.patch(
        name,
        &PatchParams::apply("refsync-hostile").force(),
        &Patch::Apply(doc),
    )
    .await
    .map(|_| ())
}

fn ready(es: &ExternalSecret) -> Option<(String, String, String)> {
    es.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test]
async fn the_controller_refuses_hostile_objects_and_keeps_syncing() {
    let env = KubeEnv::shared().await;
    let client = env.client().await;
    refsync_e2e::install_crds(&client).await.unwrap();
    let ns = env.create_namespace("hostile").await.unwrap();
    let ctl = start_controller(env, &ns);
    ctl.wait_ready(Duration::from_secs(60)).await;

    // The documents of every case the apiserver accepts, in this test's namespace. The cases
    // share `SecretStore fake` with different extra keys: its data lists are merged.
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.controller).collect();
    assert!(cases.len() >= 25, "only {} controller cases", cases.len());
    let mut stores: BTreeMap<String, Value> = BTreeMap::new();
    let mut objects: Vec<(Case, Value)> = Vec::new();
    for case in &cases {
        let (_, bytes) = materialize(case);
        let text = String::from_utf8(bytes).expect("controller cases are UTF-8");
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        for mut doc in docs.into_iter().filter(|d| !d.is_null()) {
            doc["metadata"]["namespace"] = json!(ns);
            match doc["kind"].as_str() {
                Some("SecretStore") => {
                    let name = doc["metadata"]["name"].as_str().unwrap().to_string();
                    match stores.get_mut(&name) {
                        Some(seen) => {
                            let extra: Vec<Value> = doc["spec"]["provider"]["fake"]["data"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default();
                            if let Some(list) =
                                seen["spec"]["provider"]["fake"]["data"].as_array_mut()
                            {
                                for e in extra {
                                    if !list.iter().any(|x| x["key"] == e["key"]) {
                                        list.push(e);
                                    }
                                }
                            }
                        }
                        None => {
                            stores.insert(name, doc);
                        }
                    }
                }
                _ => objects.push((case.clone(), doc)),
            }
        }
    }
    for doc in stores.values() {
        apply(&client, &ns, doc).await.unwrap_or_else(|e| {
            panic!(
                "the apiserver refused SecretStore {}: {e}",
                doc["metadata"]["name"]
            )
        });
    }
    let good = |name: &str| {
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "refreshInterval": "1h",
                "secretStoreRef": {"name": "fake"},
                "data": [{"secretKey": "user", "remoteRef": {"key": "db", "property": "user"}}]
            }
        })
    };
    apply(&client, &ns, &good("good-before")).await.unwrap();
    let mut refused = Vec::new();
    for (case, doc) in &objects {
        if let Err(e) = apply(&client, &ns, doc).await {
            refused.push(format!("{}: {e}", case.file));
        }
    }
    assert!(
        refused.is_empty(),
        "the README marks these controller cases but the apiserver refused them:\n  {}",
        refused.join("\n  ")
    );
    apply(&client, &ns, &good("good-after")).await.unwrap();

    // Every hostile ExternalSecret settles: Ready=False (errors) or True (valid cases).
    let es_api: Api<ExternalSecret> = Api::namespaced(client.clone(), &ns);
    let expected: Vec<(Case, String)> = objects
        .iter()
        .filter(|(_, d)| d["kind"] == "ExternalSecret")
        .map(|(c, d)| {
            (
                c.clone(),
                d["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let pending = loop {
        let all: BTreeMap<String, ExternalSecret> = es_api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| (e.metadata.name.clone().unwrap_or_default(), e))
            .collect();
        let pending: Vec<String> = expected
            .iter()
            .filter(|(case, name)| {
                let want = if case.expect == Expect::Ok {
                    "True"
                } else {
                    "False"
                };
                all.get(name).and_then(ready).map(|r| r.0).as_deref() != Some(want)
            })
            .map(|(c, n)| format!("{} ({n}): {:?}", c.file, all.get(n).and_then(ready)))
            .collect();
        if pending.is_empty() || Instant::now() > deadline {
            break pending;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        pending.is_empty(),
        "ExternalSecrets that did not reach the expected Ready status in 120s:\n  {}\nlog tail:\n{}",
        pending.join("\n  "),
        plain(&ctl.log())
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Each failure is explained: a Warning UpdateFailed Event and a log line name the field.
    let events: Vec<Event> = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let log = plain(&ctl.log());
    let mut unexplained = Vec::new();
    for (case, name) in expected.iter().filter(|(c, _)| c.expect != Expect::Ok) {
        let es = es_api.get(name).await.unwrap();
        let (_, reason, message) = ready(&es).unwrap();
        if reason != "SecretSyncedError" || message.contains(CANARY) {
            unexplained.push(format!(
                "{}: Ready reason {reason:?}, message {message:?}",
                case.file
            ));
        }
        let event = events.iter().any(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
                && e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("UpdateFailed")
                && e.note.as_deref().is_some_and(|n| n.contains(&case.field))
        });
        if !event {
            unexplained.push(format!(
                "{}: no Warning UpdateFailed Event on {name} naming {:?}",
                case.file, case.field
            ));
        }
        let logged = log
            .lines()
            .any(|l| l.contains(&format!("{ns}/{name}")) && l.contains(&case.field));
        if !logged {
            unexplained.push(format!(
                "{}: no log line names {ns}/{name} and {:?}",
                case.file, case.field
            ));
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} problem(s):\n  {}",
        unexplained.len(),
        unexplained.join("\n  ")
    );

    // The good ExternalSecrets synced, before and after the hostile ones.
    for name in ["good-before", "good-after"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = Api::<Secret>::namespaced(client.clone(), &ns)
                .get_opt(name)
                .await
                .unwrap();
            if s.and_then(|s| s.data)
                .and_then(|d| d.get("user").cloned())
                .is_some_and(|v| v.0 == b"u")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Secret {name} not synced within 60s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Still up, healthy, never panicked, bounded memory, no canary anywhere.
    let mut ctl = ctl;
    assert!(
        ctl.child.try_wait().unwrap().is_none(),
        "the controller exited; log:\n{}",
        plain(&ctl.log())
    );
    assert_eq!(ctl.get("/healthz").await.map(|r| r.0), Some(200), "healthz");
    assert_eq!(ctl.get("/readyz").await.map(|r| r.0), Some(200), "readyz");
    let log = plain(&ctl.log());
    for m in CRASH_MARKERS {
        assert!(!log.contains(m), "controller log contains {m:?}");
    }
    assert!(
        !log.contains(CANARY),
        "the canary value is in the controller log"
    );
    let rss = peak_rss(ctl.child.id()).unwrap_or_default();
    eprintln!(
        "controller: {} hostile objects ({} ExternalSecrets), peak RSS {} MiB",
        objects.len(),
        expected.len(),
        rss / 1024
    );
    assert!(rss < MAX_RSS_KIB, "controller peak RSS {} MiB", rss / 1024);
}
