//! Listing through the official client: pagination, filters, version lists and regional
//! isolation.

mod common;

use common::*;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::paginator::{ItemPaginator as _, Paginator as _};
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model::secret_version::State;

async fn all_names(client: &SecretManagerService, parent: &str, filter: &str) -> Vec<String> {
    let mut items = client
        .list_secrets()
        .set_parent(parent)
        .set_filter(filter)
        .by_item();
    let mut out = Vec::new();
    while let Some(item) = items.next().await {
        out.push(item.expect("list item").name);
    }
    out
}

fn ids(names: &[String]) -> Vec<&str> {
    names
        .iter()
        .map(|n| n.rsplit('/').next().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn default_page_size_forces_pagination() {
    let (emu, client) = setup().await;
    let parent = format!("projects/{PROJECT}");
    for i in 0..30 {
        let env = if i % 3 == 0 { "prod" } else { "dev" };
        create_secret(&client, &parent, &format!("s-{i:02}"), &[("env", env)]).await;
    }
    // One unfiltered page: the server's default size, a token and the total.
    let first = client
        .list_secrets()
        .set_parent(&parent)
        .send()
        .await
        .expect("first page");
    assert_eq!(first.secrets.len(), gcpsm_emulator::DEFAULT_PAGE_SIZE);
    assert!(!first.next_page_token.is_empty(), "more pages follow");
    assert_eq!(first.total_size, 30);

    emu.reset_counts();
    let mut pages = client.list_secrets().set_parent(&parent).by_page();
    let mut seen = Vec::new();
    let mut page_count = 0;
    while let Some(page) = pages.next().await {
        let page = page.expect("page");
        page_count += 1;
        seen.extend(page.secrets.into_iter().map(|s| s.name));
    }
    assert_eq!(page_count, 2);
    assert_eq!(emu.request_count("list_secrets"), 2);
    let expected: Vec<String> = (0..30)
        .map(|i| format!("projects/{}/secrets/s-{i:02}", project_number()))
        .collect();
    assert_eq!(seen, expected, "all secrets, sorted by name, none twice");

    // Explicit page sizes.
    let mut pages = client
        .list_secrets()
        .set_parent(&parent)
        .set_page_size(7)
        .by_page();
    let mut sizes = Vec::new();
    while let Some(page) = pages.next().await {
        sizes.push(page.expect("page").secrets.len());
    }
    assert_eq!(sizes, vec![7, 7, 7, 7, 2]);

    // Filters page too, and report no total.
    let prod = all_names(&client, &parent, "labels.env=prod").await;
    assert_eq!(prod.len(), 10);
    let filtered = client
        .list_secrets()
        .set_parent(&parent)
        .set_filter("labels.env=prod")
        .set_page_size(4)
        .send()
        .await
        .expect("filtered page");
    assert_eq!(filtered.secrets.len(), 4);
    assert_eq!(filtered.total_size, 0);
    assert!(!filtered.next_page_token.is_empty());

    let err = client
        .list_secrets()
        .set_parent(&parent)
        .set_page_token("not-a-token")
        .send()
        .await
        .expect_err("bad token");
    assert_eq!(code_of(&err), Some(Code::InvalidArgument));
}

#[tokio::test]
async fn filters_by_label_and_name() {
    let (_emu, client) = setup().await;
    let parent = format!("projects/{PROJECT}");
    create_secret(
        &client,
        &parent,
        "app-db-password",
        &[("env", "prod"), ("team", "core")],
    )
    .await;
    create_secret(
        &client,
        &parent,
        "app-api-key",
        &[("env", "dev"), ("team", "core")],
    )
    .await;
    create_secret(&client, &parent, "billing-token", &[("env", "prod")]).await;
    create_secret(&client, &parent, "unlabelled", &[]).await;

    let cases: &[(&str, &[&str])] = &[
        (
            "",
            &[
                "app-api-key",
                "app-db-password",
                "billing-token",
                "unlabelled",
            ],
        ),
        ("name:app", &["app-api-key", "app-db-password"]),
        ("name:APP", &["app-api-key", "app-db-password"]),
        ("name:app*password", &["app-db-password"]),
        ("labels.env=prod", &["app-db-password", "billing-token"]),
        ("labels.team:*", &["app-api-key", "app-db-password"]),
        ("labels.env:pro", &["app-db-password", "billing-token"]),
        ("labels.env=prod AND labels.team=core", &["app-db-password"]),
        ("labels.env=prod labels.team=core", &["app-db-password"]),
        ("name:app AND labels.env=dev", &["app-api-key"]),
        (
            "name:billing OR name:api",
            &["app-api-key", "billing-token"],
        ),
        ("NOT labels.env:*", &["unlabelled"]),
        ("-labels.team:* AND labels.env=prod", &["billing-token"]),
        (
            "replication.automatic:*",
            &[
                "app-api-key",
                "app-db-password",
                "billing-token",
                "unlabelled",
            ],
        ),
        (
            "create_time>2000-01-01T00:00:00Z",
            &[
                "app-api-key",
                "app-db-password",
                "billing-token",
                "unlabelled",
            ],
        ),
        ("create_time<2000-01-01T00:00:00Z", &[]),
    ];
    for (filter, want) in cases {
        let got = all_names(&client, &parent, filter).await;
        assert_eq!(ids(&got), *want, "filter {filter:?}");
    }

    for bad in [
        "app",
        "name ~ \"a.*\"",
        "labels.env=prod AND",
        "(name:a",
        "foo:bar",
    ] {
        let err = client
            .list_secrets()
            .set_parent(&parent)
            .set_filter(bad)
            .send()
            .await
            .expect_err("unsupported filter");
        assert_eq!(code_of(&err), Some(Code::InvalidArgument), "{bad:?}: {err}");
    }
}

#[tokio::test]
async fn version_lists_newest_first_with_state_filter() {
    let (_emu, client) = setup().await;
    let parent = format!("projects/{PROJECT}");
    create_secret(&client, &parent, "many", &[]).await;
    let name = format!("{parent}/secrets/many");
    for i in 1..=30 {
        add_version(&client, &name, format!("v{i}").as_bytes()).await;
    }
    for v in [3, 5] {
        client
            .disable_secret_version()
            .set_name(format!("{name}/versions/{v}"))
            .send()
            .await
            .expect("disable");
    }
    let mut items = client.list_secret_versions().set_parent(&name).by_item();
    let mut numbers = Vec::new();
    while let Some(v) = items.next().await {
        let v = v.expect("version");
        numbers.push(
            v.name
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .parse::<i64>()
                .unwrap_or(0),
        );
    }
    assert_eq!(numbers, (1..=30).rev().collect::<Vec<_>>());

    let disabled = client
        .list_secret_versions()
        .set_parent(&name)
        .set_filter("state:DISABLED")
        .send()
        .await
        .expect("filtered");
    let states: Vec<State> = disabled.versions.iter().map(|v| v.state.clone()).collect();
    assert_eq!(states, vec![State::Disabled, State::Disabled]);
    assert_eq!(disabled.versions[0].name.rsplit('/').next(), Some("5"));

    let err = client
        .list_secret_versions()
        .set_parent(format!("{parent}/secrets/nope"))
        .send()
        .await
        .expect_err("missing secret");
    assert_eq!(code_of(&err), Some(Code::NotFound));
}

#[tokio::test]
async fn regional_secrets_are_a_separate_namespace() {
    let (_emu, client) = setup().await;
    let global = format!("projects/{PROJECT}");
    let regional = format!("projects/{PROJECT}/locations/us-east1");
    let num = project_number();

    create_secret(&client, &global, "shared", &[]).await;
    add_version(
        &client,
        &format!("{global}/secrets/shared"),
        b"global value",
    )
    .await;

    // The regional namespace does not see the global secret of the same name.
    let err = client
        .access_secret_version()
        .set_name(format!("{regional}/secrets/shared/versions/latest"))
        .send()
        .await
        .expect_err("regional must not read the global secret");
    assert_eq!(code_of(&err), Some(Code::NotFound));
    assert_eq!(
        message_of(&err),
        format!(
            "Secret [projects/{num}/locations/us-east1/secrets/shared] not found or has no versions."
        )
    );

    let created = create_secret(&client, &regional, "shared", &[("scope", "regional")]).await;
    assert_eq!(
        created.name,
        format!("projects/{num}/locations/us-east1/secrets/shared")
    );
    assert!(
        created.replication.is_none(),
        "regional secrets have no replication"
    );
    let v = add_version(
        &client,
        &format!("{regional}/secrets/shared"),
        b"regional value",
    )
    .await;
    assert_eq!(
        v.name,
        format!("projects/{num}/locations/us-east1/secrets/shared/versions/1")
    );

    let got = client
        .access_secret_version()
        .set_name(format!("{regional}/secrets/shared/versions/latest"))
        .send()
        .await
        .expect("regional access");
    assert_eq!(&got.payload.expect("payload").data[..], b"regional value");
    let got = client
        .access_secret_version()
        .set_name(format!("{global}/secrets/shared/versions/latest"))
        .send()
        .await
        .expect("global access");
    assert_eq!(&got.payload.expect("payload").data[..], b"global value");

    create_secret(&client, &regional, "only-regional", &[]).await;
    let err = client
        .get_secret()
        .set_name(format!("{global}/secrets/only-regional"))
        .send()
        .await
        .expect_err("global must not see a regional secret");
    assert_eq!(code_of(&err), Some(Code::NotFound));

    assert_eq!(ids(&all_names(&client, &global, "").await), ["shared"]);
    assert_eq!(
        ids(&all_names(&client, &regional, "").await),
        ["only-regional", "shared"]
    );
    assert!(
        all_names(
            &client,
            &format!("projects/{PROJECT}/locations/europe-west1"),
            ""
        )
        .await
        .is_empty()
    );

    // Regional secrets must not carry a replication policy.
    let err = client
        .create_secret()
        .set_parent(&regional)
        .set_secret_id("with-replication")
        .set_secret(
            google_cloud_secretmanager_v1::model::Secret::new().set_replication(automatic()),
        )
        .send()
        .await
        .expect_err("replication on a regional secret");
    assert_eq!(code_of(&err), Some(Code::InvalidArgument));
}
