//! `--plot`: ExternalSecrets Ready over time, one panel per (workload, N), one line per
//! subject, as a hand-written SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::Report;

const W: f64 = 760.0;
const PANEL_H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 45.0;

fn color(subject: &str) -> &'static str {
    match subject {
        "refsync" => "#1f77b4",
        "limit" => "#2ca02c",
        "eso-tuned" => "#ff7f0e",
        "eso" => "#d62728",
        _ => "#7f7f7f",
    }
}

/// The subject's name, with the refresh interval when it is not the default 30 s.
fn label(r: &Report) -> String {
    if r.refresh_secs == 30 || r.refresh_secs == 0 {
        r.subject.clone()
    } else {
        format!("{} (refresh {} s)", r.subject, r.refresh_secs)
    }
}

fn order(subject: &str) -> u8 {
    match subject {
        "limit" => 0,
        "refsync" => 1,
        "eso-tuned" => 2,
        "eso" => 3,
        _ => 4,
    }
}

/// A "nice" tick step for a range.
fn step(range: f64) -> f64 {
    let raw = range / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn render(reports: &[Report]) -> String {
    let mut panels: BTreeMap<(String, usize), Vec<&Report>> = BTreeMap::new();
    for r in reports {
        panels.entry((r.workload.clone(), r.n)).or_default().push(r);
    }
    let h = TOP + panels.len() as f64 * (PANEL_H + BOTTOM + TOP);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" font-weight="bold">ExternalSecrets Ready over time (same machine, fresh kube-apiserver per run)</text>"#,
        LEFT - 50.0
    );
    for (i, ((workload, n), mut runs)) in panels.into_iter().enumerate() {
        runs.sort_by_key(|r| order(&r.subject));
        let y0 = TOP + i as f64 * (PANEL_H + BOTTOM + TOP) + TOP;
        let pw = W - LEFT - RIGHT;
        let ph = PANEL_H;
        let t_max = runs
            .iter()
            .filter_map(|r| r.samples.last().map(|x| x.0))
            .fold(1.0f64, f64::max);
        let xs = step(t_max);
        let x_end = (t_max / xs).ceil() * xs;
        let ys = step(n as f64);
        let y_end = (n as f64 / ys).ceil() * ys;
        let px = |t: f64| LEFT + t / x_end * pw;
        let py = |v: f64| y0 + ph - v / y_end * ph;
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}" font-size="13" font-weight="bold">workload {}, N = {n} ExternalSecrets</text>"#,
            y0 - 10.0,
            esc(&workload)
        );
        // Grid and axes.
        let mut t = 0.0;
        while t <= x_end + 1e-9 {
            let x = px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{:.1}" stroke="#e0e0e0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{t}</text>"##,
                y0 + ph,
                y0 + ph + 16.0
            );
            t += xs;
        }
        let mut v = 0.0;
        while v <= y_end + 1e-9 {
            let y = py(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0
            );
            v += ys;
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y0:.1}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the controller started</text>"#,
            LEFT + pw / 2.0,
            y0 + ph + 34.0
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">Ready</text>"#,
            LEFT - 50.0,
            y0 + ph / 2.0
        );
        for (j, r) in runs.iter().enumerate() {
            let c = color(&r.subject);
            let mut pts = String::new();
            // Thin the samples to at most ~1 per pixel.
            let every = (r.samples.len() / pw as usize).max(1);
            for (k, (t, v)) in r.samples.iter().enumerate() {
                if k % every == 0 || k + 1 == r.samples.len() {
                    let _ = write!(pts, "{:.1},{:.1} ", px(*t), py(*v as f64));
                }
            }
            let dash = if label(r) == r.subject {
                ""
            } else {
                r#" stroke-dasharray="6 3""#
            };
            let _ = writeln!(
                s,
                r#"<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"{dash}/>"#
            );
            let ly = y0 + 14.0 + j as f64 * 36.0;
            let lx = LEFT + pw + 14.0;
            let ready_text = match r.ready_secs {
                Some(t) => format!("all Ready: {t:.1} s"),
                None => format!("{} of {} after {} s", r.ready_at_end, r.n, r.timeout_secs),
            };
            let _ = writeln!(
                s,
                r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}" fill="#555">{}</text>"##,
                lx + 22.0,
                lx + 28.0,
                ly + 4.0,
                esc(&label(r)),
                lx + 28.0,
                ly + 19.0,
                esc(&ready_text)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

pub fn run(dir: &Path, svg: &Path) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p)?;
        match serde_json::from_str::<Report>(&text) {
            Ok(r) => reports.push(r),
            Err(e) => eprintln!("skip {}: {e}", p.display()),
        }
    }
    anyhow::ensure!(!reports.is_empty(), "no run reports in {}", dir.display());
    if let Some(parent) = svg.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(svg, render(&reports))?;
    eprintln!("wrote {} ({} runs)", svg.display(), reports.len());
    print!("{}", table(&reports));
    Ok(())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    // `+ 0.0` turns a -0.0 difference into 0.
    v.map_or("–".to_string(), |v| format!("{:.digits$}", v + 0.0))
}

/// Requests that write (create, update, patch, delete).
fn writes(m: &BTreeMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let verb = k.split(' ').next().unwrap_or_default();
            matches!(verb, "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE")
        })
        .map(|(_, v)| v)
        .sum()
}

/// The Markdown tables of BENCHMARKS.md: figures per run, then refsync's ratios.
pub fn table(reports: &[Report]) -> String {
    let mut groups: BTreeMap<(String, usize), Vec<&Report>> = BTreeMap::new();
    for r in reports {
        groups.entry((r.workload.clone(), r.n)).or_default().push(r);
    }
    let mut s = String::new();
    for ((workload, n), mut runs) in groups {
        runs.sort_by_key(|r| order(&r.subject));
        let _ = writeln!(s, "\n#### Workload {workload}, N = {n}\n");
        let _ = writeln!(
            s,
            "| subject | load avg at start | all Ready (s) | peak RSS (MiB) | CPU to Ready (s) | \
             apiserver requests to Ready (writes) | provider calls to Ready / distinct keys | \
             OpenBao KV reads to Ready | force-sync p50 / p99 (ms) | steady state: CPU s / provider calls / apiserver writes per {} s |",
            runs.first().map_or(90, |r| r.steady_secs)
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for r in &runs {
            let ready = match r.ready_secs {
                Some(t) => format!("{t:.1}"),
                None => format!(
                    "not Ready after {} s ({}/{})",
                    r.timeout_secs, r.ready_at_end, r.n
                ),
            };
            let steady = if r.subject == "limit" {
                "–".to_string()
            } else {
                format!(
                    "{} / {} / {:.0}",
                    opt(r.steady_cpu_secs, 1),
                    opt(r.provider_calls_steady, 0),
                    writes(&r.apiserver_requests_steady)
                )
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.0} ({:.0}) | {} / {} | {} | {} / {} | {} |",
                label(r),
                r.loadavg_subject_start,
                ready,
                opt(r.peak_rss_mib, 1),
                opt(r.cpu_secs_to_ready, 1),
                r.apiserver_requests_to_ready_total,
                writes(&r.apiserver_requests_to_ready),
                opt(r.provider_calls_to_ready, 0),
                r.distinct_keys,
                opt(r.openbao_reads_to_ready, 0),
                opt(r.force_sync_p50_ms, 0),
                if r.force_sync_failed > 0 {
                    format!(
                        "{} ({} of {} not within 30 s)",
                        opt(r.force_sync_p99_ms, 0),
                        r.force_sync_failed,
                        r.force_sync_failed + r.force_sync_ms.len()
                    )
                } else {
                    opt(r.force_sync_p99_ms, 0)
                },
                steady
            );
        }
        let refsyncs: Vec<&&Report> = runs.iter().filter(|r| r.subject == "refsync").collect();
        let others: Vec<&&Report> = runs.iter().filter(|r| r.subject != "refsync").collect();
        if refsyncs.is_empty() || others.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "\n| ratio | all Ready (time) | peak RSS | CPU to Ready | apiserver requests | provider calls |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".to_string(),
        };
        for (rs, o) in refsyncs
            .iter()
            .flat_map(|rs| others.iter().map(move |o| (rs, o)))
        {
            let _ = writeln!(
                s,
                "| {} / {} | {} | {} | {} | {} | {} |",
                label(rs),
                label(o),
                match (rs.ready_secs, o.ready_secs) {
                    // The other never got there: refsync's time over the other's timeout is
                    // an upper bound of the ratio.
                    (Some(a), None) => format!("< {:.2}", a / o.timeout_secs.max(1) as f64),
                    (a, b) => ratio(a, b),
                },
                ratio(rs.peak_rss_mib, o.peak_rss_mib),
                ratio(rs.cpu_secs_to_ready, o.cpu_secs_to_ready),
                ratio(
                    Some(rs.apiserver_requests_to_ready_total),
                    Some(o.apiserver_requests_to_ready_total)
                ),
                ratio(rs.provider_calls_to_ready, o.provider_calls_to_ready),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_panel_per_workload_and_n() {
        let run = |subject: &str, n: usize, ready: Option<f64>| Report {
            subject: subject.into(),
            workload: "openbao".into(),
            n,
            samples: vec![(0.0, 0), (1.0, n / 2), (2.0, n)],
            ready_secs: ready,
            ..Default::default()
        };
        let svg = render(&[
            run("refsync", 1000, Some(2.0)),
            run("eso", 1000, None),
            run("limit", 10000, Some(2.0)),
        ]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("N = 1000"));
        assert!(svg.contains("N = 10000"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("all Ready: 2.0 s"));
    }
}
