//! ESO's own template functions (`runtime/template/v2`): PEM filtering, certificate
//! chains and SANs, PKCS#12 in and out, JWK to PEM, RSA-OAEP decryption, YAML.

use std::collections::BTreeMap;

use base64::Engine as _;
use gotmpl::Value;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer as _;

use super::conv::{FnError, FnResult, arg_str, arity, err, list, s, sb};
use super::sprig::go_b64_decode;
use super::{Ctx, Func, bytes};

pub(super) fn register(m: &mut BTreeMap<&'static str, Func>) {
    let f: &[(&'static str, Func)] = &[
        ("pkcs12key", |_, a| {
            arity(a, 1)?;
            pkcs12_key("", a, 0)
        }),
        ("pkcs12keyPass", |_, a| {
            arity(a, 2)?;
            let pass = arg_str(a, 0)?.to_owned();
            pkcs12_key(&pass, a, 1)
        }),
        ("pkcs12cert", |_, a| {
            arity(a, 1)?;
            pkcs12_cert("", a, 0)
        }),
        ("pkcs12certPass", |_, a| {
            arity(a, 2)?;
            let pass = arg_str(a, 0)?.to_owned();
            pkcs12_cert(&pass, a, 1)
        }),
        ("pemToPkcs12", |_, a| {
            arity(a, 2)?;
            pem_to_pkcs12(a, false, "")
        }),
        ("pemToPkcs12Pass", |_, a| {
            arity(a, 3)?;
            let pass = arg_str(a, 2)?.to_owned();
            pem_to_pkcs12(a, false, &pass)
        }),
        ("fullPemToPkcs12", |_, a| {
            arity(a, 2)?;
            pem_to_pkcs12(a, true, "")
        }),
        ("fullPemToPkcs12Pass", |_, a| {
            arity(a, 3)?;
            let pass = arg_str(a, 2)?.to_owned();
            pem_to_pkcs12(a, true, &pass)
        }),
        ("pemTruststoreToPKCS12", |_, a| {
            arity(a, 1)?;
            truststore(a, "")
        }),
        ("pemTruststoreToPKCS12Pass", |_, a| {
            arity(a, 2)?;
            let pass = arg_str(a, 1)?.to_owned();
            truststore(a, &pass)
        }),
        ("filterPEM", filter_pem),
        ("filterCertChain", filter_cert_chain),
        ("certSANs", cert_sans),
        ("jwkPublicKeyPem", |_, a| jwk_pem(a, false)),
        ("jwkPrivateKeyPem", |_, a| jwk_pem(a, true)),
        ("toYaml", |_, a| {
            arity(a, 1)?;
            Ok(s(super::yaml::to_yaml(&a[0])))
        }),
        ("fromYaml", |_, a| {
            arity(a, 1)?;
            Ok(super::yaml::from_yaml(&bytes::decode(arg_str(a, 0)?)))
        }),
        ("rsaDecrypt", rsa_decrypt),
    ];
    for (name, func) in f {
        m.insert(name, *func);
    }
}

const NIL_DEREF: &str = "runtime error: invalid memory address or nil pointer dereference";

/// Raw bytes of a string argument.
fn arg_bytes(a: &[Value], i: usize) -> Result<Vec<u8>, FnError> {
    Ok(bytes::decode(arg_str(a, i)?))
}

// ---------------------------------------------------------------- PEM (Go encoding/pem)

pub(super) struct PemBlock {
    pub typ: String,
    pub headers: Vec<(String, String)>,
    pub bytes: Vec<u8>,
}

fn get_line(data: &[u8]) -> (&[u8], &[u8]) {
    let (line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b' ' | b'\t' | b'\r') {
        end -= 1;
    }
    (&line[..end], rest)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Go's `pem.Decode`: the first block and the rest, or `None` and the whole input.
pub(super) fn pem_decode(data: &[u8]) -> (Option<PemBlock>, &[u8]) {
    const PEM_END: &[u8] = b"\n-----END ";
    let mut rest = data;
    loop {
        if rest.starts_with(b"-----BEGIN ") {
            rest = &rest[11..];
        } else if let Some(i) = find(rest, b"\n-----BEGIN ") {
            rest = &rest[i + 12..];
        } else {
            return (None, data);
        }
        let (type_line, after) = get_line(rest);
        rest = after;
        let Some(typ) = type_line.strip_suffix(b"-----") else {
            continue;
        };
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        loop {
            if rest.is_empty() {
                return (None, data);
            }
            let (line, next) = get_line(rest);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                break;
            };
            let key = String::from_utf8_lossy(line[..colon].trim_ascii()).into_owned();
            let val = String::from_utf8_lossy(line[colon + 1..].trim_ascii()).into_owned();
            headers.insert(key, val);
            rest = next;
        }
        let (end_index, end_trailer_index) =
            if headers.is_empty() && rest.starts_with(&PEM_END[1..]) {
                (0, PEM_END.len() - 1)
            } else {
                match find(rest, PEM_END) {
                    Some(i) => (i, i + PEM_END.len()),
                    None => continue,
                }
            };
        let trailer = &rest[end_trailer_index..];
        let trailer_len = typ.len() + 5;
        if trailer.len() < trailer_len {
            continue;
        }
        let (end_trailer, rest_of_line) = trailer.split_at(trailer_len);
        if !end_trailer.starts_with(typ) || !end_trailer.ends_with(b"-----") {
            continue;
        }
        if !get_line(rest_of_line).0.is_empty() {
            continue;
        }
        let b64: Vec<u8> = rest[..end_index]
            .iter()
            .copied()
            .filter(|&b| b != b' ' && b != b'\t')
            .collect();
        let Ok(decoded) = go_b64_decode(&b64) else {
            continue;
        };
        let remaining = get_line(&rest[end_index + PEM_END.len() - 1..]).1;
        return (
            Some(PemBlock {
                typ: String::from_utf8_lossy(typ).into_owned(),
                headers: headers.into_iter().collect(),
                bytes: decoded,
            }),
            remaining,
        );
    }
}

/// Go's `pem.Encode`.
pub(super) fn pem_encode(typ: &str, headers: &[(String, String)], der: &[u8]) -> String {
    let mut out = format!("-----BEGIN {typ}-----\n");
    if !headers.is_empty() {
        let mut hs: Vec<&(String, String)> = headers.iter().collect();
        hs.sort_by(|a, b| (a.0 != "Proc-Type", &a.0).cmp(&(b.0 != "Proc-Type", &b.0)));
        for (k, v) in hs {
            out.push_str(&format!("{k}: {v}\n"));
        }
        out.push('\n');
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {typ}-----\n"));
    out
}

fn trim_junk(input: &[u8]) -> &[u8] {
    match find(input, b"-----BEGIN") {
        Some(i) => &input[i..],
        None => input,
    }
}

fn filter_pem(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 2)?;
    let typ = arg_str(a, 0)?.to_owned();
    let input = arg_bytes(a, 1)?;
    let mut data = trim_junk(&input);
    let mut out = String::new();
    let mut rest;
    loop {
        let (block, r) = pem_decode(data);
        rest = r;
        data = r;
        let Some(block) = block else { break };
        if block.typ.to_lowercase() == typ.to_lowercase() {
            out.push_str(&pem_encode(&block.typ, &block.headers, &block.bytes));
        }
    }
    if out.is_empty() && !rest.is_empty() {
        return err("error filtering pem: found junk");
    }
    Ok(s(out))
}

// ---------------------------------------------------------------- certificates

struct Cert {
    raw: Vec<u8>,
    aki: Vec<u8>,
    aki_present: bool,
    ski: Vec<u8>,
}

fn parse_cert(der: &[u8]) -> Result<Cert, FnError> {
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(der)
        .or_else(|_| err("x509: malformed certificate"))?;
    let mut cert = Cert {
        raw: der.to_vec(),
        aki: Vec::new(),
        aki_present: false,
        ski: Vec::new(),
    };
    for ext in c.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                if let Some(k) = &aki.key_identifier {
                    cert.aki = k.0.to_vec();
                    cert.aki_present = true;
                }
            }
            ParsedExtension::SubjectKeyIdentifier(k) => cert.ski = k.0.to_vec(),
            _ => {}
        }
    }
    Ok(cert)
}

/// ESO's `fetchX509CertChains`: order PEM certificates leaf first.
fn cert_chain(data: &[u8]) -> Result<Vec<Cert>, FnError> {
    let mut certs = Vec::new();
    let mut rest = data;
    loop {
        let (block, r) = pem_decode(rest);
        rest = r;
        let Some(block) = block else { break };
        certs.push(parse_cert(&block.bytes)?);
        if certs.len() > 1000 {
            return Err(FnError::Limit("more than 1000 certificates".into()));
        }
    }
    let n = certs.len();
    let mut parent: Vec<Option<usize>> = vec![None; n];
    let mut is_parent = vec![false; n];
    for i in 0..n {
        for j in 0..n {
            if i != j && certs[i].aki == certs[j].ski {
                is_parent[j] = true;
                parent[i] = Some(j);
                break;
            }
        }
    }
    let mut leaf = None;
    for (i, &p) in is_parent.iter().enumerate() {
        if !p {
            if leaf.is_some() {
                return err("found multiple leaf or disjunct certificates");
            }
            leaf = Some(i);
        }
    }
    let Some(mut cur) = leaf else {
        return err("no leaf certificate found");
    };
    let mut order = vec![cur];
    while let Some(p) = parent[cur] {
        if order.len() >= n {
            return err("constructing chain resulted in cycle");
        }
        order.push(p);
        cur = p;
    }
    let mut slots: Vec<Option<Cert>> = certs.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

fn is_root(c: &Cert) -> bool {
    !c.aki_present || c.aki == c.ski
}

fn filter_cert_chain(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 2)?;
    let kind = arg_str(a, 0)?.to_owned();
    let input = arg_bytes(a, 1)?;
    let ordered = cert_chain(&input)?;
    let Some(first) = ordered.first() else {
        return err(NIL_DEREF);
    };
    let out = match kind.as_str() {
        "leaf" => {
            if first.aki_present && first.aki != first.ski {
                pem_encode("CERTIFICATE", &[], &first.raw)
            } else {
                String::new()
            }
        }
        "intermediate" => {
            let mut out = String::new();
            for c in ordered.iter().skip(1) {
                if is_root(c) {
                    break;
                }
                out.push_str(&pem_encode("CERTIFICATE", &[], &c.raw));
            }
            out
        }
        "root" => match ordered.last() {
            Some(c) if is_root(c) => pem_encode("CERTIFICATE", &[], &c.raw),
            _ => String::new(),
        },
        _ => String::new(),
    };
    Ok(s(out))
}

fn go_ip(b: &[u8]) -> String {
    match b.len() {
        4 => std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            let v6 = std::net::Ipv6Addr::from(a);
            match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => v6.to_string(),
            }
        }
        0 => "<nil>".to_owned(),
        _ => format!("?{}", hex::encode(b)),
    }
}

fn cert_sans(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 1)?;
    let input = arg_bytes(a, 0)?;
    let (block, _) = pem_decode(trim_junk(&input));
    let Some(block) = block else {
        return err("failed to decode PEM block");
    };
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(&block.bytes)
        .or_else(|_| err("failed to parse certificate: x509: malformed certificate"))?;
    let (mut dns, mut ips, mut emails, mut uris) = (vec![], vec![], vec![], vec![]);
    for ext in c.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push(s(d)),
                    GeneralName::IPAddress(ip) => ips.push(s(go_ip(ip))),
                    GeneralName::RFC822Name(e) => emails.push(s(e)),
                    GeneralName::URI(u) => uris.push(s(u)),
                    _ => {}
                }
            }
        }
    }
    dns.extend(ips);
    dns.extend(emails);
    dns.extend(uris);
    Ok(list(dns))
}

// ---------------------------------------------------------------- keys and PKCS#12

/// Normalise a PKCS#8 key like Go's parse + `x509.MarshalPKCS8PrivateKey`.
fn normalise_pkcs8(der: &[u8]) -> Vec<u8> {
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der)
        && let Ok(doc) = k.to_pkcs8_der()
    {
        return doc.as_bytes().to_vec();
    }
    der.to_vec()
}

/// ESO's `parsePrivateKey` (PKCS#1, PKCS#8, SEC1 EC) giving PKCS#8 DER.
fn private_key_to_pkcs8(der: &[u8]) -> Result<Vec<u8>, FnError> {
    if let Ok(k) = rsa::RsaPrivateKey::from_pkcs1_der(der) {
        return k
            .to_pkcs8_der()
            .map(|d| d.as_bytes().to_vec())
            .or_else(|_| err("unable to parse private key type"));
    }
    if p12_keystore::PrivateKey::from_der(der).is_ok() && der::seq_items(der).is_some() {
        let items = der::seq_items(der).unwrap_or_default();
        // PrivateKeyInfo: INTEGER version, SEQUENCE algorithm, OCTET STRING key.
        if items.len() >= 3 && items[0].0 == 0x02 && items[1].0 == 0x30 && items[2].0 == 0x04 {
            return Ok(normalise_pkcs8(der));
        }
    }
    if let Some(p8) = der::sec1_to_pkcs8(der) {
        return Ok(p8);
    }
    err("unable to parse private key type")
}

fn decode_p12(input: &[u8], pass: &str) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(input, pass).map_err(|e| {
        let t = e.to_string();
        if t.to_lowercase().contains("mac") {
            "pkcs12: decryption password incorrect".to_owned()
        } else {
            format!("pkcs12: {t}")
        }
    })?;
    if archive.keys.len() > 1 {
        return Err("pkcs12: expected exactly one key bag".to_owned());
    }
    let certs: Vec<Vec<u8>> = archive
        .certs
        .iter()
        .map(|c| c.cert.as_der().to_vec())
        .collect();
    if certs.is_empty() {
        return Err("pkcs12: certificate missing".to_owned());
    }
    let Some(key) = archive.keys.first() else {
        return Err("pkcs12: private key missing".to_owned());
    };
    Ok((key.key.as_der().to_vec(), certs))
}

fn pkcs12_key(pass: &str, a: &[Value], i: usize) -> FnResult {
    let input = arg_bytes(a, i)?;
    let (key, _) = decode_p12(&input, pass)
        .or_else(|e| err(format!("unable to decode pkcs12 with password: {e}")))?;
    Ok(s(pem_encode("PRIVATE KEY", &[], &normalise_pkcs8(&key))))
}

fn pkcs12_cert(pass: &str, a: &[Value], i: usize) -> FnResult {
    let input = arg_bytes(a, i)?;
    let (_, certs) = decode_p12(&input, pass).or_else(|e| {
        err(format!(
            "unable to decode pkcs12 certificate with password: {e}"
        ))
    })?;
    let mut pem = String::new();
    for c in &certs {
        pem.push_str(&pem_encode("CERTIFICATE", &[], c));
    }
    match cert_chain(pem.as_bytes()) {
        Ok(ordered) => Ok(s(ordered
            .iter()
            .map(|c| pem_encode("CERTIFICATE", &[], &c.raw))
            .collect::<String>())),
        Err(FnError::Limit(m)) => Err(FnError::Limit(m)),
        Err(_) => Ok(s(pem)),
    }
}

/// ESO's `parseCaCerts`: every PEM block must be a certificate, no trailing data.
fn parse_ca_certs(mut rest: &[u8]) -> Result<Vec<Vec<u8>>, FnError> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (block, r) = pem_decode(rest);
        rest = r;
        let Some(block) = block else {
            return err(NIL_DEREF);
        };
        parse_cert(&block.bytes)?;
        out.push(block.bytes);
        if out.len() > 1000 {
            return Err(FnError::Limit("more than 1000 certificates".into()));
        }
    }
    Ok(out)
}

fn p12_writer_out(ks: &p12_keystore::KeyStore, pass: &str) -> FnResult {
    let pfx = ks
        .writer(pass)
        .encryption_iterations(2048)
        .mac_iterations(2048)
        .write()
        .or_else(|_| err("pkcs12: encoding failed"))?;
    Ok(s(base64::engine::general_purpose::STANDARD.encode(pfx)))
}

fn pem_to_pkcs12(a: &[Value], full: bool, pass: &str) -> FnResult {
    let cert = arg_bytes(a, 0)?;
    let key = arg_bytes(a, 1)?;
    let (block, rest) = pem_decode(&cert);
    let Some(block) = block else {
        return err(NIL_DEREF);
    };
    parse_cert(&block.bytes)?;
    let cas = if full {
        parse_ca_certs(rest)?
    } else {
        Vec::new()
    };
    let (key_block, _) = pem_decode(&key);
    let Some(key_block) = key_block else {
        return err(NIL_DEREF);
    };
    let p8 = private_key_to_pkcs8(&key_block.bytes)?;
    let pk = p12_keystore::PrivateKey::from_der(&p8)
        .or_else(|_| err("unable to parse private key type"))?;
    let mut chain = Vec::new();
    for der in std::iter::once(&block.bytes).chain(cas.iter()) {
        chain.push(
            p12_keystore::Certificate::from_der(der)
                .or_else(|_| err("x509: malformed certificate"))?,
        );
    }
    let local_id = {
        use sha1::Digest as _;
        sha1::Sha1::digest(&block.bytes).to_vec()
    };
    let mut ks = p12_keystore::KeyStore::new();
    ks.add_entry(
        "1",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            local_id, pk, chain,
        )),
    );
    p12_writer_out(&ks, pass)
}

fn truststore(a: &[Value], pass: &str) -> FnResult {
    let input = arg_bytes(a, 0)?;
    let cas = parse_ca_certs(&input)?;
    let mut ks = p12_keystore::KeyStore::new();
    for (i, der) in cas.iter().enumerate() {
        let c = p12_keystore::Certificate::from_der(der)
            .or_else(|_| err("x509: malformed certificate"))?;
        let alias = format!("{}-{}", i, c.subject());
        ks.add_entry(&alias, p12_keystore::KeyStoreEntry::Certificate(c));
    }
    p12_writer_out(&ks, pass)
}

// ---------------------------------------------------------------- JWK

fn b64url(v: &serde_json::Value, field: &str) -> Result<Vec<u8>, FnError> {
    let t = v
        .get(field)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            FnError::Msg(format!(
                "failed to parse key: required field {field} is missing"
            ))
        })?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t.trim_end_matches('='))
        .or_else(|_| {
            err(format!(
                "failed to parse key: failed to decode field {field}"
            ))
        })
}

fn jwk_pem(a: &[Value], private: bool) -> FnResult {
    arity(a, 1)?;
    let raw = arg_bytes(a, 0)?;
    let v: serde_json::Value =
        serde_json::from_slice(&raw).or_else(|_| err("failed to unmarshal JSON into key hint"))?;
    let kty = v
        .get("kty")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let has_d = v.get("d").is_some();
    let go_type = match (kty, has_d) {
        ("RSA", true) => "*rsa.PrivateKey",
        ("RSA", false) => "*rsa.PublicKey",
        ("EC", true) => "*ecdsa.PrivateKey",
        ("EC", false) => "*ecdsa.PublicKey",
        ("OKP", true) => "ed25519.PrivateKey",
        ("OKP", false) => "ed25519.PublicKey",
        ("oct", _) => "[]uint8",
        _ => return err(format!("invalid key type from JSON ({kty})")),
    };
    if private && (!has_d || kty == "oct") {
        return err(format!(
            "x509: unknown key type while marshaling PKCS#8: {go_type}"
        ));
    }
    if !private && (has_d || kty == "oct") {
        return err(format!("x509: unsupported public key type: {go_type}"));
    }
    let der = match kty {
        "RSA" => {
            let n = rsa::BigUint::from_bytes_be(&b64url(&v, "n")?);
            let e = rsa::BigUint::from_bytes_be(&b64url(&v, "e")?);
            if private {
                let d = rsa::BigUint::from_bytes_be(&b64url(&v, "d")?);
                let mut primes = Vec::new();
                if v.get("p").is_some() && v.get("q").is_some() {
                    primes.push(rsa::BigUint::from_bytes_be(&b64url(&v, "p")?));
                    primes.push(rsa::BigUint::from_bytes_be(&b64url(&v, "q")?));
                }
                let k = rsa::RsaPrivateKey::from_components(n, e, d, primes)
                    .or_else(|_| err("failed to create RSA private key"))?;
                k.to_pkcs8_der()
                    .map(|d| d.as_bytes().to_vec())
                    .or_else(|_| err("x509: failed to marshal RSA key"))?
            } else {
                let k = rsa::RsaPublicKey::new(n, e)
                    .or_else(|_| err("failed to create RSA public key"))?;
                k.to_public_key_der()
                    .map(|d| d.as_bytes().to_vec())
                    .or_else(|_| err("x509: failed to marshal RSA key"))?
            }
        }
        "EC" => {
            let crv = v
                .get("crv")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            let (oid, size) = match crv {
                "P-256" => ("1.2.840.10045.3.1.7", 32),
                "P-384" => ("1.3.132.0.34", 48),
                "P-521" => ("1.3.132.0.35", 66),
                _ => {
                    return err(format!(
                        "failed to parse key: invalid curve algorithm {crv}"
                    ));
                }
            };
            let x = der::left_pad(&b64url(&v, "x")?, size)?;
            let y = der::left_pad(&b64url(&v, "y")?, size)?;
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let alg = der::seq(&[der::oid("1.2.840.10045.2.1"), der::oid(oid)]);
            if private {
                let d = der::left_pad(&b64url(&v, "d")?, size)?;
                let ec = der::seq(&[
                    der::int_small(1),
                    der::tlv(0x04, &d),
                    der::tlv(0xa1, &der::bit_string(&point)),
                ]);
                der::seq(&[der::int_small(0), alg, der::tlv(0x04, &ec)])
            } else {
                der::seq(&[alg, der::bit_string(&point)])
            }
        }
        "OKP" => {
            let crv = v
                .get("crv")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            if crv != "Ed25519" {
                return err(format!("failed to parse key: unsupported curve {crv}"));
            }
            let alg = der::seq(&[der::oid("1.3.101.112")]);
            if private {
                let d = b64url(&v, "d")?;
                if d.len() != 32 {
                    return err("failed to parse key: invalid private key size");
                }
                der::seq(&[der::int_small(0), alg, der::tlv(0x04, &der::tlv(0x04, &d))])
            } else {
                let x = b64url(&v, "x")?;
                if x.len() != 32 {
                    return err("failed to parse key: invalid public key size");
                }
                der::seq(&[alg, der::bit_string(&x)])
            }
        }
        _ => return err(format!("invalid key type from JSON ({kty})")),
    };
    let typ = if private { "PRIVATE KEY" } else { "PUBLIC KEY" };
    Ok(s(pem_encode(typ, &[], &der)))
}

// ---------------------------------------------------------------- RSA

fn rsa_decrypt(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 4)?;
    let scheme = arg_str(a, 0)?.to_owned();
    let hash = arg_str(a, 1)?.to_owned();
    let input = arg_bytes(a, 2)?;
    let key_pem = arg_bytes(a, 3)?;
    match scheme.as_str() {
        "None" => Ok(sb(&input)),
        "RSA-OAEP" => {
            let (block, _) = pem_decode(&key_pem);
            let Some(block) = block else {
                return err("failed to decode PEM block");
            };
            let key = if let Ok(k) = rsa::RsaPrivateKey::from_pkcs1_der(&block.bytes) {
                k
            } else if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(&block.bytes) {
                k
            } else if der::sec1_to_pkcs8(&block.bytes).is_some()
                || p12_keystore::PrivateKey::from_der(&block.bytes).is_ok()
            {
                return err("could not parse RSA private key");
            } else {
                return err("could not parse private key: unable to parse private key type");
            };
            let padding = match hash.as_str() {
                "SHA1" => rsa::Oaep::new::<sha1::Sha1>(),
                "SHA512" => rsa::Oaep::new::<sha2::Sha512>(),
                _ => rsa::Oaep::new::<sha2::Sha256>(),
            };
            let out = key
                .decrypt(padding, &input)
                .or_else(|_| err("error decrypting data with RSA: crypto/rsa: decryption error"))?;
            Ok(sb(&out))
        }
        _ => err(format!("decryption scheme {scheme} is not supported")),
    }
}

// ---------------------------------------------------------------- minimal DER

mod der {
    use super::FnError;

    fn len_bytes(n: usize) -> Vec<u8> {
        if n < 0x80 {
            return vec![n as u8];
        }
        let b = n.to_be_bytes();
        let first = b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1);
        let mut out = vec![0x80 | (b.len() - first) as u8];
        out.extend_from_slice(&b[first..]);
        out
    }

    pub fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend(len_bytes(body.len()));
        out.extend_from_slice(body);
        out
    }

    pub fn seq(items: &[Vec<u8>]) -> Vec<u8> {
        tlv(0x30, &items.concat())
    }

    pub fn int_small(n: u8) -> Vec<u8> {
        tlv(0x02, &[n])
    }

    pub fn bit_string(b: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8];
        body.extend_from_slice(b);
        tlv(0x03, &body)
    }

    pub fn oid(dotted: &str) -> Vec<u8> {
        let parts: Vec<u64> = dotted.split('.').filter_map(|p| p.parse().ok()).collect();
        let mut body = Vec::new();
        if parts.len() >= 2 {
            body.push((parts[0] * 40 + parts[1]) as u8);
            for &p in &parts[2..] {
                let mut stack = vec![(p & 0x7f) as u8];
                let mut v = p >> 7;
                while v > 0 {
                    stack.push(0x80 | (v & 0x7f) as u8);
                    v >>= 7;
                }
                stack.reverse();
                body.extend(stack);
            }
        }
        tlv(0x06, &body)
    }

    pub fn left_pad(b: &[u8], size: usize) -> Result<Vec<u8>, FnError> {
        if b.len() > size {
            return Err(FnError::Msg(
                "failed to parse key: invalid coordinate size".into(),
            ));
        }
        let mut out = vec![0u8; size - b.len()];
        out.extend_from_slice(b);
        Ok(out)
    }

    /// One TLV at the start of `d`: (tag, body, total length).
    fn read(d: &[u8]) -> Option<(u8, &[u8], usize)> {
        let tag = *d.first()?;
        let l0 = *d.get(1)? as usize;
        let (len, hdr) = if l0 < 0x80 {
            (l0, 2)
        } else {
            let n = l0 & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | *d.get(2 + i)? as usize;
            }
            (len, 2 + n)
        };
        let body = d.get(hdr..hdr.checked_add(len)?)?;
        Some((tag, body, hdr + len))
    }

    /// Items of a top-level SEQUENCE.
    pub fn seq_items(d: &[u8]) -> Option<Vec<(u8, &[u8])>> {
        let (tag, body, total) = read(d)?;
        if tag != 0x30 || total != d.len() {
            return None;
        }
        let mut items = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (t, b, n) = read(rest)?;
            items.push((t, b));
            rest = &rest[n..];
        }
        Some(items)
    }

    /// SEC1 `ECPrivateKey` to PKCS#8 like Go's `MarshalPKCS8PrivateKey` (curve moved to
    /// the algorithm identifier, public key kept).
    pub fn sec1_to_pkcs8(d: &[u8]) -> Option<Vec<u8>> {
        let items = seq_items(d)?;
        if items.len() < 2 || items[0] != (0x02, &[1u8][..]) || items[1].0 != 0x04 {
            return None;
        }
        let curve = items.iter().find(|i| i.0 == 0xa0)?.1;
        let (ctag, _, clen) = read(curve)?;
        if ctag != 0x06 || clen != curve.len() {
            return None;
        }
        let mut inner = vec![int_small(1), tlv(0x04, items[1].1)];
        if let Some(pk) = items.iter().find(|i| i.0 == 0xa1) {
            inner.push(tlv(0xa1, pk.1));
        }
        let alg = seq(&[oid("1.2.840.10045.2.1"), curve.to_vec()]);
        Some(seq(&[int_small(0), alg, tlv(0x04, &seq(&inner))]))
    }
}
