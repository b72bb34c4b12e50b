//! In-memory Secret Manager state and the semantics of each RPC.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value as Json, json};

use crate::error::{ApiError, ApiResult};
use crate::filter::{Field, Filter, Filterable, Kind, Value};
use crate::names::{Parent, VersionRef, valid_alias};

/// Google's default is larger; a small one makes callers that ignore `nextPageToken` fail fast.
pub const DEFAULT_PAGE_SIZE: usize = 25;
const MAX_PAGE_SIZE: usize = 25_000;
const MAX_PAYLOAD: usize = 64 * 1024;

/// Fields of a Secret the server owns; ignored on input.
const OUTPUT_ONLY: &[&str] = &["name", "createTime", "etag"];
/// Fields handled explicitly (everything else is accepted and echoed as given).
const MODELLED: &[&str] = &["labels", "annotations", "versionAliases", "replication"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Enabled,
    Disabled,
    Destroyed,
}

impl State {
    /// `enum-encoding=int`: google.cloud.secretmanager.v1.SecretVersion.State.
    fn number(self) -> i32 {
        match self {
            State::Enabled => 1,
            State::Disabled => 2,
            State::Destroyed => 3,
        }
    }

    fn label(self) -> &'static str {
        match self {
            State::Enabled => "ENABLED",
            State::Disabled => "DISABLED",
            State::Destroyed => "DESTROYED",
        }
    }
}

struct Version {
    number: i64,
    create_time: DateTime<Utc>,
    destroy_time: Option<DateTime<Utc>>,
    state: State,
    payload: Vec<u8>,
    crc32c: u32,
    client_checksum: bool,
    etag: String,
}

struct Secret {
    parent: Parent,
    id: String,
    create_time: DateTime<Utc>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    version_aliases: BTreeMap<String, i64>,
    replication: Option<Json>,
    extra: Map<String, Json>,
    etag: String,
    versions: BTreeMap<i64, Version>,
    next_version: i64,
}

#[derive(Default)]
pub(crate) struct Store {
    secrets: BTreeMap<Parent, BTreeMap<String, Secret>>,
    clock: i64,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Store {
    /// Strictly increasing timestamps, so creation order is never ambiguous.
    fn now(&mut self) -> DateTime<Utc> {
        let micros = Utc::now().timestamp_micros().max(self.clock + 1);
        self.clock = micros;
        DateTime::from_timestamp_micros(micros).unwrap_or_else(Utc::now)
    }

    fn etag(&mut self) -> String {
        let t = self.now();
        format!("\"{:x}\"", t.timestamp_micros())
    }

    fn secret(&self, parent: &Parent, id: &str) -> ApiResult<&Secret> {
        self.secrets
            .get(parent)
            .and_then(|m| m.get(id))
            .ok_or_else(|| {
                ApiError::not_found(format!("Secret [{}] not found.", parent.secret_name(id)))
            })
    }

    fn secret_mut(&mut self, parent: &Parent, id: &str) -> ApiResult<&mut Secret> {
        self.secrets
            .get_mut(parent)
            .and_then(|m| m.get_mut(id))
            .ok_or_else(|| {
                ApiError::not_found(format!("Secret [{}] not found.", parent.secret_name(id)))
            })
    }

    // ----- secrets -----

    pub(crate) fn create_secret(
        &mut self,
        parent: &Parent,
        secret_id: &str,
        body: &Map<String, Json>,
    ) -> ApiResult<Json> {
        if secret_id.is_empty() {
            return Err(ApiError::invalid("secret_id must be specified."));
        }
        if !crate::names::valid_secret_id(secret_id) {
            return Err(ApiError::invalid(format!(
                "Invalid secret_id [{secret_id}]: it must be 1 to 255 characters long and contain \
                 only letters, digits, underscores and hyphens."
            )));
        }
        let labels = parse_labels(body.get("labels"))?;
        let annotations = parse_annotations(body.get("annotations"))?;
        let replication = check_replication(parent, body.get("replication"))?;
        if let Some(aliases) = body.get("versionAliases")
            && !is_empty_json(aliases)
        {
            return Err(ApiError::invalid(
                "version_aliases cannot be set when creating a secret: it has no versions yet.",
            ));
        }
        let extra = extra_fields(body);
        if self
            .secrets
            .get(parent)
            .is_some_and(|m| m.contains_key(secret_id))
        {
            return Err(ApiError::new(
                crate::error::Status::AlreadyExists,
                format!("Secret [{}] already exists.", parent.secret_name(secret_id)),
            ));
        }
        let create_time = self.now();
        let etag = self.etag();
        let secret = Secret {
            parent: parent.clone(),
            id: secret_id.to_string(),
            create_time,
            labels,
            annotations,
            version_aliases: BTreeMap::new(),
            replication,
            extra,
            etag,
            versions: BTreeMap::new(),
            next_version: 1,
        };
        let out = secret.to_json();
        self.secrets
            .entry(parent.clone())
            .or_default()
            .insert(secret_id.to_string(), secret);
        Ok(out)
    }

    pub(crate) fn get_secret(&self, parent: &Parent, id: &str) -> ApiResult<Json> {
        Ok(self.secret(parent, id)?.to_json())
    }

    pub(crate) fn list_secrets(
        &self,
        parent: &Parent,
        page_size: i64,
        page_token: &str,
        filter: &str,
    ) -> ApiResult<Json> {
        let size = page_size_of(page_size)?;
        let filter_expr = Filter::parse(filter, Kind::Secret)?;
        let after = decode_token(page_token)?;
        let all = self.secrets.get(parent);
        let total = all.map_or(0, BTreeMap::len);
        let mut items = all
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|s| after.as_deref().is_none_or(|a| s.id.as_str() > a))
            .filter(|s| filter_expr.matches(*s));
        let page: Vec<&Secret> = items.by_ref().take(size).collect();
        let more = items.next().is_some();
        let mut out = Map::new();
        if !page.is_empty() {
            out.insert(
                "secrets".into(),
                Json::Array(page.iter().map(|s| s.to_json()).collect()),
            );
        }
        if more && let Some(last) = page.last() {
            out.insert("nextPageToken".into(), json!(encode_token(&last.id)));
        }
        // Google: "The total number of Secrets but 0 when the filter field is set."
        out.insert(
            "totalSize".into(),
            json!(if filter.trim().is_empty() { total } else { 0 }),
        );
        Ok(Json::Object(out))
    }

    pub(crate) fn update_secret(
        &mut self,
        parent: &Parent,
        id: &str,
        body: &Map<String, Json>,
        update_mask: &str,
    ) -> ApiResult<Json> {
        let paths: Vec<String> = update_mask
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(camel_case)
            .collect();
        if paths.is_empty() {
            return Err(ApiError::invalid("update_mask must be specified."));
        }
        for p in &paths {
            if matches!(
                p.as_str(),
                "name" | "createTime" | "etag" | "replication" | "secretType"
            ) || p.contains('.')
            {
                return Err(ApiError::invalid(format!(
                    "The update_mask path [{p}] is not updatable."
                )));
            }
        }
        // Validate everything before changing anything.
        let labels = if paths.iter().any(|p| p == "labels") {
            Some(parse_labels(body.get("labels"))?)
        } else {
            None
        };
        let annotations = if paths.iter().any(|p| p == "annotations") {
            Some(parse_annotations(body.get("annotations"))?)
        } else {
            None
        };
        let aliases = if paths.iter().any(|p| p == "versionAliases") {
            let secret = self.secret(parent, id)?;
            Some(parse_aliases(secret, body.get("versionAliases"))?)
        } else {
            None
        };
        let etag_in = body.get("etag").and_then(Json::as_str).unwrap_or("");
        check_etag(&self.secret(parent, id)?.etag, etag_in)?;
        let new_etag = self.etag();
        let secret = self.secret_mut(parent, id)?;
        if let Some(l) = labels {
            secret.labels = l;
        }
        if let Some(a) = annotations {
            secret.annotations = a;
        }
        if let Some(a) = aliases {
            secret.version_aliases = a;
        }
        for p in &paths {
            if !MODELLED.contains(&p.as_str()) {
                match body.get(p.as_str()) {
                    Some(v) if !v.is_null() => {
                        secret.extra.insert(p.clone(), v.clone());
                    }
                    _ => {
                        secret.extra.remove(p.as_str());
                    }
                }
            }
        }
        secret.etag = new_etag;
        Ok(secret.to_json())
    }

    pub(crate) fn delete_secret(
        &mut self,
        parent: &Parent,
        id: &str,
        etag: &str,
    ) -> ApiResult<Json> {
        check_etag(&self.secret(parent, id)?.etag, etag)?;
        if let Some(m) = self.secrets.get_mut(parent) {
            m.remove(id);
        }
        Ok(json!({}))
    }

    // ----- versions -----

    pub(crate) fn add_version(
        &mut self,
        parent: &Parent,
        id: &str,
        body: &Map<String, Json>,
    ) -> ApiResult<Json> {
        self.secret(parent, id)?;
        let payload = match body.get("payload") {
            Some(Json::Object(p)) => p,
            _ => return Err(ApiError::invalid("payload must be specified.")),
        };
        let data = match payload.get("data") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::String(s)) => decode_bytes(s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "Invalid value at 'payload.data' (TYPE_BYTES), Base64 decoding failed for \"{s}\""
                ))
            })?,
            Some(_) => {
                return Err(ApiError::invalid(
                    "Invalid value at 'payload.data' (TYPE_BYTES): expected a base64 string.",
                ));
            }
        };
        if data.len() > MAX_PAYLOAD {
            return Err(ApiError::invalid(format!(
                "Secret payload is too large: {} bytes, the maximum is {MAX_PAYLOAD} bytes.",
                data.len()
            )));
        }
        let crc = crc32c::crc32c(&data);
        let given = match payload.get("dataCrc32c") {
            None | Some(Json::Null) => None,
            Some(v) => Some(
                parse_int64(v)
                    .filter(|n| (0..=i64::from(u32::MAX)).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid("Invalid value at 'payload.data_crc32c' (TYPE_INT64).")
                    })?,
            ),
        };
        if let Some(g) = given
            && g != i64::from(crc)
        {
            return Err(ApiError::invalid(
                "Checksum mismatch: the CRC32C checksum of payload.data does not match \
                 payload.data_crc32c. The request may have been corrupted in transit.",
            ));
        }
        let create_time = self.now();
        let etag = self.etag();
        let secret = self.secret_mut(parent, id)?;
        let number = secret.next_version;
        secret.next_version += 1;
        secret.versions.insert(
            number,
            Version {
                number,
                create_time,
                destroy_time: None,
                state: State::Enabled,
                payload: data,
                crc32c: crc,
                client_checksum: given.is_some(),
                etag,
            },
        );
        let secret = self.secret(parent, id)?;
        Ok(secret.version_json(number))
    }

    /// Resolves a version reference to a concrete number.
    fn resolve(&self, parent: &Parent, id: &str, v: &VersionRef) -> ApiResult<i64> {
        let secret_name = parent.secret_name(id);
        let version_missing = || {
            ApiError::not_found(format!(
                "Secret Version [{secret_name}/versions/{}] not found.",
                v.as_path()
            ))
        };
        let no_versions = || {
            ApiError::not_found(format!(
                "Secret [{secret_name}] not found or has no versions."
            ))
        };
        let Some(secret) = self.secrets.get(parent).and_then(|m| m.get(id)) else {
            return Err(match v {
                VersionRef::Latest => no_versions(),
                _ => version_missing(),
            });
        };
        match v {
            // "latest" is the most recently created version, whatever its state.
            VersionRef::Latest => secret
                .versions
                .keys()
                .next_back()
                .copied()
                .ok_or_else(no_versions),
            VersionRef::Number(n) => secret
                .versions
                .contains_key(n)
                .then_some(*n)
                .ok_or_else(version_missing),
            VersionRef::Alias(a) => secret
                .version_aliases
                .get(a)
                .copied()
                .filter(|n| secret.versions.contains_key(n))
                .ok_or_else(version_missing),
        }
    }

    pub(crate) fn get_version(&self, parent: &Parent, id: &str, v: &VersionRef) -> ApiResult<Json> {
        let n = self.resolve(parent, id, v)?;
        Ok(self.secret(parent, id)?.version_json(n))
    }

    pub(crate) fn access_version(
        &self,
        parent: &Parent,
        id: &str,
        v: &VersionRef,
    ) -> ApiResult<Json> {
        let n = self.resolve(parent, id, v)?;
        let secret = self.secret(parent, id)?;
        let version = secret
            .versions
            .get(&n)
            .ok_or_else(|| ApiError::new(crate::error::Status::Internal, "version vanished"))?;
        let name = secret.version_name(n);
        if version.state != State::Enabled {
            return Err(ApiError::failed_precondition(format!(
                "Secret Version [{name}] is in {} state.",
                version.state.label()
            )));
        }
        Ok(json!({
            "name": name,
            "payload": {
                "data": STANDARD.encode(&version.payload),
                "dataCrc32c": version.crc32c.to_string(),
            }
        }))
    }

    pub(crate) fn set_version_state(
        &mut self,
        parent: &Parent,
        id: &str,
        v: &VersionRef,
        target: State,
        etag: &str,
    ) -> ApiResult<Json> {
        let n = self.resolve(parent, id, v)?;
        let now = self.now();
        let new_etag = self.etag();
        let secret = self.secret_mut(parent, id)?;
        let name = secret.version_name(n);
        let version = secret
            .versions
            .get_mut(&n)
            .ok_or_else(|| ApiError::new(crate::error::Status::Internal, "version vanished"))?;
        check_etag(&version.etag, etag)?;
        if version.state == State::Destroyed {
            return Err(ApiError::failed_precondition(format!(
                "Secret Version [{name}] is in DESTROYED state."
            )));
        }
        if version.state != target {
            version.state = target;
            version.etag = new_etag;
            if target == State::Destroyed {
                version.destroy_time = Some(now);
                version.payload = Vec::new();
            }
        }
        Ok(secret.version_json(n))
    }

    pub(crate) fn list_versions(
        &self,
        parent: &Parent,
        id: &str,
        page_size: i64,
        page_token: &str,
        filter: &str,
    ) -> ApiResult<Json> {
        let size = page_size_of(page_size)?;
        let filter_expr = Filter::parse(filter, Kind::Version)?;
        let after = match decode_token(page_token)? {
            None => None,
            Some(t) => Some(
                t.parse::<i64>()
                    .map_err(|_| ApiError::invalid("Invalid page token."))?,
            ),
        };
        let secret = self.secret(parent, id)?;
        let total = secret.versions.len();
        // Newest first, as Google lists them.
        let mut items = secret
            .versions
            .values()
            .rev()
            .filter(|v| after.is_none_or(|a| v.number < a))
            .filter(|v| filter_expr.matches(&VersionView { secret, version: v }));
        let page: Vec<&Version> = items.by_ref().take(size).collect();
        let more = items.next().is_some();
        let mut out = Map::new();
        if !page.is_empty() {
            out.insert(
                "versions".into(),
                Json::Array(page.iter().map(|v| secret.version_json(v.number)).collect()),
            );
        }
        if more && let Some(last) = page.last() {
            out.insert(
                "nextPageToken".into(),
                json!(encode_token(&last.number.to_string())),
            );
        }
        out.insert(
            "totalSize".into(),
            json!(if filter.trim().is_empty() { total } else { 0 }),
        );
        Ok(Json::Object(out))
    }
}

impl Secret {
    fn name(&self) -> String {
        self.parent.secret_name(&self.id)
    }

    fn version_name(&self, n: i64) -> String {
        format!("{}/versions/{n}", self.name())
    }

    fn to_json(&self) -> Json {
        let mut out = Map::new();
        out.insert("name".into(), json!(self.name()));
        if let Some(r) = &self.replication {
            out.insert("replication".into(), r.clone());
        }
        out.insert("createTime".into(), json!(ts(self.create_time)));
        if !self.labels.is_empty() {
            out.insert("labels".into(), json!(self.labels));
        }
        out.insert("etag".into(), json!(self.etag));
        if !self.version_aliases.is_empty() {
            let aliases: Map<String, Json> = self
                .version_aliases
                .iter()
                .map(|(k, v)| (k.clone(), json!(v.to_string())))
                .collect();
            out.insert("versionAliases".into(), Json::Object(aliases));
        }
        if !self.annotations.is_empty() {
            out.insert("annotations".into(), json!(self.annotations));
        }
        for (k, v) in &self.extra {
            out.insert(k.clone(), v.clone());
        }
        Json::Object(out)
    }

    fn version_json(&self, n: i64) -> Json {
        let Some(v) = self.versions.get(&n) else {
            return json!({ "name": self.version_name(n) });
        };
        let mut out = Map::new();
        out.insert("name".into(), json!(self.version_name(n)));
        out.insert("createTime".into(), json!(ts(v.create_time)));
        if let Some(d) = v.destroy_time {
            out.insert("destroyTime".into(), json!(ts(d)));
        }
        out.insert("state".into(), json!(v.state.number()));
        if let Some(status) = self.replication_status() {
            out.insert("replicationStatus".into(), status);
        }
        out.insert("etag".into(), json!(v.etag));
        if v.client_checksum {
            out.insert("clientSpecifiedPayloadChecksum".into(), json!(true));
        }
        Json::Object(out)
    }

    fn replication_status(&self) -> Option<Json> {
        let r = self.replication.as_ref()?;
        if r.get("automatic").is_some() {
            return Some(json!({ "automatic": {} }));
        }
        let replicas: Vec<Json> = r
            .pointer("/userManaged/replicas")
            .and_then(Json::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|rep| rep.get("location").cloned())
                    .map(|l| json!({ "location": l }))
                    .collect()
            })
            .unwrap_or_default();
        Some(json!({ "userManaged": { "replicas": replicas } }))
    }
}

impl Filterable for Secret {
    fn value(&self, field: &Field) -> Value {
        match field {
            Field::Name => Value::Str(self.name()),
            Field::Label(k) => self
                .labels
                .get(k)
                .map_or(Value::Absent, |v| Value::Str(v.clone())),
            Field::Annotation(k) => self
                .annotations
                .get(k)
                .map_or(Value::Absent, |v| Value::Str(v.clone())),
            Field::CreateTime => Value::Time(self.create_time),
            Field::ReplicationAutomatic => match &self.replication {
                Some(r) if r.get("automatic").is_some() => Value::Str(String::new()),
                _ => Value::Absent,
            },
            Field::ReplicationUserManaged => match &self.replication {
                Some(r) if r.get("userManaged").is_some() => Value::Str(String::new()),
                _ => Value::Absent,
            },
            Field::ReplicaLocation => Value::Many(
                self.replication
                    .as_ref()
                    .and_then(|r| r.pointer("/userManaged/replicas"))
                    .and_then(Json::as_array)
                    .map(|l| {
                        l.iter()
                            .filter_map(|r| r.get("location").and_then(Json::as_str))
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            Field::State => Value::Absent,
        }
    }
}

struct VersionView<'a> {
    secret: &'a Secret,
    version: &'a Version,
}

impl Filterable for VersionView<'_> {
    fn value(&self, field: &Field) -> Value {
        match field {
            Field::Name => Value::Str(self.secret.version_name(self.version.number)),
            Field::CreateTime => Value::Time(self.version.create_time),
            Field::State => Value::Str(self.version.state.label().to_string()),
            _ => Value::Absent,
        }
    }
}

// ----- helpers -----

fn page_size_of(page_size: i64) -> ApiResult<usize> {
    if page_size < 0 {
        return Err(ApiError::invalid("page_size must not be negative."));
    }
    if page_size == 0 {
        return Ok(DEFAULT_PAGE_SIZE);
    }
    Ok(usize::try_from(page_size).map_or(MAX_PAGE_SIZE, |n| n.min(MAX_PAGE_SIZE)))
}

fn encode_token(cursor: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("gcpsm-emulator:{cursor}"))
}

fn decode_token(token: &str) -> ApiResult<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("gcpsm-emulator:").map(str::to_string))
        .map(Some)
        .ok_or_else(|| ApiError::invalid("Invalid page token."))
}

fn decode_bytes(s: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .ok()
}

/// int64 in proto3 JSON: a string or a number.
fn parse_int64(v: &Json) -> Option<i64> {
    match v {
        Json::String(s) => s.trim().parse().ok(),
        Json::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn is_empty_json(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::Object(m) => m.is_empty(),
        Json::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn extra_fields(body: &Map<String, Json>) -> Map<String, Json> {
    body.iter()
        .filter(|(k, v)| {
            !OUTPUT_ONLY.contains(&k.as_str()) && !MODELLED.contains(&k.as_str()) && !v.is_null()
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `version_aliases` → `versionAliases`; field masks may use either spelling.
fn camel_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn check_etag(current: &str, given: &str) -> ApiResult<()> {
    if given.is_empty() || given == current {
        Ok(())
    } else {
        Err(ApiError::failed_precondition(
            "The etag provided in the request does not match the current etag of the resource.",
        ))
    }
}

fn string_map(v: Option<&Json>, what: &str) -> ApiResult<BTreeMap<String, String>> {
    match v {
        None | Some(Json::Null) => Ok(BTreeMap::new()),
        Some(Json::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Json::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::invalid(format!(
                    "Invalid value at '{what}[{k}]': expected a string."
                ))),
            })
            .collect(),
        Some(_) => Err(ApiError::invalid(format!(
            "Invalid value at '{what}': expected a map of strings."
        ))),
    }
}

fn label_char(c: char) -> bool {
    c.is_lowercase()
        || c.is_numeric()
        || c == '_'
        || c == '-'
        || (c.is_alphabetic() && !c.is_uppercase())
}

/// Google's label rules: at most 64 labels; keys 1–63 characters starting with a lowercase
/// letter; keys and values of lowercase letters, digits, `_` and `-`; values up to 63.
fn parse_labels(v: Option<&Json>) -> ApiResult<BTreeMap<String, String>> {
    let labels = string_map(v, "labels")?;
    if labels.len() > 64 {
        return Err(ApiError::invalid("A secret can have at most 64 labels."));
    }
    for (k, val) in &labels {
        let key_ok = (1..=63).contains(&k.chars().count())
            && k.chars()
                .next()
                .is_some_and(|c| c.is_lowercase() || (c.is_alphabetic() && !c.is_uppercase()))
            && k.chars().all(label_char);
        if !key_ok {
            return Err(ApiError::invalid(format!(
                "Invalid label key [{k}]: keys must be 1-63 characters, start with a lowercase \
                 letter and contain only lowercase letters, digits, underscores and hyphens."
            )));
        }
        if val.chars().count() > 63 || !val.chars().all(label_char) {
            return Err(ApiError::invalid(format!(
                "Invalid label value [{val}] for key [{k}]: values must be at most 63 characters \
                 of lowercase letters, digits, underscores and hyphens."
            )));
        }
    }
    Ok(labels)
}

/// Annotation keys: 1–63 characters, alphanumeric at both ends, `-_.` inside; total ≤ 16 KiB.
fn parse_annotations(v: Option<&Json>) -> ApiResult<BTreeMap<String, String>> {
    let annotations = string_map(v, "annotations")?;
    let mut total = 0;
    for (k, val) in &annotations {
        let b = k.as_bytes();
        let ok = (1..=63).contains(&b.len())
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !ok {
            return Err(ApiError::invalid(format!("Invalid annotation key [{k}].")));
        }
        total += k.len() + val.len();
    }
    if total > 16 * 1024 {
        return Err(ApiError::invalid(
            "The total size of annotation keys and values must be at most 16KiB.",
        ));
    }
    Ok(annotations)
}

fn parse_aliases(secret: &Secret, v: Option<&Json>) -> ApiResult<BTreeMap<String, i64>> {
    let map = match v {
        None | Some(Json::Null) => return Ok(BTreeMap::new()),
        Some(Json::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid value at 'secret.version_aliases': expected a map.",
            ));
        }
    };
    let mut out = BTreeMap::new();
    for (alias, n) in map {
        if !valid_alias(alias) {
            return Err(ApiError::invalid(format!(
                "Invalid version alias [{alias}]."
            )));
        }
        let n = parse_int64(n).ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid value at 'secret.version_aliases[{alias}]' (TYPE_INT64)."
            ))
        })?;
        match secret.versions.get(&n) {
            Some(v) if v.state != State::Destroyed => {}
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "Version alias [{alias}] cannot point at destroyed version [{n}]."
                )));
            }
            None => {
                return Err(ApiError::invalid(format!(
                    "Version alias [{alias}] points at version [{n}], which does not exist."
                )));
            }
        }
        out.insert(alias.clone(), n);
    }
    Ok(out)
}

/// Global secrets need a replication policy; regional ones must not have one.
fn check_replication(parent: &Parent, v: Option<&Json>) -> ApiResult<Option<Json>> {
    let given = v.filter(|r| !is_empty_json(r));
    if parent.location.is_some() {
        return if given.is_some() {
            Err(ApiError::invalid(
                "Replication policy must not be set for a regional secret.",
            ))
        } else {
            Ok(None)
        };
    }
    let Some(r) = given else {
        return Err(ApiError::invalid("Secret.replication must be specified."));
    };
    let Json::Object(m) = r else {
        return Err(ApiError::invalid("Invalid value at 'secret.replication'."));
    };
    let automatic = m.get("automatic").filter(|v| !v.is_null());
    let user = m.get("userManaged").filter(|v| !v.is_null());
    match (automatic, user) {
        (Some(Json::Object(_)), None) => {}
        (None, Some(Json::Object(u))) => {
            let replicas = u.get("replicas").and_then(Json::as_array);
            let ok = replicas.is_some_and(|list| {
                !list.is_empty()
                    && list.iter().all(|rep| {
                        rep.get("location")
                            .and_then(Json::as_str)
                            .is_some_and(|l| !l.is_empty())
                    })
            });
            if !ok {
                return Err(ApiError::invalid(
                    "Secret.replication.user_managed.replicas must contain at least one replica \
                     with a location.",
                ));
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "Secret.replication must set exactly one of automatic or user_managed.",
            ));
        }
    }
    Ok(Some(r.clone()))
}
