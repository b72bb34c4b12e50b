//! Parameter Store reads (ESO's providers/v1/aws/parameterstore).

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{ParameterStringFilter, ResourceTypeForTagging};
use refsync_core::assemble::compile_regex;
use refsync_core::{Error, ErrorKind, FindRef, RemoteRef, Result, SecretBytes, SecretMap};

use crate::errors::classify;
use crate::{Aws, METRICS_PARAMETER_STORE as PS, tags_json};

/// `GetParameters` takes at most 10 names.
pub(crate) const BATCH: usize = 10;

fn filter(key: &str, option: &str, value: &str) -> Result<ParameterStringFilter> {
    ParameterStringFilter::builder()
        .key(key)
        .option(option)
        .values(value)
        .build()
        .map_err(|_| Error::invalid(format!("invalid Parameter Store filter {key:?}")))
}

impl Aws {
    fn ssm_name(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    pub(crate) async fn ssm_get(&self, c: &Client, r: &RemoteRef) -> Result<SecretBytes> {
        let name = self.ssm_name(&r.key);
        if r.metadata {
            let out = c
                .list_tags_for_resource()
                .resource_type(ResourceTypeForTagging::Parameter)
                .resource_id(&name)
                .send()
                .await;
            self.calls.observe(PS, "ListTagsForResource", out.is_ok());
            let out = out.map_err(|e| classify(PS, "ListTagsForResource", &name, &e))?;
            let tags: BTreeMap<String, String> = out
                .tag_list()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect();
            return Ok(tags_json(&tags));
        }
        // ESO: a version is a selector appended to the name (`name:3`).
        let full = match r.version.as_deref() {
            Some(v) => format!("{name}:{v}"),
            None => name,
        };
        self.ssm_get_one(c, &full).await
    }

    async fn ssm_get_one(&self, c: &Client, name: &str) -> Result<SecretBytes> {
        let out = c
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await;
        self.calls.observe(PS, "GetParameter", out.is_ok());
        let out = out.map_err(|e| classify(PS, "GetParameter", name, &e))?;
        out.parameter()
            .and_then(|p| p.value())
            .map(SecretBytes::from)
            .ok_or_else(|| Error::not_found(format!("{PS}: parameter {name:?} has no value")))
    }

    pub(crate) async fn ssm_get_many(
        &self,
        c: &Client,
        refs: &[RemoteRef],
    ) -> Vec<Result<SecretBytes>> {
        // Plain current-value reads go through the batch API; the rest one by one.
        let plan = crate::batch_plan(refs, |key| self.ssm_name(key));
        let mut out = plan.scatter(self.ssm_fetch_names(c, &plan.ids()).await);
        for (slot, r) in out.iter_mut().zip(refs) {
            if slot.is_none() {
                *slot = Some(self.ssm_get(c, r).await);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::transient("internal: unanswered read"))))
            .collect()
    }

    /// Values of `names` (prefix applied), 10 per `GetParameters`; `InvalidParameters` are
    /// NotFound. Names the answer does not cover are read one by one.
    pub(crate) async fn ssm_fetch_names(
        &self,
        c: &Client,
        names: &[String],
    ) -> Vec<Result<SecretBytes>> {
        let mut out: Vec<Option<Result<SecretBytes>>> = vec![None; names.len()];
        let positions: Vec<usize> = (0..names.len()).collect();
        for chunk in positions.chunks(BATCH) {
            if !self.batch_allowed() {
                break;
            }
            let list: Vec<String> = chunk.iter().map(|&i| names[i].clone()).collect();
            let res = c
                .get_parameters()
                .set_names(Some(list.clone()))
                .with_decryption(true)
                .send()
                .await;
            self.calls.observe(PS, "GetParameters", res.is_ok());
            match res {
                Ok(o) => {
                    let mut values: HashMap<&str, SecretBytes> = HashMap::new();
                    for p in o.parameters() {
                        if let (Some(n), Some(v)) = (p.name(), p.value()) {
                            values.insert(n, SecretBytes::from(v));
                        }
                        if let (Some(a), Some(v)) = (p.arn(), p.value()) {
                            values.insert(a, SecretBytes::from(v));
                        }
                    }
                    let invalid: HashSet<&str> =
                        o.invalid_parameters().iter().map(String::as_str).collect();
                    for &i in chunk {
                        let n = names[i].as_str();
                        if let Some(v) = values.get(n) {
                            out[i] = Some(Ok(v.clone()));
                        } else if invalid.contains(n) {
                            out[i] = Some(Err(Error::not_found(format!(
                                "{PS} GetParameters {n:?}: ParameterNotFound"
                            ))));
                        }
                    }
                }
                Err(e) => {
                    if e.as_service_error().and_then(|s| s.code()) == Some("AccessDeniedException")
                    {
                        self.deny_batch();
                    } else {
                        let err = classify(
                            PS,
                            "GetParameters",
                            &format!("{} parameters", list.len()),
                            &e,
                        );
                        for &i in chunk {
                            out[i] = Some(Err(err.clone()));
                        }
                    }
                }
            }
        }
        let mut res = Vec::with_capacity(names.len());
        for (i, o) in out.into_iter().enumerate() {
            res.push(match o {
                Some(r) => r,
                None => self.ssm_get_one(c, &names[i]).await,
            });
        }
        res
    }

    pub(crate) async fn ssm_find(&self, c: &Client, f: &FindRef) -> Result<SecretMap> {
        // As ESO: a name regexp wins; tags are used only without one.
        if let Some(re) = &f.name_regexp {
            let matcher = compile_regex(re)?;
            return self.ssm_find_by_name(c, f.path.as_deref(), &matcher).await;
        }
        if !f.tags.is_empty() {
            let mut filters = Vec::new();
            for (k, v) in &f.tags {
                filters.push(filter(&format!("tag:{k}"), "Equals", v)?);
            }
            if let Some(p) = &f.path {
                filters.push(filter("Path", "Recursive", p)?);
            }
            let names = self.ssm_describe(c, filters, None).await?;
            return self.ssm_values_of(c, names).await;
        }
        Err(Error::invalid(
            "find for AWS Parameter Store needs name.regexp or tags (ESO: unexpected find operator)",
        ))
    }

    /// `GetParametersByPath` under `path` (default `/`), recursive, decrypted; names matched
    /// locally. Without `ssm:GetParametersByPath` permission: `DescribeParameters`, then values.
    async fn ssm_find_by_name(
        &self,
        c: &Client,
        path: Option<&str>,
        matcher: &regex::Regex,
    ) -> Result<SecretMap> {
        let path = path.unwrap_or("/");
        let mut data = SecretMap::new();
        let mut token: Option<String> = None;
        loop {
            let res = c
                .get_parameters_by_path()
                .path(path)
                .recursive(true)
                .with_decryption(true)
                .set_next_token(token.take())
                .send()
                .await;
            self.calls.observe(PS, "GetParametersByPath", res.is_ok());
            let o = match res {
                Ok(o) => o,
                Err(e)
                    if e.as_service_error().and_then(|s| s.code())
                        == Some("AccessDeniedException") =>
                {
                    tracing::info!(
                        path,
                        "GetParametersByPath denied; falling back to DescribeParameters"
                    );
                    let filters = if path == "/" {
                        Vec::new()
                    } else {
                        vec![filter("Path", "Recursive", path)?]
                    };
                    let names = self.ssm_describe(c, filters, Some(matcher)).await?;
                    return self.ssm_values_of(c, names).await;
                }
                Err(e) => return Err(classify(PS, "GetParametersByPath", path, &e)),
            };
            for p in o.parameters() {
                let (Some(n), Some(v)) = (p.name(), p.value()) else {
                    continue;
                };
                if matcher.is_match(n) {
                    data.insert(n.to_string(), SecretBytes::from(v));
                }
            }
            match o.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(data)
    }

    /// Names from `DescribeParameters` (paginated) with `filters`, optionally matched.
    async fn ssm_describe(
        &self,
        c: &Client,
        filters: Vec<ParameterStringFilter>,
        matcher: Option<&regex::Regex>,
    ) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let res = c
                .describe_parameters()
                .set_parameter_filters(if filters.is_empty() {
                    None
                } else {
                    Some(filters.clone())
                })
                .set_next_token(token.take())
                .send()
                .await;
            self.calls.observe(PS, "DescribeParameter", res.is_ok());
            let o = res.map_err(|e| classify(PS, "DescribeParameters", "(find)", &e))?;
            for p in o.parameters() {
                let Some(n) = p.name() else { continue };
                if matcher.is_none_or(|m| m.is_match(n)) {
                    names.push(n.to_string());
                }
            }
            match o.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(names)
    }

    async fn ssm_values_of(&self, c: &Client, names: Vec<String>) -> Result<SecretMap> {
        let values = self.ssm_fetch_names(c, &names).await;
        let mut data = SecretMap::new();
        for (n, v) in names.into_iter().zip(values) {
            match v {
                Ok(v) => {
                    data.insert(n, v);
                }
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(data)
    }
}
