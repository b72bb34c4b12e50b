//! Rewrite regexps: `pattern \0 replacement \0 key \n key ...` → `assemble::rewrite_map`
//! (RE2 semantics: linear time whatever the pattern), then key validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refsync_core::api::{ExternalSecretRewrite, RewriteRegexp};
use refsync_core::assemble::rewrite_map;
use refsync_core::secret::{SecretBytes, SecretMap};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let source = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let keys = parts.next().unwrap_or_default();
    let mut map = SecretMap::new();
    for k in keys.split('\n') {
        map.insert(k.to_string(), SecretBytes::from(k.as_bytes().to_vec()));
    }
    let ops = [ExternalSecretRewrite {
        regexp: Some(RewriteRegexp { source, target }),
        transform: None,
        merge: None,
    }];
    if let Ok(mut out) = rewrite_map(&ops, map) {
        let _ = refsync_core::convert::validate_keys(&mut out);
    }
});
