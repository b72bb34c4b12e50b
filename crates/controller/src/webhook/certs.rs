//! Certificates for the webhook's TLS listener: generating a CA and serving certificates
//! (self-managed mode), reading PEM pairs (both modes), and the resolver rustls asks for the
//! certificate at each handshake, swapped in place on rotation.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// The CA's subject. Fixed, so a serving certificate can be signed with the stored CA key
/// without parsing the CA certificate back into parameters.
const CA_COMMON_NAME: &str = "refsync-webhook-ca";

/// Certificates issued now may have been issued a little earlier by another clock.
const BACKDATE: Duration = Duration::from_secs(300);

/// A certificate (chain) and its private key, PEM-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("PemPair").finish_non_exhaustive()
    }
}

fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::from(bytes.to_vec())
}

fn ca_params(validity: Duration) -> anyhow::Result<CertificateParams> {
    let now = time::OffsetDateTime::now_utc();
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - BACKDATE;
    p.not_after = now + validity;
    Ok(p)
}

/// A new self-signed CA valid for `validity`.
pub fn generate_ca(validity: Duration) -> anyhow::Result<PemPair> {
    let key = KeyPair::generate().context("generate the CA key")?;
    let mut params = ca_params(validity)?;
    params.serial_number = Some(serial());
    let cert = params.self_signed(&key).context("self-sign the CA")?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A serving certificate for `dns_names` and `ips`, signed by `ca`, valid for `validity` but
/// never beyond the CA's own expiry (`ca_not_after`, Unix seconds).
pub fn issue_serving(
    ca: &PemPair,
    ca_not_after: i64,
    dns_names: &[String],
    ips: &[IpAddr],
    validity: Duration,
) -> anyhow::Result<PemPair> {
    let ca_key = KeyPair::from_pem(&ca.key).context("parse the CA key")?;
    let issuer = Issuer::new(ca_params(Duration::ZERO)?, ca_key);
    let now = time::OffsetDateTime::now_utc();
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().map_or("refsync-webhook", String::as_str),
    );
    for name in dns_names {
        p.subject_alt_names.push(SanType::DnsName(
            name.clone()
                .try_into()
                .with_context(|| format!("DNS name {name:?}"))?,
        ));
    }
    p.subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.serial_number = Some(serial());
    p.not_before = now - BACKDATE;
    let ca_end = time::OffsetDateTime::from_unix_timestamp(ca_not_after)
        .context("CA expiry out of range")?;
    p.not_after = (now + validity).min(ca_end);
    let key = KeyPair::generate().context("generate the serving key")?;
    let cert = p
        .signed_by(&key, &issuer)
        .context("sign the serving certificate")?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// What the webhook needs to know about a certificate: its expiry and names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Unix seconds.
    pub not_after: i64,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub is_ca: bool,
}

/// The first certificate of a PEM bundle.
pub fn inspect(cert_pem: &str) -> anyhow::Result<CertInfo> {
    use x509_parser::extensions::GeneralName;
    let der = cert_ders(cert_pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no CERTIFICATE block"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| anyhow!("invalid certificate: {e}"))?;
    let mut dns_names = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns_names.push((*d).to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        ips,
        is_ca: cert.is_ca(),
    })
}

fn pem_blocks(pem: &[u8]) -> anyhow::Result<Vec<x509_parser::pem::Pem>> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        out.push(block.map_err(|e| anyhow!("invalid PEM: {e}"))?);
    }
    Ok(out)
}

fn cert_ders(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    Ok(pem_blocks(pem)?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.contents))
        .collect())
}

fn key_der(pem: &[u8]) -> anyhow::Result<PrivateKeyDer<'static>> {
    for b in pem_blocks(pem)? {
        match b.label.as_str() {
            "PRIVATE KEY" => return Ok(PrivatePkcs8KeyDer::from(b.contents).into()),
            "RSA PRIVATE KEY" => return Ok(PrivatePkcs1KeyDer::from(b.contents).into()),
            "EC PRIVATE KEY" => return Ok(PrivateSec1KeyDer::from(b.contents).into()),
            _ => {}
        }
    }
    bail!("no PRIVATE KEY block")
}

/// A rustls certificate + signing key from PEM, checked to belong together.
pub fn certified_key(pair: &PemPair) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = cert_ders(pair.cert.as_bytes()).context("tls.crt")?;
    if certs.is_empty() {
        bail!("tls.crt: no CERTIFICATE block");
    }
    let key = key_der(pair.key.as_bytes()).context("tls.key")?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow!("tls.key: unsupported private key: {e}"))?;
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match()
        .map_err(|e| anyhow!("tls.key does not match tls.crt: {e}"))?;
    Ok(Arc::new(ck))
}

/// Whether `leaf` chains to `ca` and is valid now for `server_name`.
pub fn verifies(ca: &str, leaf: &PemPair, server_name: &str) -> bool {
    let Ok(ca_ders) = cert_ders(ca.as_bytes()) else {
        return false;
    };
    let Ok(leaf_ders) = cert_ders(leaf.cert.as_bytes()) else {
        return false;
    };
    let mut roots = rustls::RootCertStore::empty();
    for der in ca_ders {
        if roots.add(der).is_err() {
            return false;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
    else {
        return false;
    };
    let Some((end, rest)) = leaf_ders.split_first() else {
        return false;
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(server_name.to_string()) else {
        return false;
    };
    use rustls::client::danger::ServerCertVerifier as _;
    verifier
        .verify_server_cert(end, rest, &name, &[], rustls::pki_types::UnixTime::now())
        .is_ok()
}

/// The certificate presented at each handshake; replaced on rotation. Subscribers learn of
/// each replacement (open connections are then closed gracefully so clients reconnect and
/// see the new certificate).
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Option<(Arc<CertifiedKey>, PemPair)>>,
    generation: watch::Sender<u64>,
}

impl Default for CertResolver {
    fn default() -> Self {
        CertResolver {
            current: RwLock::new(None),
            generation: watch::channel(0).0,
        }
    }
}

impl CertResolver {
    /// Serves `pair` from the next handshake on. Returns false when it is already served.
    pub fn set(&self, pair: &PemPair) -> anyhow::Result<bool> {
        if self.current_pem().as_ref() == Some(pair) {
            return Ok(false);
        }
        let ck = certified_key(pair)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some((ck, pair.clone()));
        self.generation.send_modify(|g| *g += 1);
        Ok(true)
    }

    pub fn current_pem(&self) -> Option<PemPair> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, p)| p.clone())
    }

    pub fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(ck, _)| ck.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_chain_to_their_ca_and_carry_the_names() {
        let ca = generate_ca(Duration::from_secs(3600)).expect("ca");
        let ca_info = inspect(&ca.cert).expect("inspect ca");
        assert!(ca_info.is_ca);
        let names = vec!["svc".to_string(), "svc.ns.svc".to_string()];
        let ips = vec!["127.0.0.1".parse().expect("ip")];
        let leaf = issue_serving(
            &ca,
            ca_info.not_after,
            &names,
            &ips,
            Duration::from_secs(60),
        )
        .expect("leaf");
        let info = inspect(&leaf.cert).expect("inspect leaf");
        assert_eq!(info.dns_names, names);
        assert_eq!(info.ips, ips);
        assert!(!info.is_ca);
        assert!(info.not_after <= ca_info.not_after);
        assert!(verifies(&ca.cert, &leaf, "svc.ns.svc"));
        assert!(verifies(&ca.cert, &leaf, "127.0.0.1"));
        assert!(!verifies(&ca.cert, &leaf, "other.ns.svc"));
        let other = generate_ca(Duration::from_secs(3600)).expect("other ca");
        assert!(!verifies(&other.cert, &leaf, "svc.ns.svc"));
        certified_key(&leaf).expect("pair loads");
        let mismatched = PemPair {
            cert: leaf.cert.clone(),
            key: other.key.clone(),
        };
        assert!(certified_key(&mismatched).is_err());
        assert!(!format!("{leaf:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_serving_certificate_never_outlives_its_ca() {
        let ca = generate_ca(Duration::from_secs(120)).expect("ca");
        let ca_end = inspect(&ca.cert).expect("ca").not_after;
        let leaf = issue_serving(&ca, ca_end, &["a".into()], &[], Duration::from_secs(86400))
            .expect("leaf");
        assert_eq!(inspect(&leaf.cert).expect("leaf").not_after, ca_end);
    }

    #[test]
    fn the_resolver_counts_replacements() {
        let ca = generate_ca(Duration::from_secs(3600)).expect("ca");
        let end = inspect(&ca.cert).expect("ca").not_after;
        let a = issue_serving(&ca, end, &["a".into()], &[], Duration::from_secs(60)).expect("a");
        let r = CertResolver::default();
        let rx = r.subscribe();
        assert!(!r.is_loaded());
        assert!(r.set(&a).expect("set"));
        assert!(!r.set(&a).expect("same again"));
        assert_eq!(*rx.borrow(), 1);
        assert!(
            r.set(&PemPair {
                cert: a.cert.clone(),
                key: ca.key.clone()
            })
            .is_err()
        );
        assert_eq!(r.current_pem(), Some(a));
    }
}
