//! Resource names: what a `remoteRef.key` may be and where it points.

use refsync_core::{Error, Result};

/// `projects/P` or `projects/P/locations/L`.
pub(crate) fn parent(project: &str, location: Option<&str>) -> String {
    match location {
        Some(l) => format!("projects/{project}/locations/{l}"),
        None => format!("projects/{project}"),
    }
}

/// A secret ID as Secret Manager accepts it: `[A-Za-z0-9_-]{1,255}`.
pub(crate) fn is_secret_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A version: a number, `latest` or an alias (`[A-Za-z0-9_-]`, at most 63 characters).
fn is_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A project ID (`my-project`, legacy `example.com:my-project`) or number.
pub(crate) fn is_project(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':')
        })
}

/// A location such as `europe-west1`.
pub(crate) fn is_location(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Where a read goes: the secret's resource name and the version to access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `projects/P[/locations/L]/secrets/S`.
    pub secret: String,
    /// `latest`, a number or an alias.
    pub version: String,
}

impl Target {
    pub fn version_name(&self) -> String {
        format!("{}/versions/{}", self.secret, self.version)
    }
}

/// Resolves `key` (a secret ID, or a full name `projects/P[/locations/L]/secrets/S[/versions/V]`)
/// and `version` against the store's project and location.
pub(crate) fn resolve(
    project: &str,
    location: Option<&str>,
    key: &str,
    version: Option<&str>,
) -> Result<Target> {
    let (secret, key_version) = if key.starts_with("projects/") {
        let parts: Vec<&str> = key.split('/').collect();
        let (proj, loc, rest) = match parts.as_slice() {
            ["projects", p, "locations", l, rest @ ..] => (*p, Some(*l), rest),
            ["projects", p, rest @ ..] => (*p, None, rest),
            _ => return Err(bad_name(key)),
        };
        let (id, v) = match rest {
            ["secrets", s] => (*s, None),
            ["secrets", s, "versions", v] => (*s, Some(*v)),
            _ => return Err(bad_name(key)),
        };
        if !is_project(proj) || !is_secret_id(id) || loc.is_some_and(|l| !is_location(l)) {
            return Err(bad_name(key));
        }
        if loc != location {
            return Err(Error::invalid(format!(
                "key {key:?} names {} but the store reads {} (spec.provider.gcpsm.location)",
                loc.map_or("a global secret".to_string(), |l| format!("location {l}")),
                location.map_or("global secrets".to_string(), |l| format!("location {l}")),
            )));
        }
        (format!("{}/secrets/{id}", parent(proj, loc)), v)
    } else {
        if !is_secret_id(key) {
            return Err(bad_name(key));
        }
        (format!("{}/secrets/{key}", parent(project, location)), None)
    };
    let version = match (key_version, version.filter(|v| !v.is_empty())) {
        (Some(a), Some(b)) if a != b => {
            return Err(Error::invalid(format!(
                "key {key:?} names version {a} but remoteRef.version is {b:?}"
            )));
        }
        (Some(v), _) | (None, Some(v)) => v.to_string(),
        (None, None) => "latest".to_string(),
    };
    if !is_version(&version) {
        return Err(Error::invalid(format!(
            "version {version:?} of key {key:?} is not a version number, alias or \"latest\""
        )));
    }
    Ok(Target { secret, version })
}

fn bad_name(key: &str) -> Error {
    Error::invalid(format!(
        "key {key:?} is neither a secret ID ([A-Za-z0-9_-]) nor a resource name \
         projects/P[/locations/L]/secrets/S[/versions/V]"
    ))
}

/// The secret ID at the end of a name the API returned (`projects/123/secrets/x` → `x`).
pub(crate) fn secret_id(name: &str) -> &str {
    match name.rfind("/secrets/") {
        Some(i) => &name[i + "/secrets/".len()..],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys() {
        let t = resolve("p", None, "db", None).unwrap();
        assert_eq!(t.version_name(), "projects/p/secrets/db/versions/latest");
        let t = resolve("p", Some("europe-west1"), "db", Some("3")).unwrap();
        assert_eq!(
            t.version_name(),
            "projects/p/locations/europe-west1/secrets/db/versions/3"
        );
        let t = resolve("p", None, "db", Some("")).unwrap();
        assert_eq!(t.version, "latest");
        assert!(resolve("p", None, "a/b", None).is_err());
        assert!(resolve("p", None, "", None).is_err());
        assert!(resolve("p", None, "db", Some("../x")).is_err());
    }

    #[test]
    fn full_names() {
        let t = resolve("p", None, "projects/other/secrets/db", None).unwrap();
        assert_eq!(
            t.version_name(),
            "projects/other/secrets/db/versions/latest"
        );
        let t = resolve("p", None, "projects/other/secrets/db/versions/prod", None).unwrap();
        assert_eq!(t.version, "prod");
        let t = resolve("p", None, "projects/other/secrets/db/versions/2", Some("2")).unwrap();
        assert_eq!(t.version, "2");
        assert!(resolve("p", None, "projects/other/secrets/db/versions/2", Some("3")).is_err());
        let t = resolve(
            "p",
            Some("us-east1"),
            "projects/p/locations/us-east1/secrets/db",
            None,
        )
        .unwrap();
        assert_eq!(t.secret, "projects/p/locations/us-east1/secrets/db");
        // A regional store never reads a global secret and the other way round.
        assert!(resolve("p", Some("us-east1"), "projects/p/secrets/db", None).is_err());
        assert!(resolve("p", None, "projects/p/locations/us-east1/secrets/db", None).is_err());
        assert!(
            resolve(
                "p",
                Some("us-east1"),
                "projects/p/locations/eu/secrets/db",
                None
            )
            .is_err()
        );
        for bad in [
            "projects/p",
            "projects/p/secrets",
            "projects/p/secrets/a/b",
            "projects//secrets/a",
            "projects/P/secrets/a",
        ] {
            assert!(resolve("p", None, bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_from_names() {
        assert_eq!(secret_id("projects/123/secrets/x"), "x");
        assert_eq!(secret_id("projects/123/locations/l/secrets/y-z"), "y-z");
        assert_eq!(secret_id("odd"), "odd");
    }
}
