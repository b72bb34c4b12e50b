//! The git source: a repository fetched with the `git` CLI into a private work tree, one
//! commit at a time. A fetch that fails, a ref that cannot be resolved, a path missing at the
//! commit, or a ref that moved to a commit not descending from the one applied last
//! (force-push) is an error: the caller keeps what it applied last.
//!
//! Why the CLI and not a library: it speaks every transport (`https`, `ssh`, `git`, `file`)
//! with the system's SSH and TLS configuration, and its behaviour is what users debug with.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// What can go wrong reading a repository. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git source configuration: {0}")]
    Config(String),
    #[error("git {op} failed for {repo}: {message}")]
    Command {
        op: String,
        repo: String,
        message: String,
    },
    #[error(
        "ref {reference} of {repo} moved from {applied} to {fetched}, which does not contain it (force-push?); keeping {applied} (run with --allow-force-push to accept rewritten history)"
    )]
    ForcePush {
        repo: String,
        reference: String,
        applied: String,
        fetched: String,
    },
    #[error("path {path:?} does not exist in {repo} at {sha}")]
    MissingPath {
        repo: String,
        path: String,
        sha: String,
    },
}

impl GitError {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            GitError::Config(_) => "config",
            GitError::Command { .. } => "fetch",
            GitError::ForcePush { .. } => "force_push",
            GitError::MissingPath { .. } => "missing_path",
        }
    }
}

/// Credentials for the remote.
#[derive(Clone, Default)]
pub enum GitAuth {
    #[default]
    None,
    /// HTTPS basic auth with a token (sent as an `Authorization` header through git's
    /// environment configuration, never on a command line).
    Token { username: String, token: String },
    /// An SSH private key file; `known_hosts` pins host keys (else first use is accepted and
    /// remembered in the work directory).
    SshKey {
        key_file: PathBuf,
        known_hosts: Option<PathBuf>,
    },
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitAuth::None => f.write_str("None"),
            GitAuth::Token { username, .. } => write!(f, "Token({username}, <redacted>)"),
            GitAuth::SshKey { key_file, .. } => write!(f, "SshKey({})", key_file.display()),
        }
    }
}

/// Where to read manifests from.
#[derive(Clone, Debug)]
pub struct GitOptions {
    pub repo: String,
    /// A branch, tag or full commit SHA.
    pub reference: String,
    /// Sub-directory of the repository holding the manifests (`""` or `.` = the root).
    pub path: String,
    pub auth: GitAuth,
    /// Private clone; created when missing.
    pub workdir: PathBuf,
    /// Accept a ref that moved to a commit not descending from the applied one.
    pub allow_force_push: bool,
    /// Bound on each git command.
    pub timeout: Duration,
}

/// One fetched commit, checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    pub sha: String,
    /// The manifests directory inside the work tree.
    pub dir: PathBuf,
}

/// The repository URL without user information (`https://user:token@host` → `https://host`).
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if path.is_empty() && !rest.contains('/') {
            return format!("{scheme}://{host}");
        }
        return format!("{scheme}://{host}/{path}");
    }
    url.to_string()
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks URL scheme, ref and path before anything runs.
pub fn validate(opts: &GitOptions) -> Result<(), GitError> {
    let url = opts.repo.as_str();
    let scheme_ok = ["https://", "http://", "ssh://", "git://", "file://"]
        .iter()
        .any(|s| url.starts_with(s));
    // scp-like `user@host:path`
    let scp_like = !url.contains("://") && url.contains('@') && url.contains(':');
    if !(scheme_ok || scp_like) {
        return Err(GitError::Config(format!(
            "--repo {}: use an https://, ssh://, git:// or file:// URL (or user@host:path)",
            redact_url(url)
        )));
    }
    if url.starts_with('-') || opts.reference.starts_with('-') || opts.reference.is_empty() {
        return Err(GitError::Config(format!(
            "--ref {:?}: a branch, tag or commit SHA is required",
            opts.reference
        )));
    }
    if opts.reference.contains("..") || opts.reference.contains(char::is_whitespace) {
        return Err(GitError::Config(format!(
            "--ref {:?} is not a valid ref",
            opts.reference
        )));
    }
    if Path::new(&opts.path).components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        return Err(GitError::Config(format!(
            "--path {:?} must be a relative path inside the repository",
            opts.path
        )));
    }
    if matches!(opts.auth, GitAuth::Token { .. }) && url.starts_with("http://") {
        return Err(GitError::Config(
            "a token is only sent over https:// (the --repo URL is http://)".into(),
        ));
    }
    Ok(())
}

/// A repository tracked at one ref.
pub struct GitSource {
    opts: GitOptions,
    /// The commit applied last (force-push check).
    applied: Option<String>,
}

impl GitSource {
    pub fn new(opts: GitOptions) -> Result<Self, GitError> {
        validate(&opts)?;
        Ok(GitSource {
            opts,
            applied: None,
        })
    }

    pub fn options(&self) -> &GitOptions {
        &self.opts
    }

    /// Records the commit whose manifests were applied (later fetches must descend from it).
    pub fn mark_applied(&mut self, sha: &str) {
        self.applied = Some(sha.to_string());
    }

    pub fn applied(&self) -> Option<&str> {
        self.applied.as_deref()
    }

    fn repo_label(&self) -> String {
        redact_url(&self.opts.repo)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(&self.opts.workdir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("GCM_INTERACTIVE", "never")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match &self.opts.auth {
            GitAuth::None => {}
            GitAuth::Token { username, token } => {
                use base64::Engine as _;
                let basic =
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{token}"));
                cmd.env("GIT_CONFIG_COUNT", "1")
                    .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                    .env(
                        "GIT_CONFIG_VALUE_0",
                        format!("Authorization: Basic {basic}"),
                    );
            }
            GitAuth::SshKey {
                key_file,
                known_hosts,
            } => {
                let hosts = known_hosts
                    .clone()
                    .unwrap_or_else(|| self.opts.workdir.join(".refsync_known_hosts"));
                let strict = if known_hosts.is_some() {
                    "yes"
                } else {
                    "accept-new"
                };
                cmd.env(
                    "GIT_SSH_COMMAND",
                    format!(
                        "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking={strict} -o UserKnownHostsFile={}",
                        shell_quote(&key_file.display().to_string()),
                        shell_quote(&hosts.display().to_string())
                    ),
                );
            }
        }
        cmd
    }

    async fn run(&self, op: &str, args: &[&str]) -> Result<String, GitError> {
        let fail = |message: String| GitError::Command {
            op: op.to_string(),
            repo: self.repo_label(),
            message,
        };
        let child = self
            .command(args)
            .spawn()
            .map_err(|e| fail(format!("cannot run git: {e}")))?;
        let out = tokio::time::timeout(self.opts.timeout, child.wait_with_output())
            .await
            .map_err(|_| fail(format!("timed out after {:?}", self.opts.timeout)))?
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(fail(self.clean_stderr(&stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// git's stderr, bounded, with the URL (which may carry credentials) redacted.
    fn clean_stderr(&self, stderr: &str) -> String {
        let mut s = stderr.replace(&self.opts.repo, &self.repo_label());
        if let GitAuth::Token { token, .. } = &self.opts.auth
            && !token.is_empty()
        {
            s = s.replace(token.as_str(), "<redacted>");
        }
        let lines: Vec<&str> = s
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(5)
            .collect();
        let joined = lines.join("; ");
        joined.chars().take(500).collect()
    }

    async fn ensure_repo(&self) -> Result<(), GitError> {
        let wd = &self.opts.workdir;
        if !wd.join(".git").is_dir() {
            std::fs::create_dir_all(wd).map_err(|e| {
                GitError::Config(format!(
                    "cannot create work directory {}: {e}",
                    wd.display()
                ))
            })?;
            self.run("init", &["init", "-q"]).await?;
        }
        // The URL is set every time: the flag may have changed between runs.
        let _ = self.run("remote", &["remote", "remove", "origin"]).await;
        self.run("remote", &["remote", "add", "origin", &self.opts.repo])
            .await?;
        Ok(())
    }

    /// Fetches the ref and checks its commit out; `None` when it is the commit applied last.
    pub async fn fetch(&self) -> Result<Option<Checkout>, GitError> {
        self.ensure_repo().await?;
        let r = self.opts.reference.as_str();
        let spec = if is_sha(r) {
            r.to_string()
        } else {
            format!("+{r}:refs/refsync/target")
        };
        self.run(
            "fetch",
            &["fetch", "--quiet", "--no-tags", "--force", "origin", &spec],
        )
        .await?;
        let target = if is_sha(r) {
            format!("{r}^{{commit}}")
        } else {
            "refs/refsync/target^{commit}".to_string()
        };
        let sha = self
            .run("rev-parse", &["rev-parse", "--verify", "--quiet", &target])
            .await?;
        if let Some(applied) = &self.applied {
            if *applied == sha {
                return Ok(None);
            }
            if !self.opts.allow_force_push {
                let ancestor = self
                    .command(&["merge-base", "--is-ancestor", applied, &sha])
                    .status()
                    .await
                    .map(|s| s.success())
                    .unwrap_or(false);
                if !ancestor {
                    return Err(GitError::ForcePush {
                        repo: self.repo_label(),
                        reference: r.to_string(),
                        applied: applied.clone(),
                        fetched: sha,
                    });
                }
            }
        }
        self.run(
            "checkout",
            &[
                "-c",
                "advice.detachedHead=false",
                "checkout",
                "--quiet",
                "--force",
                "--detach",
                &sha,
            ],
        )
        .await?;
        self.run("clean", &["clean", "-q", "-f", "-f", "-d", "-x"])
            .await?;
        let dir = self.opts.workdir.join(&self.opts.path);
        if !dir.exists() {
            return Err(GitError::MissingPath {
                repo: self.repo_label(),
                path: self.opts.path.clone(),
                sha,
            });
        }
        Ok(Some(Checkout { sha, dir }))
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(repo: &str, reference: &str, path: &str) -> GitOptions {
        GitOptions {
            repo: repo.into(),
            reference: reference.into(),
            path: path.into(),
            auth: GitAuth::None,
            workdir: PathBuf::from("/nonexistent"),
            allow_force_push: false,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn urls_are_redacted_and_checked() {
        assert_eq!(
            redact_url("https://user:tok@example.com/org/repo.git"),
            "https://example.com/org/repo.git"
        );
        assert_eq!(redact_url("git://127.0.0.1:9/r"), "git://127.0.0.1:9/r");
        assert!(validate(&opts("https://h/r", "main", "deploy")).is_ok());
        assert!(validate(&opts("git@github.com:o/r.git", "v1", "")).is_ok());
        assert!(validate(&opts("ftp://h/r", "main", "")).is_err());
        assert!(validate(&opts("https://h/r", "--upload-pack=x", "")).is_err());
        assert!(validate(&opts("https://h/r", "main", "../etc")).is_err());
        assert!(validate(&opts("https://h/r", "main", "/etc")).is_err());
        let mut o = opts("http://h/r", "main", "");
        o.auth = GitAuth::Token {
            username: "u".into(),
            token: "t".into(),
        };
        assert!(validate(&o).is_err());
    }

    #[test]
    fn token_is_not_in_debug() {
        let a = GitAuth::Token {
            username: "u".into(),
            token: "canary-token".into(),
        };
        assert!(!format!("{a:?}").contains("canary"));
    }
}
