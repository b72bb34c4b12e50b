//! The provider conformance kit (feature `conformance`): one behaviour suite that every provider
//! runs unchanged against its real server. A provider's test supplies a `Backend` that can
//! write fixtures to that server and build the provider under test.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::convert;
use crate::error::{ErrorKind, Result};
use crate::provider::{FindRef, Provider, RemoteRef};

/// What a backend can do beyond plain reads; the suite skips nothing silently: a capability
/// that is `false` is reported in the returned `Report`.
#[derive(Clone, Debug, Default)]
pub struct Features {
    /// `find` by tags / labels / custom metadata.
    pub find_by_tags: bool,
    /// `find` by path prefix.
    pub find_by_path: bool,
    /// Reading an older version by `version`.
    pub versions: bool,
    /// `metadataPolicy: Fetch`.
    pub metadata: bool,
}

/// Test fixtures on the real server.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A prefix unique to this run (so parallel tests do not see each other's secrets).
    fn prefix(&self) -> String;
    /// Creates or replaces the secret `key` with `value` and `tags`; returns the version id a
    /// `RemoteRef.version` can name (if the backend has versions).
    async fn put(
        &self,
        key: &str,
        value: &[u8],
        tags: &BTreeMap<String, String>,
    ) -> Result<Option<String>>;
    /// The provider under test, configured for this backend.
    async fn provider(&self) -> Result<Arc<dyn Provider>>;
    fn features(&self) -> Features;
    /// The raw value the provider returns for a fixture written with `value`. Most backends
    /// return it unchanged; a Vault secret is a map, so Vault stores `{"value": ..}` and
    /// returns that document (ESO's semantics: the whole data map as JSON).
    fn expected_raw(&self, value: &[u8]) -> Vec<u8> {
        value.to_vec()
    }
    /// The `property` that selects the fixture's value inside `expected_raw`, if any.
    fn value_property(&self) -> Option<&'static str> {
        None
    }
}

/// What the suite checked.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: Vec<&'static str>,
    pub not_supported: Vec<&'static str>,
}

const CANARY: &str = "conformance-canary-5f0c1e";

/// Runs every check; panics (test failure) with a message naming the check.
pub async fn run(backend: &dyn Backend) -> Report {
    let mut report = Report::default();
    let p = backend.prefix();
    let none = BTreeMap::new();
    let key = |name: &str| format!("{p}{name}");
    let put = |k: String, v: &'static [u8], tags: BTreeMap<String, String>| async move {
        backend
            .put(&k, v, &tags)
            .await
            .unwrap_or_else(|e| panic!("fixture {k}: {e}"))
    };

    let plain = key("plain");
    put(plain.clone(), b"s3cr3t-value", none.clone()).await;
    let json = key("json");
    put(
        json.clone(),
        br#"{"user":"admin","pass":"conformance-canary-5f0c1e","nested":{"port":5432}}"#,
        none.clone(),
    )
    .await;
    let mut tags = BTreeMap::new();
    tags.insert("team".to_string(), format!("{p}blue").replace('/', "-"));
    let tagged = key("tagged-a");
    put(tagged.clone(), b"tagged-value", tags.clone()).await;

    let provider = backend.provider().await.expect("provider builds");

    // validate
    provider
        .validate()
        .await
        .expect("validate succeeds against a working server");
    report.passed.push("validate");

    // get: exact bytes
    let v = provider
        .get_secret(&RemoteRef::new(plain.clone()))
        .await
        .expect("get plain");
    let raw = |value: &[u8]| backend.expected_raw(value);
    assert_eq!(
        v.expose(),
        raw(b"s3cr3t-value"),
        "get returns the exact bytes"
    );
    if let Some(prop) = backend.value_property() {
        let got = convert::property(v.expose(), prop, provider.property_mode());
        assert_eq!(
            got.as_deref(),
            Some(&b"s3cr3t-value"[..]),
            "property {prop} selects the value"
        );
    }
    report.passed.push("get");

    // property through the engine's rules, with the provider's mode
    let doc = provider
        .get_secret(&RemoteRef::new(json.clone()))
        .await
        .expect("get json");
    let mode = provider.property_mode();
    assert_eq!(
        convert::property(doc.expose(), "user", mode).as_deref(),
        Some(&b"admin"[..])
    );
    assert_eq!(
        convert::property(doc.expose(), "nested.port", mode).as_deref(),
        Some(&b"5432"[..])
    );
    let map = convert::json_to_map(doc.expose()).expect("json document maps");
    assert_eq!(map["pass"].expose(), CANARY.as_bytes());
    report.passed.push("property+extract");

    // missing → NotFound, and no value in any error
    let missing = provider
        .get_secret(&RemoteRef::new(key("does-not-exist")))
        .await
        .expect_err("missing key fails");
    assert_eq!(
        missing.kind,
        ErrorKind::NotFound,
        "missing key is NotFound: {missing}"
    );
    report.passed.push("not-found");

    // batch: aligned, mixed hits and misses
    let refs = vec![
        RemoteRef::new(plain.clone()),
        RemoteRef::new(key("missing-2")),
        RemoteRef::new(json.clone()),
    ];
    let got = provider.get_secrets(&refs).await;
    assert_eq!(got.len(), 3, "get_secrets returns one result per ref");
    assert_eq!(
        got[0].as_ref().expect("batch[0]").expose(),
        raw(b"s3cr3t-value")
    );
    assert_eq!(
        got[1].as_ref().expect_err("batch[1] missing").kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        convert::property(got[2].as_ref().expect("batch[2]").expose(), "user", mode).as_deref(),
        Some(&b"admin"[..])
    );
    report.passed.push("batch");

    // find by name
    let found = provider
        .find(&FindRef {
            name_regexp: Some(format!("^{}tagged-.*", regex::escape(&p))),
            ..Default::default()
        })
        .await
        .expect("find by name");
    let (k, v) = found
        .iter()
        .next()
        .expect("find by name matches the fixture");
    assert!(k.ends_with("tagged-a"), "find key is the remote name: {k}");
    assert_eq!(v.expose(), raw(b"tagged-value"));
    assert_eq!(
        found.len(),
        1,
        "find by name matches only the fixture: {:?}",
        found.keys().collect::<Vec<_>>()
    );
    report.passed.push("find-by-name");

    let features = backend.features();
    if features.find_by_tags {
        let found = provider
            .find(&FindRef {
                tags: tags.clone(),
                ..Default::default()
            })
            .await
            .expect("find by tags");
        assert_eq!(
            found.len(),
            1,
            "find by tags: {:?}",
            found.keys().collect::<Vec<_>>()
        );
        assert_eq!(
            found.values().next().map(|v| v.expose().to_vec()),
            Some(raw(b"tagged-value"))
        );
        report.passed.push("find-by-tags");
    } else {
        report.not_supported.push("find-by-tags");
    }

    if features.versions {
        let vkey = key("versioned");
        let v1 = put(vkey.clone(), b"first", none.clone()).await;
        put(vkey.clone(), b"second", none.clone()).await;
        let latest = provider
            .get_secret(&RemoteRef::new(vkey.clone()))
            .await
            .expect("latest");
        assert_eq!(latest.expose(), raw(b"second"));
        let v1 = v1.expect("a versioned backend returns the version id");
        let old = provider
            .get_secret(&RemoteRef {
                key: vkey.clone(),
                version: Some(v1),
                metadata: false,
            })
            .await
            .expect("old version");
        assert_eq!(old.expose(), raw(b"first"));
        report.passed.push("versions");
    } else {
        report.not_supported.push("versions");
    }

    if features.metadata {
        let md = provider
            .get_secret(&RemoteRef {
                key: tagged.clone(),
                version: None,
                metadata: true,
            })
            .await
            .expect("metadata");
        let m = convert::json_to_map(md.expose()).expect("metadata is a JSON object");
        let (tk, tv) = tags.iter().next().expect("one tag");
        assert_eq!(
            m.get(tk).map(|v| v.expose().to_vec()),
            Some(tv.as_bytes().to_vec()),
            "metadata has the tag"
        );
        report.passed.push("metadata");
    } else {
        report.not_supported.push("metadata");
    }

    // No secret value in errors: ask for a property of the canary document that does not exist
    // and for a key whose name is near the canary.
    let e = provider
        .get_secret(&RemoteRef::new(key("nope")))
        .await
        .expect_err("missing");
    assert!(!format!("{e} {e:?}").contains(CANARY));
    assert!(
        !format!("{doc:?} {doc}").contains(CANARY),
        "SecretBytes redacts"
    );
    report.passed.push("redaction");

    provider.close().await;
    report
}
