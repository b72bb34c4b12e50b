#![forbid(unsafe_code)]
//! `refsync-bench`: refsync, ESO v0.16.2 (defaults and tuned) and a bare-client limit, each on
//! a fresh etcd + kube-apiserver with the same objects; see BENCHMARKS.md ("Controller at
//! scale") for the commands and what each figure means.
//!
//! ```sh
//! cargo build --release -p refsync
//! cargo run --release -p refsync-bench -- --subject refsync --workload openbao --n 1000 \
//!     --out target/bench/refsync-openbao-1000.json
//! cargo run --release -p refsync-bench -- --plot
//! ```

mod limit;
mod measure;
mod plot;
mod procstat;
mod subject;
mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use refsync_testenv::{KubeEnv, OpenBao};
use serde_json::json;

use crate::measure::{ReadyWatch, apiserver_requests, diff, percentile};
use crate::subject::{Running, SubjectKind};
use crate::workload::{BaoTarget, NAMESPACES, Workload};

#[derive(Parser, Debug)]
#[command(
    name = "refsync-bench",
    about = "Controller-at-scale benchmark (issue 10)"
)]
struct Args {
    /// Who syncs the ExternalSecrets.
    #[arg(long, value_enum)]
    subject: Option<SubjectKind>,
    /// Where the values come from.
    #[arg(long, value_enum, default_value_t = Workload::Openbao)]
    workload: Workload,
    /// ExternalSecrets (10 keys each, over 100 namespaces).
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Unmanaged 4 KiB Secrets created before the subject starts.
    #[arg(long, default_value_t = 50_000)]
    unmanaged: usize,
    /// `spec.refreshInterval` of every ExternalSecret, seconds.
    #[arg(long, default_value_t = 30)]
    refresh_secs: u64,
    /// Give up waiting for all Ready after this many seconds (reported as not Ready).
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// ExternalSecrets force-synced one after another (openbao workload).
    #[arg(long, default_value_t = 50)]
    force_samples: usize,
    /// Steady-state window after the force-sync phase, seconds.
    #[arg(long, default_value_t = 90)]
    steady_secs: u64,
    /// Requests in flight of the bare-client limit.
    #[arg(long, default_value_t = 64)]
    limit_concurrency: usize,
    /// The `refsync` binary (default: `$CARGO_TARGET_DIR/release/refsync`, else
    /// `target/release/refsync`).
    #[arg(long)]
    refsync_bin: Option<PathBuf>,
    /// Run `refsync controller` under this command (split at spaces), e.g.
    /// `--subject-wrapper "heaptrack -o /tmp/refsync"`: the figures are then read from the
    /// refsync process itself, and it is stopped with SIGTERM (so the wrapper can finish).
    #[arg(long)]
    subject_wrapper: Option<String>,
    /// Where to write the run's JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Plot mode: read every `*.json` of `--dir` and write `--svg`.
    #[arg(long)]
    plot: bool,
    #[arg(long, default_value = "target/bench")]
    dir: PathBuf,
    #[arg(long, default_value = "docs/bench-ready-over-time.svg")]
    svg: PathBuf,
    /// Internal: run as the bare-client limit's worker process.
    #[arg(long, hide = true)]
    limit_worker: bool,
    #[arg(long, hide = true)]
    kubeconfig: Option<PathBuf>,
    #[arg(long, hide = true)]
    owners: Option<PathBuf>,
}

/// One run's figures (written as JSON; BENCHMARKS.md tables are made from these).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub subject: String,
    pub workload: String,
    pub n: usize,
    pub unmanaged: usize,
    pub refresh_secs: u64,
    pub started_at: String,
    /// `/proc/loadavg` when the run started (other builds share the machine).
    pub loadavg_start: String,
    /// `/proc/loadavg` when the subject started.
    pub loadavg_subject_start: String,
    pub nproc: usize,
    pub mem_total_gib: f64,
    pub versions: BTreeMap<String, String>,
    pub subject_args: Vec<String>,
    /// Creating the namespaces, stores, ExternalSecrets and unmanaged Secrets.
    pub setup_secs: f64,
    /// Subject start → all ExternalSecrets Ready (None: not within `timeout_secs`).
    pub ready_secs: Option<f64>,
    pub timeout_secs: u64,
    pub ready_at_end: usize,
    /// `(seconds since subject start, ExternalSecrets Ready)` every 250 ms.
    pub samples: Vec<(f64, usize)>,
    /// Subject's VmHWM at the end of the run, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Subject's VmHWM when all were Ready, MiB.
    pub peak_rss_mib_at_ready: Option<f64>,
    /// Subject's utime+stime from start to all Ready.
    pub cpu_secs_to_ready: Option<f64>,
    /// apiserver_request_total, subject start → all Ready, by `verb resource subresource`
    /// (includes the bench's own one list + watch of ExternalSecrets).
    pub apiserver_requests_to_ready: BTreeMap<String, f64>,
    pub apiserver_requests_to_ready_total: f64,
    /// The same over the steady-state window.
    pub apiserver_requests_steady: BTreeMap<String, f64>,
    pub apiserver_requests_steady_total: f64,
    /// `externalsecret_provider_api_calls_count` (all labels), start → Ready.
    pub provider_calls_to_ready: Option<f64>,
    /// The same over the steady-state window.
    pub provider_calls_steady: Option<f64>,
    /// `externalsecret_provider_api_calls_count` by `call`, start → Ready.
    #[serde(default)]
    pub provider_calls_by_call_to_ready: BTreeMap<String, f64>,
    /// The same over the steady-state window.
    #[serde(default)]
    pub provider_calls_by_call_steady: BTreeMap<String, f64>,
    /// Distinct (store, key) pairs the ExternalSecrets read.
    pub distinct_keys: usize,
    /// OpenBao's `vault_route_read_secret__count` (KV reads it served), start → Ready.
    pub openbao_reads_to_ready: Option<f64>,
    /// OpenBao's `vault_core_handle_request_count` (all requests), start → Ready.
    pub openbao_requests_to_ready: Option<f64>,
    pub openbao_reads_steady: Option<f64>,
    pub openbao_requests_steady: Option<f64>,
    /// Force-sync → Secret updated, milliseconds, one per sampled ExternalSecret.
    pub force_sync_ms: Vec<f64>,
    pub force_sync_p50_ms: Option<f64>,
    pub force_sync_p99_ms: Option<f64>,
    pub force_sync_failed: usize,
    pub steady_secs: u64,
    /// Subject CPU seconds over the steady-state window.
    pub steady_cpu_secs: Option<f64>,
    pub notes: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    refsync_testenv::install_crypto_provider();
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        if args.limit_worker {
            let kc = args.kubeconfig.as_deref().context("--kubeconfig")?;
            let owners = args.owners.as_deref().context("--owners")?;
            return limit::run(kc, owners, args.limit_concurrency).await;
        }
        if args.plot {
            return plot::run(&args.dir, &args.svg);
        }
        let subject = args.subject.context("--subject is required (or --plot)")?;
        let report = run(&args, subject).await?;
        let text = serde_json::to_string_pretty(&report)?;
        let out = args.out.clone().unwrap_or_else(|| {
            PathBuf::from(format!(
                "target/bench/{}-{}-{}.json",
                report.subject, report.workload, report.n
            ))
        });
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&out, text)?;
        eprintln!("wrote {}", out.display());
        print_summary(&report);
        Ok(())
    })
}

fn print_summary(r: &Report) {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    eprintln!(
        "{} {} n={}: ready {} s (of timeout {} s), peak RSS {} MiB, CPU to ready {} s, \
         apiserver requests {:.0}, provider calls {} (distinct keys {}), OpenBao reads {}, \
         force-sync p50 {} ms p99 {} ms ({} failed), steady CPU {} s / {} s",
        r.subject,
        r.workload,
        r.n,
        f(r.ready_secs),
        r.timeout_secs,
        f(r.peak_rss_mib),
        f(r.cpu_secs_to_ready),
        r.apiserver_requests_to_ready_total,
        f(r.provider_calls_to_ready),
        r.distinct_keys,
        f(r.openbao_reads_to_ready),
        f(r.force_sync_p50_ms),
        f(r.force_sync_p99_ms),
        r.force_sync_failed,
        f(r.steady_cpu_secs),
        r.steady_secs,
    );
}

fn mem_total_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0)
}

struct Bao {
    server: OpenBao,
}

impl Bao {
    fn target(&self) -> BaoTarget {
        BaoTarget {
            addr: self.server.addr().to_string(),
            token: self.server.root_token().to_string(),
        }
    }

    /// (KV reads, all requests) served so far.
    async fn counts(&self) -> Option<(f64, f64)> {
        let text = self
            .server
            .request(reqwest::Method::GET, "sys/metrics?format=prometheus")
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some((
            measure::metric_total(&text, "vault_route_read_secret__count"),
            measure::metric_total(&text, "vault_core_handle_request_count"),
        ))
    }
}

async fn run(args: &Args, subject: SubjectKind) -> anyhow::Result<Report> {
    let mut r = Report {
        subject: subject.name().to_string(),
        workload: format!("{:?}", args.workload).to_lowercase(),
        n: args.n,
        unmanaged: args.unmanaged,
        refresh_secs: args.refresh_secs,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        loadavg_start: procstat::loadavg(),
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total_gib: mem_total_gib(),
        timeout_secs: args.timeout,
        steady_secs: args.steady_secs,
        distinct_keys: match args.workload {
            Workload::Fake => NAMESPACES * workload::KEYS,
            Workload::Openbao => NAMESPACES,
        }
        .min(args.n * workload::KEYS),
        ..Default::default()
    };
    r.versions = subject::versions(subject, args);
    anyhow::ensure!(
        !(subject.is_eso() && args.workload == Workload::Fake),
        "ESO runs only on workload openbao (its fake provider is not thread-safe)"
    );
    eprintln!(
        "== {} / {} / n={} / unmanaged={} (load {})",
        r.subject, r.workload, r.n, r.unmanaged, r.loadavg_start
    );
    let t_setup = Instant::now();
    let kube = KubeEnv::start().await?;
    let client = kube.client().await;
    let bao = match args.workload {
        Workload::Openbao => Some(Bao {
            server: OpenBao::start().await?,
        }),
        Workload::Fake => None,
    };
    if subject.is_eso() {
        refsync_testenv::eso::install_eso_crds(&client).await?;
    } else {
        workload::install_crds(&client, refsync_api::crds()).await?;
    }
    let target = bao.as_ref().map(Bao::target);
    let owners = workload::create(
        &client,
        args.workload,
        args.n,
        args.unmanaged,
        args.refresh_secs,
        target.as_ref(),
    )
    .await?;
    r.setup_secs = t_setup.elapsed().as_secs_f64();
    eprintln!("setup done in {:.1} s", r.setup_secs);

    let watch = ReadyWatch::start(&client).await?;
    let api0 = apiserver_requests(&client).await?;
    let bao0 = match &bao {
        Some(b) => b.counts().await,
        None => None,
    };
    let work_dir = tempfile::Builder::new()
        .prefix("refsync-bench-")
        .tempdir()?;
    let work = work_dir.path().to_path_buf();
    r.loadavg_subject_start = procstat::loadavg();
    let t0 = Instant::now();
    let mut running = Running::start(subject, args, &kube, &work, &owners).await?;
    r.subject_args = running.args.clone();
    let (samples, ready) = measure::wait_all_ready(
        &watch,
        t0,
        args.n,
        Duration::from_secs(args.timeout),
        || running.check_alive(),
    )
    .await?;
    r.samples = samples;
    r.ready_secs = ready;
    r.ready_at_end = watch.ready();
    match ready {
        Some(t) => eprintln!("all {} Ready after {t:.1} s", args.n),
        None => {
            eprintln!(
                "NOT all Ready after {} s: {}/{}",
                args.timeout, r.ready_at_end, args.n
            );
            r.notes.push(format!(
                "not Ready after {} s: {}/{} Ready",
                args.timeout, r.ready_at_end, args.n
            ));
        }
    }
    let api1 = apiserver_requests(&client).await?;
    r.apiserver_requests_to_ready = diff(&api0, &api1);
    r.apiserver_requests_to_ready_total = r.apiserver_requests_to_ready.values().sum();
    let stat_ready = running.stat().await;
    r.peak_rss_mib_at_ready = stat_ready.map(|s| s.peak_rss_kib as f64 / 1024.0);
    r.cpu_secs_to_ready = stat_ready.map(|s| s.cpu_secs);
    if let Some(calls) = running.provider_calls().await {
        r.provider_calls_to_ready = Some(calls.values().sum());
        r.provider_calls_by_call_to_ready = calls;
    }
    if let (Some(b), Some((reads0, reqs0))) = (&bao, bao0)
        && let Some((reads1, reqs1)) = b.counts().await
    {
        r.openbao_reads_to_ready = Some(reads1 - reads0);
        r.openbao_requests_to_ready = Some(reqs1 - reqs0);
    }

    if subject == SubjectKind::Limit {
        r.notes.push(
            "the limit exits after its writes: no force-sync, no steady state; RSS/CPU are \
             the worker process's own"
                .into(),
        );
        let stat = running.wait_limit().await?;
        r.peak_rss_mib = Some(stat.peak_rss_kib as f64 / 1024.0);
        r.peak_rss_mib_at_ready = r.peak_rss_mib;
        r.cpu_secs_to_ready = Some(stat.cpu_secs);
        return Ok(r);
    }

    if ready.is_some() {
        match (&target, args.force_samples) {
            (Some(target), samples) if samples > 0 => {
                force_sync(&client, target, args.n, samples, &mut r).await?;
            }
            _ => r.notes.push(
                "force-sync latency measured on the openbao workload only (a remote change \
                 to detect)"
                    .into(),
            ),
        }
        eprintln!("steady state: {} s", args.steady_secs);
        let s0 = running.stat().await;
        let c0 = running.provider_calls().await;
        let a0 = apiserver_requests(&client).await?;
        let b0 = match &bao {
            Some(b) => b.counts().await,
            None => None,
        };
        tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
        running.check_alive()?;
        let s1 = running.stat().await;
        let c1 = running.provider_calls().await;
        let a1 = apiserver_requests(&client).await?;
        if let (Some(s0), Some(s1)) = (s0, s1) {
            r.steady_cpu_secs = Some(s1.cpu_secs - s0.cpu_secs);
        }
        if let (Some(c0), Some(c1)) = (c0, c1) {
            r.provider_calls_by_call_steady = diff(&c0, &c1);
            r.provider_calls_steady = Some(r.provider_calls_by_call_steady.values().sum());
        }
        r.apiserver_requests_steady = diff(&a0, &a1);
        r.apiserver_requests_steady_total = r.apiserver_requests_steady.values().sum();
        if let (Some(b), Some((reads0, reqs0))) = (&bao, b0)
            && let Some((reads1, reqs1)) = b.counts().await
        {
            r.openbao_reads_steady = Some(reads1 - reads0);
            r.openbao_requests_steady = Some(reqs1 - reqs0);
        }
    }
    r.peak_rss_mib = running.stat().await.map(|s| s.peak_rss_kib as f64 / 1024.0);
    running.stop();
    drop(watch);
    Ok(r)
}

/// For `samples` ExternalSecrets in distinct namespaces, one after another: change the value
/// of `k0` in OpenBao, set the `force-sync` annotation, time until the Secret has the new value.
async fn force_sync(
    client: &kube::Client,
    bao: &BaoTarget,
    n: usize,
    samples: usize,
    r: &mut Report,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let count = samples.min(n).min(NAMESPACES);
    eprintln!("force-sync: {count} samples");
    for k in 0..count {
        let ns_i = workload::es_namespace_index(k);
        let ns = workload::namespace(ns_i);
        let name = workload::es_name(k);
        let generation = 1 + u32::try_from(k).unwrap_or(0);
        workload::bao_write(&http, bao, ns_i, generation).await?;
        let expected = workload::value(ns_i, 0, generation);
        let t = Instant::now();
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &workload::es_resource())
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    "force-sync": format!("{}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0))
                }}})),
            )
            .await
            .with_context(|| format!("annotate {ns}/{name}"))?;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
        loop {
            let got = secrets.get_opt(&name).await?;
            let v = got
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get("k0"))
                .map(|b| b.0.as_slice());
            if v == Some(expected.as_bytes()) {
                r.force_sync_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                r.force_sync_failed += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut xs = r.force_sync_ms.clone();
    r.force_sync_p50_ms = percentile(&mut xs, 50.0);
    r.force_sync_p99_ms = percentile(&mut xs, 99.0);
    Ok(())
}
