//! gjson `property` extraction: `json \0 path` → `convert::property` in every mode, and
//! `dataFrom.extract`'s `json_to_map`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use refsync_core::convert;
use refsync_core::provider::PropertyMode;

fuzz_target!(|data: &[u8]| {
    let (json, path) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    for mode in [
        PropertyMode::Gjson,
        PropertyMode::ExactKeyThenGjson,
        PropertyMode::EscapedDotsThenGjson,
    ] {
        let _ = convert::property(json, path, mode);
    }
    if let Ok(mut map) = convert::json_to_map(json) {
        let _ = convert::validate_keys(&mut map);
    }
});
