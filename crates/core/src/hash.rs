//! ESO's hashes, byte for byte: a Secret written by either controller is recognised as
//! up to date by the other, so a takeover rewrites nothing.

use std::collections::BTreeMap;
use std::fmt::Write;

use sha3::{Digest, Sha3_224};

/// Hex SHA3-224 of a text (ESO's `ObjectHash` after `fmt.Sprintf("%+v", ..)`).
pub fn sha3_224_hex(text: &[u8]) -> String {
    hex::encode(Sha3_224::digest(text))
}

/// Go's `%+v` of a `map[string][]byte`: `map[bar:[118 50] foo:[118 49]]` (keys sorted).
pub fn go_format_byte_map<'a, I, V>(entries: I) -> String
where
    I: IntoIterator<Item = (&'a String, V)>,
    V: AsRef<[u8]>,
{
    let mut sorted: Vec<(&String, V)> = entries.into_iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::from("map[");
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push_str(":[");
        for (j, b) in v.as_ref().iter().enumerate() {
            if j > 0 {
                out.push(' ');
            }
            let _ = write!(out, "{b}");
        }
        out.push(']');
    }
    out.push(']');
    out
}

/// Go's `%+v` of a `map[string]string`: `map[a:b c:d]`.
pub fn go_format_string_map(m: Option<&BTreeMap<String, String>>) -> String {
    let mut out = String::from("map[");
    if let Some(m) = m {
        for (i, (k, v)) in m.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(k);
            out.push(':');
            out.push_str(v);
        }
    }
    out.push(']');
    out
}

/// The `reconcile.external-secrets.io/data-hash` annotation of a Secret's `data`.
pub fn data_hash<'a, I, V>(data: I) -> String
where
    I: IntoIterator<Item = (&'a String, V)>,
    V: AsRef<[u8]>,
{
    sha3_224_hex(go_format_byte_map(data).as_bytes())
}

/// The `reconcile.external-secrets.io/created-by` label: hash of `<namespace>/<name>`.
pub fn created_by(namespace: &str, name: &str) -> String {
    sha3_224_hex(format!("{namespace}/{name}").as_bytes())
}

/// `status.syncedResourceVersion`: `<generation>-<hash of labels and annotations>`.
pub fn synced_resource_version(
    generation: i64,
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
) -> String {
    let text = format!(
        "{{annotations:{} labels:{}}}",
        go_format_string_map(annotations),
        go_format_string_map(labels)
    );
    format!("{generation}-{}", sha3_224_hex(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_format_matches_fmt_sprintf() {
        let mut m = BTreeMap::new();
        m.insert("foo".to_string(), b"v1".to_vec());
        m.insert("bar".to_string(), b"v2".to_vec());
        m.insert("empty".to_string(), Vec::new());
        assert_eq!(
            go_format_byte_map(&m),
            "map[bar:[118 50] empty:[] foo:[118 49]]"
        );
        let none: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        assert_eq!(go_format_byte_map(&none), "map[]");
    }

    #[test]
    fn sha3_224_known_answer() {
        // SHA3-224("") from FIPS 202 test vectors.
        assert_eq!(
            sha3_224_hex(b""),
            "6b4e03423667dbb73b6e15454f0eb1abd4597f9a1b078e3f5b5a6bc7"
        );
    }

    #[test]
    fn synced_resource_version_shape() {
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "web".to_string());
        let v = synced_resource_version(3, Some(&labels), None);
        let expected = sha3_224_hex(b"{annotations:map[] labels:map[app:web]}");
        assert_eq!(v, format!("3-{expected}"));
    }
}
