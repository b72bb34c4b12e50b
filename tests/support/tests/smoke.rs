//! Smoke tests proving that each test server is real and usable.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};
use refsync_testenv::{KubeEnv, Moto, OpenBao};

#[tokio::test]
async fn kube_apiserver_namespace_secret_list_and_watch() {
    let env = KubeEnv::shared().await;
    let client = env.client().await;

    let info = client.apiserver_version().await.expect("GET /version");
    assert_eq!(info.git_version, "v1.35.4");

    let ns = env
        .create_namespace("smoke")
        .await
        .expect("create namespace");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.get(&ns).await.expect("namespace exists");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // Start watching before creating, so that the Added event is observed.
    let mut stream = watcher::watcher(secrets.clone(), watcher::Config::default()).boxed();
    let create = async {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("smoke".into()),
                ..Default::default()
            },
            data: Some([("key".to_owned(), ByteString(b"value".to_vec()))].into()),
            ..Default::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
    };
    let watch = async {
        loop {
            match stream.try_next().await.expect("watch error") {
                Some(Event::Apply(s) | Event::InitApply(s))
                    if s.metadata.name.as_deref() == Some("smoke") =>
                {
                    return s;
                }
                Some(_) => {}
                None => panic!("watch stream ended"),
            }
        }
    };
    let (_, seen) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(create, watch)
    })
    .await
    .expect("saw the secret through the watch within 30s");
    assert_eq!(seen.data.unwrap()["key"].0, b"value");

    let listed = secrets
        .list(&ListParams::default())
        .await
        .expect("list secrets");
    assert_eq!(listed.items.len(), 1);

    // RBAC is really on: an unprivileged user is denied.
    let mut cfg = env.config().await;
    cfg.auth_info.impersonate = Some("nobody".into());
    let nobody: Api<Secret> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), &ns);
    let err = nobody
        .list(&ListParams::default())
        .await
        .expect_err("RBAC denies");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403),
        "{err}"
    );
}

#[tokio::test]
async fn kube_kubeconfig_file_roundtrip() {
    let env = KubeEnv::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    env.write_kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    assert_eq!(
        cfg.cluster_url.to_string().trim_end_matches('/'),
        env.server_url()
    );
    let client = kube::Client::try_from(cfg).unwrap();
    let ns = env.create_namespace("kubeconfig").await.unwrap();
    Api::<Namespace>::all(client)
        .get(&ns)
        .await
        .expect("client from file works");
}

#[tokio::test]
async fn openbao_kv_v2_write_read() {
    let bao = OpenBao::shared().await;

    // The dev server's default KV v2 mount, under a unique prefix.
    let path = format!("{}/db", bao.unique_prefix("smoke"));
    let resp = bao
        .request(reqwest::Method::POST, &format!("secret/data/{path}"))
        .json(&serde_json::json!({ "data": { "password": "hunter2" } }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "write: {}", resp.status());
    let body: serde_json::Value = bao
        .request(reqwest::Method::GET, &format!("secret/data/{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["data"]["password"], "hunter2");
    assert_eq!(body["data"]["metadata"]["version"], 1);

    // A dedicated mount.
    let mount = bao.create_kv_mount("smoke", 2).await.unwrap();
    let resp = bao
        .request(reqwest::Method::POST, &format!("{mount}/data/app"))
        .json(&serde_json::json!({ "data": { "k": "v1" } }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let resp = bao
        .request(reqwest::Method::POST, &format!("{mount}/data/app"))
        .json(&serde_json::json!({ "data": { "k": "v2" } }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let body: serde_json::Value = bao
        .request(reqwest::Method::GET, &format!("{mount}/data/app?version=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["data"]["k"], "v1");

    // The token really is checked.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/secret/data/{path}", bao.addr()))
        .header("X-Vault-Token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn moto_secretsmanager_via_aws_sdk() {
    let moto = Moto::shared().await;
    let creds = aws_sdk_secretsmanager::config::Credentials::new(
        moto.access_key_id(),
        moto.secret_access_key(),
        None,
        None,
        "refsync-testenv",
    );
    let http = aws_smithy_http_client::Builder::new().build_http();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(moto.region()))
        .endpoint_url(moto.endpoint())
        .credentials_provider(creds)
        .http_client(http)
        .load()
        .await;
    let sm = aws_sdk_secretsmanager::Client::new(&conf);

    let name = format!("{}/db", moto.unique_prefix("smoke"));
    let created = sm
        .create_secret()
        .name(&name)
        .secret_string(r#"{"password":"hunter2"}"#)
        .send()
        .await
        .expect("CreateSecret");
    assert!(created.arn().unwrap().contains(&name));

    let got = sm
        .get_secret_value()
        .secret_id(&name)
        .send()
        .await
        .expect("GetSecretValue");
    assert_eq!(got.secret_string(), Some(r#"{"password":"hunter2"}"#));
    assert_eq!(got.name(), Some(name.as_str()));

    let err = sm
        .get_secret_value()
        .secret_id(format!("{name}-missing"))
        .send()
        .await
        .expect_err("missing secret");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{err:?}"
    );
}

#[tokio::test]
async fn gcp_secret_manager_emulator() {
    let gcp = refsync_testenv::GcpSm::start().await.unwrap();
    let http = reqwest::Client::new();
    let base = format!("{}/v1/projects/refsync-test", gcp.endpoint());
    let resp = http
        .post(format!("{base}/secrets?secretId=smoke"))
        .json(&serde_json::json!({ "replication": { "automatic": {} } }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "create: {}", resp.status());
    let list: serde_json::Value = http
        .get(format!("{base}/secrets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(names[0].ends_with("/secrets/smoke"), "{names:?}");
}
