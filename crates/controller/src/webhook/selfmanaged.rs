//! Self-managed certificates: a CA and a serving certificate kept in a Secret (shared by every
//! replica), the CA injected into the ValidatingWebhookConfiguration's `caBundle`, both rotated
//! before they expire. A CA rotation first publishes old + new CA in `caBundle`, then serves
//! the new certificate, so the apiserver trusts whichever certificate a replica presents.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

use super::WebhookMetrics;
use super::certs::{self, CertResolver, PemPair};

pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
/// The CA replaced by the last rotation, kept in `caBundle` until it expires.
pub const CA_PREVIOUS_CRT: &str = "ca-previous.crt";

#[derive(Clone)]
pub struct SelfManagedOptions {
    pub client: kube::Client,
    /// The Secret holding ca.crt, ca.key, tls.crt, tls.key.
    pub secret_name: String,
    pub namespace: String,
    pub service_name: String,
    pub extra_dns_names: Vec<String>,
    pub extra_ips: Vec<IpAddr>,
    /// The ValidatingWebhookConfiguration whose webhooks get the CA.
    pub webhook_config_name: String,
    /// Lifetime of a serving certificate.
    pub validity: Duration,
    /// Lifetime of a CA.
    pub ca_validity: Duration,
    /// Rotate a certificate this long before it expires.
    pub renew_before: Duration,
}

impl SelfManagedOptions {
    /// `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc`, `<svc>.<ns>.svc.cluster.local`, then the extras.
    pub fn dns_names(&self) -> Vec<String> {
        let (s, ns) = (&self.service_name, &self.namespace);
        let mut names = vec![
            s.clone(),
            format!("{s}.{ns}"),
            format!("{s}.{ns}.svc"),
            format!("{s}.{ns}.svc.cluster.local"),
        ];
        for n in &self.extra_dns_names {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }

    /// How often the Secret is re-read (another replica may have rotated) and expiry checked.
    fn check_interval(&self) -> Duration {
        (self.renew_before / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

/// What the Secret holds once ensured.
#[derive(Clone, Debug, PartialEq)]
struct Stored {
    ca: PemPair,
    leaf: PemPair,
    previous_ca: Option<String>,
}

impl Stored {
    /// `caBundle`: the current CA, then the previous one while it is still valid.
    fn bundle(&self) -> Vec<u8> {
        let mut b = self.ca.cert.trim_end().to_string();
        b.push('\n');
        if let Some(prev) = &self.previous_ca {
            b.push_str(prev.trim_end());
            b.push('\n');
        }
        b.into_bytes()
    }
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|s| !s.trim().is_empty())
}

/// The Secret's certificates, renewed where needed. `None` = nothing to write.
fn renew(opts: &SelfManagedOptions, existing: Option<&Secret>) -> anyhow::Result<Option<Stored>> {
    let data = existing.and_then(|s| s.data.clone()).unwrap_or_default();
    let now = now_unix();
    let renew_before = i64::try_from(opts.renew_before.as_secs()).unwrap_or(i64::MAX);
    let fresh = |not_after: i64| not_after.saturating_sub(now) > renew_before;
    let old_ca = match (text(&data, CA_CRT), text(&data, CA_KEY)) {
        (Some(cert), Some(key)) => Some(PemPair { cert, key }),
        _ => None,
    };
    let old_leaf = match (text(&data, TLS_CRT), text(&data, TLS_KEY)) {
        (Some(cert), Some(key)) => Some(PemPair { cert, key }),
        _ => None,
    };
    let old_prev = text(&data, CA_PREVIOUS_CRT);

    let ca_usable = old_ca.as_ref().and_then(|ca| {
        let info = certs::inspect(&ca.cert).ok()?;
        (info.is_ca && fresh(info.not_after) && rcgen::KeyPair::from_pem(&ca.key).is_ok())
            .then_some((ca.clone(), info.not_after))
    });
    let (ca, ca_not_after, mut previous_ca) = match ca_usable {
        Some((ca, end)) => (ca, end, old_prev.clone()),
        None => {
            let ca = certs::generate_ca(opts.ca_validity)?;
            let end = certs::inspect(&ca.cert)?.not_after;
            // The replaced CA stays trusted while replicas still serve certificates it signed.
            let prev = old_ca
                .as_ref()
                .filter(|c| certs::inspect(&c.cert).is_ok_and(|i| i.not_after > now))
                .map(|c| c.cert.clone());
            (ca, end, prev)
        }
    };
    if previous_ca
        .as_ref()
        .is_some_and(|p| certs::inspect(p).is_ok_and(|i| i.not_after <= now) || p == &ca.cert)
    {
        previous_ca = None;
    }
    let dns = opts.dns_names();
    let leaf_usable = old_leaf.as_ref().is_some_and(|leaf| {
        let Ok(info) = certs::inspect(&leaf.cert) else {
            return false;
        };
        let mut have_dns = info.dns_names.clone();
        let mut want_dns = dns.clone();
        have_dns.sort();
        want_dns.sort();
        let mut have_ips = info.ips.clone();
        let mut want_ips = opts.extra_ips.clone();
        have_ips.sort();
        want_ips.sort();
        fresh(info.not_after)
            && have_dns == want_dns
            && have_ips == want_ips
            && certs::certified_key(leaf).is_ok()
            && certs::verifies(&ca.cert, leaf, &dns[2])
    });
    let leaf = match (leaf_usable, old_leaf) {
        (true, Some(leaf)) => leaf,
        _ => certs::issue_serving(&ca, ca_not_after, &dns, &opts.extra_ips, opts.validity)?,
    };
    let stored = Stored {
        ca,
        leaf,
        previous_ca,
    };
    let unchanged = existing.is_some()
        && text(&data, CA_CRT).as_ref() == Some(&stored.ca.cert)
        && text(&data, TLS_CRT).as_ref() == Some(&stored.leaf.cert)
        && old_prev == stored.previous_ca;
    Ok((!unchanged).then_some(stored))
}

fn read_stored(secret: &Secret) -> Option<Stored> {
    let data = secret.data.clone().unwrap_or_default();
    Some(Stored {
        ca: PemPair {
            cert: text(&data, CA_CRT)?,
            key: text(&data, CA_KEY)?,
        },
        leaf: PemPair {
            cert: text(&data, TLS_CRT)?,
            key: text(&data, TLS_KEY)?,
        },
        previous_ca: text(&data, CA_PREVIOUS_CRT),
    })
}

fn secret_data(s: &Stored) -> BTreeMap<String, ByteString> {
    let mut d = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        d.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    put(CA_CRT, &s.ca.cert);
    put(CA_KEY, &s.ca.key);
    put(TLS_CRT, &s.leaf.cert);
    put(TLS_KEY, &s.leaf.key);
    if let Some(p) = &s.previous_ca {
        put(CA_PREVIOUS_CRT, p);
    }
    d
}

/// Reads the Secret, renews what needs renewing and writes it back (create, or replace at the
/// read resourceVersion so two replicas never both rotate). Returns the certificates in force.
async fn ensure_secret(opts: &SelfManagedOptions) -> anyhow::Result<(Stored, bool)> {
    let api: Api<Secret> = Api::namespaced(opts.client.clone(), &opts.namespace);
    let name = &opts.secret_name;
    let existing = api
        .get_opt(name)
        .await
        .with_context(|| format!("read Secret {}/{name}", opts.namespace))?;
    let Some(stored) = renew(opts, existing.as_ref())? else {
        let current = existing
            .as_ref()
            .and_then(read_stored)
            .context("Secret unexpectedly incomplete")?;
        return Ok((current, false));
    };
    match existing {
        Some(mut s) => {
            s.data = Some(secret_data(&stored));
            s.string_data = None;
            api.replace(name, &PostParams::default(), &s)
                .await
                .with_context(|| format!("update Secret {}/{name}", opts.namespace))?;
        }
        None => {
            let s = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(opts.namespace.clone()),
                    labels: Some(
                        [(
                            "app.kubernetes.io/managed-by".to_string(),
                            "refsync-webhook".to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(secret_data(&stored)),
                ..Default::default()
            };
            api.create(&PostParams::default(), &s)
                .await
                .with_context(|| format!("create Secret {}/{name}", opts.namespace))?;
        }
    }
    Ok((stored, true))
}

/// Sets every webhook's `clientConfig.caBundle` of the configuration to `bundle`. Returns
/// whether anything was patched; a missing configuration is not an error (it may be created
/// later: the watch then injects).
pub async fn inject_ca_bundle(
    client: &kube::Client,
    config_name: &str,
    bundle: &[u8],
) -> anyhow::Result<bool> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let Some(cfg) = api
        .get_opt(config_name)
        .await
        .with_context(|| format!("read ValidatingWebhookConfiguration {config_name}"))?
    else {
        tracing::warn!(
            config = config_name,
            "ValidatingWebhookConfiguration not found; caBundle will be injected when it appears"
        );
        return Ok(false);
    };
    patch_if_needed(&api, &cfg, bundle).await
}

async fn patch_if_needed(
    api: &Api<ValidatingWebhookConfiguration>,
    cfg: &ValidatingWebhookConfiguration,
    bundle: &[u8],
) -> anyhow::Result<bool> {
    let name = cfg.metadata.name.clone().unwrap_or_default();
    let webhooks = cfg.webhooks.clone().unwrap_or_default();
    let stale: Vec<&str> = webhooks
        .iter()
        .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle))
        .map(|w| w.name.as_str())
        .collect();
    if stale.is_empty() {
        return Ok(false);
    }
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bundle);
    // `webhooks` merges by name (strategic merge): only caBundle changes.
    let patch = serde_json::json!({
        "webhooks": stale.iter().map(|n| serde_json::json!({
            "name": n, "clientConfig": { "caBundle": b64 }
        })).collect::<Vec<_>>()
    });
    api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .with_context(|| format!("patch caBundle of ValidatingWebhookConfiguration {name}"))?;
    tracing::info!(config = %name, webhooks = stale.len(), "injected the CA into caBundle");
    Ok(true)
}

/// Keeps the Secret, the served certificate and `caBundle` current until `shutdown`.
pub async fn run(
    opts: SelfManagedOptions,
    resolver: Arc<CertResolver>,
    metrics: Arc<WebhookMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let (bundle_tx, bundle_rx) = tokio::sync::watch::channel(Vec::<u8>::new());
    let injector = tokio::spawn(keep_injected(
        opts.client.clone(),
        opts.webhook_config_name.clone(),
        bundle_rx,
    ));
    let mut shutdown = std::pin::pin!(shutdown);
    let mut served_ca: Option<String> = None;
    loop {
        let wait = match ensure_secret(&opts).await {
            Ok((stored, wrote)) => {
                if wrote {
                    metrics.cert_rotations.inc();
                    tracing::info!(secret = %opts.secret_name, namespace = %opts.namespace,
                        "wrote new webhook certificates");
                }
                let bundle = stored.bundle();
                let ca_changed = served_ca.as_ref() != Some(&stored.ca.cert);
                if ca_changed {
                    // The apiserver must trust the new CA before any replica serves a
                    // certificate it signed.
                    match inject_ca_bundle(&opts.client, &opts.webhook_config_name, &bundle).await {
                        Ok(true) if served_ca.is_some() => {
                            tokio::time::sleep(Duration::from_secs(1)).await
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = format!("{e:#}"), "caBundle injection failed")
                        }
                    }
                }
                bundle_tx.send_replace(bundle);
                match resolver.set(&stored.leaf) {
                    Ok(changed) => {
                        served_ca = Some(stored.ca.cert.clone());
                        if changed {
                            tracing::info!("serving a new webhook certificate");
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "cannot load the serving certificate"
                        )
                    }
                }
                let leaf_end = certs::inspect(&stored.leaf.cert).map_or(0, |i| i.not_after);
                metrics.cert_expiry.set(leaf_end as f64);
                let renew_at = leaf_end
                    .saturating_sub(i64::try_from(opts.renew_before.as_secs()).unwrap_or(0));
                let until = u64::try_from(renew_at.saturating_sub(now_unix())).unwrap_or(0);
                opts.check_interval()
                    .min(Duration::from_secs(until).max(Duration::from_millis(500)))
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "webhook certificate check failed; retrying"
                );
                Duration::from_secs(2).min(opts.check_interval())
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => break,
        }
    }
    injector.abort();
}

/// Watches the ValidatingWebhookConfiguration and re-injects the CA whenever its caBundle
/// drifts (a `helm upgrade` or `kubectl apply` resets it) or the bundle changes.
async fn keep_injected(
    client: kube::Client,
    name: String,
    mut bundle: tokio::sync::watch::Receiver<Vec<u8>>,
) {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api.clone(), cfg));
    let mut last: Option<ValidatingWebhookConfiguration> = None;
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                None => return,
                Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => last = Some(o),
                Some(Ok(watcher::Event::Delete(_))) => { last = None; continue }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watching the ValidatingWebhookConfiguration");
                    continue;
                }
            },
            r = bundle.changed() => if r.is_err() { return },
        }
        let want = bundle.borrow().clone();
        if let (Some(cfg), false) = (&last, want.is_empty())
            && let Err(e) = patch_if_needed(&api, cfg, &want).await
        {
            tracing::warn!(error = format!("{e:#}"), "caBundle injection failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(client: kube::Client) -> SelfManagedOptions {
        SelfManagedOptions {
            client,
            secret_name: "c".into(),
            namespace: "ns".into(),
            service_name: "refsync-webhook".into(),
            extra_dns_names: vec!["localhost".into()],
            extra_ips: vec!["127.0.0.1".parse().expect("ip")],
            webhook_config_name: "w".into(),
            validity: Duration::from_secs(3600),
            ca_validity: Duration::from_secs(7200),
            renew_before: Duration::from_secs(600),
        }
    }

    fn secret(s: &Stored) -> Secret {
        Secret {
            data: Some(secret_data(s)),
            ..Default::default()
        }
    }

    // A client is needed only to build the options; nothing here talks to it.
    fn offline_client() -> kube::Client {
        // Under `cargo test --workspace` rustls is built with both crypto backends, so the
        // process-level provider must be chosen (as the binary's main does).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = "http://127.0.0.1:9".parse().expect("url");
        kube::Client::try_from(kube::Config::new(url)).expect("client")
    }

    #[tokio::test]
    async fn renew_creates_then_keeps_then_rotates() {
        let o = opts(offline_client());
        assert_eq!(
            o.dns_names(),
            [
                "refsync-webhook",
                "refsync-webhook.ns",
                "refsync-webhook.ns.svc",
                "refsync-webhook.ns.svc.cluster.local",
                "localhost"
            ]
        );
        let first = renew(&o, None).expect("renew").expect("created");
        assert!(certs::verifies(
            &first.ca.cert,
            &first.leaf,
            "refsync-webhook.ns.svc"
        ));
        assert!(certs::verifies(&first.ca.cert, &first.leaf, "127.0.0.1"));
        assert_eq!(renew(&o, Some(&secret(&first))).expect("renew"), None);

        // A leaf inside the renewal window is replaced; the CA is kept.
        let mut short = o.clone();
        short.renew_before = Duration::from_secs(3700);
        let second = renew(&short, Some(&secret(&first)))
            .expect("renew")
            .expect("rotated");
        assert_eq!(second.ca, first.ca);
        assert_ne!(second.leaf, first.leaf);
        assert_eq!(second.previous_ca, None);

        // A CA inside the window is replaced and the old one kept in the bundle.
        short.renew_before = Duration::from_secs(7300);
        short.validity = Duration::from_secs(10_000);
        short.ca_validity = Duration::from_secs(20_000);
        let third = renew(&short, Some(&secret(&second)))
            .expect("renew")
            .expect("rotated");
        assert_ne!(third.ca, second.ca);
        assert_eq!(third.previous_ca.as_deref(), Some(second.ca.cert.as_str()));
        let bundle = String::from_utf8(third.bundle()).expect("utf8");
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(certs::verifies(&third.ca.cert, &third.leaf, "localhost"));

        // New SANs mean a new leaf.
        let mut more = o.clone();
        more.extra_dns_names.push("other.example".into());
        let fourth = renew(&more, Some(&secret(&first)))
            .expect("renew")
            .expect("reissued");
        assert!(
            certs::inspect(&fourth.leaf.cert)
                .expect("leaf")
                .dns_names
                .contains(&"other.example".to_string())
        );

        // Garbage in the Secret is replaced, not served.
        let mut junk = secret(&first);
        junk.data
            .as_mut()
            .expect("data")
            .insert(TLS_KEY.into(), ByteString(b"junk".to_vec()));
        let fixed = renew(&o, Some(&junk)).expect("renew").expect("reissued");
        assert!(certs::certified_key(&fixed.leaf).is_ok());
    }
}
