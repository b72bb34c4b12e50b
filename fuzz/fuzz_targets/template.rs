//! The template engine: `source \0 key=value \n key=value ...` → `template::render`, plus
//! `render_json` over `{"value": <data>}` (rewrite `transform`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use refsync_core::template::{self, TemplateValues};

fuzz_target!(|data: &[u8]| {
    let (src, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(source) = std::str::from_utf8(src) else {
        return;
    };
    let mut values = TemplateValues::new();
    for line in rest.split(|b| *b == b'\n') {
        let (k, v) = match line.iter().position(|b| *b == b'=') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        values.insert(String::from_utf8_lossy(k).into_owned(), v.to_vec());
    }
    let _ = template::check("fuzz", source);
    let _ = template::render("fuzz", source, &values);
    let value = String::from_utf8_lossy(rest).into_owned();
    let _ = template::render_json("fuzz", source, &serde_json::json!({ "value": value }));
});
