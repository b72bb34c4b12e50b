//! What a manifest tree would change in the cluster: per Secret created / updated (which keys,
//! labels, annotations) / unchanged, and the Secrets to prune because their ExternalSecret left
//! the tree. Shared by `refsync plan` and the manifests reconciler, so the plan shows exactly
//! what the controller would do. Only key names and data hashes are reported, never values.
//!
//! A Secret written from a tree carries the bookkeeping annotations below; the source name is
//! what pruning keys on: a Secret without it (or with another source's) is never touched.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::api::core::v1::Secret;
use refsync_core::api::{CreationPolicy, ExternalSecret};
use refsync_core::assemble::DesiredSecret;
use refsync_core::hash;

use crate::error::{Error, Result};
use crate::labels::{ANNOTATION_DATA_HASH, ANNOTATION_SOURCE, LABEL_OWNER};
use crate::sink::cluster::{WritePlan, applied_by_us, owning_external_secret, plan_write};

/// The tree file (relative to the tree root) that declared the ExternalSecret.
pub const ANNOTATION_SOURCE_FILE: &str = "refsync.io/source-file";
/// The commit the Secret was last written from (git sources). Not compared: a new commit that
/// leaves a Secret's content alone does not rewrite it.
pub const ANNOTATION_SOURCE_COMMIT: &str = "refsync.io/source-commit";
/// The ExternalSecret (same namespace) the Secret belongs to.
pub const ANNOTATION_EXTERNAL_SECRET: &str = "refsync.io/external-secret";
/// Its `creationPolicy` when last written: decides what pruning does.
pub const ANNOTATION_CREATION_POLICY: &str = "refsync.io/creation-policy";

/// The annotations only refsync's tree sources write.
pub const SOURCE_ANNOTATIONS: [&str; 5] = [
    ANNOTATION_SOURCE,
    ANNOTATION_SOURCE_FILE,
    ANNOTATION_SOURCE_COMMIT,
    ANNOTATION_EXTERNAL_SECRET,
    ANNOTATION_CREATION_POLICY,
];

/// Where a desired Secret came from.
#[derive(Clone, Debug)]
pub struct SourceRef<'a> {
    /// `--source-name`: the identity pruning keys on.
    pub name: &'a str,
    /// File relative to the tree root.
    pub file: &'a str,
    pub commit: Option<&'a str>,
}

pub fn policy_name(p: CreationPolicy) -> String {
    format!("{p:?}")
}

/// `desired` with the source bookkeeping annotations.
pub fn with_source(es: &ExternalSecret, desired: &DesiredSecret, src: &SourceRef) -> DesiredSecret {
    let mut d = desired.clone();
    d.annotations
        .insert(ANNOTATION_SOURCE.into(), src.name.into());
    d.annotations
        .insert(ANNOTATION_SOURCE_FILE.into(), src.file.into());
    d.annotations.insert(
        ANNOTATION_EXTERNAL_SECRET.into(),
        es.metadata.name.clone().unwrap_or_default(),
    );
    d.annotations.insert(
        ANNOTATION_CREATION_POLICY.into(),
        policy_name(es.spec.target.creation_policy),
    );
    if let Some(c) = src.commit {
        d.annotations
            .insert(ANNOTATION_SOURCE_COMMIT.into(), c.into());
    }
    d
}

fn annotation<'a>(s: &'a Secret, key: &str) -> Option<&'a str> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Refuses a target that belongs to something else: an in-cluster ExternalSecret
/// (ownerReference), another tree source, or another ExternalSecret of this source.
pub fn check_target(es: &ExternalSecret, live: Option<&Secret>, source: &str) -> Result<()> {
    let Some(live) = live else { return Ok(()) };
    let es_name = es.metadata.name.as_deref().unwrap_or_default();
    if let Some(owner) = owning_external_secret(live) {
        return Err(Error::OwnedByOther(format!(
            "{owner} (an in-cluster ExternalSecret)"
        )));
    }
    match annotation(live, ANNOTATION_SOURCE) {
        Some(other) if !other.is_empty() && other != source => {
            return Err(Error::OwnedByOther(format!(
                "{} (refsync source {other:?})",
                annotation(live, ANNOTATION_EXTERNAL_SECRET).unwrap_or("?")
            )));
        }
        Some(_) => {
            if let Some(other) = annotation(live, ANNOTATION_EXTERNAL_SECRET)
                && other != es_name
            {
                return Err(Error::OwnedByOther(other.to_string()));
            }
        }
        None => {}
    }
    Ok(())
}

/// How one desired Secret compares with the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Create {
        keys: Vec<String>,
        hash: String,
    },
    Update {
        /// Data keys added, changed or removed.
        keys: Vec<String>,
        /// Labels and annotations added, changed or removed (and `type`, `immutable`).
        metadata: Vec<String>,
        old_hash: String,
        new_hash: String,
    },
    Unchanged,
}

/// Compares and plans the write. The commit annotation is pinned to the live one first, so a
/// new commit alone changes nothing.
pub fn compare(
    es: &ExternalSecret,
    desired: &DesiredSecret,
    live: Option<&Secret>,
) -> Result<(Change, WritePlan)> {
    if let Some(l) = live
        && let Some(live_commit) = annotation(l, ANNOTATION_SOURCE_COMMIT)
        && desired.annotations.contains_key(ANNOTATION_SOURCE_COMMIT)
    {
        let mut pinned = desired.clone();
        pinned
            .annotations
            .insert(ANNOTATION_SOURCE_COMMIT.into(), live_commit.into());
        if let WritePlan::UpToDate = plan_write(es, &pinned, Some(l))? {
            return Ok((Change::Unchanged, WritePlan::UpToDate));
        }
    }
    let plan = plan_write(es, desired, live)?;
    let (secret, _) = match &plan {
        WritePlan::UpToDate => return Ok((Change::Unchanged, plan)),
        WritePlan::Apply {
            secret,
            remove_keys,
            ..
        } => (secret, remove_keys),
    };
    let new_hash = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_DATA_HASH))
        .cloned()
        .unwrap_or_default();
    let Some(live) = live else {
        return Ok((
            Change::Create {
                keys: desired.data.keys().cloned().collect(),
                hash: new_hash,
            },
            plan,
        ));
    };
    let live_data = live.data.clone().unwrap_or_default();
    let mut keys: BTreeSet<String> = desired
        .data
        .iter()
        .filter(|(k, v)| live_data.get(*k).map(|b| b.0.as_slice()) != Some(v.expose()))
        .map(|(k, _)| k.clone())
        .collect();
    let ours = applied_by_us(live);
    let removable: Box<dyn Fn(&String) -> bool> =
        if es.spec.target.creation_policy == CreationPolicy::Merge {
            Box::new(|k: &String| ours.data.contains(k))
        } else {
            Box::new(|_: &String| true)
        };
    keys.extend(
        live_data
            .keys()
            .filter(|k| !desired.data.contains_key(*k) && removable(k))
            .cloned(),
    );
    let mut metadata = BTreeSet::new();
    let diff_map = |want: Option<&BTreeMap<String, String>>,
                    have: Option<&BTreeMap<String, String>>,
                    ours: &BTreeSet<String>,
                    prefix: &str,
                    out: &mut BTreeSet<String>| {
        let empty = BTreeMap::new();
        let want = want.unwrap_or(&empty);
        let have = have.unwrap_or(&empty);
        for (k, v) in want {
            if have.get(k) != Some(v) && k != ANNOTATION_DATA_HASH && k != ANNOTATION_SOURCE_COMMIT
            {
                out.insert(format!("{prefix}{k}"));
            }
        }
        for k in ours {
            if !want.contains_key(k) && have.contains_key(k) {
                out.insert(format!("{prefix}{k}"));
            }
        }
    };
    diff_map(
        secret.metadata.labels.as_ref(),
        live.metadata.labels.as_ref(),
        &ours.labels,
        "label ",
        &mut metadata,
    );
    diff_map(
        secret.metadata.annotations.as_ref(),
        live.metadata.annotations.as_ref(),
        &ours.annotations,
        "annotation ",
        &mut metadata,
    );
    if secret.type_.as_deref().unwrap_or("Opaque") != live.type_.as_deref().unwrap_or("Opaque") {
        metadata.insert("type".into());
    }
    if desired.immutable && live.immutable != Some(true) {
        metadata.insert("immutable".into());
    }
    let old_hash = annotation(live, ANNOTATION_DATA_HASH)
        .unwrap_or("-")
        .to_string();
    Ok((
        Change::Update {
            keys: keys.into_iter().collect(),
            metadata: metadata.into_iter().collect(),
            old_hash,
            new_hash,
        },
        plan,
    ))
}

/// What pruning does to a Secret whose ExternalSecret left the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneAction {
    /// `creationPolicy: Owner`: the Secret is deleted.
    Delete,
    /// `creationPolicy: Orphan`: the Secret is kept; refsync's source annotations are removed
    /// so it is never touched again.
    Release,
    /// `creationPolicy: Merge`: the keys refsync wrote (and its labels and annotations) are
    /// removed; the rest of the Secret stays.
    RemoveKeys(Vec<String>),
}

/// A Secret to prune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prune {
    pub namespace: String,
    pub name: String,
    pub external_secret: String,
    pub policy: String,
    pub action: PruneAction,
}

/// `(namespace, ExternalSecret name, target Secret name)` of every ExternalSecret in a tree.
pub type Wanted = HashSet<(String, String, String)>;

/// The Secrets written by `source` whose ExternalSecret (with that target) is not wanted.
pub fn prune_plan<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    source: &str,
    wanted: &Wanted,
) -> Vec<Prune> {
    let mut out = Vec::new();
    for s in secrets {
        if annotation(s, ANNOTATION_SOURCE) != Some(source) {
            continue;
        }
        let Some(es) = annotation(s, ANNOTATION_EXTERNAL_SECRET).filter(|e| !e.is_empty()) else {
            continue;
        };
        // An in-cluster ExternalSecret took it over: not ours any more.
        if owning_external_secret(s).is_some() {
            continue;
        }
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        let name = s.metadata.name.clone().unwrap_or_default();
        if wanted.contains(&(ns.clone(), es.to_string(), name.clone())) {
            continue;
        }
        let policy = annotation(s, ANNOTATION_CREATION_POLICY)
            .unwrap_or_default()
            .to_string();
        let owner_label = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_OWNER))
            .map(String::as_str);
        let action = match policy.as_str() {
            // The created-by label proves refsync created it for this ExternalSecret.
            "Owner" if owner_label == Some(hash::created_by(&ns, es).as_str()) => {
                PruneAction::Delete
            }
            "Merge" => PruneAction::RemoveKeys(applied_by_us(s).data.into_iter().collect()),
            _ => PruneAction::Release,
        };
        out.push(Prune {
            namespace: ns,
            name,
            external_secret: es.to_string(),
            policy,
            action,
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// One line of `refsync plan` for a compared Secret (no values: key names and hashes only).
pub fn describe(change: &Change) -> String {
    match change {
        Change::Create { keys, hash } => {
            format!("created (keys: {}) data-hash={}", keys.join(", "), hash)
        }
        Change::Update {
            keys,
            metadata,
            old_hash,
            new_hash,
        } => {
            let mut parts = Vec::new();
            if !keys.is_empty() {
                parts.push(format!("keys: {}", keys.join(", ")));
            }
            if !metadata.is_empty() {
                parts.push(format!("metadata: {}", metadata.join(", ")));
            }
            let hash = if old_hash == new_hash {
                format!("data-hash={new_hash}")
            } else {
                format!("data-hash={old_hash} -> {new_hash}")
            };
            format!("updated ({}) {hash}", parts.join("; "))
        }
        Change::Unchanged => "unchanged".into(),
    }
}

/// One line of `refsync plan` for a pruned Secret.
pub fn describe_prune(p: &Prune) -> String {
    match &p.action {
        PruneAction::Delete => format!(
            "pruned (ExternalSecret {} removed; creationPolicy=Owner: Secret deleted)",
            p.external_secret
        ),
        PruneAction::Release => format!(
            "pruned (ExternalSecret {} removed; creationPolicy={}: Secret kept, released)",
            p.external_secret,
            if p.policy.is_empty() { "?" } else { &p.policy }
        ),
        PruneAction::RemoveKeys(keys) => format!(
            "pruned (ExternalSecret {} removed; creationPolicy=Merge: keys removed: {})",
            p.external_secret,
            keys.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::secret::build_secret;
    use refsync_core::SecretBytes;

    fn es(name: &str, policy: CreationPolicy) -> ExternalSecret {
        let mut es = ExternalSecret::new(name, Default::default());
        es.metadata.namespace = Some("ns".into());
        es.spec.target.creation_policy = policy;
        es
    }

    fn desired(name: &str, pairs: &[(&str, &str)]) -> DesiredSecret {
        DesiredSecret {
            name: name.into(),
            namespace: "ns".into(),
            type_: None,
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), SecretBytes::from(*v)))
                .collect(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            finalizers: Vec::new(),
            immutable: false,
        }
    }

    fn src<'a>(commit: &'a str) -> SourceRef<'a> {
        SourceRef {
            name: "repo",
            file: "a.yaml",
            commit: Some(commit),
        }
    }

    #[test]
    fn new_commit_alone_is_unchanged_and_keys_are_named() {
        let e = es("a", CreationPolicy::Owner);
        let d1 = with_source(&e, &desired("a", &[("k", "1"), ("j", "2")]), &src("c1"));
        let live = build_secret(&e, &d1);
        let d2 = with_source(&e, &desired("a", &[("k", "1"), ("j", "2")]), &src("c2"));
        assert_eq!(compare(&e, &d2, Some(&live)).unwrap().0, Change::Unchanged);
        let d3 = with_source(&e, &desired("a", &[("k", "9"), ("n", "3")]), &src("c2"));
        match compare(&e, &d3, Some(&live)).unwrap().0 {
            Change::Update { keys, metadata, .. } => {
                assert_eq!(keys, vec!["j", "k", "n"]);
                assert!(metadata.is_empty(), "{metadata:?}");
            }
            c => panic!("{c:?}"),
        }
        let line = describe(&compare(&e, &d3, None).unwrap().0);
        assert!(
            line.starts_with("created (keys: k, n) data-hash="),
            "{line}"
        );
    }

    #[test]
    fn prune_only_our_source_and_by_policy() {
        let owner = es("gone", CreationPolicy::Owner);
        let s1 = build_secret(
            &owner,
            &with_source(&owner, &desired("gone", &[("k", "1")]), &src("c")),
        );
        let orphan = es("orph", CreationPolicy::Orphan);
        let s2 = build_secret(
            &orphan,
            &with_source(&orphan, &desired("orph", &[("k", "1")]), &src("c")),
        );
        let kept = es("kept", CreationPolicy::Owner);
        let s3 = build_secret(
            &kept,
            &with_source(&kept, &desired("kept", &[("k", "1")]), &src("c")),
        );
        let mut foreign = s1.clone();
        foreign
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_SOURCE.into(), "other".into());
        foreign.metadata.name = Some("foreign".into());
        let mut plain = Secret::default();
        plain.metadata.name = Some("plain".into());
        plain.metadata.namespace = Some("ns".into());
        let wanted: Wanted = [("ns".to_string(), "kept".to_string(), "kept".to_string())].into();
        let p = prune_plan([&s1, &s2, &s3, &foreign, &plain], "repo", &wanted);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].name, "gone");
        assert_eq!(p[0].action, PruneAction::Delete);
        assert_eq!(p[1].name, "orph");
        assert_eq!(p[1].action, PruneAction::Release);
    }

    #[test]
    fn foreign_targets_are_refused() {
        let e = es("a", CreationPolicy::Owner);
        let other = es("b", CreationPolicy::Owner);
        let live = build_secret(
            &other,
            &with_source(&other, &desired("a", &[("k", "1")]), &src("c")),
        );
        assert!(check_target(&e, Some(&live), "repo").is_err());
        assert!(check_target(&other, Some(&live), "repo").is_ok());
        assert!(check_target(&other, Some(&live), "another-repo").is_err());
    }
}
