//! ClusterExternalSecret controller against the real kube-apiserver, with the ExternalSecret
//! controller running beside it and a fake-provider ClusterSecretStore: fan-out by namespace
//! selector (ownerReference, metadata, Secrets synced), a namespace labelled later, a label
//! removed, a terminating namespace, a foreign ExternalSecret of the same name (reported, left
//! alone, provisioned once it is gone), spec changes, no write when nothing changed, deletion.
//!
//! The test environment has no garbage collector: the ownerReference is asserted, and the
//! ExternalSecrets go away on deletion because the controller deletes them itself (ESO's
//! finalizer), not through GC. Namespaces never finish terminating here either.
//!
//! One test function: every ClusterExternalSecret controller reconciles every
//! ClusterExternalSecret of the cluster, so two in this binary would share (and fight over)
//! the objects.

mod controller_es_support;

use std::time::Duration;

use controller_es_support::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use refsync_api::{ClusterExternalSecret, ClusterExternalSecretStatus, ExternalSecret};
use refsync_controller::context::Config;
use refsync_controller::reconcile::cluster_external_secret::{
    self, FINALIZER, MSG_NAMESPACES_FAILED, REASON_ALREADY_EXISTS,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

async fn label_namespace(client: &Client, ns: &str, key: &str, value: Option<&str>) {
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("label namespace {ns}: {e}"));
}

async fn get_ces(client: &Client, name: &str) -> Option<ClusterExternalSecret> {
    Api::<ClusterExternalSecret>::all(client.clone())
        .get_opt(name)
        .await
        .unwrap()
}

async fn get_es_opt(client: &Client, ns: &str, name: &str) -> Option<ExternalSecret> {
    Api::<ExternalSecret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

/// (provisioned, failed (namespace, reason), Ready status, Ready message)
type Summary = (Vec<String>, Vec<(String, String)>, String, String);

fn summary(st: &ClusterExternalSecretStatus) -> Summary {
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready");
    (
        st.provisioned_namespaces.clone(),
        st.failed_namespaces
            .iter()
            .map(|f| (f.namespace.clone(), f.reason.clone().unwrap_or_default()))
            .collect(),
        ready.map(|c| c.status.clone()).unwrap_or_default(),
        ready.and_then(|c| c.message.clone()).unwrap_or_default(),
    )
}

/// Waits until the status shows exactly `want`.
async fn wait_status(client: &Client, name: &str, want: Summary) -> ClusterExternalSecret {
    let mut last = None;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ces = get_ces(client, name).await.expect("ClusterExternalSecret");
        let got = summary(&ces.status.clone().unwrap_or_default());
        if got == want {
            return ces;
        }
        if std::time::Instant::now() > deadline {
            panic!("status of {name}: want {want:#?}\nlast {last:#?}");
        }
        last = Some(got);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn cluster_external_secret_fans_out_and_follows_namespaces() {
    let client = client().await;
    let ctl = start(
        &client,
        Config {
            concurrency: 16,
            ..Config::default()
        },
        Duration::from_secs(0),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cluster_external_secret::run(ctl.ctx.clone(), async move {
        let _ = stop_rx.await;
    }));

    // A unique label selects this test's namespaces only.
    let ns_a = namespace("ces-a").await;
    let label = format!("ces-e2e-{}", ns_a.trim_start_matches("ces-a-"));
    let ns_b = namespace("ces-b").await;
    let ns_c = namespace("ces-c").await;
    let ns_d = namespace("ces-d").await;
    for ns in [&ns_a, &ns_b, &ns_d] {
        label_namespace(&client, ns, &label, Some("yes")).await;
    }

    let css = format!("{label}-store");
    let css_obj: refsync_api::ClusterSecretStore = serde_json::from_value(json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": css},
        "spec": {"provider": {"fake": {"data": [
            {"key": "/ces/one", "value": "v1"},
            {"key": "/ces/two", "value": "v2"}
        ]}}}
    }))
    .unwrap();
    Api::<refsync_api::ClusterSecretStore>::all(client.clone())
        .patch(
            &css,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&css_obj),
        )
        .await
        .unwrap();

    // A foreign ExternalSecret of the same name in ns_d: reported, never touched.
    let es_name = "ces-target";
    let foreign = external_secret(
        &client,
        &ns_d,
        es_name,
        json!({
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": css},
            "target": {"name": "foreign-secret"},
            "data": [{"secretKey": "f", "remoteRef": {"key": "/ces/two"}}]
        }),
    )
    .await;

    let ces_name = label.clone();
    let es_spec = |key: &str| {
        json!({
            "secretStoreRef": {"kind": "ClusterSecretStore", "name": css},
            "target": {"name": "ces-secret"},
            "refreshInterval": "1h",
            "data": [{"secretKey": "k", "remoteRef": {"key": key}}]
        })
    };
    let ces_api = Api::<ClusterExternalSecret>::all(client.clone());
    let apply_ces =
        |key: &'static str, team: &'static str, es: &'static str, force: &'static str| {
            let annotations = if force.is_empty() {
                json!({})
            } else {
                json!({"force-sync": force})
            };
            let manifest = json!({
                "apiVersion": "external-secrets.io/v1", "kind": "ClusterExternalSecret",
                "metadata": {"name": ces_name, "annotations": annotations},
                "spec": {
                    "externalSecretName": es,
                    "externalSecretMetadata": {
                        "labels": {"team": team},
                        "annotations": {"note": "from-ces"}
                    },
                    "namespaceSelectors": [{"matchLabels": {label.clone(): "yes"}}],
                    "refreshTime": "1h",
                    "externalSecretSpec": es_spec(key)
                }
            });
            let api = ces_api.clone();
            let name = ces_name.clone();
            async move {
                api.patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&manifest),
                )
                .await
                .unwrap()
            }
        };
    let created = apply_ces("/ces/one", "x", es_name, "").await;
    let ces_uid = created.uid().unwrap();

    // Fan-out: a and b provisioned (sorted), d reported with ESO's reason and message.
    let ces = wait_status(
        &client,
        &ces_name,
        (
            sorted(vec![ns_a.clone(), ns_b.clone()]),
            vec![(ns_d.clone(), REASON_ALREADY_EXISTS.into())],
            "False".into(),
            MSG_NAMESPACES_FAILED.into(),
        ),
    )
    .await;
    let st = ces.status.clone().unwrap();
    assert_eq!(st.external_secret_name.as_deref(), Some(es_name));
    assert!(
        ces.finalizers().iter().any(|f| f == FINALIZER),
        "{:?}",
        ces.finalizers()
    );
    for ns in [&ns_a, &ns_b] {
        let es = get_es(&client, ns, es_name).await;
        let owners = es.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{owners:?}");
        let o = &owners[0];
        assert_eq!(
            (
                o.api_version.as_str(),
                o.kind.as_str(),
                o.name.as_str(),
                o.uid.as_str(),
                o.controller,
                o.block_owner_deletion
            ),
            (
                "external-secrets.io/v1",
                "ClusterExternalSecret",
                ces_name.as_str(),
                ces_uid.as_str(),
                Some(true),
                Some(true)
            )
        );
        assert_eq!(es.labels().get("team").map(String::as_str), Some("x"));
        assert_eq!(
            es.annotations().get("note").map(String::as_str),
            Some("from-ces")
        );
        assert_eq!(es.spec.data[0].remote_ref.key, "/ces/one");
        // The running ExternalSecret controller syncs it.
        wait_value_quiet(&client, ns, "ces-secret", "k", "v1").await;
    }
    assert!(get_es_opt(&client, &ns_c, es_name).await.is_none());
    let untouched = get_es(&client, &ns_d, es_name).await;
    // (Its status is the ExternalSecret controller's; spec and metadata are what we wrote.)
    assert_eq!(untouched.metadata.generation, foreign.metadata.generation);
    assert_eq!(untouched.spec, foreign.spec);
    assert_eq!(untouched.metadata.labels, foreign.metadata.labels);
    assert!(untouched.metadata.owner_references.is_none());
    assert_eq!(
        metric(
            &ctl.ctx,
            &format!(
                "clusterexternalsecret_status_condition{{condition=\"Ready\",name=\"{ces_name}\",status=\"False\"}}"
            )
        ),
        1.0
    );

    // A namespace labelled later gets one.
    label_namespace(&client, &ns_c, &label, Some("yes")).await;
    wait_status(
        &client,
        &ces_name,
        (
            sorted(vec![ns_a.clone(), ns_b.clone(), ns_c.clone()]),
            vec![(ns_d.clone(), REASON_ALREADY_EXISTS.into())],
            "False".into(),
            MSG_NAMESPACES_FAILED.into(),
        ),
    )
    .await;
    wait_value_quiet(&client, &ns_c, "ces-secret", "k", "v1").await;

    // The label removed: its ExternalSecret is deleted at once.
    label_namespace(&client, &ns_a, &label, None).await;
    wait_for(
        "ExternalSecret in unlabelled namespace deleted",
        WAIT,
        || {
            let (client, ns) = (client.clone(), ns_a.clone());
            async move {
                get_es_opt(&client, &ns, es_name)
                    .await
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;
    wait_status(
        &client,
        &ces_name,
        (
            sorted(vec![ns_b.clone(), ns_c.clone()]),
            vec![(ns_d.clone(), REASON_ALREADY_EXISTS.into())],
            "False".into(),
            MSG_NAMESPACES_FAILED.into(),
        ),
    )
    .await;

    // The foreign ExternalSecret gone: ns_d is provisioned at once (not at the next refresh).
    Api::<ExternalSecret>::namespaced(client.clone(), &ns_d)
        .delete(es_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_status(
        &client,
        &ces_name,
        (
            sorted(vec![ns_b.clone(), ns_c.clone(), ns_d.clone()]),
            vec![],
            "True".into(),
            String::new(),
        ),
    )
    .await;
    assert_eq!(
        metric(
            &ctl.ctx,
            &format!(
                "clusterexternalsecret_status_condition{{condition=\"Ready\",name=\"{ces_name}\",status=\"True\"}}"
            )
        ),
        1.0
    );

    // Spec and metadata changes propagate to every ExternalSecret and on to the Secrets.
    apply_ces("/ces/two", "z", es_name, "").await;
    for ns in [&ns_b, &ns_c, &ns_d] {
        wait_value_quiet(&client, ns, "ces-secret", "k", "v2").await;
        let es = get_es(&client, ns, es_name).await;
        assert_eq!(es.labels().get("team").map(String::as_str), Some("z"));
    }

    // Nothing changed: a full re-evaluation (any namespace label change triggers one) sends no
    // ExternalSecret write and no status write.
    let writes = |op: &str| {
        metric(
            &ctl.ctx,
            &format!("refsync_secret_writes_total{{operation=\"{op}\"}}"),
        )
    };
    let reconciles = || {
        metric(
            &ctl.ctx,
            "refsync_reconcile_seconds_count{controller=\"clusterexternalsecret\"}",
        )
    };
    // Let the ExternalSecret controller's status writes settle the watch streams first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (applies, statuses, before) = (
        writes("externalsecret_apply"),
        writes("clusterexternalsecret_status"),
        reconciles(),
    );
    label_namespace(&client, &ns_a, "unrelated", Some("1")).await;
    wait_for("a re-evaluation", WAIT, || async {
        (reconciles() > before).then_some(())
    })
    .await;
    assert_eq!(
        writes("externalsecret_apply"),
        applies,
        "no-op reconcile applied"
    );
    assert_eq!(
        writes("clusterexternalsecret_status"),
        statuses,
        "no-op reconcile wrote status"
    );

    // An owned ExternalSecret edited by hand is put back.
    Api::<ExternalSecret>::namespaced(client.clone(), &ns_b)
        .patch(
            es_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"refreshInterval": "5m"}})),
        )
        .await
        .unwrap();
    wait_for("hand edit reverted", WAIT, || {
        let (client, ns) = (client.clone(), ns_b.clone());
        async move {
            let es = get_es(&client, &ns, es_name).await;
            (es.spec.refresh_interval.as_deref() == Some("1h")).then_some(())
        }
    })
    .await;

    // A namespace being deleted (it stays Terminating here: no namespace controller) loses
    // its ExternalSecret.
    Api::<Namespace>::all(client.clone())
        .delete(&ns_c, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "ExternalSecret in terminating namespace deleted",
        WAIT,
        || {
            let (client, ns) = (client.clone(), ns_c.clone());
            async move {
                get_es_opt(&client, &ns, es_name)
                    .await
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;
    wait_status(
        &client,
        &ces_name,
        (
            sorted(vec![ns_b.clone(), ns_d.clone()]),
            vec![],
            "True".into(),
            String::new(),
        ),
    )
    .await;

    // Renamed, with a force-sync annotation: the old ExternalSecrets go, the new ones carry
    // the annotation (ESO copies it from the ClusterExternalSecret).
    let es_name = "ces-renamed";
    apply_ces("/ces/two", "z", es_name, "t1").await;
    let want = sorted(vec![ns_b.clone(), ns_d.clone()]);
    let ces = wait_for("renamed in status", WAIT, || {
        let (client, name, want) = (client.clone(), ces_name.clone(), want.clone());
        async move {
            let ces = get_ces(&client, &name).await?;
            let st = ces.status.clone()?;
            (st.external_secret_name.as_deref() == Some(es_name)
                && st.provisioned_namespaces == want)
                .then_some(ces)
        }
    })
    .await;
    assert!(ces.status.unwrap().failed_namespaces.is_empty());
    for ns in [&ns_b, &ns_d] {
        assert!(get_es_opt(&client, ns, "ces-target").await.is_none());
        let es = get_es(&client, ns, es_name).await;
        assert_eq!(
            es.annotations().get("force-sync").map(String::as_str),
            Some("t1")
        );
    }

    // Deleting the ClusterExternalSecret deletes its ExternalSecrets, then it is gone.
    ces_api
        .delete(&ces_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "ClusterExternalSecret and its ExternalSecrets gone",
        WAIT,
        || {
            let (client, b, d, name) =
                (client.clone(), ns_b.clone(), ns_d.clone(), ces_name.clone());
            async move {
                let gone = get_ces(&client, &name).await.is_none()
                    && get_es_opt(&client, &b, es_name).await.is_none()
                    && get_es_opt(&client, &d, es_name).await.is_none();
                gone.then_some(())
            }
        },
    )
    .await;

    let _ = stop_tx.send(());
    drop(ctl);
}
