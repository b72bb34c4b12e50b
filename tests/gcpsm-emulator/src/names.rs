//! Resource names, project numbers and the request router's view of a path.

use crate::error::{ApiError, ApiResult};

/// The stable fake project number the emulator uses for a project ID. A project given as a
/// number is that number. Names in responses always carry the number, as Google's do.
pub fn project_number(project: &str) -> u64 {
    if !project.is_empty()
        && project.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = project.parse::<u64>()
    {
        return n;
    }
    // FNV-1a, folded into twelve digits like real project numbers.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in project.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    100_000_000_000 + h % 900_000_000_000
}

/// Where secrets live: the global namespace of a project, or one of its locations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Parent {
    pub project: u64,
    pub location: Option<String>,
}

impl Parent {
    pub fn name(&self) -> String {
        match &self.location {
            None => format!("projects/{}", self.project),
            Some(l) => format!("projects/{}/locations/{l}", self.project),
        }
    }

    pub fn secret_name(&self, id: &str) -> String {
        format!("{}/secrets/{id}", self.name())
    }
}

fn valid_project(p: &str) -> bool {
    let b = p.as_bytes();
    if !b.is_empty() && b.len() <= 20 && b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    (6..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.last().is_some_and(|c| *c != b'-')
}

fn valid_location(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Secret IDs: 1–255 characters of `[a-zA-Z0-9_-]`.
pub(crate) fn valid_secret_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// Version aliases: 1–63 characters of `[a-zA-Z0-9_-]`, not purely numeric, not `latest`.
pub(crate) fn valid_alias(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s != "latest"
        && !s.bytes().all(|c| c.is_ascii_digit())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// How a request names a secret version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VersionRef {
    Latest,
    Number(i64),
    Alias(String),
}

impl VersionRef {
    fn parse(s: &str) -> Option<Self> {
        if s == "latest" {
            return Some(Self::Latest);
        }
        if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
            return s.parse::<i64>().ok().filter(|n| *n > 0).map(Self::Number);
        }
        valid_alias(s).then(|| Self::Alias(s.to_string()))
    }

    pub fn as_path(&self) -> String {
        match self {
            Self::Latest => "latest".into(),
            Self::Number(n) => n.to_string(),
            Self::Alias(a) => a.clone(),
        }
    }
}

/// A parsed `/v1/...` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Secrets(Parent),
    Secret(Parent, String),
    Versions(Parent, String),
    Version(Parent, String, VersionRef),
}

/// Splits `projects/p[/locations/l]/secrets[/s[/versions[/v]]]` (verb already removed).
pub(crate) fn parse_target(path: &str) -> ApiResult<Target> {
    let segs: Vec<&str> = path.split('/').collect();
    let bad = || ApiError::invalid(format!("The resource name [{path}] is invalid."));
    if segs.len() < 3 || segs[0] != "projects" {
        return Err(ApiError::not_found(format!(
            "The requested URL /v1/{path} was not found on this server."
        )));
    }
    if !valid_project(segs[1]) {
        return Err(bad());
    }
    let project = project_number(segs[1]);
    let (location, rest) = if segs[2] == "locations" {
        let loc = segs.get(3).copied().ok_or_else(bad)?;
        if !valid_location(loc) {
            return Err(bad());
        }
        (Some(loc.to_string()), &segs[4..])
    } else {
        (None, &segs[2..])
    };
    let parent = Parent { project, location };
    let not_found = || {
        ApiError::not_found(format!(
            "The requested URL /v1/{path} was not found on this server."
        ))
    };
    match rest {
        ["secrets"] => Ok(Target::Secrets(parent)),
        ["secrets", id] => {
            if !valid_secret_id(id) {
                return Err(bad());
            }
            Ok(Target::Secret(parent, (*id).to_string()))
        }
        ["secrets", id, "versions"] => {
            if !valid_secret_id(id) {
                return Err(bad());
            }
            Ok(Target::Versions(parent, (*id).to_string()))
        }
        ["secrets", id, "versions", v] => {
            if !valid_secret_id(id) {
                return Err(bad());
            }
            let v = VersionRef::parse(v).ok_or_else(bad)?;
            Ok(Target::Version(parent, (*id).to_string(), v))
        }
        _ => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_numbers_are_stable_and_twelve_digits() {
        let n = project_number("my-project");
        assert_eq!(n, project_number("my-project"));
        assert_eq!(n.to_string().len(), 12);
        assert_ne!(n, project_number("other-project"));
        assert_eq!(project_number("123456789012"), 123_456_789_012);
    }

    #[test]
    fn targets() {
        let p = project_number("my-project");
        assert_eq!(
            parse_target("projects/my-project/secrets").ok(),
            Some(Target::Secrets(Parent {
                project: p,
                location: None
            }))
        );
        assert_eq!(
            parse_target("projects/my-project/locations/us-east1/secrets/x/versions/latest").ok(),
            Some(Target::Version(
                Parent {
                    project: p,
                    location: Some("us-east1".into())
                },
                "x".into(),
                VersionRef::Latest
            ))
        );
        assert!(parse_target("projects/my-project/secrets/bad.name").is_err());
        assert!(parse_target("projects/my-project/secrets/x/versions/0").is_err());
        assert!(parse_target("projects/BAD/secrets").is_err());
    }
}
