//! Command line: parse, set up logging, dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "refsync",
    version,
    about = "A drop-in, faster, leaner implementation of the External Secrets API"
)]
struct Cli {
    /// Log filter (tracing syntax), e.g. `info`, `refsync=debug`.
    #[arg(long, global = true, env = "REFSYNC_LOG", default_value = "warn")]
    log_level: String,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Resolve every ExternalSecret under a manifest directory and write the Secrets.
    Render(RenderArgs),
    /// Print the CustomResourceDefinitions refsync serves.
    Crds,
    /// Check a manifest tree offline (schema, store references, templates, regexps,
    /// duplicate targets); no provider calls. Exit code 1 when anything is wrong.
    Validate(ValidateArgs),
    /// Run the controller against a cluster (ExternalSecrets, SecretStores,
    /// ClusterSecretStores).
    Controller(crate::controller::ControllerArgs),
    /// Compare what a manifest tree would write with the cluster: created / updated (keys) /
    /// pruned / unchanged per Secret, values redacted. Exit code 0 = no changes, 2 = changes,
    /// 1 = errors.
    Plan(crate::plan::PlanArgs),
    /// Serve the validating admission webhook (ESO's `/validate-…` endpoints) over TLS, with
    /// self-managed (`--cert-mode=self`) or provided (`--cert-mode=provided`) certificates.
    Webhook(crate::webhook::WebhookArgs),
}

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Directory (or file) of YAML manifests.
    #[arg(long)]
    pub manifests: PathBuf,
    /// Namespace for objects that do not set one.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct RenderArgs {
    /// Directory (or file) of YAML manifests: ExternalSecrets, stores, and the Secrets and
    /// ConfigMaps they reference.
    #[arg(long)]
    pub manifests: PathBuf,
    /// Write one file per Secret under this directory (`<namespace>/<name>.yaml`) instead of
    /// printing them.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Namespace for objects that do not set one.
    #[arg(long, default_value = "default")]
    pub namespace: String,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Crds => {
            print!("{}", refsync_api::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Render(args) => runtime().block_on(crate::render::run(args)),
        Command::Validate(args) => crate::validate::run(args),
        Command::Controller(args) => runtime().block_on(crate::controller::run(args)),
        Command::Plan(args) => runtime().block_on(crate::plan::run(args)),
        Command::Webhook(args) => runtime().block_on(crate::webhook::run(args)),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("refsync: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
