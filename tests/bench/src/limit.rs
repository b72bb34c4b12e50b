//! The bare-client limit: the writes a controller must make for N ExternalSecrets (one Secret
//! server-side apply and one status apply each), as fast as the apiserver accepts them, with
//! no reads and no provider. Runs as a subprocess of the bench binary so that its RSS and CPU
//! are measured the same way as a controller's.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use refsync_core::hash;
use serde_json::json;

use crate::workload::{Owner, es_name, es_namespace_index, es_resource, namespace, secret_data};

pub const FIELD_MANAGER: &str = "refsync-bench-limit";

/// The Secret refsync writes for ExternalSecret `k` (same data, labels, annotations, owner).
pub fn secret_for(owner: &Owner) -> serde_json::Value {
    let ns_i = es_namespace_index(owner.k);
    let ns = namespace(ns_i);
    let name = es_name(owner.k);
    let data = secret_data(ns_i);
    let as_map: BTreeMap<String, Vec<u8>> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    let encoded: BTreeMap<String, k8s_openapi::ByteString> = as_map
        .iter()
        .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone())))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": name, "namespace": ns,
            "labels": {
                "reconcile.external-secrets.io/managed": "true",
                "reconcile.external-secrets.io/created-by": hash::created_by(&ns, &name),
            },
            "annotations": {
                "reconcile.external-secrets.io/data-hash": hash::data_hash(as_map.iter()),
            },
            "ownerReferences": [{
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "name": name, "uid": owner.uid, "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "type": "Opaque",
        "data": encoded,
    })
}

/// Writes N Secrets and N statuses with `concurrency` requests in flight; prints the worker's
/// own peak RSS and CPU as one JSON line on stdout.
pub async fn run(kubeconfig: &Path, owners: &Path, concurrency: usize) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let owners: Vec<Owner> =
        serde_json::from_slice(&std::fs::read(owners).context("read owners file")?)?;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    futures::stream::iter(owners.into_iter().map(|owner| {
        let client = client.clone();
        let pp = pp.clone();
        async move {
            let ns = namespace(es_namespace_index(owner.k));
            let name = es_name(owner.k);
            let secret = secret_for(&owner);
            Api::<Secret>::namespaced(client.clone(), &ns)
                .patch(&name, &pp, &Patch::Apply(&secret))
                .await
                .with_context(|| format!("apply Secret {ns}/{name}"))?;
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let status = json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
                "status": {
                    "refreshTime": now,
                    "syncedResourceVersion": hash::synced_resource_version(1, None, None),
                    "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced",
                        "message": "secret synced", "lastTransitionTime": now}],
                    "binding": {"name": name},
                }
            });
            Api::<DynamicObject>::namespaced_with(client, &ns, &es_resource())
                .patch_status(&name, &pp, &Patch::Apply(&status))
                .await
                .with_context(|| format!("apply status of ExternalSecret {ns}/{name}"))?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect::<Vec<()>>()
    .await?;
    let me = crate::procstat::read(std::process::id())?;
    println!("{}", serde_json::to_string(&me)?);
    Ok(())
}
