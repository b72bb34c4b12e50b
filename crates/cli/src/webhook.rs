//! `refsync webhook`: flags → certificate source, listeners → run the admission webhook.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use refsync_controller::webhook::{self, CertSource, SelfManagedOptions, WebhookOptions};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CertMode {
    /// Generate a CA and a serving certificate, keep them in `--cert-secret`, inject the CA
    /// into `--webhook-config-name`'s caBundle and rotate before expiry.
    #[value(name = "self")]
    SelfManaged,
    /// Read `tls.crt` / `tls.key` from `--cert-dir` (e.g. a cert-manager Secret) and reload
    /// them when they change.
    Provided,
}

fn go_duration(s: &str) -> Result<Duration, String> {
    refsync_core::duration::parse_go_duration(s).map_err(|e| e.message)
}

#[derive(clap::Args, Debug)]
pub struct WebhookArgs {
    /// HTTPS port of the `/validate-…` endpoints.
    #[arg(long, default_value_t = 9443)]
    pub port: u16,
    /// Address the HTTPS listener binds.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Where the certificate comes from.
    #[arg(long, value_enum, default_value_t = CertMode::SelfManaged)]
    pub cert_mode: CertMode,
    /// Directory with `tls.crt` and `tls.key` (`--cert-mode=provided`).
    #[arg(long, default_value = "/tmp/k8s-webhook-server/serving-certs")]
    pub cert_dir: PathBuf,
    /// Self mode: the Secret (in `--cert-namespace`) holding ca.crt, ca.key, tls.crt and
    /// tls.key; created if missing.
    #[arg(long, default_value = "refsync-webhook-cert")]
    pub cert_secret: String,
    /// Namespace of the certificate Secret and of the webhook's Service.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub cert_namespace: String,
    /// The webhook's Service: the certificate names `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`,
    /// `<svc>.<ns>.svc.cluster.local`.
    #[arg(long, default_value = "refsync-webhook")]
    pub service_name: String,
    /// More DNS names in the certificate (repeatable).
    #[arg(long = "extra-dns-names")]
    pub extra_dns_names: Vec<String>,
    /// IP addresses in the certificate (repeatable), e.g. 127.0.0.1.
    #[arg(long = "extra-ip-sans")]
    pub extra_ip_sans: Vec<IpAddr>,
    /// Self mode: the ValidatingWebhookConfiguration whose webhooks' `clientConfig.caBundle`
    /// get the CA.
    #[arg(long, default_value = "refsync-webhook")]
    pub webhook_config_name: String,
    /// Self mode: lifetime of a serving certificate (Go duration).
    #[arg(long, default_value = "8760h", value_parser = go_duration)]
    pub cert_validity: Duration,
    /// Self mode: lifetime of the CA (Go duration).
    #[arg(long, default_value = "87600h", value_parser = go_duration)]
    pub ca_validity: Duration,
    /// Self mode: replace a certificate (serving or CA) this long before it expires.
    #[arg(long, default_value = "720h", value_parser = go_duration)]
    pub cert_renew_before: Duration,
    /// Provided mode: how often `--cert-dir` is re-read.
    #[arg(long, default_value = "10s", value_parser = go_duration)]
    pub cert_reload_interval: Duration,
    /// Address of `/metrics`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address of `/healthz` and `/readyz` (may equal `--metrics-addr`).
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub health_addr: SocketAddr,
    /// Kubeconfig file (self mode). Without it: the in-cluster ServiceAccount, else
    /// `$KUBECONFIG`, else `~/.kube/config`.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

pub async fn run(args: WebhookArgs) -> ExitCode {
    match start(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "webhook failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
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
            .context("no cluster configuration (in-cluster, $KUBECONFIG or ~/.kube/config)")?,
    };
    kube::Client::try_from(config).context("build the Kubernetes client")
}

async fn start(args: WebhookArgs) -> anyhow::Result<()> {
    let certs = match args.cert_mode {
        CertMode::SelfManaged => {
            anyhow::ensure!(
                args.cert_renew_before < args.cert_validity,
                "--cert-renew-before ({:?}) must be shorter than --cert-validity ({:?})",
                args.cert_renew_before,
                args.cert_validity
            );
            anyhow::ensure!(
                args.cert_renew_before < args.ca_validity,
                "--cert-renew-before ({:?}) must be shorter than --ca-validity ({:?})",
                args.cert_renew_before,
                args.ca_validity
            );
            CertSource::SelfManaged(Box::new(SelfManagedOptions {
                client: client(args.kubeconfig.as_ref()).await?,
                secret_name: args.cert_secret,
                namespace: args.cert_namespace,
                service_name: args.service_name,
                extra_dns_names: args.extra_dns_names,
                extra_ips: args.extra_ip_sans,
                webhook_config_name: args.webhook_config_name,
                validity: args.cert_validity,
                ca_validity: args.ca_validity,
                renew_before: args.cert_renew_before,
            }))
        }
        CertMode::Provided => CertSource::Provided {
            dir: args.cert_dir,
            reload_interval: args.cert_reload_interval.max(Duration::from_millis(100)),
        },
    };
    let opts = WebhookOptions {
        addr: SocketAddr::new(args.bind, args.port),
        health_addr: args.health_addr,
        metrics_addr: args.metrics_addr,
        certs,
        registry: crate::providers::registry(),
    };
    // Signal handlers are registered before serving, so a SIGTERM during start-up is not lost.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("install the SIGINT handler")?;
    let (stop, stopped) = refsync_controller::runtime::shutdown_pair();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping the webhook"),
            _ = int.recv() => tracing::info!("SIGINT: stopping the webhook"),
        }
        let _ = stop.send(true);
    });
    webhook::run(opts, stopped).await
}
