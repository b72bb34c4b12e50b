//! The Helm chart (`deploy/helm/refsync`) against the real kube-apiserver: `helm template`
//! renders it, its CRDs, ServiceAccount and RBAC are applied (the Deployments and Services are
//! not: there is no kubelet here), and `refsync controller` runs with exactly the chart's
//! Deployment arguments, authenticated as the chart's ServiceAccount (a TokenRequest token), through a
//! full sync: SecretStore and ClusterSecretStore validated, Secrets written, renamed (the old
//! one deleted), templated from a ConfigMap, Events recorded, the leader Lease held — with no
//! `forbidden` anywhere in its log. That proves the RBAC is enough.
//!
//! That it is no more than enough: SubjectAccessReviews of the ServiceAccount for what it
//! must and must not be allowed, and real requests refused with 403 (a Secret in a namespace
//! outside the namespaced install's scope; deleting a namespace or touching pods in the cluster
//! install).
//!
//! The chart's CRDs are also compared with `refsync_api::crds_yaml()` so they cannot drift.

mod controller_es_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use controller_es_support as es;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource};
use refsync_api::{ClusterExternalSecret, ClusterSecretStore, SecretStore};
use refsync_e2e::ControllerProcess;
use refsync_testenv::KubeEnv;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const MANAGER: &str = "refsync-e2e-helm";

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/refsync")
}

/// The Helm binary installed by `tests/servers/install.sh` (`$REFSYNC_HELM` overrides).
fn helm_bin() -> PathBuf {
    let path = std::env::var_os("REFSYNC_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| refsync_testenv::bins::cache_dir().join("bin/helm-v3.22.0"));
    assert!(
        path.is_file(),
        "helm not found at {} (override with $REFSYNC_HELM); run `tests/servers/install.sh` \
         (or `tests/run`, which runs it) to build it",
        path.display()
    );
    path
}

/// `helm template <release> deploy/helm/refsync --namespace <ns> --include-crds --set …`, as
/// JSON documents.
fn helm_template(release: &str, namespace: &str, sets: &[String]) -> Vec<Value> {
    let mut cmd = Command::new(helm_bin());
    cmd.args(["template", release]).arg(chart_dir()).args([
        "--namespace",
        namespace,
        "--include-crds",
    ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm template");
    let stdout = String::from_utf8(out.stdout).expect("helm output is UTF-8");
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&stdout).expect("parse helm output");
    docs.into_iter().filter(|d| d.is_object()).collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// Server-side applies `doc` as a `K` (namespaced by its metadata when it names a namespace).
async fn apply_doc<K>(client: &Client, doc: &Value)
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    // Parsing as the typed object first: a chart typo fails here with the field named.
    serde_json::from_value::<K>(doc.clone())
        .unwrap_or_else(|e| panic!("{} {} does not parse: {e}", kind(doc), name(doc)));
    let ar = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        name(doc),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(doc),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {} {}: {e}", kind(doc), name(doc)));
}

/// Applies the CRDs (waiting until they are Established), the ServiceAccounts and the RBAC of
/// the rendered chart; returns the kinds it skipped (workloads, Services, webhook config).
async fn apply_chart(client: &Client, docs: &[Value]) -> Vec<String> {
    let mut skipped = Vec::new();
    for doc in docs {
        match kind(doc) {
            "CustomResourceDefinition" => apply_doc::<CustomResourceDefinition>(client, doc).await,
            "ServiceAccount" => apply_doc::<ServiceAccount>(client, doc).await,
            "ClusterRole" => apply_doc::<ClusterRole>(client, doc).await,
            "ClusterRoleBinding" => apply_doc::<ClusterRoleBinding>(client, doc).await,
            "Role" => apply_doc::<Role>(client, doc).await,
            "RoleBinding" => apply_doc::<RoleBinding>(client, doc).await,
            other => skipped.push(format!("{other}/{}", name(doc))),
        }
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in docs
        .iter()
        .filter(|d| kind(d) == "CustomResourceDefinition")
    {
        es::wait_for(
            &format!("CRD {} Established", name(doc)),
            Duration::from_secs(30),
            || async {
                let crd = crds.get(name(doc)).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
    skipped
}

/// The container args of the rendered controller Deployment.
fn controller_args(docs: &[Value], fullname: &str) -> Vec<String> {
    let deploy = docs
        .iter()
        .find(|d| kind(d) == "Deployment" && name(d) == fullname)
        .unwrap_or_else(|| panic!("no Deployment {fullname} in the rendered chart"));
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "controller");
    container["args"]
        .as_array()
        .expect("controller args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// A kubeconfig for the chart's ServiceAccount: the test apiserver's address and CA with a
/// TokenRequest token (what a pod would get through its projected token).
async fn service_account_kubeconfig(admin: &Client, ns: &str, sa: &str) -> Kubeconfig {
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_token_request(sa, &PostParams::default(), &req)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa}: {e}"))
        .status
        .expect("token status")
        .token;
    let mut kc = serde_json::to_value(KubeEnv::shared().await.kubeconfig()).unwrap();
    kc["users"][0]["user"] = json!({ "token": token });
    serde_json::from_value(kc).unwrap()
}

async fn client_for(kc: &Kubeconfig) -> Client {
    let config = kube::Config::from_custom_kubeconfig(kc.clone(), &KubeConfigOptions::default())
        .await
        .expect("ServiceAccount kube config");
    Client::try_from(config).expect("ServiceAccount client")
}

/// `refsync controller` (or `refsync webhook`: the subcommand is the first chart argument) as
/// the chart's ServiceAccount with the chart's arguments (HTTP addresses moved to a free local
/// port).
fn start_as_chart(
    kubeconfig: &Kubeconfig,
    chart_args: &[String],
    pod_ns: &str,
) -> ControllerProcess {
    let args = chart_args
        .iter()
        .filter(|a| !a.starts_with("--metrics-addr") && !a.starts_with("--health-addr"));
    ControllerProcess::builder("refsync-helm-0")
        .command(args)
        .kubeconfig_of(kubeconfig)
        .log_level(None)
        .env("POD_NAMESPACE", pod_ns)
        .start()
}

/// Fails if the apiserver refused any of the process's requests.
fn assert_never_forbidden(ctl: &ControllerProcess) {
    let log = ctl.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("forbidden") || l.contains("403")
        })
        .collect();
    assert!(
        refused.is_empty(),
        "the apiserver refused requests of the chart's ServiceAccount:\n{}",
        refused.join("\n")
    );
}

/// One SubjectAccessReview: may `user` do `verb` on `resource` (`resource/subresource`) of
/// `group` in `namespace` ("" = cluster-wide), optionally on object `name`?
async fn allowed(
    admin: &Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                name: (!name.is_empty()).then(|| name.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// `(verb, group, resource, namespace, name, expected)` rows checked by SubjectAccessReview.
type Access<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, bool);

async fn assert_access(admin: &Client, user: &str, rows: &[Access<'_>]) {
    let mut wrong = Vec::new();
    for &(verb, group, resource, ns, name, want) in rows {
        let got = allowed(admin, user, verb, group, resource, ns, name).await;
        if got != want {
            wrong.push(format!(
                "{verb} {group}/{resource} ns={ns:?} name={name:?}: allowed={got}, expected {want}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{user}:\n{}", wrong.join("\n"));
}

fn assert_forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) {
    match r {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

async fn wait_store_ready<K>(api: &Api<K>, name: &str, ctl: &ControllerProcess)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Serialize,
{
    es::wait_for(
        &format!("store {name} Ready (log:\n{})", ctl.log()),
        Duration::from_secs(30),
        || async {
            let v = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            v["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(())
        },
    )
    .await;
}

async fn wait_lease(client: &Client, ns: &str, lease: &str, ctl: &ControllerProcess) {
    es::wait_for(
        &format!(
            "Lease {ns}/{lease} held by refsync-helm-0 (log:\n{})",
            ctl.log()
        ),
        Duration::from_secs(30),
        || async {
            let l = Api::<Lease>::namespaced(client.clone(), ns)
                .get_opt(lease)
                .await
                .ok()??;
            l.spec?
                .holder_identity?
                .starts_with("refsync-helm-0-")
                .then_some(())
        },
    )
    .await;
}

/// Waits until Secret `ns/name` has `key` = `value`; on timeout shows the ExternalSecrets'
/// statuses and the controller's log.
async fn wait_secret(
    admin: &Client,
    ns: &str,
    name: &str,
    key: &str,
    value: &str,
    ctl: &ControllerProcess,
) -> Secret {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = es::get_secret(admin, ns, name).await
            && es::data(&s, key).as_deref() == Some(value)
        {
            return s;
        }
        if Instant::now() > deadline {
            let statuses: Vec<_> =
                Api::<refsync_api::ExternalSecret>::namespaced(admin.clone(), ns)
                    .list(&ListParams::default())
                    .await
                    .map(|l| {
                        l.items
                            .into_iter()
                            .map(|e| (e.metadata.name, e.status))
                            .collect()
                    })
                    .unwrap_or_default();
            panic!(
                "timed out waiting for Secret {ns}/{name} {key}={value}; statuses: {statuses:#?}\ncontroller log:\n{}",
                ctl.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sa_user(ns: &str, sa: &str) -> String {
    format!("system:serviceaccount:{ns}:{sa}")
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let path = chart_dir().join("crds/refsync-crds.yaml");
    let chart =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        chart == refsync_api::crds_yaml(),
        "deploy/helm/refsync/crds/refsync-crds.yaml drifted from the types: run \
         `refsync crds > deploy/helm/refsync/crds/refsync-crds.yaml`"
    );
}

/// Cluster-wide install: the controller syncs with the chart's ClusterRole; the ServiceAccount
/// can do nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_install_rbac_is_enough_and_no_more() {
    let env = KubeEnv::shared().await;
    let admin = env.client().await;
    let release_ns = es::namespace("helm-rel").await;
    let app = es::namespace("helm-app").await;
    let release = refsync_testenv::unique_name("rc");
    let fullname = format!("{release}-refsync");
    let class = format!("{release}-class");

    let docs = helm_template(
        &release,
        &release_ns,
        &[
            format!("controllerClass={class}"),
            "concurrency=4".into(),
            "log.level=info\\,kube=warn".into(),
        ],
    );
    let skipped = apply_chart(&admin, &docs).await;
    for k in ["Deployment/", "Service/", "ValidatingWebhookConfiguration/"] {
        assert!(
            skipped.iter().any(|s| s.starts_with(k)),
            "the chart renders no {k}: {skipped:?}"
        );
    }
    let kinds: Vec<&str> = docs.iter().map(kind).collect();
    assert!(kinds.contains(&"ClusterRole") && kinds.contains(&"ClusterRoleBinding"));

    // The objects the controller works with (created by the admin, as a user would).
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "tmpl", "namespace": app},
        "data": {"dsn": "postgres://app:{{ .password }}@db"}
    });
    es::apply::<ConfigMap>(&admin, cm).await;
    es::apply::<SecretStore>(
        &admin,
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "fake", "namespace": app},
            "spec": {"controller": class, "provider": {"fake": {"data": [
                {"key": "db-pass", "value": "s3cret"}
            ]}}}
        }),
    )
    .await;
    let css_name = format!("{release}-css");
    let test_namespaces: serde_json::Map<String, Value> = [(
        refsync_testenv::kube_env::NAMESPACE_LABEL.to_string(),
        json!("true"),
    )]
    .into_iter()
    .collect();
    Api::<ClusterSecretStore>::all(admin.clone())
        .patch(
            &css_name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
                "metadata": {"name": css_name},
                "spec": {
                    "controller": class,
                    "conditions": [{"namespaceSelector": {"matchLabels": test_namespaces}}],
                    "provider": {"fake": {"data": [{"key": "api-key", "value": "k-123"}]}}
                }
            })),
        )
        .await
        .expect("apply ClusterSecretStore");
    es::external_secret(
        &admin,
        &app,
        "db",
        json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "SecretStore", "name": "fake"},
            "target": {"name": "db-v1", "template": {"templateFrom": [
                {"configMap": {"name": "tmpl", "items": [{"key": "dsn"}]}}
            ]}},
            "data": [{"secretKey": "password", "remoteRef": {"key": "db-pass"}}]
        }),
    )
    .await;
    es::external_secret(
        &admin,
        &app,
        "api",
        json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": css_name},
            "target": {"name": "api"},
            "data": [{"secretKey": "key", "remoteRef": {"key": "api-key"}}]
        }),
    )
    .await;

    // The controller, as the chart's ServiceAccount with the chart's arguments.
    let sa = fullname.clone();
    let kc = service_account_kubeconfig(&admin, &release_ns, &sa).await;
    let args = controller_args(&docs, &fullname);
    assert!(args.contains(&format!("--controller-class={class}")));
    assert!(args.contains(&format!("--leader-election-namespace={release_ns}")));
    // Built (or found) first: the timing below is the controller's, not the build's.
    refsync_e2e::refsync_bin();
    let t0 = Instant::now();
    let ctl = start_as_chart(&kc, &args, &release_ns);

    wait_lease(&admin, &release_ns, "refsync-controller", &ctl).await;
    wait_store_ready(
        &Api::<SecretStore>::namespaced(admin.clone(), &app),
        "fake",
        &ctl,
    )
    .await;
    wait_store_ready(
        &Api::<ClusterSecretStore>::all(admin.clone()),
        &css_name,
        &ctl,
    )
    .await;
    let s = wait_secret(
        &admin,
        &app,
        "db-v1",
        "dsn",
        "postgres://app:s3cret@db",
        &ctl,
    )
    .await;
    assert_eq!(
        es::data(&s, "dsn").as_deref(),
        Some("postgres://app:s3cret@db")
    );
    wait_secret(&admin, &app, "api", "key", "k-123", &ctl).await;
    es::wait_reason(&admin, &app, "db", "SecretSynced").await;
    es::wait_reason(&admin, &app, "api", "SecretSynced").await;
    let synced = t0.elapsed();
    assert!(
        es::events(&admin, &app, "db")
            .await
            .iter()
            .any(|(_, reason, _)| reason == "Created"),
        "no Created Event for ExternalSecret db"
    );

    // A target rename (creationPolicy Owner) deletes the old Secret: the delete verb.
    es::external_secret(
        &admin,
        &app,
        "db",
        json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "SecretStore", "name": "fake"},
            "target": {"name": "db-v2", "template": {"templateFrom": [
                {"configMap": {"name": "tmpl", "items": [{"key": "dsn"}]}}
            ]}},
            "data": [{"secretKey": "password", "remoteRef": {"key": "db-pass"}}]
        }),
    )
    .await;
    wait_secret(
        &admin,
        &app,
        "db-v2",
        "dsn",
        "postgres://app:s3cret@db",
        &ctl,
    )
    .await;
    es::wait_for(
        "old target Secret db-v1 deleted",
        Duration::from_secs(30),
        || async {
            es::get_secret(&admin, &app, "db-v1")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    // A ClusterExternalSecret fans out into the namespace, then its deletion (finalizer)
    // removes the ExternalSecret it created.
    let ces_name = format!("{release}-ces");
    let ces_api = Api::<ClusterExternalSecret>::all(admin.clone());
    ces_api
        .patch(
            &ces_name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret",
                "metadata": {"name": ces_name},
                "spec": {
                    "externalSecretName": "fan",
                    "namespaces": [app],
                    "refreshTime": "1h",
                    "externalSecretSpec": {
                        "refreshInterval": "1h",
                        "secretStoreRef": {"kind": "SecretStore", "name": "fake"},
                        "target": {"name": "fan"},
                        "data": [{"secretKey": "password", "remoteRef": {"key": "db-pass"}}]
                    }
                }
            })),
        )
        .await
        .expect("apply ClusterExternalSecret");
    wait_secret(&admin, &app, "fan", "password", "s3cret", &ctl).await;
    es::wait_for(
        &format!("ClusterExternalSecret {ces_name} provisioned {app}"),
        Duration::from_secs(30),
        || async {
            let st = ces_api.get(&ces_name).await.ok()?.status?;
            (st.provisioned_namespaces == vec![app.clone()]).then_some(())
        },
    )
    .await;
    ces_api
        .delete(&ces_name, &DeleteParams::default())
        .await
        .expect("delete ClusterExternalSecret");
    es::wait_for(
        "the ClusterExternalSecret and its ExternalSecret gone",
        Duration::from_secs(30),
        || async {
            let ces_gone = ces_api.get_opt(&ces_name).await.ok()?.is_none();
            let es_gone = Api::<refsync_api::ExternalSecret>::namespaced(admin.clone(), &app)
                .get_opt("fan")
                .await
                .ok()?
                .is_none();
            (ces_gone && es_gone).then_some(())
        },
    )
    .await;

    assert_never_forbidden(&ctl);
    eprintln!(
        "cluster install: full sync as the chart's ServiceAccount in {:.1?}",
        synced
    );

    // No more than enough.
    let user = sa_user(&release_ns, &sa);
    let g = "external-secrets.io";
    let c = "coordination.k8s.io";
    let rbac = "rbac.authorization.k8s.io";
    let ev = "events.k8s.io";
    let other = "kube-system";
    #[rustfmt::skip]
    let rows: &[Access] = &[
        ("list", g, "externalsecrets", "", "", true),
        ("watch", g, "secretstores", "", "", true),
        ("watch", g, "clustersecretstores", "", "", true),
        ("patch", g, "externalsecrets/status", &app, "db", true),
        ("patch", g, "clustersecretstores/status", "", &css_name, true),
        ("list", "", "secrets", "", "", true),
        ("watch", "", "secrets", "", "", true),
        ("get", "", "secrets", other, "x", true),
        ("patch", "", "secrets", &app, "x", true),
        ("delete", "", "secrets", &app, "x", true),
        ("get", "", "configmaps", &app, "tmpl", true),
        ("create", "", "serviceaccounts/token", &app, "x", true),
        ("get", "", "namespaces", "", &app, true),
        ("create", ev, "events", &app, "", true),
        ("patch", ev, "events", &app, "e", true),
        ("create", c, "leases", &release_ns, "", true),
        ("get", c, "leases", &release_ns, "refsync-controller", true),
        ("patch", c, "leases", &release_ns, "refsync-controller", true),
        ("patch", g, "externalsecrets", &app, "db", true),
        ("create", g, "externalsecrets", &app, "", true),
        ("delete", g, "externalsecrets", &app, "db", true),
        ("watch", g, "clusterexternalsecrets", "", "", true),
        ("patch", g, "clusterexternalsecrets", "", "x", true),
        ("patch", g, "clusterexternalsecrets/status", "", "x", true),
        ("watch", "", "namespaces", "", "", true),
        ("patch", "", "namespaces", "", &app, true),
        // Not granted.
        ("create", g, "secretstores", &app, "", false),
        ("delete", g, "secretstores", &app, "fake", false),
        ("patch", g, "secretstores", &app, "fake", false),
        ("delete", g, "clusterexternalsecrets", "", "x", false),
        ("create", g, "clustersecretstores", "", "", false),
        ("update", "", "namespaces", "", &app, false),
        ("create", "", "namespaces", "", "", false),
        ("update", "", "secrets", &app, "x", false),
        ("deletecollection", "", "secrets", &app, "", false),
        ("list", "", "configmaps", &app, "", false),
        ("patch", "", "configmaps", &app, "tmpl", false),
        ("get", "", "serviceaccounts", &app, "x", false),
        ("delete", "", "namespaces", "", &app, false),
        ("list", "", "pods", &app, "", false),
        ("create", "", "pods", &app, "", false),
        ("delete", ev, "events", &app, "e", false),
        ("create", "", "events", &app, "", false),
        ("get", c, "leases", &release_ns, "someone-else", false),
        ("patch", c, "leases", &release_ns, "someone-else", false),
        ("create", c, "leases", &app, "", false),
        ("delete", c, "leases", &release_ns, "refsync-controller", false),
        ("create", rbac, "clusterroles", "", "", false),
        ("bind", rbac, "clusterroles", "", "cluster-admin", false),
        ("impersonate", "", "users", "", "admin", false),
    ];
    assert_access(&admin, &user, rows).await;

    // And real requests as the ServiceAccount are refused.
    let sa_client = client_for(&kc).await;
    assert_forbidden(
        "delete a namespace",
        Api::<Namespace>::all(sa_client.clone())
            .delete(&app, &DeleteParams::default())
            .await,
    );
    assert_forbidden(
        "list pods",
        Api::<Pod>::namespaced(sa_client.clone(), &app)
            .list(&ListParams::default())
            .await,
    );
    assert_forbidden(
        "list ConfigMaps",
        Api::<ConfigMap>::namespaced(sa_client.clone(), &app)
            .list(&ListParams::default())
            .await,
    );
    drop(ctl);
}

/// Namespaced install (`scope.namespace`): Role and RoleBinding in the watched namespace; the
/// controller syncs there and cannot read a Secret anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_install_rbac_is_enough_and_no_more() {
    let env = KubeEnv::shared().await;
    let admin = env.client().await;
    let release_ns = es::namespace("helm-nsrel").await;
    let app = es::namespace("helm-scope").await;
    let other = es::namespace("helm-other").await;
    let release = refsync_testenv::unique_name("rn");
    let fullname = format!("{release}-refsync");
    let class = format!("{release}-class");

    let docs = helm_template(
        &release,
        &release_ns,
        &[
            format!("scope.namespace={app}"),
            format!("controllerClass={class}"),
            "onlyClassedStores=true".into(),
            "leaderElection.leaseName=refsync-scoped".into(),
            "log.level=info\\,kube=warn".into(),
        ],
    );
    apply_chart(&admin, &docs).await;
    let bound: Vec<(String, String)> = docs
        .iter()
        .filter(|d| matches!(kind(d), "Role" | "RoleBinding" | "ClusterRole"))
        .map(|d| {
            (
                format!("{}/{}", kind(d), name(d)),
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert!(
        bound.contains(&(format!("Role/{fullname}-controller"), app.clone())),
        "the controller Role is not in the scoped namespace: {bound:?}"
    );
    assert!(
        !bound.contains(&(format!("ClusterRole/{fullname}-controller"), String::new())),
        "a namespaced install renders the cluster-wide ClusterRole: {bound:?}"
    );

    let secret_in_other = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "not-yours", "namespace": other},
        "stringData": {"k": "v"}
    });
    es::apply::<Secret>(&admin, secret_in_other).await;
    es::apply::<SecretStore>(
        &admin,
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
            "metadata": {"name": "fake", "namespace": app},
            "spec": {"controller": class, "provider": {"fake": {"data": [
                {"key": "token", "value": "t-42"}
            ]}}}
        }),
    )
    .await;
    es::external_secret(
        &admin,
        &app,
        "tok",
        json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"kind": "SecretStore", "name": "fake"},
            "target": {"name": "tok"},
            "data": [{"secretKey": "token", "remoteRef": {"key": "token"}}]
        }),
    )
    .await;

    let sa = fullname.clone();
    let kc = service_account_kubeconfig(&admin, &release_ns, &sa).await;
    let args = controller_args(&docs, &fullname);
    assert!(args.contains(&format!("--namespace={app}")));
    assert!(args.contains(&"--only-classed-stores".to_string()));
    // Built (or found) first: the timing below is the controller's, not the build's.
    refsync_e2e::refsync_bin();
    let t0 = Instant::now();
    let ctl = start_as_chart(&kc, &args, &release_ns);
    wait_lease(&admin, &release_ns, "refsync-scoped", &ctl).await;
    wait_store_ready(
        &Api::<SecretStore>::namespaced(admin.clone(), &app),
        "fake",
        &ctl,
    )
    .await;
    wait_secret(&admin, &app, "tok", "token", "t-42", &ctl).await;
    es::wait_reason(&admin, &app, "tok", "SecretSynced").await;
    let synced = t0.elapsed();
    assert_never_forbidden(&ctl);
    eprintln!(
        "namespaced install: full sync as the chart's ServiceAccount in {:.1?}",
        synced
    );

    let user = sa_user(&release_ns, &sa);
    let g = "external-secrets.io";
    let ev = "events.k8s.io";
    #[rustfmt::skip]
    let rows: &[Access] = &[
        ("list", g, "externalsecrets", &app, "", true),
        ("watch", "", "secrets", &app, "", true),
        ("get", "", "secrets", &app, "x", true),
        ("patch", "", "secrets", &app, "x", true),
        ("delete", "", "secrets", &app, "x", true),
        ("watch", g, "clustersecretstores", "", "", true),
        ("patch", g, "clustersecretstores/status", "", "x", true),
        ("get", "", "namespaces", "", &app, true),
        ("create", ev, "events", &app, "", true),
        ("create", ev, "events", "default", "", true),
        // Outside the scope.
        ("list", "", "secrets", "", "", false),
        ("get", "", "secrets", &other, "not-yours", false),
        ("patch", "", "secrets", &other, "x", false),
        ("list", g, "externalsecrets", "", "", false),
        ("list", g, "externalsecrets", &other, "", false),
        ("get", "", "configmaps", &other, "x", false),
        ("get", "", "namespaces", "", &other, false),
        ("list", "", "namespaces", "", "", false),
        ("create", ev, "events", &other, "", false),
        ("create", "", "serviceaccounts/token", &other, "x", false),
        // No ClusterExternalSecret fan-out under --namespace.
        ("list", g, "clusterexternalsecrets", "", "", false),
        ("create", g, "externalsecrets", &app, "", false),
        ("patch", "", "namespaces", "", &app, false),
    ];
    assert_access(&admin, &user, rows).await;

    let sa_client = client_for(&kc).await;
    assert_forbidden(
        "read a Secret outside scope.namespace",
        Api::<Secret>::namespaced(sa_client.clone(), &other)
            .get("not-yours")
            .await,
    );
    assert_forbidden(
        "list Secrets cluster-wide",
        Api::<Secret>::all(sa_client.clone())
            .list(&ListParams::default())
            .await,
    );
    // Inside the scope the same ServiceAccount reads fine.
    Api::<Secret>::namespaced(sa_client, &app)
        .get("tok")
        .await
        .expect("the ServiceAccount reads a Secret in its namespace");
    drop(ctl);
}

/// The webhook's self-managed certificate with the chart's webhook ServiceAccount: `refsync
/// webhook` (the chart's arguments) creates its certificate Secret and injects the CA into the
/// chart's ValidatingWebhookConfiguration, refused nothing; the ServiceAccount can touch no
/// other Secret or webhook configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_self_managed_certificate_rbac() {
    let env = KubeEnv::shared().await;
    let admin = env.client().await;
    let release_ns = es::namespace("helm-wh").await;
    let release = refsync_testenv::unique_name("rw");
    let fullname = format!("{release}-refsync");
    let webhook = format!("{fullname}-webhook");
    let cert_secret = format!("{fullname}-webhook-cert");

    let mut docs = helm_template(&release, &release_ns, &["log.level=info".into()]);
    // The configuration points at a Service no kubelet backs here: it is applied with an
    // object selector nothing matches, so no other test's writes are sent to it. What is
    // checked is the caBundle the webhook writes into it.
    for d in docs
        .iter_mut()
        .filter(|d| kind(d) == "ValidatingWebhookConfiguration")
    {
        for w in d["webhooks"].as_array_mut().expect("webhooks") {
            w["objectSelector"] = json!({"matchLabels": {"refsync.dev/helm-e2e": "never"}});
        }
    }
    apply_chart(&admin, &docs).await;
    let vwc = docs
        .iter()
        .find(|d| kind(d) == "ValidatingWebhookConfiguration")
        .expect("the chart renders a ValidatingWebhookConfiguration");
    assert_eq!(name(vwc), webhook);
    let ar = ApiResource::erase::<
        k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    >(&());
    let vwc_api: Api<DynamicObject> = Api::all_with(admin.clone(), &ar);
    vwc_api
        .patch(
            &webhook,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(vwc),
        )
        .await
        .expect("apply the ValidatingWebhookConfiguration");

    let deploy = docs
        .iter()
        .find(|d| kind(d) == "Deployment" && name(d) == webhook)
        .expect("webhook Deployment");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    let https = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut args: Vec<String> = container["args"]
        .as_array()
        .expect("webhook args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .filter(|a| {
            !a.starts_with("--port")
                && !a.starts_with("--metrics-addr")
                && !a.starts_with("--health-addr")
        })
        .collect();
    assert!(args.contains(&"--cert-mode=self".to_string()), "{args:?}");
    assert!(
        args.contains(&format!("--cert-secret={cert_secret}")),
        "{args:?}"
    );
    assert!(
        args.contains(&format!("--webhook-config-name={webhook}")),
        "{args:?}"
    );
    args.extend([format!("--port={https}"), "--bind=127.0.0.1".into()]);

    let kc = service_account_kubeconfig(&admin, &release_ns, &webhook).await;
    let ctl = start_as_chart(&kc, &args, &release_ns);
    es::wait_for(
        &format!("caBundle injected into {webhook} (log:\n{})", ctl.log()),
        Duration::from_secs(30),
        || async {
            let o = vwc_api.get(&webhook).await.ok()?;
            let hooks = o.data["webhooks"].as_array()?.clone();
            (hooks.len() == 4
                && hooks.iter().all(|w| {
                    w["clientConfig"]["caBundle"]
                        .as_str()
                        .is_some_and(|b| !b.is_empty())
                }))
            .then_some(())
        },
    )
    .await;
    let secret = es::get_secret(&admin, &release_ns, &cert_secret)
        .await
        .expect("the webhook's certificate Secret");
    assert!(es::data(&secret, "tls.crt").is_some_and(|c| c.contains("BEGIN CERTIFICATE")));
    let t0 = Instant::now();
    loop {
        let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", ctl.port)).await;
        if r.as_ref().is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "webhook /readyz: {r:?}; log:\n{}",
            ctl.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_never_forbidden(&ctl);

    let user = sa_user(&release_ns, &webhook);
    let a = "admissionregistration.k8s.io";
    #[rustfmt::skip]
    let rows: &[Access] = &[
        ("get", a, "validatingwebhookconfigurations", "", &webhook, true),
        ("watch", a, "validatingwebhookconfigurations", "", &webhook, true),
        ("patch", a, "validatingwebhookconfigurations", "", &webhook, true),
        ("create", "", "secrets", &release_ns, "", true),
        ("get", "", "secrets", &release_ns, &cert_secret, true),
        ("update", "", "secrets", &release_ns, &cert_secret, true),
        // Nothing else.
        ("patch", a, "validatingwebhookconfigurations", "", "someone-else", false),
        ("list", a, "validatingwebhookconfigurations", "", "", false),
        ("patch", a, "mutatingwebhookconfigurations", "", &webhook, false),
        ("delete", a, "validatingwebhookconfigurations", "", &webhook, false),
        ("get", "", "secrets", &release_ns, "other", false),
        ("list", "", "secrets", &release_ns, "", false),
        ("delete", "", "secrets", &release_ns, &cert_secret, false),
        ("get", "", "secrets", "default", &cert_secret, false),
        ("list", "external-secrets.io", "externalsecrets", "", "", false),
    ];
    assert_access(&admin, &user, rows).await;
    drop(ctl);
}
