//! Pure helpers: how ESO turns a store `path` and a remote key into Vault API paths, and how it
//! serialises a secret's data map.

/// KV engine version of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvVersion {
    V1,
    V2,
}

/// The path a read goes to (ESO's `buildPath`):
///
/// - with a mount (`spec.provider.vault.path`), a key that starts with `<mount>/` has it removed
///   (and, for v2, a following `data/`), then `<mount>[/data]/<key>` is read;
/// - without a mount, v2 keys without `/data/` get `data` inserted after their first segment
///   (`secret/foo` → `secret/data/foo`); other keys are used as they are.
pub fn data_path(mount: Option<&str>, version: KvVersion, key: &str) -> String {
    match mount {
        Some(mount) => {
            let rest = strip_mount(mount, version, key);
            match version {
                KvVersion::V2 => format!("{mount}/data/{rest}"),
                KvVersion::V1 => format!("{mount}/{rest}"),
            }
        }
        None => match version {
            KvVersion::V2 if !key.contains("/data/") => insert_after_first(key, "data"),
            _ => key.to_string(),
        },
    }
}

/// The path of a key's metadata (KV v2) or, for `find`, of the folder to LIST (ESO's
/// `buildMetadataPath`). Unlike ESO, a key starting with the mount is treated as in
/// [`data_path`] (ESO would look for `<mount>/metadata/<mount>/...`), and without a mount a v2
/// key without `/data/` gets `metadata` inserted after its first segment (ESO refuses it).
pub fn metadata_path(mount: Option<&str>, version: KvVersion, key: &str) -> String {
    match (mount, version) {
        (Some(mount), KvVersion::V2) => {
            format!("{mount}/metadata/{}", strip_mount(mount, version, key))
        }
        (Some(mount), KvVersion::V1) => format!("{mount}/{}", strip_mount(mount, version, key)),
        (None, KvVersion::V2) => {
            if key.contains("/data/") {
                key.replacen("/data/", "/metadata/", 1)
            } else {
                insert_after_first(key, "metadata")
            }
        }
        (None, KvVersion::V1) => key.to_string(),
    }
}

fn strip_mount<'a>(mount: &str, version: KvVersion, key: &'a str) -> &'a str {
    let Some(rest) = key.strip_prefix(mount).and_then(|r| r.strip_prefix('/')) else {
        return key;
    };
    match version {
        KvVersion::V2 => rest.strip_prefix("data/").unwrap_or(rest),
        KvVersion::V1 => rest,
    }
}

fn insert_after_first(key: &str, segment: &str) -> String {
    match key.split_once('/') {
        Some((first, rest)) => format!("{first}/{segment}/{rest}"),
        None => format!("{key}/{segment}"),
    }
}

/// Serialises a JSON value as Go's `json.Marshal` does for ESO's `map[string]any`: object keys
/// sorted, compact, and `<`, `>`, `&`, U+2028, U+2029 escaped as `\u003c` etc. (Numbers are
/// written as serde_json reads them, e.g. `1.50` becomes `1.5` where Go keeps `1.50`.)
pub fn go_json(v: &serde_json::Value) -> Vec<u8> {
    // serde_json's map is a BTreeMap (no `preserve_order`): keys come out sorted by bytes, as
    // Go sorts map keys. Serialising a Value cannot fail.
    let s = serde_json::to_string(v).unwrap_or_default();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// A metadata or tag value as ESO renders it with `fmt.Sprintf("%v", v)` (strings as they are).
pub fn go_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "<nil>".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KvVersion::*;

    #[test]
    fn build_path_like_eso() {
        // The table from ESO's buildPath doc comment.
        assert_eq!(
            data_path(Some("secret/path"), V2, "foo"),
            "secret/path/data/foo"
        );
        assert_eq!(data_path(Some("secret/path"), V1, "foo"), "secret/path/foo");
        assert_eq!(
            data_path(Some("secret/path"), V2, "secret/path/foo"),
            "secret/path/data/foo"
        );
        assert_eq!(
            data_path(Some("secret/path"), V2, "secret/path/data/foo"),
            "secret/path/data/foo"
        );
        assert_eq!(
            data_path(Some("secret/path"), V1, "secret/path/foo"),
            "secret/path/foo"
        );
        assert_eq!(
            data_path(None, V2, "secret/path/foo"),
            "secret/data/path/foo"
        );
        assert_eq!(
            data_path(None, V2, "secret/path/data/foo"),
            "secret/path/data/foo"
        );
        assert_eq!(data_path(None, V1, "secret/path/foo"), "secret/path/foo");
        // Not a prefix at a segment boundary: kept.
        assert_eq!(
            data_path(Some("secret"), V2, "secretive/x"),
            "secret/data/secretive/x"
        );
        assert_eq!(data_path(None, V2, "foo"), "foo/data");
    }

    #[test]
    fn metadata_paths() {
        assert_eq!(
            metadata_path(Some("secret"), V2, "a/b"),
            "secret/metadata/a/b"
        );
        assert_eq!(
            metadata_path(Some("secret"), V2, "secret/a"),
            "secret/metadata/a"
        );
        assert_eq!(metadata_path(Some("secret"), V2, ""), "secret/metadata/");
        assert_eq!(metadata_path(Some("kv"), V1, "dir/"), "kv/dir/");
        assert_eq!(
            metadata_path(None, V2, "secret/data/a"),
            "secret/metadata/a"
        );
        assert_eq!(metadata_path(None, V2, "secret/a"), "secret/metadata/a");
    }

    #[test]
    fn go_marshal_escapes_html_and_sorts() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":"x<y>&z","a":{"d":1,"c":[true,null]}}"#).unwrap();
        assert_eq!(
            String::from_utf8(go_json(&v)).unwrap(),
            r#"{"a":{"c":[true,null],"d":1},"b":"x\u003cy\u003e\u0026z"}"#
        );
        assert_eq!(go_string(&serde_json::json!(3)), "3");
        assert_eq!(go_string(&serde_json::json!("s")), "s");
    }
}
