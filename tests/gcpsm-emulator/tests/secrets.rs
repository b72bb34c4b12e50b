//! The emulator as Google's official Rust client sees it: secrets, versions, states, aliases,
//! checksums and errors.

mod common;

use common::*;
use google_cloud_gax::error::rpc::Code;
use google_cloud_secretmanager_v1::model::secret_version::State;
use google_cloud_secretmanager_v1::model::{Secret, SecretPayload};
use google_cloud_wkt::FieldMask;

#[tokio::test]
async fn create_add_access_with_project_number_names() {
    let (emu, client) = setup().await;
    let parent = format!("projects/{PROJECT}");
    let secret = create_secret(&client, &parent, "db-password", &[("env", "prod")]).await;
    let num = project_number();
    assert_eq!(secret.name, format!("projects/{num}/secrets/db-password"));
    assert_eq!(secret.labels.get("env").map(String::as_str), Some("prod"));
    assert!(secret.create_time.is_some());
    assert!(secret.replication.is_some(), "replication is echoed");
    assert!(!secret.etag.is_empty());

    // The request may use the project ID or the number; both reach the same secret.
    let by_id = format!("projects/{PROJECT}/secrets/db-password");
    let by_num = format!("projects/{num}/secrets/db-password");
    let v1 = add_version(&client, &by_id, b"hunter2").await;
    assert_eq!(v1.name, format!("{by_num}/versions/1"));
    assert_eq!(v1.state, State::Enabled);
    assert!(v1.create_time.is_some());
    assert!(!v1.client_specified_payload_checksum);
    let v2 = add_version(&client, &by_num, b"correct horse").await;
    assert_eq!(v2.name, format!("{by_num}/versions/2"));

    let latest = client
        .access_secret_version()
        .set_name(format!("{by_id}/versions/latest"))
        .send()
        .await
        .expect("access latest");
    assert_eq!(
        latest.name,
        format!("{by_num}/versions/2"),
        "concrete number"
    );
    let payload = latest.payload.expect("payload");
    assert_eq!(&payload.data[..], b"correct horse");
    assert_eq!(
        payload.data_crc32c,
        Some(i64::from(crc32c::crc32c(b"correct horse"))),
        "crc32c present and correct"
    );

    let first = client
        .access_secret_version()
        .set_name(format!("{by_num}/versions/1"))
        .send()
        .await
        .expect("access 1");
    assert_eq!(first.name, format!("{by_num}/versions/1"));
    assert_eq!(&first.payload.expect("payload").data[..], b"hunter2");

    let got = client
        .get_secret()
        .set_name(&by_id)
        .send()
        .await
        .expect("get secret");
    assert_eq!(got.name, by_num);
    assert_eq!(got.etag, secret.etag);

    let ver = client
        .get_secret_version()
        .set_name(format!("{by_id}/versions/latest"))
        .send()
        .await
        .expect("get version");
    assert_eq!(ver.name, format!("{by_num}/versions/2"));
    assert!(ver.replication_status.is_some());

    assert_eq!(emu.request_count("access"), 2);
    assert_eq!(emu.request_count("AccessSecretVersion"), 2);
    assert_eq!(emu.request_count("create_secret"), 1);
    assert_eq!(emu.request_count("add_version"), 2);
    assert_eq!(emu.request_count("get_secret"), 1);
    assert_eq!(emu.request_count("get_version"), 1);
    emu.reset_counts();
    assert_eq!(emu.total_requests(), 0);
}

#[tokio::test]
async fn binary_payloads_round_trip() {
    let (_emu, client) = setup().await;
    let parent = format!("projects/{PROJECT}");
    create_secret(&client, &parent, "bin", &[]).await;
    let name = format!("{parent}/secrets/bin");
    let data: Vec<u8> = (0..=255u8).chain([0, 0xff, 0xfe]).collect();
    add_version(&client, &name, &data).await;
    let got = client
        .access_secret_version()
        .set_name(format!("{name}/versions/1"))
        .send()
        .await
        .expect("access");
    assert_eq!(&got.payload.expect("payload").data[..], &data[..]);
}

#[tokio::test]
async fn crc32c_is_verified_when_given() {
    let (_emu, client) = setup().await;
    let parent = format!("projects/{PROJECT}");
    create_secret(&client, &parent, "checked", &[]).await;
    let name = format!("{parent}/secrets/checked");
    let good = client
        .add_secret_version()
        .set_parent(&name)
        .set_payload(
            SecretPayload::new()
                .set_data(bytes::Bytes::from_static(b"payload"))
                .set_data_crc32c(i64::from(crc32c::crc32c(b"payload"))),
        )
        .send()
        .await
        .expect("matching checksum is accepted");
    assert!(good.client_specified_payload_checksum);

    let err = client
        .add_secret_version()
        .set_parent(&name)
        .set_payload(
            SecretPayload::new()
                .set_data(bytes::Bytes::from_static(b"payload"))
                .set_data_crc32c(i64::from(crc32c::crc32c(b"payload")) ^ 1),
        )
        .send()
        .await
        .expect_err("mismatching checksum is rejected");
    assert_eq!(code_of(&err), Some(Code::InvalidArgument), "{err}");

    // Nothing was stored by the failed call.
    let latest = client
        .access_secret_version()
        .set_name(format!("{name}/versions/latest"))
        .send()
        .await
        .expect("access");
    assert_eq!(
        latest.name,
        format!("projects/{}/secrets/checked/versions/1", project_number())
    );
}

#[tokio::test]
async fn disable_enable_destroy_and_their_errors() {
    let (_emu, client) = setup().await;
    let parent = format!("projects/{PROJECT}");
    create_secret(&client, &parent, "rotating", &[]).await;
    let name = format!("{parent}/secrets/rotating");
    let num_name = format!("projects/{}/secrets/rotating", project_number());
    add_version(&client, &name, b"one").await;
    add_version(&client, &name, b"two").await;

    let disabled = client
        .disable_secret_version()
        .set_name(format!("{name}/versions/2"))
        .send()
        .await
        .expect("disable");
    assert_eq!(disabled.state, State::Disabled);

    // `latest` is the newest version even when it is disabled: access fails, no fallback.
    for v in ["2", "latest"] {
        let err = client
            .access_secret_version()
            .set_name(format!("{name}/versions/{v}"))
            .send()
            .await
            .expect_err("disabled version cannot be accessed");
        assert_eq!(code_of(&err), Some(Code::FailedPrecondition), "{err}");
        assert_eq!(
            message_of(&err),
            format!("Secret Version [{num_name}/versions/2] is in DISABLED state.")
        );
    }
    // Metadata of a disabled version is still readable.
    let meta = client
        .get_secret_version()
        .set_name(format!("{name}/versions/2"))
        .send()
        .await
        .expect("get disabled");
    assert_eq!(meta.state, State::Disabled);

    let enabled = client
        .enable_secret_version()
        .set_name(format!("{name}/versions/2"))
        .send()
        .await
        .expect("enable");
    assert_eq!(enabled.state, State::Enabled);
    let got = client
        .access_secret_version()
        .set_name(format!("{name}/versions/latest"))
        .send()
        .await
        .expect("access re-enabled");
    assert_eq!(&got.payload.expect("payload").data[..], b"two");

    // A stale etag is refused.
    let err = client
        .disable_secret_version()
        .set_name(format!("{name}/versions/2"))
        .set_etag(disabled.etag.clone())
        .send()
        .await
        .expect_err("stale etag");
    assert_eq!(code_of(&err), Some(Code::FailedPrecondition), "{err}");

    let destroyed = client
        .destroy_secret_version()
        .set_name(format!("{name}/versions/1"))
        .set_etag(enabled.etag.clone())
        .send()
        .await
        .expect_err("etag of version 2 does not fit version 1");
    assert_eq!(code_of(&destroyed), Some(Code::FailedPrecondition));
    let destroyed = client
        .destroy_secret_version()
        .set_name(format!("{name}/versions/1"))
        .send()
        .await
        .expect("destroy");
    assert_eq!(destroyed.state, State::Destroyed);
    assert!(destroyed.destroy_time.is_some());

    let err = client
        .access_secret_version()
        .set_name(format!("{name}/versions/1"))
        .send()
        .await
        .expect_err("destroyed");
    assert_eq!(code_of(&err), Some(Code::FailedPrecondition));
    assert_eq!(
        message_of(&err),
        format!("Secret Version [{num_name}/versions/1] is in DESTROYED state.")
    );
    let err = client
        .enable_secret_version()
        .set_name(format!("{name}/versions/1"))
        .send()
        .await
        .expect_err("a destroyed version stays destroyed");
    assert_eq!(code_of(&err), Some(Code::FailedPrecondition));
}

#[tokio::test]
async fn not_found_already_exists_and_invalid_names() {
    let (_emu, client) = setup().await;
    let parent = format!("projects/{PROJECT}");
    let num = project_number();

    let err = client
        .access_secret_version()
        .set_name(format!("{parent}/secrets/missing/versions/latest"))
        .send()
        .await
        .expect_err("missing secret");
    assert_eq!(code_of(&err), Some(Code::NotFound));
    assert_eq!(
        message_of(&err),
        format!("Secret [projects/{num}/secrets/missing] not found or has no versions.")
    );

    create_secret(&client, &parent, "empty", &[]).await;
    let err = client
        .access_secret_version()
        .set_name(format!("{parent}/secrets/empty/versions/latest"))
        .send()
        .await
        .expect_err("no versions");
    assert_eq!(code_of(&err), Some(Code::NotFound));
    assert_eq!(
        message_of(&err),
        format!("Secret [projects/{num}/secrets/empty] not found or has no versions.")
    );
    let err = client
        .access_secret_version()
        .set_name(format!("{parent}/secrets/empty/versions/7"))
        .send()
        .await
        .expect_err("no version 7");
    assert_eq!(code_of(&err), Some(Code::NotFound));
    assert_eq!(
        message_of(&err),
        format!("Secret Version [projects/{num}/secrets/empty/versions/7] not found.")
    );
    let err = client
        .get_secret()
        .set_name(format!("{parent}/secrets/missing"))
        .send()
        .await
        .expect_err("get missing");
    assert_eq!(code_of(&err), Some(Code::NotFound));

    let err = client
        .create_secret()
        .set_parent(&parent)
        .set_secret_id("empty")
        .set_secret(Secret::new().set_replication(automatic()))
        .send()
        .await
        .expect_err("duplicate");
    assert_eq!(code_of(&err), Some(Code::AlreadyExists), "{err}");

    for bad in ["has.dot", "has space", ""] {
        let err = client
            .create_secret()
            .set_parent(&parent)
            .set_secret_id(bad)
            .set_secret(Secret::new().set_replication(automatic()))
            .send()
            .await
            .expect_err("bad secret id");
        assert_eq!(code_of(&err), Some(Code::InvalidArgument), "{bad:?}: {err}");
    }
    let err = client
        .get_secret()
        .set_name(format!("{parent}/secrets/bad.name"))
        .send()
        .await
        .expect_err("bad name");
    assert_eq!(code_of(&err), Some(Code::InvalidArgument), "{err}");
    let err = client
        .access_secret_version()
        .set_name(format!("{parent}/secrets/empty/versions/0"))
        .send()
        .await
        .expect_err("version 0");
    assert_eq!(code_of(&err), Some(Code::InvalidArgument), "{err}");

    // Global secrets need a replication policy.
    let err = client
        .create_secret()
        .set_parent(&parent)
        .set_secret_id("no-replication")
        .set_secret(Secret::new())
        .send()
        .await
        .expect_err("missing replication");
    assert_eq!(code_of(&err), Some(Code::InvalidArgument), "{err}");
    let err = client
        .create_secret()
        .set_parent(&parent)
        .set_secret_id("bad-label")
        .set_secret(
            Secret::new()
                .set_replication(automatic())
                .set_labels([("Upper", "x")]),
        )
        .send()
        .await
        .expect_err("bad label key");
    assert_eq!(code_of(&err), Some(Code::InvalidArgument), "{err}");
}

#[tokio::test]
async fn aliases_labels_annotations_update_and_delete() {
    let (_emu, client) = setup().await;
    let parent = format!("projects/{PROJECT}");
    let secret = create_secret(&client, &parent, "aliased", &[("env", "dev")]).await;
    let name = format!("{parent}/secrets/aliased");
    add_version(&client, &name, b"v1").await;
    add_version(&client, &name, b"v2").await;

    let updated = client
        .update_secret()
        .set_secret(
            Secret::new()
                .set_name(&name)
                .set_version_aliases([("current", 1i64), ("next", 2i64)])
                .set_labels([("env", "prod"), ("team", "core")])
                .set_annotations([("owner", "platform")]),
        )
        .set_update_mask(FieldMask::default().set_paths([
            "version_aliases",
            "labels",
            "annotations",
        ]))
        .send()
        .await
        .expect("update");
    assert_eq!(updated.version_aliases.get("current"), Some(&1));
    assert_eq!(updated.version_aliases.get("next"), Some(&2));
    assert_eq!(updated.labels.get("env").map(String::as_str), Some("prod"));
    assert_eq!(
        updated.annotations.get("owner").map(String::as_str),
        Some("platform")
    );
    assert_ne!(updated.etag, secret.etag);

    let got = client
        .access_secret_version()
        .set_name(format!("{name}/versions/current"))
        .send()
        .await
        .expect("access by alias");
    assert_eq!(
        got.name,
        format!("projects/{}/secrets/aliased/versions/1", project_number())
    );
    assert_eq!(&got.payload.expect("payload").data[..], b"v1");

    let err = client
        .access_secret_version()
        .set_name(format!("{name}/versions/nope"))
        .send()
        .await
        .expect_err("unknown alias");
    assert_eq!(code_of(&err), Some(Code::NotFound), "{err}");

    // Only masked fields change.
    let only_labels = client
        .update_secret()
        .set_secret(Secret::new().set_name(&name).set_labels([("env", "qa")]))
        .set_update_mask(FieldMask::default().set_paths(["labels"]))
        .send()
        .await
        .expect("update labels");
    assert_eq!(only_labels.labels.len(), 1);
    assert_eq!(only_labels.version_aliases.len(), 2);
    assert_eq!(only_labels.annotations.len(), 1);

    let err = client
        .update_secret()
        .set_secret(
            Secret::new()
                .set_name(&name)
                .set_version_aliases([("x", 9i64)]),
        )
        .set_update_mask(FieldMask::default().set_paths(["version_aliases"]))
        .send()
        .await
        .expect_err("alias to a missing version");
    assert_eq!(code_of(&err), Some(Code::InvalidArgument), "{err}");

    client
        .delete_secret()
        .set_name(&name)
        .send()
        .await
        .expect("delete");
    let err = client
        .get_secret()
        .set_name(&name)
        .send()
        .await
        .expect_err("deleted");
    assert_eq!(code_of(&err), Some(Code::NotFound));
    let err = client
        .access_secret_version()
        .set_name(format!("{name}/versions/1"))
        .send()
        .await
        .expect_err("versions went with the secret");
    assert_eq!(code_of(&err), Some(Code::NotFound));
}

async fn refuses_connections(addr: std::net::SocketAddr) -> bool {
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn dropping_or_shutting_down_the_handle_stops_the_server() {
    let (emu, client) = setup().await;
    let addr = emu.addr();
    assert_eq!(emu.endpoint(), format!("http://{addr}"));
    create_secret(&client, &format!("projects/{PROJECT}"), "x", &[]).await;
    drop(emu);
    assert!(
        refuses_connections(addr).await,
        "listener closed after drop"
    );

    // Shutdown returns promptly even while the client keeps an idle keep-alive connection.
    let (emu, client) = setup().await;
    let addr = emu.addr();
    create_secret(&client, &format!("projects/{PROJECT}"), "y", &[]).await;
    tokio::time::timeout(std::time::Duration::from_secs(5), emu.shutdown())
        .await
        .expect("shutdown finishes");
    assert!(
        refuses_connections(addr).await,
        "listener closed after shutdown"
    );
}
