//! The benchmark's objects: 100 namespaces with one SecretStore each, N ExternalSecrets (10
//! keys each) spread over them, and unmanaged 4 KiB Secrets a controller should not hold.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

/// Namespaces the ExternalSecrets (and unmanaged Secrets) are spread over.
pub const NAMESPACES: usize = 100;
/// `data` entries per ExternalSecret.
pub const KEYS: usize = 10;
/// Size of each unmanaged Secret's value.
pub const UNMANAGED_BYTES: usize = 4096;
/// Requests in flight while creating objects.
pub const CREATE_CONCURRENCY: usize = 64;
/// The KV v2 mount of the OpenBao dev server.
pub const BAO_MOUNT: &str = "secret";
/// Name of the SecretStore in every namespace.
pub const STORE: &str = "store";

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// The fake provider: values in the SecretStore's `spec.provider.fake.data`.
    Fake,
    /// OpenBao KV v2, token auth through a Secret, one path per namespace.
    Openbao,
}

pub fn namespace(i: usize) -> String {
    format!("bench-{i:03}")
}

/// ExternalSecret `k` lives in namespace `k % 100`; its target Secret has the same name.
pub fn es_name(k: usize) -> String {
    format!("es-{k:05}")
}

pub fn es_namespace_index(k: usize) -> usize {
    k % NAMESPACES
}

/// The value of key `key` in namespace `ns`, version `generation` (deterministic, so that the
/// bare-client limit writes exactly what the controllers write).
pub fn value(ns: usize, key: usize, generation: u32) -> String {
    format!("g{generation}-ns{ns:03}-k{key}-0123456789abcdef0123456789abcdef")
}

/// The OpenBao path (under [`BAO_MOUNT`]) namespace `ns` reads.
pub fn bao_path(ns: usize) -> String {
    format!("bench/p{ns:03}")
}

/// The `data` of the Secret every ExternalSecret of namespace `ns` produces.
pub fn secret_data(ns: usize) -> Vec<(String, String)> {
    (0..KEYS)
        .map(|j| (format!("k{j}"), value(ns, j, 0)))
        .collect()
}

pub fn es_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "external-secrets.io",
        "v1",
        "ExternalSecret",
    ))
}

pub fn store_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "external-secrets.io",
        "v1",
        "SecretStore",
    ))
}

/// Applies CRDs and waits until each is Established.
pub async fn install_crds(
    client: &Client,
    crds: Vec<CustomResourceDefinition>,
) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("refsync-bench").force(),
            &Patch::Apply(crd),
        )
        .await
        .with_context(|| format!("apply CRD {name}"))?;
    }
    let names: Vec<String> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap_or_default())
        .collect();
    refsync_testenv::kube_env::wait_crds_established(client, &names, Duration::from_secs(60))
        .await?;
    Ok(())
}

/// Where the OpenBao workload reads from.
pub struct BaoTarget {
    pub addr: String,
    pub token: String,
}

/// Writes the 10 properties of namespace `ns`'s path, `k0` at `generation`.
pub async fn bao_write(
    http: &reqwest::Client,
    bao: &BaoTarget,
    ns: usize,
    generation: u32,
) -> anyhow::Result<()> {
    let mut data = serde_json::Map::new();
    for j in 0..KEYS {
        let g = if j == 0 { generation } else { 0 };
        data.insert(format!("k{j}"), Value::String(value(ns, j, g)));
    }
    let url = format!("{}/v1/{BAO_MOUNT}/data/{}", bao.addr, bao_path(ns));
    let resp = http
        .post(&url)
        .header("X-Vault-Token", &bao.token)
        .json(&json!({ "data": data }))
        .send()
        .await
        .with_context(|| format!("write OpenBao {}", bao_path(ns)))?;
    if !resp.status().is_success() {
        bail!("write OpenBao {}: HTTP {}", bao_path(ns), resp.status());
    }
    Ok(())
}

fn store_spec(workload: Workload, ns: usize, bao: Option<&BaoTarget>) -> anyhow::Result<Value> {
    Ok(match workload {
        Workload::Fake => {
            let data: Vec<Value> = (0..KEYS)
                .map(|j| json!({"key": format!("k{j}"), "value": value(ns, j, 0)}))
                .collect();
            json!({"provider": {"fake": {"data": data}}})
        }
        Workload::Openbao => {
            let bao = bao.context("the openbao workload needs OpenBao")?;
            json!({"provider": {"vault": {
                "server": bao.addr, "path": BAO_MOUNT, "version": "v2",
                "auth": {"tokenSecretRef": {"name": "vault-creds", "key": "token"}}
            }}})
        }
    })
}

fn es_spec(workload: Workload, k: usize, refresh_secs: u64) -> Value {
    let ns = es_namespace_index(k);
    let data: Vec<Value> = (0..KEYS)
        .map(|j| match workload {
            Workload::Fake => {
                json!({"secretKey": format!("k{j}"), "remoteRef": {"key": format!("k{j}")}})
            }
            Workload::Openbao => json!({"secretKey": format!("k{j}"),
                "remoteRef": {"key": bao_path(ns), "property": format!("k{j}")}}),
        })
        .collect();
    json!({
        "refreshInterval": format!("{refresh_secs}s"),
        "secretStoreRef": {"name": STORE, "kind": "SecretStore"},
        "target": {"name": es_name(k)},
        "data": data,
    })
}

/// One created ExternalSecret (what the bare-client limit needs for its ownerReferences).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub k: usize,
    pub uid: String,
}

/// Runs `f` over `items` with [`CREATE_CONCURRENCY`] in flight, printing progress.
async fn concurrently<T, F, Fut, R>(what: &str, items: Vec<T>, f: F) -> anyhow::Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>>,
{
    let total = items.len();
    let done = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let out = futures::stream::iter(items.into_iter().map(|it| {
        let done = done.clone();
        let fut = f(it);
        async move {
            let r = fut.await?;
            let d = done.fetch_add(1, Ordering::Relaxed) + 1;
            if d.is_multiple_of(10_000) {
                eprintln!("  {what}: {d}/{total} after {:.0?}", t0.elapsed());
            }
            anyhow::Ok(r)
        }
    }))
    .buffer_unordered(CREATE_CONCURRENCY)
    .try_collect::<Vec<R>>()
    .await?;
    eprintln!("  {what}: {total} in {:.1?}", t0.elapsed());
    Ok(out)
}

/// Creates the namespaces, stores, ExternalSecrets and unmanaged Secrets.
pub async fn create(
    client: &Client,
    workload: Workload,
    n: usize,
    unmanaged: usize,
    refresh_secs: u64,
    bao: Option<&BaoTarget>,
) -> anyhow::Result<Vec<Owner>> {
    if let (Workload::Openbao, Some(bao)) = (workload, bao) {
        let http = reqwest::Client::new();
        for ns in 0..NAMESPACES {
            bao_write(&http, bao, ns, 0).await?;
        }
    }
    let ns_api: Api<Namespace> = Api::all(client.clone());
    concurrently("namespaces", (0..NAMESPACES).collect(), |i| {
        let ns_api = ns_api.clone();
        async move {
            let ns: Namespace =
                serde_json::from_value(json!({"metadata": {"name": namespace(i)}}))?;
            ns_api
                .create(&PostParams::default(), &ns)
                .await
                .context("create namespace")?;
            Ok(())
        }
    })
    .await?;
    concurrently("stores", (0..NAMESPACES).collect(), |i| {
        let client = client.clone();
        async move {
            let ns = namespace(i);
            if let (Workload::Openbao, Some(bao)) = (workload, bao) {
                let creds: Secret = serde_json::from_value(json!({
                    "metadata": {"name": "vault-creds", "namespace": ns},
                    "stringData": {"token": bao.token}
                }))?;
                Api::<Secret>::namespaced(client.clone(), &ns)
                    .create(&PostParams::default(), &creds)
                    .await
                    .context("create vault-creds")?;
            }
            let store: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
                "metadata": {"name": STORE, "namespace": ns},
                "spec": store_spec(workload, i, bao)?,
            }))?;
            Api::<DynamicObject>::namespaced_with(client, &ns, &store_resource())
                .create(&PostParams::default(), &store)
                .await
                .context("create SecretStore")?;
            Ok(())
        }
    })
    .await?;
    let owners = concurrently("ExternalSecrets", (0..n).collect(), |k| {
        let client = client.clone();
        async move {
            let ns = namespace(es_namespace_index(k));
            let es: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "metadata": {"name": es_name(k), "namespace": ns},
                "spec": es_spec(workload, k, refresh_secs),
            }))?;
            let created = Api::<DynamicObject>::namespaced_with(client, &ns, &es_resource())
                .create(&PostParams::default(), &es)
                .await
                .with_context(|| format!("create ExternalSecret {ns}/{}", es_name(k)))?;
            Ok(Owner {
                k,
                uid: created.metadata.uid.unwrap_or_default(),
            })
        }
    })
    .await?;
    let blob = "u".repeat(UNMANAGED_BYTES);
    concurrently("unmanaged Secrets", (0..unmanaged).collect(), |k| {
        let client = client.clone();
        let blob = blob.clone();
        async move {
            let ns = namespace(k % NAMESPACES);
            let s: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("unmanaged-{k:06}"), "namespace": ns},
                "stringData": {"blob": blob}
            }))?;
            Api::<Secret>::namespaced(client, &ns)
                .create(&PostParams::default(), &s)
                .await
                .context("create unmanaged Secret")?;
            Ok(())
        }
    })
    .await?;
    Ok(owners)
}
