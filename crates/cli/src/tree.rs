//! Flags and wiring of the tree sources (`--source dir|git`) of `refsync controller`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use refsync_controller::context::Context;
use refsync_controller::reconcile::manifests::{self, ManifestOptions};
use refsync_controller::runtime::RuntimeOptions;
use refsync_controller::source::git::{GitAuth, GitOptions, GitSource};
use refsync_controller::source::watch::{DirSource, GitTree, TreeSource};
use refsync_core::duration::parse_go_duration;

/// Where the controller reads ExternalSecrets from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// ExternalSecret, SecretStore and ClusterSecretStore objects in the cluster (CRDs).
    Cluster,
    /// A directory of manifests (`--manifests`), re-read on change.
    Dir,
    /// A git repository (`--repo`, `--ref`, `--path`), fetched every `--interval`.
    Git,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map_err(|e| e.to_string())
}

/// Flags of the `dir` and `git` sources.
#[derive(clap::Args, Debug, Clone)]
pub struct TreeArgs {
    /// `--source dir`: directory of manifests (ExternalSecrets and their stores).
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// `--source dir`: full rescan period besides change notifications.
    #[arg(long, value_parser = duration, default_value = "1m")]
    pub rescan: Duration,
    /// `--source git`: repository URL (https://, ssh://, git://, file:// or user@host:path).
    #[arg(long)]
    pub repo: Option<String>,
    /// `--source git`: branch, tag or full commit SHA.
    #[arg(long = "ref", default_value = "main")]
    pub reference: String,
    /// `--source git`: sub-directory of the repository holding the manifests.
    #[arg(long, default_value = "")]
    pub path: String,
    /// `--source git`: fetch period (`5s`, `1m`, `1h`).
    #[arg(long, value_parser = duration, default_value = "1m")]
    pub interval: Duration,
    /// `--source git`: file holding an HTTPS token (sent as basic auth with --git-username).
    #[arg(long)]
    pub git_token_file: Option<PathBuf>,
    /// `--source git`: user name sent with the token.
    #[arg(long, default_value = "git")]
    pub git_username: String,
    /// `--source git`: SSH private key file.
    #[arg(long)]
    pub git_ssh_key_file: Option<PathBuf>,
    /// `--source git`: known_hosts file pinning the server's host key (else accepted on first use).
    #[arg(long)]
    pub git_known_hosts: Option<PathBuf>,
    /// `--source git`: Kubernetes Secret `namespace/name` with `token` (and optional
    /// `username`), or `ssh-privatekey` (and optional `known_hosts`).
    #[arg(long)]
    pub git_auth_secret: Option<String>,
    /// `--source git`: private clone directory.
    #[arg(long)]
    pub git_workdir: Option<PathBuf>,
    /// `--source git`: accept a ref that moved to a commit not descending from the applied one.
    #[arg(long)]
    pub allow_force_push: bool,
    /// Name of this tree, written as `refsync.io/source` on every Secret; pruning only touches
    /// Secrets carrying it.
    #[arg(long, default_value = "manifests")]
    pub source_name: String,
    /// Namespace for manifests that set none.
    #[arg(long, default_value = "default")]
    pub default_namespace: String,
    /// Summary ConfigMap of each ExternalSecret's condition (`""`: none).
    #[arg(long, default_value = "refsync-status")]
    pub status_configmap: String,
    /// Namespace of the summary ConfigMap.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub status_namespace: String,
}

/// Builds the source the flags describe (`client` reads `--git-auth-secret`).
pub async fn build_source(
    kind: SourceKind,
    args: &TreeArgs,
    client: &kube::Client,
) -> anyhow::Result<TreeSource> {
    match kind {
        SourceKind::Cluster => anyhow::bail!("internal: the cluster source has no tree"),
        SourceKind::Dir => {
            let dir = args
                .manifests
                .clone()
                .context("--source dir needs --manifests PATH")?;
            anyhow::ensure!(
                dir.exists(),
                "--manifests {}: no such directory",
                dir.display()
            );
            Ok(TreeSource::Dir(DirSource::new(
                dir,
                args.default_namespace.clone(),
                args.rescan,
            )))
        }
        SourceKind::Git => {
            let repo = args.repo.clone().context("--source git needs --repo URL")?;
            let workdir = args.git_workdir.clone().unwrap_or_else(|| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (&repo, &args.reference).hash(&mut h);
                std::env::temp_dir().join(format!("refsync-git-{:016x}", h.finish()))
            });
            let auth = auth(args, client, &workdir).await?;
            let git = GitSource::new(GitOptions {
                repo,
                reference: args.reference.clone(),
                path: args.path.clone(),
                auth,
                workdir,
                allow_force_push: args.allow_force_push,
                timeout: Duration::from_secs(120),
            })?;
            Ok(TreeSource::Git(GitTree::new(
                git,
                args.default_namespace.clone(),
                args.interval,
            )))
        }
    }
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("read --git-token-file {}", path.display()))?;
    Ok(t.trim().to_string())
}

async fn auth(args: &TreeArgs, client: &kube::Client, workdir: &Path) -> anyhow::Result<GitAuth> {
    if let Some(path) = &args.git_token_file {
        return Ok(GitAuth::Token {
            username: args.git_username.clone(),
            token: read_token(path)?,
        });
    }
    if let Some(key) = &args.git_ssh_key_file {
        return Ok(GitAuth::SshKey {
            key_file: key.clone(),
            known_hosts: args.git_known_hosts.clone(),
        });
    }
    let Some(reference) = &args.git_auth_secret else {
        return Ok(GitAuth::None);
    };
    let (ns, name) = reference
        .split_once('/')
        .context("--git-auth-secret must be namespace/name")?;
    let secret = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("read --git-auth-secret {ns}/{name}"))?;
    let data = secret.data.unwrap_or_default();
    let text = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
    };
    if let Some(token) = text("token") {
        return Ok(GitAuth::Token {
            username: text("username").unwrap_or_else(|| args.git_username.clone()),
            token,
        });
    }
    let Some(key) = data.get("ssh-privatekey") else {
        anyhow::bail!(
            "--git-auth-secret {ns}/{name} has neither a `token` nor an `ssh-privatekey` key"
        );
    };
    // ssh reads keys from files: write it (mode 0600) beside the clone.
    let dir = workdir.with_extension("auth");
    std::fs::create_dir_all(&dir)?;
    let key_file = dir.join("id");
    write_private(&key_file, &key.0)?;
    let known_hosts = match data.get("known_hosts") {
        Some(k) => {
            let f = dir.join("known_hosts");
            write_private(&f, &k.0)?;
            Some(f)
        }
        None => args.git_known_hosts.clone(),
    };
    Ok(GitAuth::SshKey {
        key_file,
        known_hosts,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// Runs the controller process with a tree source.
pub async fn run(
    ctx: Arc<Context>,
    opts: RuntimeOptions,
    kind: SourceKind,
    args: &TreeArgs,
) -> anyhow::Result<()> {
    let source = build_source(kind, args, &ctx.client).await?;
    let mopts = ManifestOptions {
        source_name: args.source_name.clone(),
        status_config_map: (!args.status_configmap.is_empty())
            .then(|| (args.status_namespace.clone(), args.status_configmap.clone())),
    };
    tracing::info!(source = %source.describe(), name = %mopts.source_name, "starting the controller with a manifest tree source");
    manifests::serve(ctx, opts, source, mopts).await
}

/// A client from `--kubeconfig`, else the usual inference.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("use --kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no cluster configuration ($KUBECONFIG, ~/.kube/config or in-cluster)")?,
    };
    kube::Client::try_from(config).context("build the Kubernetes client")
}
