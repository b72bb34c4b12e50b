//! Go-flavoured conversions over `gotmpl::Value` (strval, cast.ToInt64, emptiness, JSON).

use std::collections::BTreeMap;
use std::sync::Arc;

use gotmpl::Value;

use super::bytes;

/// Error raised by a template function; the wrapper prefixes `error calling NAME: `.
#[derive(Debug)]
pub enum FnError {
    /// Ordinary failure (message must not contain secret data).
    Msg(String),
    /// A hostile-input bound was hit.
    Limit(String),
}

pub type FnResult = Result<Value, FnError>;

pub fn err<T>(msg: impl Into<String>) -> Result<T, FnError> {
    Err(FnError::Msg(msg.into()))
}

pub fn s(v: impl AsRef<str>) -> Value {
    Value::String(Arc::from(v.as_ref()))
}

/// Value from raw bytes (Go string).
pub fn sb(b: &[u8]) -> Value {
    Value::String(Arc::from(bytes::encode(b).as_str()))
}

pub fn list(items: Vec<Value>) -> Value {
    Value::List(Arc::from(items))
}

pub fn map(m: BTreeMap<Arc<str>, Value>) -> Value {
    Value::Map(Arc::new(m))
}

/// Go type name used in argument errors.
pub fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Function(_) => "func",
    }
}

/// A `string` parameter of a Go function.
pub fn arg_str(args: &[Value], i: usize) -> Result<&str, FnError> {
    match args.get(i) {
        Some(Value::String(s)) => Ok(s),
        Some(v) => err(format!(
            "wrong type for value; expected string; got {}",
            go_type(v)
        )),
        None => err("missing argument"),
    }
}

/// An `int` parameter of a Go function (untyped constants convert).
pub fn arg_int(args: &[Value], i: usize) -> Result<i64, FnError> {
    match args.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::Uint(n)) => i64::try_from(*n).or_else(|_| err("integer overflow")),
        Some(Value::Float(f)) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(*f as i64),
        Some(v) => err(format!(
            "wrong type for value; expected int; got {}",
            go_type(v)
        )),
        None => err("missing argument"),
    }
}

pub fn arg_bool(args: &[Value], i: usize) -> Result<bool, FnError> {
    match args.get(i) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => err(format!(
            "wrong type for value; expected bool; got {}",
            go_type(v)
        )),
        None => err("missing argument"),
    }
}

pub fn arity(args: &[Value], n: usize) -> Result<(), FnError> {
    if args.len() == n {
        Ok(())
    } else {
        err(format!("wrong number of args: want {n} got {}", args.len()))
    }
}

pub fn arity_min(args: &[Value], n: usize) -> Result<(), FnError> {
    if args.len() >= n {
        Ok(())
    } else {
        err(format!(
            "wrong number of args: want at least {n} got {}",
            args.len()
        ))
    }
}

/// sprig's `strval`: strings as-is, everything else Go's `%v`.
pub fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Nil => "<nil>".to_owned(),
        other => other.to_string(),
    }
}

/// Raw bytes of a value as Go would see `[]byte(strval(v))`.
pub fn bytes_of(v: &Value) -> Vec<u8> {
    bytes::decode(&strval(v))
}

/// `cast.ToInt64` (what sprig's `int`, `int64`, `add`... use): bad input gives 0.
pub fn to_i64(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        Value::Uint(n) => *n as i64,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => i64::from(*b),
        Value::String(s) => parse_go_int(s).unwrap_or(0),
        _ => 0,
    }
}

/// `strconv.ParseInt(trimZeroDecimal(s), 0, 0)`.
fn parse_go_int(s: &str) -> Option<i64> {
    let mut t = s;
    if let Some(dot) = t.find('.')
        && t.len() > dot + 1
        && t[dot + 1..].bytes().all(|b| b == b'0')
    {
        t = &t[..dot];
    }
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let body = body.replace('_', "");
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_owned())
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_owned())
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_owned())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_owned())
    } else {
        (10, lower)
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    let mag = i128::from_str_radix(&digits, radix).ok()?;
    let val = if neg { -mag } else { mag };
    i64::try_from(val).ok()
}

/// `strconv.Atoi`.
pub fn atoi(s: &str) -> i64 {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    s.parse::<i64>().unwrap_or(0)
}

/// `cast.ToFloat64`.
pub fn to_f64(v: &Value) -> f64 {
    match v {
        Value::Int(n) => *n as f64,
        Value::Uint(n) => *n as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .unwrap_or(0.0),
        _ => 0.0,
    }
}

/// sprig's `empty`.
pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Nil => true,
        Value::Bool(b) => !b,
        Value::Int(n) => *n == 0,
        Value::Uint(n) => *n == 0,
        Value::Float(f) => *f == 0.0,
        Value::String(s) => s.is_empty(),
        Value::List(l) => l.is_empty(),
        Value::Map(m) => m.is_empty(),
        Value::Function(_) => false,
    }
}

/// sprig `kindOf` (reflect.Kind names for our value shapes).
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Nil => "invalid",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Uint(_) => "uint",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "slice",
        Value::Map(_) => "map",
        Value::Function(_) => "func",
    }
}

/// Go `encoding/json` string encoding (with `escape_html` as `json.Marshal`).
/// Input is the engine form; invalid UTF-8 bytes become `\ufffd` like Go.
pub fn json_string(out: &mut String, s: &str, escape_html: bool) {
    let raw = bytes::decode(s);
    let text = String::from_utf8_lossy(&raw);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if escape_html => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `strconv.FormatFloat(f, 'g'-like)` as used by encoding/json for float64.
pub fn json_float(f: f64) -> Option<String> {
    if !f.is_finite() {
        return None;
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Go: 'e' format, then "e-07" -> "e-7" style cleanup.
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e')?;
        let exp: i32 = exp.parse().ok()?;
        let sign = if exp < 0 { '-' } else { '+' };
        let e = exp.abs();
        let es = if e < 10 {
            format!("0{e}")
        } else {
            e.to_string()
        };
        // json: 1e+21 keeps "e+21"; Go strips to e+XX with at least 2 digits, then
        // encoding/json rewrites e-07 -> e-7.
        let mut out = format!("{mant}e{sign}{es}");
        if sign == '-' && e < 10 {
            out = format!("{mant}e-{e}");
        }
        return Some(out);
    }
    Some(format!("{f}"))
}

/// Go `json.Marshal` of a template value (maps sorted by key, as Go does).
pub fn to_json(v: &Value, escape_html: bool, out: &mut String) -> Result<(), FnError> {
    match v {
        Value::Nil => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Uint(n) => out.push_str(&n.to_string()),
        Value::Float(f) => match json_float(*f) {
            Some(t) => out.push_str(&t),
            None => return err("json: unsupported value: non-finite float"),
        },
        Value::String(s) => json_string(out, s, escape_html),
        Value::List(l) => {
            out.push('[');
            for (i, item) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                to_json(item, escape_html, out)?;
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(out, k, escape_html);
                out.push(':');
                to_json(item, escape_html, out)?;
            }
            out.push('}');
        }
        Value::Function(_) => return err("json: unsupported type: func"),
    }
    Ok(())
}

/// `json.MarshalIndent(v, "", "  ")`.
pub fn to_json_pretty(v: &Value, depth: usize, out: &mut String) -> Result<(), FnError> {
    let pad = |out: &mut String, d: usize| {
        out.push('\n');
        for _ in 0..d {
            out.push_str("  ");
        }
    };
    match v {
        Value::List(l) if !l.is_empty() => {
            out.push('[');
            for (i, item) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                to_json_pretty(item, depth + 1, out)?;
            }
            pad(out, depth);
            out.push(']');
        }
        Value::Map(m) if !m.is_empty() => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                json_string(out, k, true);
                out.push_str(": ");
                to_json_pretty(item, depth + 1, out)?;
            }
            pad(out, depth);
            out.push('}');
        }
        other => to_json(other, true, out)?,
    }
    Ok(())
}

/// `json.Unmarshal` into `interface{}` (numbers become float64, like Go).
pub fn from_serde_json(v: &serde_json::Value, numbers_as_float: bool) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if !numbers_as_float && let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if !numbers_as_float && let Some(u) = n.as_u64() {
                Value::Uint(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(t) => s(bytes::escape_str(t)),
        serde_json::Value::Array(a) => list(
            a.iter()
                .map(|x| from_serde_json(x, numbers_as_float))
                .collect(),
        ),
        serde_json::Value::Object(o) => map(o
            .iter()
            .map(|(k, x)| (Arc::from(k.as_str()), from_serde_json(x, numbers_as_float)))
            .collect()),
    }
}

/// Go `%q` of a string (strconv.Quote): engine form in, quoted engine form out.
pub fn go_quote(s: &str) -> String {
    let raw = bytes::decode(s);
    let mut out = String::from("\"");
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if is_go_printable(c) => out.push(c),
                c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push_str(&format!("\\U{:08x}", c as u32)),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// Approximation of Go's `strconv.IsPrint`: printable unless control, format or
/// separator (other than ASCII space), or private use / unassigned in common ranges.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    !matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF | 0xFFFE | 0xFFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_int_parsing() {
        assert_eq!(to_i64(&s("42")), 42);
        assert_eq!(to_i64(&s("0x1f")), 31);
        assert_eq!(to_i64(&s("010")), 8);
        assert_eq!(to_i64(&s("5.00")), 5);
        assert_eq!(to_i64(&s("5.5")), 0);
        assert_eq!(to_i64(&s("abc")), 0);
        assert_eq!(to_i64(&Value::Float(3.9)), 3);
        assert_eq!(atoi("-12"), -12);
        assert_eq!(atoi("1x"), 0);
    }

    #[test]
    fn json_floats_like_go() {
        assert_eq!(json_float(1.5).as_deref(), Some("1.5"));
        assert_eq!(json_float(3.0).as_deref(), Some("3"));
        assert_eq!(json_float(1e21).as_deref(), Some("1e+21"));
        assert_eq!(json_float(1e-7).as_deref(), Some("1e-7"));
        assert_eq!(json_float(0.000001).as_deref(), Some("0.000001"));
    }

    #[test]
    fn quote_like_go() {
        assert_eq!(go_quote("a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!(go_quote(&bytes::encode(&[0xff, b'x'])), "\"\\xffx\"");
        assert_eq!(go_quote("é\u{7f}"), "\"é\\x7f\"");
    }
}
