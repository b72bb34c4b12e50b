//! `toYaml` / `fromYaml` as ESO defines them over `sigs.k8s.io/yaml` (go-yaml v2 output:
//! sorted keys, sequences not indented under keys, `|-` literals for multi-line strings,
//! double quotes for strings that would read back as another type, single quotes where
//! plain style is not allowed). Common cases match Go; exotic scalars may quote differently.

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::Value;

use super::bytes;
use super::conv::{from_serde_json, json_float, map, s};

pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    emit(v, 0, &mut out, Ctx::Top);
    out.strip_suffix('\n').unwrap_or(&out).to_owned()
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Top,
    MapValue,
    SeqItem,
}

fn pad(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

fn emit(v: &Value, indent: usize, out: &mut String, ctx: Ctx) {
    match v {
        Value::Map(m) if !m.is_empty() => {
            if ctx == Ctx::MapValue {
                out.push('\n');
            }
            for (i, (k, item)) in m.iter().enumerate() {
                if !(i == 0 && ctx == Ctx::SeqItem) {
                    pad(out, indent);
                }
                out.push_str(&scalar_str(k, indent));
                out.push(':');
                emit(item, indent + 2, out, Ctx::MapValue);
            }
        }
        Value::List(l) if !l.is_empty() => {
            // go-yaml v2 does not indent a sequence under a mapping key.
            let ind = if ctx == Ctx::MapValue {
                indent - 2
            } else {
                indent
            };
            if ctx == Ctx::MapValue {
                out.push('\n');
            }
            for (i, item) in l.iter().enumerate() {
                if !(i == 0 && ctx == Ctx::SeqItem) {
                    pad(out, ind);
                }
                out.push('-');
                match item {
                    Value::Map(m) if !m.is_empty() => {
                        out.push(' ');
                        emit(item, ind + 2, out, Ctx::SeqItem);
                    }
                    Value::List(l2) if !l2.is_empty() => {
                        out.push(' ');
                        emit(item, ind + 2, out, Ctx::SeqItem);
                    }
                    _ => {
                        out.push(' ');
                        out.push_str(&scalar(item, ind + 2));
                        out.push('\n');
                    }
                }
            }
        }
        other => {
            if ctx == Ctx::MapValue {
                out.push(' ');
            }
            out.push_str(&scalar(other, indent));
            out.push('\n');
        }
    }
}

fn scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::Nil => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::Uint(n) => n.to_string(),
        Value::Float(f) => {
            if f.fract() == 0.0 && f.abs() < 1e21 {
                format!("{f}")
            } else {
                json_float(*f).unwrap_or_else(|| ".nan".to_owned())
            }
        }
        Value::String(x) => scalar_str(x, indent),
        Value::Map(_) => "{}".to_owned(),
        Value::List(_) => "[]".to_owned(),
        Value::Function(_) => "null".to_owned(),
    }
}

/// Would go-yaml v2 resolve this plain scalar to something other than a string?
fn resolves_non_string(t: &str) -> bool {
    const WORDS: &[&str] = &[
        "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "y",
        "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF", ".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", "+.inf", ".nan", ".NaN", ".NAN",
        "<<",
    ];
    if WORDS.contains(&t) {
        return true;
    }
    let plain = t.replace('_', "");
    let body = plain.strip_prefix(['-', '+']).unwrap_or(&plain);
    if body.starts_with("0x") && i64::from_str_radix(&body[2..], 16).is_ok()
        || body.starts_with("0b") && i64::from_str_radix(&body[2..], 2).is_ok()
    {
        return true;
    }
    if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    if body.bytes().any(|b| b.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || b"eE.+-".contains(&b))
        && body.parse::<f64>().is_ok()
    {
        return true;
    }
    // Timestamps (YYYY-MM-DD...).
    let b = t.as_bytes();
    b.len() >= 10
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[8..10].iter().all(u8::is_ascii_digit)
}

fn plain_allowed(t: &str) -> bool {
    let Some(first) = t.chars().next() else {
        return false;
    };
    if t.starts_with([' ', '\t']) || t.ends_with([' ', '\t']) {
        return false;
    }
    if "#,[]{}&*!|>'\"%@`".contains(first) {
        return false;
    }
    if matches!(first, '-' | '?' | ':') {
        let second = t.chars().nth(1);
        if second.is_none() || second == Some(' ') {
            return false;
        }
    }
    if t.contains(": ") || t.contains(" #") || t.ends_with(':') {
        return false;
    }
    !t.chars().any(|c| c.is_control() || c == '\u{feff}')
}

fn scalar_str(x: &str, indent: usize) -> String {
    let raw = bytes::decode(x);
    let Ok(t) = std::str::from_utf8(&raw) else {
        use base64::Engine as _;
        return format!(
            "!!binary {}",
            base64::engine::general_purpose::STANDARD.encode(&raw)
        );
    };
    if t.contains('\n') {
        let chomp = if t.ends_with("\n\n") {
            "+"
        } else if t.ends_with('\n') {
            ""
        } else {
            "-"
        };
        let ind = if t.starts_with([' ', '\n']) { "2" } else { "" };
        let mut out = format!("|{ind}{chomp}");
        let body = t.strip_suffix('\n').unwrap_or(t);
        let body = if chomp == "+" {
            t.strip_suffix('\n').unwrap_or(t)
        } else {
            body
        };
        for line in body.split('\n') {
            out.push('\n');
            if !line.is_empty() {
                pad(&mut out, indent.max(2));
                out.push_str(line);
            }
        }
        return out;
    }
    if resolves_non_string(t) {
        let mut out = String::new();
        super::conv::json_string(&mut out, x, false);
        return out;
    }
    if plain_allowed(t) {
        return t.to_owned();
    }
    if t.chars().any(|c| c.is_control()) {
        let mut out = String::new();
        super::conv::json_string(&mut out, x, false);
        return out;
    }
    format!("'{}'", t.replace('\'', "''"))
}

/// ESO `fromYaml`: a map; on a parse error `{"Error": "<message>"}`.
pub fn from_yaml(raw: &[u8]) -> Value {
    let text = String::from_utf8_lossy(raw);
    match serde_saphyr::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(o)) => from_serde_json(&serde_json::Value::Object(o), false),
        Ok(serde_json::Value::Null) => map(BTreeMap::new()),
        Ok(_) => error_map("error unmarshaling JSON: json: cannot unmarshal into map"),
        Err(_) => error_map("error converting YAML to JSON: yaml: invalid YAML"),
    }
}

fn error_map(msg: &str) -> Value {
    let mut m = BTreeMap::new();
    m.insert(Arc::from("Error"), s(msg));
    map(m)
}
