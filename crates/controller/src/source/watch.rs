//! Manifest trees that change: a directory (re-read on inotify events plus a periodic rescan)
//! or a git repository (fetched every interval). Each yields a [`Snapshot`] only when its
//! content changed, and only when every manifest in it parsed: a tree that cannot be read is
//! an error and the caller keeps what it applied last.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use refsync_core::manifest::ManifestSet;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::source::git::{GitError, GitSource};

/// One readable state of the tree.
#[derive(Clone)]
pub struct Snapshot {
    pub set: Arc<ManifestSet>,
    /// The manifests directory (origins are relative to it).
    pub root: PathBuf,
    /// The commit, for a git source.
    pub commit: Option<String>,
    /// Content fingerprint of the tree (dir) or the commit (git).
    pub revision: String,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("root", &self.root)
            .field("revision", &self.revision)
            .field("set", &self.set)
            .finish()
    }
}

/// Why a tree could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("cannot read manifests at {root}: {message}")]
    Read { root: String, message: String },
    #[error(
        "{count} manifest(s) cannot be parsed at {revision} (nothing applied or pruned until fixed): {first}"
    )]
    Manifests {
        revision: String,
        count: usize,
        first: String,
        all: Vec<String>,
    },
}

impl SourceError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            SourceError::Git(e) => e.metric_label(),
            SourceError::Read { .. } => "read",
            SourceError::Manifests { .. } => "manifests",
        }
    }
}

/// Loads a tree, refusing it when any manifest does not parse.
pub fn load(
    root: &Path,
    default_namespace: &str,
    commit: Option<String>,
    revision: String,
) -> Result<Snapshot, SourceError> {
    let set = ManifestSet::load_dir(root, default_namespace).map_err(|e| SourceError::Read {
        root: root.display().to_string(),
        message: e.to_string(),
    })?;
    if !set.errors.is_empty() {
        let all: Vec<String> = set
            .errors
            .iter()
            .map(|e| {
                let file = e.origin.file.strip_prefix(root).unwrap_or(&e.origin.file);
                format!(
                    "{} (document {}): {}",
                    file.display(),
                    e.origin.doc + 1,
                    e.message
                )
            })
            .collect();
        return Err(SourceError::Manifests {
            revision,
            count: all.len(),
            first: all[0].clone(),
            all,
        });
    }
    Ok(Snapshot {
        set: Arc::new(set),
        root: root.to_path_buf(),
        commit,
        revision,
    })
}

/// A fingerprint of every manifest file's path and content (what `load_dir` would read).
pub fn fingerprint(root: &Path) -> std::io::Result<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) -> std::io::Result<()> {
        if dir.is_file() {
            out.push((PathBuf::new(), std::fs::read(dir)?));
            return Ok(());
        }
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            let Ok(ft) = entry.file_type() else { continue };
            if hidden || ft.is_symlink() {
                continue;
            }
            if ft.is_dir() {
                walk(&path, root, out)?;
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                let bytes = std::fs::read(&path).unwrap_or_default();
                out.push((
                    path.strip_prefix(root).unwrap_or(&path).to_path_buf(),
                    bytes,
                ));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, root, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for (p, b) in &files {
        h.update(p.to_string_lossy().as_bytes());
        h.update([0]);
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

/// A directory kept up to date by someone else (git-sync, a checkout).
pub struct DirSource {
    root: PathBuf,
    default_namespace: String,
    rescan: Duration,
    events: mpsc::UnboundedReceiver<()>,
    /// Keeps the inotify watch alive (`None` when it could not be set up: rescans only).
    _watcher: Option<notify::RecommendedWatcher>,
    last: Option<String>,
}

impl DirSource {
    pub fn new(root: PathBuf, default_namespace: String, rescan: Duration) -> Self {
        use notify::Watcher as _;
        let (tx, events) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .and_then(|mut w| {
            w.watch(&root, notify::RecursiveMode::Recursive)?;
            // A git-sync style symlink swap happens in the parent.
            if let Some(parent) = root.parent().filter(|p| p.is_dir()) {
                let _ = w.watch(parent, notify::RecursiveMode::NonRecursive);
            }
            Ok(w)
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %root.display(), error = %e, "cannot watch the manifests directory; rescanning every {rescan:?} only");
                None
            }
        };
        DirSource {
            root,
            default_namespace,
            rescan,
            events,
            _watcher: watcher,
            last: None,
        }
    }

    async fn wait_change(&mut self) {
        tokio::select! {
            _ = self.events.recv() => {
                // Editors and git write several files: let the burst settle.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while self.events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(self.rescan) => {}
        }
    }

    /// The next changed state (the first call returns at once).
    pub async fn next(&mut self) -> Result<Snapshot, SourceError> {
        loop {
            if self.last.is_some() {
                self.wait_change().await;
            }
            let fp = fingerprint(&self.root).map_err(|e| SourceError::Read {
                root: self.root.display().to_string(),
                message: e.to_string(),
            });
            let fp = match fp {
                Ok(fp) => fp,
                Err(e) => {
                    // Report once per distinct failure; retry at the next change or rescan.
                    self.last = Some(String::new());
                    return Err(e);
                }
            };
            if self.last.as_deref() == Some(fp.as_str()) {
                continue;
            }
            self.last = Some(fp.clone());
            return load(&self.root, &self.default_namespace, None, fp);
        }
    }
}

/// A git repository fetched every `interval`.
pub struct GitTree {
    pub git: GitSource,
    pub default_namespace: String,
    pub interval: Duration,
    started: bool,
    /// The last snapshot returned, re-sent when the ref is back at it after an error (so the
    /// error is cleared).
    last: Option<Snapshot>,
    failed: bool,
}

impl GitTree {
    pub fn new(git: GitSource, default_namespace: String, interval: Duration) -> Self {
        GitTree {
            git,
            default_namespace,
            interval,
            started: false,
            last: None,
            failed: false,
        }
    }

    /// The next commit whose manifests all parse (the first call fetches at once). The
    /// commit is recorded as applied (later commits must descend from it).
    pub async fn next(&mut self) -> Result<Snapshot, SourceError> {
        loop {
            if self.started {
                tokio::time::sleep(self.interval).await;
            }
            self.started = true;
            match self.fetch_once().await {
                Ok(Some(snap)) => {
                    self.failed = false;
                    self.last = Some(snap.clone());
                    return Ok(snap);
                }
                Ok(None) if self.failed => {
                    self.failed = false;
                    if let Some(last) = self.last.clone() {
                        return Ok(last);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
    }
}

impl GitTree {
    async fn fetch_once(&mut self) -> Result<Option<Snapshot>, SourceError> {
        let Some(checkout) = self.git.fetch().await? else {
            return Ok(None);
        };
        let snap = load(
            &checkout.dir,
            &self.default_namespace,
            Some(checkout.sha.clone()),
            checkout.sha.clone(),
        )?;
        self.git.mark_applied(&checkout.sha);
        Ok(Some(snap))
    }
}

/// Either kind of tree.
#[allow(clippy::large_enum_variant)] // one per process; never moved in a hot path
pub enum TreeSource {
    Dir(DirSource),
    Git(GitTree),
}

impl TreeSource {
    pub async fn next(&mut self) -> Result<Snapshot, SourceError> {
        match self {
            TreeSource::Dir(d) => d.next().await,
            TreeSource::Git(g) => g.next().await,
        }
    }

    /// How the source is described in logs and the status ConfigMap.
    pub fn describe(&self) -> String {
        match self {
            TreeSource::Dir(d) => format!("dir {}", d.root.display()),
            TreeSource::Git(g) => {
                let o = g.git.options();
                format!(
                    "git {} ref {} path {}",
                    crate::source::git::redact_url(&o.repo),
                    o.reference,
                    if o.path.is_empty() { "." } else { &o.path }
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_content_and_skips_hidden() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.yaml"), "x: 1").unwrap();
        let a = fingerprint(d.path()).unwrap();
        std::fs::create_dir(d.path().join(".git")).unwrap();
        std::fs::write(d.path().join(".git/b.yaml"), "y").unwrap();
        std::fs::write(d.path().join("notes.txt"), "y").unwrap();
        assert_eq!(a, fingerprint(d.path()).unwrap());
        std::fs::write(d.path().join("a.yaml"), "x: 2").unwrap();
        assert_ne!(a, fingerprint(d.path()).unwrap());
    }

    #[test]
    fn unparsable_tree_is_refused_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("bad.yaml"), "kind: [unclosed").unwrap();
        let e = load(d.path(), "default", None, "r1".into()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("bad.yaml") && msg.contains("nothing applied"),
            "{msg}"
        );
    }
}
