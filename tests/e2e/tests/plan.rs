//! `refsync plan` as CI runs it, against the real kube-apiserver of refsync-testenv: exact
//! output and exit codes 2 (changes), 0 (none), 1 (errors); values never printed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use refsync_controller::context::{Config, Context};
use refsync_controller::metrics::Metrics;
use refsync_controller::reconcile::manifests::{self, ManifestOptions};
use refsync_controller::source::watch::{DirSource, TreeSource};
use refsync_core::ProviderRegistry;
use refsync_core::engine::Engine;
use refsync_core::fetch::Fetcher;
use refsync_core::hash::data_hash;
use refsync_testenv::KubeEnv;

const CANARY: &str = "canary-plan-password-do-not-print";

fn store(password: &str) -> String {
    format!(
        r#"apiVersion: external-secrets.io/v1
kind: SecretStore
metadata: {{name: fake}}
spec:
  provider:
    fake:
      data:
        - {{key: /db, value: '{{"username":"shop","password":"{password}"}}'}}
        - {{key: /token, value: tok-1}}
"#
    )
}

const DB: &str = r#"apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: db}
spec:
  secretStoreRef: {name: fake}
  data:
    - {secretKey: username, remoteRef: {key: /db, property: username}}
    - {secretKey: password, remoteRef: {key: /db, property: password}}
"#;

const API: &str = r#"apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: api}
spec:
  secretStoreRef: {name: fake}
  target: {name: api-token}
  data:
    - {secretKey: token, remoteRef: {key: /token}}
"#;

const BROKEN: &str = r#"apiVersion: external-secrets.io/v1
kind: ExternalSecret
metadata: {name: broken}
spec:
  secretStoreRef: {name: no-such-store}
  data:
    - {secretKey: x, remoteRef: {key: /db}}
"#;

struct Plan {
    code: i32,
    stdout: String,
    stderr: String,
}

fn plan(dir: &Path, kubeconfig: &Path, ns: &str) -> Plan {
    let out = Command::new(refsync_e2e::refsync_bin())
        .args(["plan", "--manifests"])
        .arg(dir)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--namespace", ns, "--source-name", &format!("plan-{ns}")])
        .output()
        .unwrap();
    Plan {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn hash(pairs: &[(&str, &str)]) -> String {
    data_hash(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .iter(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_reports_create_unchanged_update_prune_and_errors() {
    let env = KubeEnv::shared().await;
    let client = env.client().await;
    let ns = env.create_namespace("plan").await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = tmp.path().join("kubeconfig");
    env.write_kubeconfig(&kubeconfig).unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    write(
        &tree,
        &[
            ("store.yaml", &store(CANARY)),
            ("db.yaml", DB),
            ("api.yaml", API),
        ],
    );
    refsync_e2e::refsync_bin();

    // 1. Empty cluster: everything is created (exit 2).
    let p = plan(&tree, &kubeconfig, &ns);
    let db_hash = hash(&[("password", CANARY), ("username", "shop")]);
    let api_hash = hash(&[("token", "tok-1")]);
    assert_eq!(
        p.stdout,
        format!(
            "{ns}/api-token: created (keys: token) data-hash={api_hash}\n\
             {ns}/db: created (keys: password, username) data-hash={db_hash}\n\
             Plan: 2 to create, 0 to update, 0 to prune, 0 unchanged, 0 error(s).\n"
        ),
        "stderr: {}",
        p.stderr
    );
    assert_eq!(p.code, 2);

    // 2. Apply the tree with the controller's dir source, then plan again: no changes (exit 0).
    let mut registry = ProviderRegistry::new();
    registry.register(Arc::new(refsync_provider_fake::FakeFactory));
    let metrics = Arc::new(Metrics::new());
    let mut engine = Engine::new(registry, Fetcher::new(Duration::from_millis(1)));
    engine.calls = metrics.clone();
    let ctx = Arc::new(Context {
        client: client.clone(),
        engine: Arc::new(engine),
        metrics,
        config: Config::default(),
        leader: Arc::new(AtomicBool::new(true)),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let applied = tokio::spawn(manifests::run(
        ctx,
        TreeSource::Dir(DirSource::new(
            tree.clone(),
            ns.clone(),
            Duration::from_secs(600),
        )),
        ManifestOptions {
            source_name: format!("plan-{ns}"),
            status_config_map: None,
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while secrets.get_opt("db").await.unwrap().is_none()
        || secrets.get_opt("api-token").await.unwrap().is_none()
    {
        assert!(
            Instant::now() < deadline,
            "controller did not write the Secrets"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    let _ = applied.await;
    let p = plan(&tree, &kubeconfig, &ns);
    assert_eq!(
        p.stdout,
        format!(
            "{ns}/api-token: unchanged\n\
             {ns}/db: unchanged\n\
             Plan: 0 to create, 0 to update, 0 to prune, 2 unchanged, 0 error(s).\n"
        ),
        "stderr: {}",
        p.stderr
    );
    assert_eq!(p.code, 0);

    // 3. A pull request changes the password and removes `api`: update (which key) and prune.
    write(&tree, &[("store.yaml", &store("rotated")), ("db.yaml", DB)]);
    let p = plan(&tree, &kubeconfig, &ns);
    let new_hash = hash(&[("password", "rotated"), ("username", "shop")]);
    assert_eq!(
        p.stdout,
        format!(
            "{ns}/api-token: pruned (ExternalSecret api removed; creationPolicy=Owner: Secret deleted)\n\
             {ns}/db: updated (keys: password) data-hash={db_hash} -> {new_hash}\n\
             Plan: 0 to create, 1 to update, 1 to prune, 0 unchanged, 0 error(s).\n"
        ),
        "stderr: {}",
        p.stderr
    );
    assert_eq!(p.code, 2);
    assert!(!p.stdout.contains("rotated") && !p.stdout.contains(CANARY));
    // plan wrote nothing.
    assert!(secrets.get_opt("api-token").await.unwrap().is_some());

    // 4. Errors win over changes: a missing store and an unparsable file (exit 1).
    write(
        &tree,
        &[
            ("store.yaml", &store(CANARY)),
            ("db.yaml", DB),
            ("api.yaml", API),
            ("broken.yaml", BROKEN),
            ("bad.yaml", "kind: [unclosed\n"),
        ],
    );
    let p = plan(&tree, &kubeconfig, &ns);
    assert_eq!(p.code, 1, "{}", p.stdout);
    let lines: Vec<&str> = p.stdout.lines().collect();
    assert!(
        lines[0].starts_with("error: bad.yaml (document 1): not valid YAML"),
        "{}",
        p.stdout
    );
    assert_eq!(lines[1], format!("{ns}/api-token: unchanged"));
    assert!(
        lines[2].starts_with(&format!("{ns}/broken: error: "))
            && lines[2].contains(&format!("SecretStore {ns}/no-such-store not found")),
        "{}",
        p.stdout
    );
    assert_eq!(lines[3], format!("{ns}/db: unchanged"));
    assert_eq!(
        lines[4],
        "Plan: 0 to create, 0 to update, 0 to prune, 2 unchanged, 2 error(s)."
    );
    assert!(!p.stdout.contains(CANARY) && !p.stderr.contains(CANARY));
}
