//! The manifests reconciler with a git source served by a real `git daemon` on 127.0.0.1 and a
//! directory source, writing to the real kube-apiserver of refsync-testenv: create, update
//! within one interval, prune per creationPolicy (Owner deleted, Orphan kept, Merge keys
//! removed), and nothing applied or deleted while the tree cannot be used (repo unreachable,
//! force-push, unparsable manifest). No garbage collector runs here: nothing relies on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, PostParams};
use refsync_controller::context::{Config, Context};
use refsync_controller::metrics::Metrics;
use refsync_controller::reconcile::manifests::{self, ManifestOptions};
use refsync_controller::source::git::{GitAuth, GitOptions, GitSource};
use refsync_controller::source::watch::{DirSource, GitTree, TreeSource};
use refsync_core::ProviderRegistry;
use refsync_core::engine::Engine;
use refsync_core::fetch::Fetcher;
use refsync_testenv::KubeEnv;

const CANARY: &str = "canary-git-value-do-not-print";

fn context(client: &Client) -> Arc<Context> {
    let mut registry = ProviderRegistry::new();
    registry.register(Arc::new(refsync_provider_fake::FakeFactory));
    let metrics = Arc::new(Metrics::new());
    let mut engine = Engine::new(registry, Fetcher::new(Duration::from_millis(1)));
    engine.calls = metrics.clone();
    Arc::new(Context {
        client: client.clone(),
        engine: Arc::new(engine),
        metrics,
        config: Config::default(),
        leader: Arc::new(AtomicBool::new(true)),
    })
}

struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn start(ctx: Arc<Context>, source: TreeSource, opts: ManifestOptions) -> Running {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(manifests::run(ctx, source, opts, async move {
        let _ = rx.await;
    }));
    Running { stop: Some(tx) }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.email=e2e@refsync.test",
            "-c",
            "user.name=e2e",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run git (Debian's git must be installed): {e}"));
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `git daemon` serving `base` on `port`; killed on drop.
struct Daemon(Child);

impl Daemon {
    fn start(base: &Path, port: u16) -> Daemon {
        // `git daemon` forks `git-daemon` and would survive a kill of `git`: run it directly.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git --exec-path (Debian's git)");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args([
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                &format!("--base-path={}", base.display()),
                &format!("--port={port}"),
                "--listen=127.0.0.1",
            ])
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon (Debian's git)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn store(value: &str) -> String {
    format!(
        r#"apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {{name: fake}}
spec:
  provider:
    fake:
      data:
        - {{key: /db, value: '{value}'}}
        - {{key: /canary, value: {CANARY}}}
"#
    )
}

fn es(name: &str, policy: &str, target: &str, key: &str) -> String {
    format!(
        r#"apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {{name: {name}}}
spec:
  refreshInterval: 1s
  secretStoreRef: {{name: fake, kind: SecretStore}}
  target: {{name: {target}, creationPolicy: {policy}}}
  data:
    - {{secretKey: {key}, remoteRef: {{key: /db}}}}
"#
    )
}

async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn ann<'a>(s: &'a Secret, k: &str) -> Option<&'a str> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(k))
        .map(String::as_str)
}

async fn status(cms: &Api<ConfigMap>) -> BTreeMap<String, String> {
    cms.get_opt("refsync-status")
        .await
        .unwrap()
        .and_then(|c| c.data)
        .unwrap_or_default()
}

fn commit_all(work: &Path, msg: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", msg]);
    git(work, &["push", "-q", "-f", "origin", "HEAD:main"]);
    git(work, &["rev-parse", "HEAD"])
}

#[tokio::test(flavor = "multi_thread")]
async fn git_source_syncs_updates_prunes_and_never_prunes_on_a_bad_tree() {
    let env = KubeEnv::shared().await;
    let client = env.client().await;
    let ns = env.create_namespace("gitsrc").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);

    // A Secret someone else owns that a Merge ExternalSecret writes into, and two Secrets
    // refsync must never touch: one unlabelled, one written by another tree source.
    let mut shared = Secret::default();
    shared.metadata.name = Some("shared".into());
    shared.data = Some([("keep".to_string(), ByteString(b"theirs".to_vec()))].into());
    secrets
        .create(&PostParams::default(), &shared)
        .await
        .unwrap();
    let mut foreign = Secret::default();
    foreign.metadata.name = Some("foreign".into());
    foreign.metadata.labels = Some(
        [(
            "reconcile.external-secrets.io/managed".to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    foreign.metadata.annotations = Some(
        [
            ("refsync.io/source".to_string(), "another-repo".to_string()),
            ("refsync.io/external-secret".to_string(), "gone".to_string()),
            (
                "refsync.io/creation-policy".to_string(),
                "Owner".to_string(),
            ),
        ]
        .into(),
    );
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    // The repository: a bare repo served by git daemon, and a work clone to commit from.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("srv");
    std::fs::create_dir_all(&base).unwrap();
    git(&base, &["init", "-q", "--bare", "repo.git"]);
    let work = tmp.path().join("work");
    git(tmp.path(), &["init", "-q", "work"]);
    let port = free_port();
    let url = format!("git://127.0.0.1:{port}/repo.git");
    git(&work, &["remote", "add", "origin", &url]);
    let mut daemon = Some(Daemon::start(&base, port));
    let tree = work.join("deploy");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("store.yaml"), store("v1")).unwrap();
    std::fs::write(
        tree.join("owned.yaml"),
        es("owned", "Owner", "owned", "password"),
    )
    .unwrap();
    std::fs::write(
        tree.join("orph.yaml"),
        es("orph", "Orphan", "orph", "password"),
    )
    .unwrap();
    std::fs::write(
        tree.join("merger.yaml"),
        es("merger", "Merge", "shared", "ours"),
    )
    .unwrap();
    std::fs::write(work.join("README.md"), "not a manifest").unwrap();
    let sha1 = commit_all(&work, "one");

    let ctx = context(&client);
    let source_name = format!("e2e-git-{ns}");
    let git_src = GitSource::new(GitOptions {
        repo: url.clone(),
        reference: "main".into(),
        path: "deploy".into(),
        auth: GitAuth::None,
        workdir: tmp.path().join("clone"),
        allow_force_push: false,
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    let interval = Duration::from_secs(1);
    let _running = start(
        ctx.clone(),
        TreeSource::Git(GitTree::new(git_src, ns.clone(), interval)),
        ManifestOptions {
            source_name: source_name.clone(),
            status_config_map: Some((ns.clone(), "refsync-status".into())),
        },
    );

    // 1. Commit → Secrets appear, annotated with file and commit; Merge writes into `shared`.
    let owned = wait_for("Secret owned", Duration::from_secs(30), async || {
        secrets.get_opt("owned").await.unwrap()
    })
    .await;
    assert_eq!(data(&owned)["password"], b"v1");
    assert_eq!(ann(&owned, "refsync.io/source"), Some(source_name.as_str()));
    assert_eq!(ann(&owned, "refsync.io/source-file"), Some("owned.yaml"));
    assert_eq!(ann(&owned, "refsync.io/source-commit"), Some(sha1.as_str()));
    assert_eq!(
        owned.metadata.labels.as_ref().unwrap()["reconcile.external-secrets.io/created-by"],
        refsync_core::hash::created_by(&ns, "owned")
    );
    wait_for("Secret orph", Duration::from_secs(10), async || {
        secrets.get_opt("orph").await.unwrap()
    })
    .await;
    let merged = wait_for("merge into shared", Duration::from_secs(10), async || {
        let s = secrets.get("shared").await.unwrap();
        data(&s).contains_key("ours").then_some(s)
    })
    .await;
    assert_eq!(data(&merged)["keep"], b"theirs");
    let text = ctx.metrics.encode();
    assert!(
        text.contains(&format!("refsync_git_commit_info{{sha=\"{sha1}\"}} 1")),
        "{text}"
    );
    let st = wait_for("status ConfigMap", Duration::from_secs(10), async || {
        let d = status(&cms).await;
        d.contains_key(&format!("{ns}.owned")).then_some(d)
    })
    .await;
    assert!(
        st[&format!("{ns}.owned")].contains("\"ready\":\"True\""),
        "{st:?}"
    );

    // 2. A change is applied within one interval (plus the fetch).
    std::fs::write(tree.join("store.yaml"), store("v2")).unwrap();
    let pushed = Instant::now();
    let sha2 = commit_all(&work, "two");
    let updated = wait_for("owned updated", Duration::from_secs(10), async || {
        let s = secrets.get("owned").await.unwrap();
        (data(&s)["password"] == b"v2").then_some(s)
    })
    .await;
    let took = pushed.elapsed();
    eprintln!("commit → Secret updated in {took:?} (interval {interval:?})");
    assert!(took < interval * 3, "update took {took:?}");
    assert_eq!(
        ann(&updated, "refsync.io/source-commit"),
        Some(sha2.as_str())
    );
    let text = ctx.metrics.encode();
    assert!(text.contains(&format!("refsync_git_commit_info{{sha=\"{sha2}\"}} 1")));
    assert!(!text.contains(&sha1), "only the current sha is exported");

    // 3. Unreachable repo: error reported, nothing changes.
    drop(daemon.take());
    let st = wait_for(
        "fetch error in status",
        Duration::from_secs(15),
        async || {
            let d = status(&cms).await;
            d.get("_source")
                .filter(|s| s.contains("git fetch failed"))
                .cloned()
        },
    )
    .await;
    assert!(
        st.contains(&format!("git://127.0.0.1:{port}/repo.git")),
        "{st}"
    );
    assert!(secrets.get_opt("owned").await.unwrap().is_some());
    daemon = Some(Daemon::start(&base, port));
    wait_for("error cleared", Duration::from_secs(15), async || {
        let d = status(&cms).await;
        d.get("_source")
            .filter(|s| s.contains("\"error\":null"))
            .cloned()
    })
    .await;

    // 4. Force-push of a history without the applied commit (and without owned.yaml): refused.
    git(&work, &["checkout", "-q", "-b", "rewrite", &sha1]);
    std::fs::remove_file(tree.join("owned.yaml")).unwrap();
    commit_all(&work, "rewritten");
    let st = wait_for("force-push refused", Duration::from_secs(15), async || {
        let d = status(&cms).await;
        d.get("_source")
            .filter(|s| s.contains("force-push"))
            .cloned()
    })
    .await;
    assert!(st.contains(&sha2), "{st}");
    tokio::time::sleep(interval * 2).await;
    assert!(
        secrets.get_opt("owned").await.unwrap().is_some(),
        "force-push must not prune"
    );
    // Back to the applied history.
    git(&work, &["checkout", "-q", "-f", "main"]);
    git(&work, &["reset", "-q", "--hard", &sha2]);
    git(&work, &["push", "-q", "-f", "origin", "HEAD:main"]);
    wait_for(
        "error cleared after restoring history",
        Duration::from_secs(15),
        async || {
            let d = status(&cms).await;
            d.get("_source")
                .filter(|s| s.contains("\"error\":null"))
                .cloned()
        },
    )
    .await;

    // 5. Unparsable manifest in the same commit that removes three ExternalSecrets: nothing
    //    is applied or pruned.
    std::fs::remove_file(tree.join("owned.yaml")).unwrap();
    std::fs::remove_file(tree.join("orph.yaml")).unwrap();
    std::fs::remove_file(tree.join("merger.yaml")).unwrap();
    std::fs::write(tree.join("broken.yaml"), "kind: [unclosed\n").unwrap();
    commit_all(&work, "broken");
    let st = wait_for("manifest error", Duration::from_secs(15), async || {
        let d = status(&cms).await;
        d.get("_source")
            .filter(|s| s.contains("broken.yaml"))
            .cloned()
    })
    .await;
    assert!(st.contains("cannot be parsed"), "{st}");
    tokio::time::sleep(interval * 2).await;
    assert!(
        secrets.get_opt("owned").await.unwrap().is_some(),
        "bad tree must not prune"
    );
    assert!(data(&secrets.get("shared").await.unwrap()).contains_key("ours"));

    // 6. Fixed: Owner deleted, Orphan kept (released), Merge keys removed, others untouched.
    std::fs::remove_file(tree.join("broken.yaml")).unwrap();
    commit_all(&work, "fixed");
    wait_for("owned pruned", Duration::from_secs(15), async || {
        secrets
            .get_opt("owned")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let orph = wait_for("orph released", Duration::from_secs(10), async || {
        let s = secrets.get("orph").await.unwrap();
        ann(&s, "refsync.io/source").is_none().then_some(s)
    })
    .await;
    assert_eq!(data(&orph)["password"], b"v2", "Orphan keeps its data");
    let shared = wait_for("merge keys removed", Duration::from_secs(10), async || {
        let s = secrets.get("shared").await.unwrap();
        (!data(&s).contains_key("ours")).then_some(s)
    })
    .await;
    assert_eq!(data(&shared)["keep"], b"theirs");
    assert!(secrets.get_opt("foreign").await.unwrap().is_some());

    // No value anywhere in the status or metrics.
    let st = format!("{:?}", status(&cms).await);
    assert!(!st.contains("v2") && !st.contains(CANARY), "{st}");
    assert!(!ctx.metrics.encode().contains("\"v2\""));
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn dir_source_rereads_a_changed_file() {
    let env = KubeEnv::shared().await;
    let client = env.client().await;
    let ns = env.create_namespace("dirsrc").await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_path_buf();
    std::fs::write(root.join("store.yaml"), store("d1")).unwrap();
    std::fs::write(root.join("es.yaml"), es("app", "Owner", "app", "token")).unwrap();
    let ctx = context(&client);
    // A long rescan: only the inotify watch can notice the change in time.
    let _running = start(
        ctx,
        TreeSource::Dir(DirSource::new(
            root.clone(),
            ns.clone(),
            Duration::from_secs(600),
        )),
        ManifestOptions {
            source_name: format!("e2e-dir-{ns}"),
            status_config_map: None,
        },
    );
    wait_for("Secret app", Duration::from_secs(30), async || {
        secrets
            .get_opt("app")
            .await
            .unwrap()
            .filter(|s| data(s)["token"] == b"d1")
    })
    .await;
    // Change the target's key: the reconciler sees the file change, not the refresh.
    std::fs::write(root.join("es.yaml"), es("app", "Owner", "app", "token2")).unwrap();
    let s = wait_for("Secret app re-read", Duration::from_secs(10), async || {
        secrets
            .get_opt("app")
            .await
            .unwrap()
            .filter(|s| data(s).contains_key("token2"))
    })
    .await;
    assert!(!data(&s).contains_key("token"), "old key removed");
    assert_eq!(ann(&s, "refsync.io/source-file"), Some("es.yaml"));
    assert_eq!(ann(&s, "refsync.io/source-commit"), None);
}
