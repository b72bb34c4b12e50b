//! Value and key conversions ESO applies to fetched data: `property` (gjson), decoding
//! strategies, JSON documents to key maps, Secret key conversion and validation.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::api::{ConversionStrategy, DecodingStrategy};
use crate::error::{Error, Result};
use crate::provider::PropertyMode;
use crate::secret::{SecretBytes, SecretMap};

/// Largest value refsync accepts from a provider or a template: the Kubernetes Secret limit.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Go's `base64.StdEncoding`/`URLEncoding`: padding required, trailing bits tolerated.
const GO_CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
    .with_decode_allow_trailing_bits(true);
const GO_STD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, GO_CONFIG);
const GO_URL: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, GO_CONFIG);

/// `decodingStrategy`. Go's decoder skips `\r` and `\n`; `Auto` tries standard, then URL, then
/// keeps the bytes. The error never contains the value.
pub fn decode(strategy: Option<DecodingStrategy>, value: &[u8]) -> Result<Vec<u8>> {
    let strip = || {
        value
            .iter()
            .copied()
            .filter(|b| *b != b'\r' && *b != b'\n')
            .collect::<Vec<u8>>()
    };
    match strategy.unwrap_or_default() {
        DecodingStrategy::None => Ok(value.to_vec()),
        DecodingStrategy::Base64 => GO_STD.decode(strip()).map_err(|e| {
            Error::invalid(format!(
                "decoding strategy Base64 failed: {}",
                base64_error(&e)
            ))
        }),
        DecodingStrategy::Base64Url => GO_URL.decode(strip()).map_err(|e| {
            Error::invalid(format!(
                "decoding strategy Base64URL failed: {}",
                base64_error(&e)
            ))
        }),
        DecodingStrategy::Auto => {
            let s = strip();
            Ok(GO_STD
                .decode(&s)
                .or_else(|_| GO_URL.decode(&s))
                .unwrap_or_else(|_| value.to_vec()))
        }
    }
}

/// Go's message shape (`illegal base64 data at input byte N`), which names a position only.
fn base64_error(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => {
            format!("illegal base64 data at input byte {at}")
        }
        base64::DecodeError::InvalidLength(at) => format!("illegal base64 data at input byte {at}"),
        base64::DecodeError::InvalidPadding => "illegal base64 data: bad padding".into(),
    }
}

/// Most path components (separators `.`, `|`, `#`, `@`, `[`, `{`, `(`, `,`) a `property` may
/// have. gjson recurses once per component: a hostile path of a few thousand components
/// overflows a 2 MiB worker stack and aborts the process. Real paths have a handful.
pub const MAX_PROPERTY_COMPONENTS: usize = 128;

/// Whether `property` is within [`MAX_PROPERTY_COMPONENTS`] (and the value-size limit).
pub fn property_within_limits(property: &str) -> bool {
    property.len() <= MAX_VALUE_BYTES
        && property
            .bytes()
            .filter(|b| matches!(b, b'.' | b'|' | b'#' | b'@' | b'[' | b'{' | b'(' | b','))
            .count()
            <= MAX_PROPERTY_COMPONENTS
}

/// Applies `property` to a provider's raw value as ESO's providers do. `None` when absent
/// (and for a path over [`MAX_PROPERTY_COMPONENTS`], which `plan` reports as an error).
pub fn property(raw: &[u8], property: &str, mode: PropertyMode) -> Option<Vec<u8>> {
    if !property_within_limits(property) {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    match mode {
        PropertyMode::Gjson => gjson_get(text, property),
        PropertyMode::ExactKeyThenGjson => {
            if let Ok(serde_json::Value::Object(map)) =
                serde_json::from_str::<serde_json::Value>(text)
                && let Some(v) = map.get(property)
            {
                return Some(json_value_bytes(v));
            }
            gjson_get(text, property)
        }
        PropertyMode::EscapedDotsThenGjson => {
            if property.contains('.')
                && let Some(v) = gjson_get(text, &property.replace('.', "\\."))
            {
                return Some(v);
            }
            gjson_get(text, property)
        }
    }
}

/// gjson's `Result.String()`: strings unescaped, everything else as its JSON text.
fn gjson_get(json: &str, path: &str) -> Option<Vec<u8>> {
    let v = gjson::get(json, path);
    if !v.exists() {
        return None;
    }
    Some(match v.kind() {
        gjson::Kind::String => v.str().as_bytes().to_vec(),
        gjson::Kind::Null => Vec::new(),
        _ => v.json().as_bytes().to_vec(),
    })
}

/// ESO's `GetByteValue` for one decoded JSON member: strings raw, the rest as JSON.
fn json_value_bytes(v: &serde_json::Value) -> Vec<u8> {
    match v {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        serde_json::Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    }
}

/// `dataFrom.extract`: a JSON object becomes one key per member; string members are
/// unquoted, other members keep their source text (ESO's `JSONToSecretDataMap`).
pub fn json_to_map(raw: &[u8]) -> Result<SecretMap> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(raw).map_err(|e| {
            Error::invalid(format!(
                "unable to unmarshal secret: not a JSON object ({})",
                json_error_class(&e)
            ))
        })?;
    // Keep non-string members as their source text: re-read them raw.
    let raw_members: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(raw).map_err(|e| {
            Error::invalid(format!(
                "unable to unmarshal secret ({})",
                json_error_class(&e)
            ))
        })?;
    let mut out = SecretMap::new();
    for (k, v) in map {
        let bytes = match v {
            serde_json::Value::String(s) => s.into_bytes(),
            _ => raw_members
                .get(&k)
                .map(|r| r.get().as_bytes().to_vec())
                .unwrap_or_default(),
        };
        out.insert(k, SecretBytes::from(bytes));
    }
    Ok(out)
}

/// A JSON error's class and position, without the input text.
fn json_error_class(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

/// `conversionStrategy` for keys: characters other than letters, digits, `-`, `.` and `_`
/// become `_` (Default) or `_UXXXX_` (Unicode).
pub fn convert_key(strategy: Option<ConversionStrategy>, key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if is_key_char(c) {
            out.push(c);
        } else {
            match strategy.unwrap_or_default() {
                ConversionStrategy::Default => out.push('_'),
                ConversionStrategy::Unicode => out.push_str(&format!("_U{:04x}_", c as u32)),
            }
        }
    }
    out
}

fn is_key_char(c: char) -> bool {
    c.is_alphabetic() || c.is_numeric() || c == '-' || c == '.' || c == '_'
}

/// ESO's `ValidateKeys`: empty keys are dropped, others must be valid Secret keys.
pub fn validate_keys(map: &mut SecretMap) -> Result<()> {
    map.remove("");
    for key in map.keys() {
        validate_key(key)?;
    }
    Ok(())
}

pub fn validate_key(key: &str) -> Result<()> {
    if key.len() > 253 {
        return Err(Error::invalid(format!(
            "key has length {} but max is 253: (following is truncated): {}",
            key.len(),
            escape_controls(truncate(key, 253))
        )));
    }
    if let Some(c) = key.chars().find(|c| !is_key_char(*c)) {
        // ESO's message; control characters (NUL, ESC...) are escaped so that a hostile key
        // cannot corrupt a terminal or a log line.
        return Err(Error::invalid(format!(
            "key has invalid character {}, only alphanumeric, '-', '.' and '_' are allowed: {}",
            escape_controls(&c.to_string()),
            escape_controls(key)
        )));
    }
    Ok(())
}

/// `s` with control characters written as Rust escapes (`\u{0}`); other text unchanged.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Kubernetes' DNS-1123 subdomain (object names such as a Secret's): `None` when valid, else
/// why not.
pub fn dns_subdomain_problem(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some(format!(
            "must be no more than 253 characters (it has {})",
            name.len()
        ));
    }
    if name.is_empty() || name.split('.').any(|l| !is_dns_label_text(l)) {
        return Some(
            "must be a lowercase RFC 1123 subdomain: lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit"
                .into(),
        );
    }
    None
}

/// Kubernetes' DNS-1123 label (namespace names): `None` when valid, else why not.
pub fn dns_label_problem(name: &str) -> Option<String> {
    if name.len() > 63 {
        return Some(format!(
            "must be no more than 63 characters (it has {})",
            name.len()
        ));
    }
    if !is_dns_label_text(name) {
        return Some(
            "must be a lowercase RFC 1123 label: lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
                .into(),
        );
    }
    None
}

fn is_dns_label_text(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters (label names and values).
fn is_label_text(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label or annotation key (`[prefix/]name`, Kubernetes' qualified name): `None` when valid.
pub fn qualified_name_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && let Some(why) = dns_subdomain_problem(p)
    {
        return Some(format!("prefix {why}"));
    }
    if !is_label_text(name) {
        return Some(
            "name part must be 1-63 characters: letters, digits, '-', '_' or '.', starting and \
             ending with a letter or digit"
                .into(),
        );
    }
    None
}

/// A label value: `None` when valid. The reason never quotes the value.
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.len() > 63 {
        return Some(format!(
            "must be no more than 63 characters (it has {})",
            value.len()
        ));
    }
    if !value.is_empty() && !is_label_text(value) {
        return Some(
            "must be empty or letters, digits, '-', '_' or '.', starting and ending with a \
             letter or digit"
                .into(),
        );
    }
    None
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_strategies() {
        assert_eq!(
            decode(Some(DecodingStrategy::Base64), b"aGVsbG8=").unwrap(),
            b"hello"
        );
        assert_eq!(
            decode(Some(DecodingStrategy::Base64), b"aGVs\nbG8=\n").unwrap(),
            b"hello"
        );
        assert!(decode(Some(DecodingStrategy::Base64), b"aGVsbG8").is_err());
        assert_eq!(
            decode(Some(DecodingStrategy::Base64Url), b"Pz8_").unwrap(),
            b"???"
        );
        assert!(decode(Some(DecodingStrategy::Base64), b"Pz8_").is_err());
        assert_eq!(
            decode(Some(DecodingStrategy::Auto), b"Pz8_").unwrap(),
            b"???"
        );
        assert_eq!(
            decode(Some(DecodingStrategy::Auto), b"aGVsbG8=").unwrap(),
            b"hello"
        );
        assert_eq!(
            decode(Some(DecodingStrategy::Auto), b"not base64!").unwrap(),
            b"not base64!"
        );
        assert_eq!(decode(None, b"aGVsbG8=").unwrap(), b"aGVsbG8=");
        let err = decode(Some(DecodingStrategy::Base64), b"canary-value!").unwrap_err();
        assert!(!err.to_string().contains("canary"), "{err}");
    }

    #[test]
    fn property_paths() {
        let doc = br#"{"a":{"b":[{"c":"deep"},{"c":2}]},"n":42,"f":1.50,"o":{"x":1},"dot.key":"lit","s":"q\"uote"}"#;
        let p = |path: &str| {
            property(doc, path, PropertyMode::Gjson).map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(p("a.b.0.c").as_deref(), Some("deep"));
        assert_eq!(p("a.b.1.c").as_deref(), Some("2"));
        assert_eq!(p("n").as_deref(), Some("42"));
        assert_eq!(p("o").as_deref(), Some(r#"{"x":1}"#));
        assert_eq!(p("s").as_deref(), Some("q\"uote"));
        assert_eq!(p("a.b.#").as_deref(), Some("2"));
        assert_eq!(p(r"dot\.key").as_deref(), Some("lit"));
        assert_eq!(p("missing"), None);
        assert_eq!(p("dot.key"), None);
        let exact = property(doc, "dot.key", PropertyMode::ExactKeyThenGjson).unwrap();
        assert_eq!(exact, b"lit");
        let escaped = property(doc, "dot.key", PropertyMode::EscapedDotsThenGjson).unwrap();
        assert_eq!(escaped, b"lit");
        assert_eq!(
            property(doc, "a.b.0.c", PropertyMode::EscapedDotsThenGjson).unwrap(),
            b"deep"
        );
        assert_eq!(property(b"\xff\xfe", "a", PropertyMode::Gjson), None);
    }

    #[test]
    fn json_to_map_keeps_source_text() {
        let m = json_to_map(
            br#"{"user":"admin","port":5432,"nested":{"a": 1},"list":[1, 2],"t":true}"#,
        )
        .unwrap();
        assert_eq!(m["user"].expose(), b"admin");
        assert_eq!(m["port"].expose(), b"5432");
        assert_eq!(m["nested"].expose(), br#"{"a": 1}"#);
        assert_eq!(m["list"].expose(), b"[1, 2]");
        assert_eq!(m["t"].expose(), b"true");
        let err = json_to_map(b"canary-not-json").unwrap_err();
        assert!(!err.to_string().contains("canary"));
    }

    #[test]
    fn hostile_property_paths_do_not_overflow_the_stack() {
        // Regression: a 5000-component path overflowed the stack inside gjson (abort).
        let deep = vec!["a"; 5000].join(".");
        let doc = br#"{"a":{"a":"x"}}"#;
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                for mode in [
                    PropertyMode::Gjson,
                    PropertyMode::ExactKeyThenGjson,
                    PropertyMode::EscapedDotsThenGjson,
                ] {
                    assert_eq!(property(doc, &deep, mode), None);
                    let pipes = vec!["a"; 5000].join("|");
                    assert_eq!(property(doc, &pipes, mode), None);
                }
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(property_within_limits(&vec!["a"; 129].join(".")));
        assert!(!property_within_limits(&vec!["a"; 130].join(".")));
        assert_eq!(
            property(doc, "a.a", PropertyMode::Gjson).as_deref(),
            Some(&b"x"[..])
        );
    }

    #[test]
    fn key_errors_escape_control_characters() {
        let err = validate_key("us\0er\x1b[31m").unwrap_err().to_string();
        assert!(!err.chars().any(char::is_control), "{err:?}");
        assert!(err.contains("invalid character \\u{0}"), "{err}");
        assert!(err.contains("us\\u{0}er\\u{1b}[31m"), "{err}");
        let err = validate_key("a/b").unwrap_err().to_string();
        assert!(
            err.ends_with(
                "key has invalid character /, only alphanumeric, '-', '.' and '_' are allowed: a/b"
            ),
            "{err}"
        );
    }

    #[test]
    fn kubernetes_names() {
        assert_eq!(dns_subdomain_problem("my-secret.v1"), None);
        assert!(dns_subdomain_problem("Bad_Name!").is_some());
        assert!(dns_subdomain_problem(&"a".repeat(254)).is_some());
        assert_eq!(dns_subdomain_problem(&"a".repeat(253)), None);
        assert!(dns_subdomain_problem("").is_some());
        assert!(dns_subdomain_problem("a..b").is_some());
        assert!(dns_subdomain_problem("-a").is_some());
        assert_eq!(dns_label_problem("team-a"), None);
        assert!(dns_label_problem("a.b").is_some());
        assert!(dns_label_problem(&"n".repeat(64)).is_some());
        assert_eq!(qualified_name_problem("app.kubernetes.io/name"), None);
        assert_eq!(qualified_name_problem("Team_1"), None);
        assert!(qualified_name_problem("bad key!").is_some());
        assert!(qualified_name_problem("/x").is_some());
        assert!(qualified_name_problem("a/").is_some());
        assert!(qualified_name_problem(&"k".repeat(64)).is_some());
        assert_eq!(label_value_problem(""), None);
        assert_eq!(label_value_problem("v1.2_x"), None);
        assert!(label_value_problem(&"v".repeat(64)).is_some());
        assert!(label_value_problem("-x").is_some());
        let why = label_value_problem("canary value!").unwrap();
        assert!(!why.contains("canary"));
    }

    #[test]
    fn key_conversion() {
        assert_eq!(convert_key(None, "path/to/key"), "path_to_key");
        assert_eq!(
            convert_key(Some(ConversionStrategy::Unicode), "a/b"),
            "a_U002f_b"
        );
        assert_eq!(convert_key(None, "ok-key.1_x"), "ok-key.1_x");
        assert!(validate_key("a/b").is_err());
        assert!(validate_key(&"x".repeat(254)).is_err());
        let mut m = SecretMap::new();
        m.insert(String::new(), SecretBytes::from("v"));
        m.insert("good".into(), SecretBytes::from("v"));
        validate_keys(&mut m).unwrap();
        assert_eq!(m.len(), 1);
    }
}
