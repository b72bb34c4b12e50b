//! Lossless transport of raw secret bytes through a UTF-8-only template engine.
//!
//! `gotmpl` stores strings as UTF-8 `Arc<str>`, whereas ESO's template values are Go
//! strings: arbitrary bytes. We map every byte that is not part of valid UTF-8 to one
//! private-use code point in the block `U+10FF80..=U+10FFFF` (byte `b` becomes
//! `U+10FF00 + b`), and undo the mapping when bytes are needed (output, hashing, base64,
//! PKCS#12, RSA...). Genuine occurrences of code points in that block (in secret values
//! *or* in template source) are themselves escaped byte-by-byte, so the mapping is a
//! bijection and `decode(encode(x)) == x` for every byte string `x`.
//!
//! Limits of the scheme (documented in the module doc too): text functions that look at
//! characters (`upper`, `title`, `trunc`, `substr`, `printf "%x"`, `%q`...) see one escape
//! character where Go sees one invalid byte; Go would usually substitute U+FFFD in
//! case-mapping functions, we keep the byte unchanged.

/// First code point of the escape block (byte `0x80`).
const ESC_BASE: u32 = 0x10FF00;
/// Lowest escape code point actually used (`ESC_BASE + 0x80`).
const ESC_LOW: u32 = ESC_BASE + 0x80;

fn esc_char(b: u8) -> char {
    // ESC_BASE + b is always a valid scalar value (< 0x110000, not a surrogate).
    char::from_u32(ESC_BASE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
}

fn is_esc(c: char) -> bool {
    (c as u32) >= ESC_LOW
}

fn push_char_escaped(out: &mut String, c: char) {
    if is_esc(c) {
        let mut buf = [0u8; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            out.push(esc_char(b));
        }
    } else {
        out.push(c);
    }
}

/// Bytes (a Go string) to the engine's string form.
pub fn encode(bytes: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return escape_str(s);
    }
    let mut out = String::with_capacity(bytes.len() + 16);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char_escaped(&mut out, c);
        }
        for &b in chunk.invalid() {
            out.push(esc_char(b));
        }
    }
    out
}

/// Escape genuine escape-block characters of an already-UTF-8 string (template source,
/// JSON data) so that [`decode`] gives back exactly its UTF-8 bytes.
pub fn escape_str(s: &str) -> String {
    if !s.chars().any(is_esc) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        push_char_escaped(&mut out, c);
    }
    out
}

/// The engine's string form back to bytes.
pub fn decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    decode_into(s, &mut out);
    out
}

/// Like [`decode`], appending to `out`.
pub fn decode_into(s: &str, out: &mut Vec<u8>) {
    let mut rest = s;
    while let Some(pos) = rest.find(is_esc) {
        out.extend_from_slice(&rest.as_bytes()[..pos]);
        let c = rest[pos..].chars().next().unwrap_or(' ');
        out.push(((c as u32) - ESC_BASE) as u8);
        rest = &rest[pos + c.len_utf8()..];
    }
    out.extend_from_slice(rest.as_bytes());
}

/// Length in bytes of the decoded form (Go's `len` of a string).
pub fn byte_len(s: &str) -> usize {
    s.chars()
        .map(|c| if is_esc(c) { 1 } else { c.len_utf8() })
        .sum()
}

/// True when `s` decodes to valid UTF-8 that needs no escape.
pub fn is_plain(s: &str) -> bool {
    !s.chars().any(is_esc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_arbitrary_bytes() {
        let samples: Vec<Vec<u8>> = vec![
            b"plain".to_vec(),
            vec![0xff, 0x00, 0x80, b'a', 0xc3],
            "é\u{10FF80}\u{10FFFF}\u{10FF7F}".as_bytes().to_vec(),
            (0u8..=255).collect(),
            vec![0xf4, 0x8f, 0xbe],
        ];
        for s in samples {
            let e = encode(&s);
            assert_eq!(decode(&e), s);
            assert_eq!(byte_len(&e), s.len());
        }
    }

    #[test]
    fn plain_utf8_unchanged() {
        assert_eq!(encode("héllo".as_bytes()), "héllo");
        assert!(is_plain("héllo"));
        assert!(!is_plain(&encode(&[0xff])));
    }
}
