//! The ExternalSecret controller against the real kube-apiserver (fake provider stores):
//! what ESO users see — the Secret with ESO's labels, annotations and ownerReference, the
//! status, Events, creation and deletion policies, ownership conflicts and restoration.
//!
//! There is no kube-controller-manager in the test environment, so garbage collection never
//! runs: ownership is checked through the ownerReference, never by deleting an ExternalSecret
//! and waiting for its Secret to go.

mod controller_es_support;

use std::time::Duration;

use controller_es_support::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use refsync_core::hash;
use serde_json::json;

const LONG: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn create_sync_status_events_and_no_op_refresh() {
    let client = client().await;
    let ns = namespace("es-create").await;
    let ctl = start_in(&client, &ns, Duration::from_millis(200));
    fake_store(
        &client,
        &ns,
        "fake",
        json!([{"key": "db", "value": "{\"user\":\"u1\",\"pass\":\"p1\"}"}]),
    )
    .await;
    let es = apply::<refsync_api::ExternalSecret>(
        &client,
        json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "app", "namespace": ns, "labels": {"team": "a"}, "annotations": {"note": "x"}},
            "spec": {
                "refreshInterval": "2s",
                "secretStoreRef": {"name": "fake"},
                "data": [{"secretKey": "user", "remoteRef": {"key": "db", "property": "user"}}]
            }
        }),
    )
    .await;
    let secret = wait_value(&client, &ns, "app", "user", "u1").await;

    // ESO's labels, annotations and ownerReference.
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["reconcile.external-secrets.io/managed"], "true");
    assert_eq!(
        labels["reconcile.external-secrets.io/created-by"],
        hash::created_by(&ns, "app")
    );
    assert_eq!(
        labels["team"], "a",
        "the ExternalSecret's labels are copied"
    );
    let ann = secret.metadata.annotations.clone().unwrap();
    assert_eq!(ann["note"], "x");
    let mut expect = std::collections::BTreeMap::new();
    expect.insert("user".to_string(), b"u1".to_vec());
    assert_eq!(
        ann["reconcile.external-secrets.io/data-hash"],
        hash::data_hash(expect.iter())
    );
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(owner.kind, "ExternalSecret");
    assert_eq!(owner.name, "app");
    assert_eq!(Some(&owner.uid), es.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));

    // Status as ESO writes it.
    let es = wait_reason(&client, &ns, "app", "SecretSynced").await;
    let st = es.status.clone().unwrap();
    assert_eq!(
        ready(&es).unwrap(),
        ("True".into(), "SecretSynced".into(), "secret synced".into())
    );
    assert_eq!(st.binding.unwrap().name, "app");
    assert_eq!(
        st.synced_resource_version.as_deref(),
        Some(hash::synced_resource_version(
            es.metadata.generation.unwrap(),
            es.metadata.labels.as_ref(),
            es.metadata.annotations.as_ref()
        ))
        .as_deref()
    );
    let first_refresh = st.refresh_time.clone().unwrap();
    let ev = events(&client, &ns, "app").await;
    assert!(
        ev.iter()
            .any(|e| e == &("Normal".into(), "Created".into(), "secret created".into())),
        "{ev:?}"
    );

    // Unchanged data: the Secret is not written again, but refreshTime advances.
    let rv = secret.metadata.resource_version.clone();
    let later = wait_for(
        "refreshTime to advance",
        Duration::from_secs(15),
        || async {
            let es = get_es(&client, &ns, "app").await;
            let t = es.status.as_ref()?.refresh_time.clone()?;
            (t != first_refresh).then_some(t)
        },
    )
    .await;
    assert_ne!(later, first_refresh);
    let again = get_secret(&client, &ns, "app").await.unwrap();
    assert_eq!(
        again.metadata.resource_version, rv,
        "no write for unchanged data"
    );
    assert!(metric(&ctl.ctx, "refsync_secret_writes_skipped_total") >= 1.0);

    // A changed remote value is written within the refresh; an Updated event follows.
    fake_store(
        &client,
        &ns,
        "fake",
        json!([{"key": "db", "value": "{\"user\":\"u2\",\"pass\":\"p1\"}"}]),
    )
    .await;
    wait_value(&client, &ns, "app", "user", "u2").await;
    wait_for("Updated event", Duration::from_secs(10), || async {
        let ev = events(&client, &ns, "app").await;
        ev.iter()
            .any(|e| e.1 == "Updated" && e.2 == "secret updated")
            .then_some(())
    })
    .await;
    assert!(
        metric(
            &ctl.ctx,
            &format!("externalsecret_sync_calls_total{{name=\"app\",namespace=\"{ns}\"}}")
        ) >= 2.0
    );
}

#[tokio::test]
async fn deleted_or_edited_secret_is_restored_at_once() {
    let client = client().await;
    let ns = namespace("es-restore").await;
    let _ctl = start_in(&client, &ns, LONG);
    fake_store(&client, &ns, "fake", json!([{"key": "k", "value": "v1"}])).await;
    external_secret(
        &client,
        &ns,
        "app",
        json!({
            "refreshInterval": "1h", "secretStoreRef": {"name": "fake"},
            "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}]
        }),
    )
    .await;
    let s = wait_value(&client, &ns, "app", "k", "v1").await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    api.delete("app", &DeleteParams::default()).await.unwrap();
    let back = wait_value(&client, &ns, "app", "k", "v1").await;
    assert_ne!(
        back.metadata.uid, s.metadata.uid,
        "a new Secret was created"
    );
    // Edited by hand: restored.
    api.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "ZWRpdGVk"}})),
    )
    .await
    .unwrap();
    wait_value(&client, &ns, "app", "k", "v1").await;
}

#[tokio::test]
async fn force_sync_annotation_refreshes_at_once() {
    let client = client().await;
    let ns = namespace("es-force").await;
    let _ctl = start_in(&client, &ns, LONG);
    fake_store(&client, &ns, "fake", json!([{"key": "k", "value": "v1"}])).await;
    external_secret(
        &client,
        &ns,
        "app",
        json!({
            "refreshInterval": "1h", "secretStoreRef": {"name": "fake"},
            "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}]
        }),
    )
    .await;
    wait_value(&client, &ns, "app", "k", "v1").await;
    let before = get_es(&client, &ns, "app").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Api::<refsync_api::ExternalSecret>::namespaced(client.clone(), &ns)
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"force-sync": "1"}}})),
        )
        .await
        .unwrap();
    let after = wait_for(
        "refresh after force-sync",
        Duration::from_secs(10),
        || async {
            let es = get_es(&client, &ns, "app").await;
            (es.status.as_ref()?.refresh_time != before.status.as_ref()?.refresh_time).then_some(es)
        },
    )
    .await;
    assert_eq!(ready(&after).unwrap().1, "SecretSynced");
}

#[tokio::test]
async fn creation_policies() {
    let client = client().await;
    let ns = namespace("es-create-policy").await;
    let _ctl = start_in(&client, &ns, Duration::from_millis(200));
    fake_store(&client, &ns, "fake", json!([{"key": "k", "value": "v1"}])).await;
    let spec = |policy: &str, target: &str| {
        json!({
            "refreshInterval": "1s", "secretStoreRef": {"name": "fake"},
            "target": {"name": target, "creationPolicy": policy},
            "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}]
        })
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // Owner adopting an existing unowned Secret: its whole data is replaced.
    let existing = |name: &str| {
        serde_json::from_value::<Secret>(json!({
            "metadata": {"name": name, "labels": {"keep": "me"}},
            "stringData": {"other": "o"}
        }))
        .unwrap()
    };
    api.create(&PostParams::default(), &existing("adopted"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &existing("merged"))
        .await
        .unwrap();

    external_secret(&client, &ns, "owner", spec("Owner", "adopted")).await;
    external_secret(&client, &ns, "orphan", spec("Orphan", "orphaned")).await;
    external_secret(&client, &ns, "merge", spec("Merge", "merged")).await;
    external_secret(&client, &ns, "merge-missing", spec("Merge", "absent")).await;
    external_secret(&client, &ns, "none", spec("None", "never")).await;

    wait_value(&client, &ns, "adopted", "k", "v1").await;
    let adopted = wait_for("foreign key removed", Duration::from_secs(10), || async {
        let s = get_secret(&client, &ns, "adopted").await?;
        data(&s, "other").is_none().then_some(s)
    })
    .await;
    assert_eq!(
        adopted.metadata.owner_references.as_ref().unwrap()[0].name,
        "owner"
    );
    assert_eq!(
        adopted.metadata.labels.as_ref().unwrap()["keep"],
        "me",
        "others' labels stay"
    );

    let orphaned = wait_value(&client, &ns, "orphaned", "k", "v1").await;
    assert!(
        orphaned.metadata.owner_references.is_none(),
        "Orphan: no ownerReference"
    );
    assert!(
        !orphaned
            .metadata
            .labels
            .unwrap()
            .contains_key("reconcile.external-secrets.io/created-by")
    );

    let merged = wait_value(&client, &ns, "merged", "k", "v1").await;
    assert_eq!(
        data(&merged, "other").as_deref(),
        Some("o"),
        "Merge keeps other keys"
    );
    assert!(merged.metadata.owner_references.is_none());
    let all: std::collections::BTreeMap<String, Vec<u8>> = merged
        .data
        .clone()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    assert_eq!(
        merged.metadata.annotations.unwrap()["reconcile.external-secrets.io/data-hash"],
        hash::data_hash(all.iter())
    );

    let missing = wait_reason(&client, &ns, "merge-missing", "SecretMissing").await;
    assert_eq!(
        ready(&missing).unwrap(),
        (
            "True".into(),
            "SecretMissing".into(),
            "secret will not be created due to CreationPolicy=Merge".into()
        )
    );
    assert!(get_secret(&client, &ns, "absent").await.is_none());

    let none = wait_reason(&client, &ns, "none", "SecretSynced").await;
    assert_eq!(ready(&none).unwrap().0, "True");
    assert!(
        get_secret(&client, &ns, "never").await.is_none(),
        "None: nothing written"
    );
}

#[tokio::test]
async fn remote_deleted_under_each_deletion_policy() {
    let client = client().await;
    let ns = namespace("es-delete-policy").await;
    let _ctl = start_in(&client, &ns, Duration::from_millis(200));
    let both = json!([{"key": "k", "value": "v1"}, {"key": "stay", "value": "s"}]);
    fake_store(&client, &ns, "fake", both).await;
    let spec = |creation: &str, deletion: &str, target: &str| {
        json!({
            "refreshInterval": "1h", "secretStoreRef": {"name": "fake"},
            "target": {"name": target, "creationPolicy": creation, "deletionPolicy": deletion},
            "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}]
        })
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "merge-target"}, "stringData": {"other": "o"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    external_secret(&client, &ns, "retain", spec("Owner", "Retain", "retain")).await;
    external_secret(&client, &ns, "delete", spec("Owner", "Delete", "delete")).await;
    external_secret(
        &client,
        &ns,
        "merge",
        spec("Merge", "Merge", "merge-target"),
    )
    .await;
    let retained = wait_value(&client, &ns, "retain", "k", "v1").await;
    wait_value(&client, &ns, "delete", "k", "v1").await;
    wait_value(&client, &ns, "merge-target", "k", "v1").await;

    // The remote key goes away (the store changes, so its ExternalSecrets refresh at once).
    fake_store(&client, &ns, "fake", json!([{"key": "stay", "value": "s"}])).await;

    let es = wait_reason(&client, &ns, "retain", "SecretSyncedError").await;
    assert_eq!(
        ready(&es).unwrap().2,
        "could not get secret data from provider"
    );
    let kept = get_secret(&client, &ns, "retain").await.unwrap();
    assert_eq!(
        kept.metadata.resource_version, retained.metadata.resource_version,
        "Retain: Secret untouched"
    );

    let es = wait_reason(&client, &ns, "delete", "SecretDeleted").await;
    assert_eq!(
        ready(&es).unwrap(),
        (
            "True".into(),
            "SecretDeleted".into(),
            "secret deleted due to DeletionPolicy=Delete".into()
        )
    );
    assert!(
        get_secret(&client, &ns, "delete").await.is_none(),
        "Delete: Secret deleted"
    );
    assert!(
        events(&client, &ns, "delete")
            .await
            .iter()
            .any(|e| e.1 == "Deleted")
    );

    let merged = wait_for("our key dropped", Duration::from_secs(15), || async {
        let s = get_secret(&client, &ns, "merge-target").await?;
        data(&s, "k").is_none().then_some(s)
    })
    .await;
    assert_eq!(
        data(&merged, "other").as_deref(),
        Some("o"),
        "Merge: other keys stay"
    );
}

#[tokio::test]
async fn two_externalsecrets_one_target() {
    let client = client().await;
    let ns = namespace("es-conflict").await;
    let _ctl = start_in(&client, &ns, LONG);
    fake_store(
        &client,
        &ns,
        "fake",
        json!([{"key": "a", "value": "from-a"}, {"key": "b", "value": "from-b"}]),
    )
    .await;
    external_secret(
        &client,
        &ns,
        "first",
        json!({
            "secretStoreRef": {"name": "fake"}, "target": {"name": "shared"},
            "data": [{"secretKey": "v", "remoteRef": {"key": "a"}}]
        }),
    )
    .await;
    let s = wait_value(&client, &ns, "shared", "v", "from-a").await;
    external_secret(
        &client,
        &ns,
        "second",
        json!({
            "secretStoreRef": {"name": "fake"}, "target": {"name": "shared"},
            "data": [{"secretKey": "v", "remoteRef": {"key": "b"}}]
        }),
    )
    .await;
    let es = wait_reason(&client, &ns, "second", "SecretSyncedError").await;
    assert_eq!(
        ready(&es).unwrap(),
        (
            "False".into(),
            "SecretSyncedError".into(),
            "target is owned by another ExternalSecret".into()
        )
    );
    let ev = events(&client, &ns, "second").await;
    assert!(
        ev.iter()
            .any(|e| e.0 == "Warning" && e.1 == "UpdateFailed" && e.2.contains("first")),
        "{ev:?}"
    );
    let after = get_secret(&client, &ns, "shared").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, s.metadata.resource_version,
        "nothing overwritten"
    );
    assert_eq!(data(&after, "v").as_deref(), Some("from-a"));
}

#[tokio::test]
async fn target_rename_deletes_the_old_secret() {
    let client = client().await;
    let ns = namespace("es-rename").await;
    let _ctl = start_in(&client, &ns, LONG);
    fake_store(&client, &ns, "fake", json!([{"key": "k", "value": "v"}])).await;
    let spec = |t: &str| json!({"secretStoreRef": {"name": "fake"}, "target": {"name": t}, "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}]});
    external_secret(&client, &ns, "app", spec("old")).await;
    wait_value(&client, &ns, "old", "k", "v").await;
    external_secret(&client, &ns, "app", spec("new")).await;
    wait_value(&client, &ns, "new", "k", "v").await;
    wait_for("old Secret deleted", Duration::from_secs(10), || async {
        get_secret(&client, &ns, "old")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}
