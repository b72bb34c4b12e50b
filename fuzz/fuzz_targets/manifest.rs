//! Manifest parsing: a YAML/JSON stream of bytes → `ManifestSet`, then everything `refsync
//! validate` does offline with it (plans, templates, regexps).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use refsync_core::manifest::ManifestSet;
use refsync_core::provider::ProviderRegistry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut set = ManifestSet::default();
    set.add_text(text, Path::new("fuzz.yaml"), "default");
    for (es, _) in set.all_external_secrets() {
        let _ = refsync_core::plan::plan(&es);
    }
    let _ = refsync_core::validate::validate(&set, &ProviderRegistry::new());
});
