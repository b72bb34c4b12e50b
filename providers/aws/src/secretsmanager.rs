//! Secrets Manager reads (ESO's providers/v1/aws/secretsmanager).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
use refsync_core::assemble::compile_regex;
use refsync_core::{Error, ErrorKind, FindRef, RemoteRef, Result, SecretBytes, SecretMap};

use crate::errors::{classify, classify_entry};
use crate::{Aws, METRICS_SECRETS_MANAGER as SM, tags_json};

/// `BatchGetSecretValue` takes at most 20 ids.
pub(crate) const BATCH: usize = 20;

fn value_of(
    s: Option<&str>,
    b: Option<&aws_sdk_secretsmanager::primitives::Blob>,
) -> Option<SecretBytes> {
    match (s, b) {
        (Some(s), _) => Some(SecretBytes::from(s)),
        (None, Some(b)) => Some(SecretBytes::from(b.as_ref())),
        (None, None) => None,
    }
}

fn no_value(id: &str) -> Error {
    Error::not_found(format!(
        "{SM}: secret {id:?} has neither SecretString nor SecretBinary"
    ))
}

impl Aws {
    fn sm_id(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    pub(crate) async fn sm_get(&self, c: &Client, r: &RemoteRef) -> Result<SecretBytes> {
        let id = self.sm_id(&r.key);
        if r.metadata {
            let out = c.describe_secret().secret_id(&id).send().await;
            self.calls.observe(SM, "DescribeSecret", out.is_ok());
            let out = out.map_err(|e| classify(SM, "DescribeSecret", &id, &e))?;
            let tags: BTreeMap<String, String> = out
                .tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            return Ok(tags_json(&tags));
        }
        let version = r.version.as_deref().unwrap_or("AWSCURRENT");
        self.sm_get_value(c, &id, version).await
    }

    /// `GetSecretValue`: `uuid/<id>` names a VersionId, anything else a VersionStage (ESO).
    async fn sm_get_value(&self, c: &Client, id: &str, version: &str) -> Result<SecretBytes> {
        let mut req = c.get_secret_value().secret_id(id);
        req = match version.strip_prefix("uuid/") {
            Some(vid) => req.version_id(vid),
            None => req.version_stage(version),
        };
        let out = req.send().await;
        self.calls.observe(SM, "GetSecretValue", out.is_ok());
        let what = if version == "AWSCURRENT" {
            id.to_string()
        } else {
            format!("{id} (version {version})")
        };
        let out = out.map_err(|e| classify(SM, "GetSecretValue", &what, &e))?;
        value_of(out.secret_string(), out.secret_binary()).ok_or_else(|| no_value(id))
    }

    pub(crate) async fn sm_get_many(
        &self,
        c: &Client,
        refs: &[RemoteRef],
    ) -> Vec<Result<SecretBytes>> {
        // Plain current-value reads go through the batch API; the rest one by one.
        let plan = crate::batch_plan(refs, |key| self.sm_id(key));
        let mut out = plan.scatter(self.sm_fetch_ids(c, &plan.ids()).await);
        for (slot, r) in out.iter_mut().zip(refs) {
            if slot.is_none() {
                *slot = Some(self.sm_get(c, r).await);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::transient("internal: unanswered read"))))
            .collect()
    }

    /// Current values of `ids` (names or ARNs, prefix applied), 20 per `BatchGetSecretValue`.
    /// Ids the batch does not answer (or all, when the batch API is denied) are read one by one.
    pub(crate) async fn sm_fetch_ids(
        &self,
        c: &Client,
        ids: &[String],
    ) -> Vec<Result<SecretBytes>> {
        let mut out: Vec<Option<Result<SecretBytes>>> = vec![None; ids.len()];
        let positions: Vec<usize> = (0..ids.len()).collect();
        for chunk in positions.chunks(BATCH) {
            if !self.batch_allowed() {
                break;
            }
            let list: Vec<String> = chunk.iter().map(|&i| ids[i].clone()).collect();
            let mut values: HashMap<String, SecretBytes> = HashMap::new();
            let mut errs: HashMap<String, Error> = HashMap::new();
            let mut token: Option<String> = None;
            let mut failed: Option<Error> = None;
            loop {
                let res = c
                    .batch_get_secret_value()
                    .set_secret_id_list(Some(list.clone()))
                    .set_next_token(token.take())
                    .send()
                    .await;
                self.calls.observe(SM, "BatchGetSecretValue", res.is_ok());
                match res {
                    Ok(o) => {
                        for v in o.secret_values() {
                            let Some(val) = value_of(v.secret_string(), v.secret_binary()) else {
                                continue;
                            };
                            if let Some(n) = v.name() {
                                values.insert(n.to_string(), val.clone());
                            }
                            if let Some(a) = v.arn() {
                                values.insert(a.to_string(), val);
                            }
                        }
                        for e in o.errors() {
                            if let Some(id) = e.secret_id() {
                                errs.insert(
                                    id.to_string(),
                                    classify_entry(
                                        SM,
                                        "BatchGetSecretValue",
                                        id,
                                        e.error_code(),
                                        e.message(),
                                    ),
                                );
                            }
                        }
                        match o.next_token() {
                            Some(t) if !t.is_empty() => token = Some(t.to_string()),
                            _ => break,
                        }
                    }
                    Err(e) => {
                        let denied = e.as_service_error().and_then(|s| {
                            use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
                            s.code()
                        }) == Some("AccessDeniedException");
                        if denied {
                            self.deny_batch();
                        } else {
                            failed = Some(classify(
                                SM,
                                "BatchGetSecretValue",
                                &format!("{} secrets", list.len()),
                                &e,
                            ));
                        }
                        break;
                    }
                }
            }
            for &i in chunk {
                let id = &ids[i];
                if let Some(f) = &failed {
                    out[i] = Some(Err(f.clone()));
                } else if let Some(v) = values.get(id) {
                    out[i] = Some(Ok(v.clone()));
                } else if let Some(e) = errs.get(id) {
                    out[i] = Some(Err(e.clone()));
                }
            }
        }
        let mut res = Vec::with_capacity(ids.len());
        for (i, o) in out.into_iter().enumerate() {
            res.push(match o {
                Some(r) => r,
                None => self.sm_get_value(c, &ids[i], "AWSCURRENT").await,
            });
        }
        res
    }

    pub(crate) async fn sm_find(&self, c: &Client, f: &FindRef) -> Result<SecretMap> {
        let mut filters: Vec<Filter> = Vec::new();
        for (k, v) in &f.tags {
            filters.push(
                Filter::builder()
                    .key(FilterNameStringType::TagKey)
                    .values(k)
                    .build(),
            );
            filters.push(
                Filter::builder()
                    .key(FilterNameStringType::TagValue)
                    .values(v)
                    .build(),
            );
        }
        match (&f.name_regexp, f.tags.is_empty()) {
            (None, true) => Err(Error::invalid(
                "find for AWS Secrets Manager needs name.regexp or tags (ESO: unexpected find operator)",
            )),
            (Some(re), _) => {
                let matcher = compile_regex(re)?;
                if let Some(path) = &f.path {
                    filters.push(
                        Filter::builder()
                            .key(FilterNameStringType::Name)
                            .values(path)
                            .build(),
                    );
                    return self.sm_find_batch(c, filters, Some(&matcher)).await;
                }
                self.sm_find_listed(c, filters, &matcher).await
            }
            (None, false) => {
                if let Some(path) = &f.path {
                    filters.push(
                        Filter::builder()
                            .key(FilterNameStringType::Name)
                            .values(path)
                            .build(),
                    );
                }
                self.sm_find_batch(c, filters, None).await
            }
        }
    }

    /// `BatchGetSecretValue` with filters, paginated (ESO's fetchWithBatch).
    async fn sm_find_batch(
        &self,
        c: &Client,
        filters: Vec<Filter>,
        matcher: Option<&regex::Regex>,
    ) -> Result<SecretMap> {
        let mut data = SecretMap::new();
        let mut token: Option<String> = None;
        loop {
            let res = c
                .batch_get_secret_value()
                .set_filters(Some(filters.clone()))
                .set_next_token(token.take())
                .send()
                .await;
            self.calls.observe(SM, "BatchGetSecretValue", res.is_ok());
            let o = res.map_err(|e| classify(SM, "BatchGetSecretValue", "(find)", &e))?;
            for v in o.secret_values() {
                let Some(name) = v.name() else { continue };
                if matcher.is_some_and(|m| !m.is_match(name)) {
                    continue;
                }
                if let Some(val) = value_of(v.secret_string(), v.secret_binary()) {
                    data.insert(name.to_string(), val);
                }
            }
            match o.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(data)
    }

    /// `ListSecrets` (paginated), names matched locally, values by batch (ESO reads each match
    /// with its own `GetSecretValue`).
    async fn sm_find_listed(
        &self,
        c: &Client,
        filters: Vec<Filter>,
        matcher: &regex::Regex,
    ) -> Result<SecretMap> {
        let mut matched: Vec<(String, String)> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let res = c
                .list_secrets()
                .set_filters(if filters.is_empty() {
                    None
                } else {
                    Some(filters.clone())
                })
                .set_next_token(token.take())
                .send()
                .await;
            self.calls.observe(SM, "ListSecrets", res.is_ok());
            let o = res.map_err(|e| classify(SM, "ListSecrets", "(find)", &e))?;
            for s in o.secret_list() {
                let Some(name) = s.name() else { continue };
                if matcher.is_match(name) {
                    matched.push((name.to_string(), s.arn().unwrap_or(name).to_string()));
                }
            }
            match o.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        let ids: Vec<String> = matched.iter().map(|(_, arn)| arn.clone()).collect();
        let values = self.sm_fetch_ids(c, &ids).await;
        let mut data = SecretMap::new();
        for ((name, _), v) in matched.into_iter().zip(values) {
            match v {
                Ok(v) => {
                    data.insert(name, v);
                }
                // Deleted between the listing and the read, or never given a value.
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(data)
    }
}
