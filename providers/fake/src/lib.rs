#![forbid(unsafe_code)]
//! `spec.provider.fake`: values written in the store itself, with ESO's semantics: a reference
//! without `version` sees only unversioned entries; `find` matches names by regexp (tags and
//! path are not supported) and takes the highest version of each key.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use refsync_core::api::{FakeProvider as FakeSpec, SecretStoreSpec};
use refsync_core::assemble::compile_regex;
use refsync_core::{
    Capabilities, Error, FindRef, Provider, ProviderFactory, RemoteRef, Result, SecretBytes,
    SecretMap, StoreContext,
};

/// Builds fake providers from `spec.provider.fake`.
pub struct FakeFactory;

#[async_trait]
impl ProviderFactory for FakeFactory {
    fn key(&self) -> &'static str {
        "fake"
    }

    async fn build(
        &self,
        spec: &SecretStoreSpec,
        _ctx: &StoreContext,
    ) -> Result<Arc<dyn Provider>> {
        let fake = spec
            .provider
            .fake
            .as_ref()
            .ok_or_else(|| Error::config("spec.provider.fake is required"))?;
        Ok(Arc::new(Fake::new(fake)?))
    }
}

/// A fake store's data: (key, version) → value.
pub struct Fake {
    entries: BTreeMap<(String, String), SecretBytes>,
    validation_result: Option<i32>,
}

impl Fake {
    pub fn new(spec: &FakeSpec) -> Result<Self> {
        let mut entries = BTreeMap::new();
        for (i, d) in spec.data.iter().enumerate() {
            if d.key.is_empty() {
                return Err(Error::config(format!(
                    "spec.provider.fake.data[{i}].key must not be empty"
                )));
            }
            entries.insert(
                (d.key.clone(), d.version.clone().unwrap_or_default()),
                SecretBytes::from(d.value.as_str()),
            );
        }
        Ok(Fake {
            entries,
            validation_result: spec.validation_result,
        })
    }
}

#[async_trait]
impl Provider for Fake {
    fn metrics_name(&self) -> &'static str {
        "Fake"
    }

    async fn get_secret(&self, r: &RemoteRef) -> Result<SecretBytes> {
        if r.metadata {
            return Err(Error::unsupported(
                "the fake provider has no metadata (metadataPolicy: Fetch)",
            ));
        }
        let version = r.version.clone().unwrap_or_default();
        self.entries
            .get(&(r.key.clone(), version))
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!("secret {:?} not found in the fake store", r.key))
            })
    }

    async fn find(&self, f: &FindRef) -> Result<SecretMap> {
        if !f.tags.is_empty() {
            return Err(Error::unsupported(
                "find by tags is not supported by the fake provider",
            ));
        }
        let Some(re) = &f.name_regexp else {
            return Err(Error::unsupported(
                "the fake provider finds by name only (find.name.regexp)",
            ));
        };
        let re = compile_regex(re)?;
        let mut latest: BTreeMap<&str, (&str, &SecretBytes)> = BTreeMap::new();
        for ((key, version), value) in &self.entries {
            if !re.is_match(key) {
                continue;
            }
            match latest.get(key.as_str()) {
                Some((v, _)) if *v >= version.as_str() => {}
                _ => {
                    latest.insert(key, (version, value));
                }
            }
        }
        Ok(latest
            .into_iter()
            .map(|(k, (_, v))| (k.to_string(), v.clone()))
            .collect())
    }

    async fn validate(&self) -> Result<()> {
        match self.validation_result {
            Some(r) if r != 0 => Err(Error::config("unable to validate")),
            _ => Ok(()),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::ReadWrite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use refsync_core::api::FakeProviderData;

    fn fake() -> Fake {
        let d = |k: &str, v: &str, ver: Option<&str>| FakeProviderData {
            key: k.into(),
            value: v.into(),
            version: ver.map(str::to_string),
        };
        Fake::new(&FakeSpec {
            data: vec![
                d("/foo/bar", "HELLO1", None),
                d("/foo/bar", "HELLO2", Some("v2")),
                d("/foo/baz", r#"{"john":"doe"}"#, None),
                d("/other", "x", None),
            ],
            validation_result: None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn versions_are_separate() {
        let f = fake();
        assert_eq!(
            f.get_secret(&RemoteRef::new("/foo/bar"))
                .await
                .unwrap()
                .expose(),
            b"HELLO1"
        );
        let v2 = RemoteRef {
            version: Some("v2".into()),
            ..RemoteRef::new("/foo/bar")
        };
        assert_eq!(f.get_secret(&v2).await.unwrap().expose(), b"HELLO2");
        let v3 = RemoteRef {
            version: Some("v3".into()),
            ..RemoteRef::new("/foo/bar")
        };
        assert!(f.get_secret(&v3).await.unwrap_err().is_not_found());
        assert!(
            f.get_secret(&RemoteRef::new("/nope"))
                .await
                .unwrap_err()
                .is_not_found()
        );
    }

    #[tokio::test]
    async fn find_takes_the_highest_version() {
        let f = fake();
        let found = f
            .find(&FindRef {
                name_regexp: Some("^/foo/".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found["/foo/bar"].expose(), b"HELLO2");
        assert_eq!(found["/foo/baz"].expose(), br#"{"john":"doe"}"#);
        let tags = FindRef {
            tags: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        };
        assert!(f.find(&tags).await.is_err());
    }

    #[tokio::test]
    async fn validation_result_is_honoured() {
        let mut spec = FakeSpec::default();
        assert!(Fake::new(&spec).unwrap().validate().await.is_ok());
        spec.validation_result = Some(2);
        assert!(Fake::new(&spec).unwrap().validate().await.is_err());
    }
}
