//! Reads, versions, metadata, find, regions and errors against the gcpsm emulator.

mod common;

use std::collections::BTreeMap;

use common::*;
use google_cloud_secretmanager_v1::model::Secret;
use google_cloud_wkt::FieldMask;
use refsync_core::api::{
    GcpSmAuth, GcpWorkloadIdentity, GcpWorkloadIdentityFederation, ServiceAccountSelector,
};
use refsync_core::convert;
use refsync_core::{ErrorKind, FindRef, Provider, RemoteRef};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn at(key: &str, version: &str) -> RemoteRef {
    RemoteRef {
        key: key.into(),
        version: Some(version.into()),
        metadata: false,
    }
}

#[tokio::test]
async fn metadata_is_esos_document() {
    let env = Env::start().await;
    env.put_annotated(
        None,
        "meta",
        b"v",
        &labels(&[("team", "blue"), ("env", "prod")]),
        &labels(&[("owner.example.com", "ops@example.com")]),
    )
    .await;
    env.put(None, "bare", b"v", &labels(&[("team", "red")]))
        .await;
    let p = env
        .provider(store(None), Reader::default())
        .await
        .expect("provider");
    let md = p
        .get_secret(&RemoteRef {
            key: "meta".into(),
            version: None,
            metadata: true,
        })
        .await
        .expect("metadata");
    assert_eq!(
        std::str::from_utf8(md.expose()).unwrap(),
        r#"{"annotations":{"owner.example.com":"ops@example.com"},"labels":{"env":"prod","team":"blue"}}"#
    );
    let mode = p.property_mode();
    assert_eq!(
        convert::property(md.expose(), "labels.team", mode).as_deref(),
        Some(&b"blue"[..])
    );
    assert_eq!(
        convert::property(md.expose(), "labels", mode).as_deref(),
        Some(&br#"{"env":"prod","team":"blue"}"#[..])
    );
    let bare = p
        .get_secret(&RemoteRef {
            key: "bare".into(),
            version: None,
            metadata: true,
        })
        .await
        .expect("metadata");
    assert_eq!(
        bare.expose(),
        br#"{"annotations":null,"labels":{"team":"red"}}"#
    );
    let e = p
        .get_secret(&RemoteRef {
            key: "nope".into(),
            version: None,
            metadata: true,
        })
        .await
        .expect_err("missing");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(env.calls.count("GetSecret"), 3);
    assert_eq!(env.calls.count("AccessSecretVersion"), 0);
}

#[tokio::test]
async fn versions_aliases_and_resource_names() {
    let env = Env::start().await;
    for v in ["one", "two", "three"] {
        env.put(None, "multi", v.as_bytes(), &BTreeMap::new()).await;
    }
    let name = format!("projects/{PROJECT}/secrets/multi");
    env.admin
        .update_secret()
        .set_secret(
            Secret::new()
                .set_name(&name)
                .set_version_aliases([("prod", 2i64)]),
        )
        .set_update_mask(FieldMask::default().set_paths(["version_aliases"]))
        .send()
        .await
        .expect("alias");
    let p = env
        .provider(store(None), Reader::default())
        .await
        .expect("provider");
    let get = |r: RemoteRef| {
        let p = &p;
        async move {
            p.get_secret(&r)
                .await
                .map(|v| String::from_utf8(v.into_vec()).unwrap())
        }
    };
    assert_eq!(get(RemoteRef::new("multi")).await.unwrap(), "three");
    assert_eq!(get(at("multi", "latest")).await.unwrap(), "three");
    assert_eq!(get(at("multi", "1")).await.unwrap(), "one");
    assert_eq!(get(at("multi", "prod")).await.unwrap(), "two");
    assert_eq!(
        get(RemoteRef::new(format!("{name}/versions/1")))
            .await
            .unwrap(),
        "one"
    );
    assert_eq!(get(RemoteRef::new(name.clone())).await.unwrap(), "three");
    // Names come back with the project number; a key may use either form.
    let numbered = env
        .admin
        .get_secret()
        .set_name(&name)
        .send()
        .await
        .expect("get")
        .name;
    assert_ne!(numbered, name);
    let by_number = format!("{numbered}/versions/prod");
    assert_eq!(get(RemoteRef::new(by_number)).await.unwrap(), "two");
    assert_eq!(
        get(at("multi", "99")).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        get(at("multi", "nope-alias")).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        get(RemoteRef::new(format!("{name}/versions/1")))
            .await
            .map(|_| ()),
        Ok(())
    );
    let e = get(RemoteRef {
        key: format!("{name}/versions/1"),
        version: Some("2".into()),
        metadata: false,
    })
    .await;
    assert_eq!(e.unwrap_err().kind, ErrorKind::Invalid);
    assert_eq!(
        get(RemoteRef::new("a/b")).await.unwrap_err().kind,
        ErrorKind::Invalid
    );
}

#[tokio::test]
async fn disabled_versions_and_latest_or_fetch() {
    let env = Env::start().await;
    for v in ["one", "two", "three"] {
        env.put(None, "rot", v.as_bytes(), &BTreeMap::new()).await;
    }
    env.admin
        .disable_secret_version()
        .set_name(format!("projects/{PROJECT}/secrets/rot/versions/3"))
        .send()
        .await
        .expect("disable");
    let strict = env
        .provider(store(None), Reader::default())
        .await
        .expect("provider");
    let e = strict
        .get_secret(&RemoteRef::new("rot"))
        .await
        .expect_err("latest is disabled");
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(
        e.message.contains("DISABLED state") && e.message.contains("FAILED_PRECONDITION"),
        "{e}"
    );

    let mut g = store(None);
    g.secret_version_selection_policy = Some("LatestOrFetch".into());
    let fetch = env.provider(g, Reader::default()).await.expect("provider");
    assert_eq!(
        fetch
            .get_secret(&RemoteRef::new("rot"))
            .await
            .expect("newest enabled")
            .expose(),
        b"two"
    );
    assert_eq!(env.calls.count("ListSecretVersions"), 1);
    // An explicit version is never replaced.
    assert_eq!(
        fetch
            .get_secret(&at("rot", "3"))
            .await
            .expect_err("explicit")
            .kind,
        ErrorKind::Config
    );
}

#[tokio::test]
async fn find_follows_every_page() {
    let env = Env::start().await;
    for i in 0..60 {
        env.put(
            None,
            &format!("page-{i:02}"),
            format!("v{i}").as_bytes(),
            &labels(&[("bulk", "yes")]),
        )
        .await;
    }
    env.put(None, "other", b"x", &BTreeMap::new()).await;
    let p = env
        .provider(store(None), Reader::default())
        .await
        .expect("provider");
    env.emu.handle().reset_counts();
    let found = p
        .find(&FindRef {
            name_regexp: Some("^page-".into()),
            ..Default::default()
        })
        .await
        .expect("find");
    assert_eq!(found.len(), 60);
    assert_eq!(found["page-42"].expose(), b"v42");
    assert_eq!(env.calls.count("ListSecrets"), 3, "25 + 25 + 11 entries");
    assert_eq!(env.emu.handle().request_count("ListSecrets"), 3);
    assert_eq!(env.emu.handle().request_count("AccessSecretVersion"), 60);

    let found = p
        .find(&FindRef {
            tags: labels(&[("bulk", "yes")]),
            ..Default::default()
        })
        .await
        .expect("tags");
    assert_eq!(found.len(), 60);
    // The label filter runs on the server: pages of matches only.
    assert_eq!(env.emu.handle().request_count("ListSecrets"), 6);
}

#[tokio::test]
async fn find_by_tags_and_path() {
    let env = Env::start().await;
    env.put(
        None,
        "db-main",
        b"1",
        &labels(&[("env", "prod"), ("team", "a")]),
    )
    .await;
    env.put(
        None,
        "db-replica",
        b"2",
        &labels(&[("env", "prod"), ("team", "b")]),
    )
    .await;
    env.put(
        None,
        "cache",
        b"3",
        &labels(&[("env", "prod"), ("team", "a")]),
    )
    .await;
    let p = env
        .provider(store(None), Reader::default())
        .await
        .expect("provider");
    let keys = |m: refsync_core::SecretMap| m.keys().cloned().collect::<Vec<_>>();
    let f = FindRef {
        tags: labels(&[("env", "prod"), ("team", "a")]),
        ..Default::default()
    };
    assert_eq!(keys(p.find(&f).await.unwrap()), ["cache", "db-main"]);
    let f = FindRef {
        tags: labels(&[("env", "prod")]),
        path: Some("db-".into()),
        ..Default::default()
    };
    assert_eq!(keys(p.find(&f).await.unwrap()), ["db-main", "db-replica"]);
    let f = FindRef {
        name_regexp: Some("main|cache".into()),
        path: Some("db".into()),
        ..Default::default()
    };
    assert_eq!(keys(p.find(&f).await.unwrap()), ["db-main"]);
    let f = FindRef {
        tags: labels(&[("env", "prod) OR (x")]),
        ..Default::default()
    };
    assert_eq!(p.find(&f).await.unwrap_err().kind, ErrorKind::Invalid);
    assert_eq!(
        p.find(&FindRef::default()).await.unwrap_err().kind,
        ErrorKind::Invalid
    );
    let f = FindRef {
        name_regexp: Some("(".into()),
        ..Default::default()
    };
    assert_eq!(p.find(&f).await.unwrap_err().kind, ErrorKind::Invalid);
}

#[tokio::test]
async fn regional_and_global_secrets_are_separate() {
    let env = Env::start().await;
    env.put(None, "same", b"global", &labels(&[("k", "v")]))
        .await;
    env.put(
        Some("us-east1"),
        "same",
        b"regional",
        &labels(&[("k", "v")]),
    )
    .await;
    env.put(Some("us-east1"), "only-regional", b"r", &BTreeMap::new())
        .await;
    let global = env
        .provider(store(None), Reader::default())
        .await
        .expect("global");
    let regional = env
        .provider(store(Some("us-east1")), Reader::default())
        .await
        .expect("regional");
    assert_eq!(
        global
            .get_secret(&RemoteRef::new("same"))
            .await
            .unwrap()
            .expose(),
        b"global"
    );
    assert_eq!(
        regional
            .get_secret(&RemoteRef::new("same"))
            .await
            .unwrap()
            .expose(),
        b"regional"
    );
    assert!(
        global
            .get_secret(&RemoteRef::new("only-regional"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    let full = format!("projects/{PROJECT}/locations/us-east1/secrets/only-regional");
    assert_eq!(
        regional
            .get_secret(&RemoteRef::new(full.clone()))
            .await
            .unwrap()
            .expose(),
        b"r"
    );
    assert_eq!(
        global
            .get_secret(&RemoteRef::new(full))
            .await
            .unwrap_err()
            .kind,
        ErrorKind::Invalid
    );
    let tags = FindRef {
        tags: labels(&[("k", "v")]),
        ..Default::default()
    };
    assert_eq!(
        regional.find(&tags).await.unwrap()["same"].expose(),
        b"regional"
    );
    assert_eq!(
        global.find(&tags).await.unwrap()["same"].expose(),
        b"global"
    );
}

#[tokio::test]
async fn missing_things_and_empty_secrets() {
    let env = Env::start().await;
    env.admin
        .create_secret()
        .set_parent(format!("projects/{PROJECT}"))
        .set_secret_id("empty")
        .set_secret(
            Secret::new().set_replication(
                google_cloud_secretmanager_v1::model::Replication::new().set_automatic(
                    google_cloud_secretmanager_v1::model::replication::Automatic::new(),
                ),
            ),
        )
        .send()
        .await
        .expect("create");
    let p = env
        .provider(store(None), Reader::default())
        .await
        .expect("provider");
    assert!(
        p.get_secret(&RemoteRef::new("empty"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        p.get_secret(&RemoteRef::new("never"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    // find fails as ESO's does when a match has no version.
    let e = p
        .find(&FindRef {
            name_regexp: Some("^empty$".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn property_mode_is_esos_escaped_dots_first() {
    let env = Env::start().await;
    env.put(
        None,
        "dots",
        br#"{"a.b":"literal","a":{"b":"nested"},"c":{"d":"deep"}}"#,
        &BTreeMap::new(),
    )
    .await;
    let p = env
        .provider(store(None), Reader::default())
        .await
        .expect("provider");
    let doc = p.get_secret(&RemoteRef::new("dots")).await.unwrap();
    let mode = p.property_mode();
    assert_eq!(
        convert::property(doc.expose(), "a.b", mode).as_deref(),
        Some(&b"literal"[..])
    );
    assert_eq!(
        convert::property(doc.expose(), "c.d", mode).as_deref(),
        Some(&b"deep"[..])
    );
}

#[tokio::test]
async fn store_config_errors() {
    let env = Env::start().await;
    let cases: Vec<(refsync_core::api::GcpSmProvider, &str)> = vec![
        (
            refsync_core::api::GcpSmProvider {
                project_id: None,
                ..store(None)
            },
            "spec.provider.gcpsm.projectID",
        ),
        (
            refsync_core::api::GcpSmProvider {
                project_id: Some("Bad/Project".into()),
                ..store(None)
            },
            "projectID",
        ),
        (store(Some("us-east1/../x")), "spec.provider.gcpsm.location"),
        (
            refsync_core::api::GcpSmProvider {
                secret_version_selection_policy: Some("Sometimes".into()),
                ..store(None)
            },
            "secretVersionSelectionPolicy",
        ),
        (
            refsync_core::api::GcpSmProvider {
                auth: Some(GcpSmAuth {
                    workload_identity: Some(GcpWorkloadIdentity {
                        service_account_ref: ServiceAccountSelector {
                            name: "sa".into(),
                            ..Default::default()
                        },
                        cluster_location: Some("europe-west1".into()),
                        cluster_name: Some("c".into()),
                        cluster_project_id: None,
                    }),
                    ..Default::default()
                }),
                ..store(None)
            },
            "GCP_SECRETMANAGER_ENDPOINT",
        ),
        (
            refsync_core::api::GcpSmProvider {
                auth: Some(GcpSmAuth {
                    workload_identity_federation: Some(GcpWorkloadIdentityFederation {
                        audience: Some("aud".into()),
                        service_account_ref: Some(ServiceAccountSelector {
                            name: "sa".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..store(None)
            },
            "GCP_SECRETMANAGER_ENDPOINT",
        ),
    ];
    for (g, field) in cases {
        let e = env.provider(g, Reader::default()).await.expect_err(field);
        assert_eq!(e.kind, ErrorKind::Config, "{e}");
        assert!(e.message.contains(field), "{field}: {e}");
    }
    assert_eq!(env.emu.handle().total_requests(), 0);
}
