//! `SecretBytes`: secret material that never shows itself in logs.

use std::fmt;

use zeroize::Zeroize;

/// Bytes read from a provider or a Kubernetes Secret. `Debug` and `Display` print only the
/// length; the buffer is zeroed when dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        SecretBytes(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Takes the bytes out; the caller becomes responsible for them.
    pub fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(v: Vec<u8>) -> Self {
        SecretBytes(v)
    }
}

impl From<&[u8]> for SecretBytes {
    fn from(v: &[u8]) -> Self {
        SecretBytes(v.to_vec())
    }
}

impl From<String> for SecretBytes {
    fn from(v: String) -> Self {
        SecretBytes(v.into_bytes())
    }
}

impl From<&str> for SecretBytes {
    fn from(v: &str) -> Self {
        SecretBytes(v.as_bytes().to_vec())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted, {} bytes>)", self.0.len())
    }
}

impl fmt::Display for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

/// A map of secret values by key, as providers return for `find` and `extract`.
pub type SecretMap = std::collections::BTreeMap<String, SecretBytes>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = SecretBytes::from("hunter2-canary");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        let mut m = SecretMap::new();
        m.insert("k".into(), s.clone());
        assert!(!format!("{m:?}").contains("hunter2"));
        assert_eq!(s.expose(), b"hunter2-canary");
    }
}
