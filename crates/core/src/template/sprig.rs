//! sprig v3 functions (as vendored by ESO in `runtime/template/v2/sprig`) and overrides of
//! Go builtins that need byte semantics or size checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use gotmpl::Value;
use rand::Rng as _;
use rand::seq::SliceRandom as _;
use sha1::Digest as _;

use super::conv::{
    FnError, FnResult, arg_bool, arg_int, arg_str, arity, arity_min, atoi, bytes_of, err, is_empty,
    kind_of, list, map, s, sb, strval, to_f64, to_i64,
};
use super::{Ctx, Func, MAX_LIST_LEN, MAX_VALUE_BYTES, builtin_call, bytes};

fn limit<T>(msg: impl Into<String>) -> Result<T, FnError> {
    Err(FnError::Limit(msg.into()))
}

/// Check that an allocation of `n` bytes is within bounds before making it.
fn alloc_ok(n: i128) -> Result<usize, FnError> {
    if n < 0 {
        return Ok(0);
    }
    if n > MAX_VALUE_BYTES as i128 {
        return limit(format!("result would exceed {MAX_VALUE_BYTES} bytes"));
    }
    Ok(n as usize)
}

fn count_ok(n: i128) -> Result<usize, FnError> {
    if n > MAX_LIST_LEN as i128 {
        return limit(format!("result would exceed {MAX_LIST_LEN} items"));
    }
    Ok(n.max(0) as usize)
}

pub(super) fn register(m: &mut BTreeMap<&'static str, Func>) {
    let f: &[(&'static str, Func)] = &[
        // Go builtins overridden for byte semantics / bounded delegation.
        ("len", go_len),
        ("print", |_, a| delegate("print", a)),
        ("println", |_, a| delegate("println", a)),
        ("printf", go_printf),
        ("html", |_, a| delegate("html", a)),
        ("js", |_, a| delegate("js", a)),
        ("urlquery", |_, a| delegate("urlquery", a)),
        // strings
        ("hello", |_, _| Ok(s("Hello!"))),
        ("upper", |_, a| str1(a, |x| x.to_uppercase())),
        ("lower", |_, a| str1(a, |x| x.to_lowercase())),
        ("title", |_, a| str1(a, title)),
        ("untitle", |_, a| str1(a, untitle)),
        ("trim", |_, a| str1(a, |x| x.trim().to_owned())),
        ("trimAll", trim_all),
        ("trimall", trim_all),
        ("trimSuffix", |_, a| {
            arity(a, 2)?;
            let (suf, x) = (arg_str(a, 0)?, arg_str(a, 1)?);
            Ok(s(x.strip_suffix(suf).unwrap_or(x)))
        }),
        ("trimPrefix", |_, a| {
            arity(a, 2)?;
            let (pre, x) = (arg_str(a, 0)?, arg_str(a, 1)?);
            Ok(s(x.strip_prefix(pre).unwrap_or(x)))
        }),
        ("nospace", |_, a| {
            str1(a, |x| x.chars().filter(|c| !c.is_whitespace()).collect())
        }),
        ("repeat", |_, a| {
            arity(a, 2)?;
            let (n, x) = (arg_int(a, 0)?, arg_str(a, 1)?);
            if n < 0 {
                return err("strings: negative Repeat count");
            }
            alloc_ok(i128::from(n) * x.len() as i128)?;
            Ok(s(x.repeat(n as usize)))
        }),
        ("substr", substr),
        ("trunc", trunc),
        ("abbrev", abbrev),
        ("contains", |_, a| {
            arity(a, 2)?;
            Ok(Value::Bool(arg_str(a, 1)?.contains(arg_str(a, 0)?)))
        }),
        ("hasPrefix", |_, a| {
            arity(a, 2)?;
            Ok(Value::Bool(arg_str(a, 1)?.starts_with(arg_str(a, 0)?)))
        }),
        ("hasSuffix", |_, a| {
            arity(a, 2)?;
            Ok(Value::Bool(arg_str(a, 1)?.ends_with(arg_str(a, 0)?)))
        }),
        ("quote", |_, a| {
            let out: Vec<String> = a
                .iter()
                .filter(|v| !matches!(v, Value::Nil))
                .map(|v| super::conv::go_quote(&strval(v)))
                .collect();
            Ok(s(out.join(" ")))
        }),
        ("squote", |_, a| {
            let out: Vec<String> = a
                .iter()
                .filter(|v| !matches!(v, Value::Nil))
                .map(|v| format!("'{}'", strval(v)))
                .collect();
            Ok(s(out.join(" ")))
        }),
        ("cat", |_, a| {
            let out: Vec<String> = a
                .iter()
                .filter(|v| !matches!(v, Value::Nil))
                .map(strval)
                .collect();
            Ok(s(out.join(" ")))
        }),
        ("indent", |_, a| indent(a, false)),
        ("nindent", |_, a| indent(a, true)),
        ("replace", |_, a| {
            arity(a, 3)?;
            let (old, new, src) = (arg_str(a, 0)?, arg_str(a, 1)?, arg_str(a, 2)?);
            let n = if old.is_empty() {
                src.chars().count() + 1
            } else {
                src.matches(old).count()
            };
            alloc_ok(src.len() as i128 + n as i128 * new.len() as i128)?;
            Ok(s(go_replace(src, old, new)))
        }),
        ("plural", |_, a| {
            arity(a, 3)?;
            let n = arg_int(a, 2)?;
            Ok(a[if n == 1 { 0 } else { 1 }].clone()).and_then(|v| match v {
                Value::String(_) => Ok(v),
                other => err(format!(
                    "wrong type for value; expected string; got {}",
                    super::conv::go_type(&other)
                )),
            })
        }),
        ("toString", |_, a| {
            arity(a, 1)?;
            Ok(s(strval(&a[0])))
        }),
        ("toStrings", |_, a| {
            arity(a, 1)?;
            Ok(list(strslice(&a[0]).into_iter().map(s).collect()))
        }),
        ("split", |_, a| {
            arity(a, 2)?;
            let parts = go_split(arg_str(a, 1)?, arg_str(a, 0)?, -1);
            Ok(indexed_map(parts))
        }),
        ("splitn", |_, a| {
            arity(a, 3)?;
            let parts = go_split(arg_str(a, 2)?, arg_str(a, 0)?, arg_int(a, 1)?);
            Ok(indexed_map(parts))
        }),
        ("splitList", |_, a| {
            arity(a, 2)?;
            let parts = go_split(arg_str(a, 1)?, arg_str(a, 0)?, -1);
            count_ok(parts.len() as i128)?;
            Ok(list(parts.into_iter().map(s).collect()))
        }),
        ("join", |_, a| {
            arity(a, 2)?;
            let sep = arg_str(a, 0)?;
            Ok(s(strslice(&a[1]).join(sep)))
        }),
        ("sortAlpha", |_, a| {
            arity(a, 1)?;
            let mut v = match &a[0] {
                Value::List(_) => strslice(&a[0]),
                other => vec![strval(other)],
            };
            v.sort();
            Ok(list(v.into_iter().map(s).collect()))
        }),
        // numbers
        ("atoi", |_, a| {
            arity(a, 1)?;
            Ok(Value::Int(atoi(arg_str(a, 0)?)))
        }),
        ("int", |_, a| num1(a, |v| Value::Int(to_i64(v)))),
        ("int64", |_, a| num1(a, |v| Value::Int(to_i64(v)))),
        ("float64", |_, a| num1(a, |v| Value::Float(to_f64(v)))),
        ("add1", |_, a| {
            num1(a, |v| Value::Int(to_i64(v).wrapping_add(1)))
        }),
        ("add", |_, a| {
            Ok(Value::Int(
                a.iter().fold(0i64, |acc, v| acc.wrapping_add(to_i64(v))),
            ))
        }),
        ("sub", |_, a| {
            arity(a, 2)?;
            Ok(Value::Int(to_i64(&a[0]).wrapping_sub(to_i64(&a[1]))))
        }),
        ("mul", |_, a| {
            arity_min(a, 1)?;
            Ok(Value::Int(
                a[1..]
                    .iter()
                    .fold(to_i64(&a[0]), |acc, v| acc.wrapping_mul(to_i64(v))),
            ))
        }),
        ("div", |_, a| {
            arity(a, 2)?;
            let d = to_i64(&a[1]);
            if d == 0 {
                return err("runtime error: integer divide by zero");
            }
            Ok(Value::Int(to_i64(&a[0]).wrapping_div(d)))
        }),
        ("mod", |_, a| {
            arity(a, 2)?;
            let d = to_i64(&a[1]);
            if d == 0 {
                return err("runtime error: integer divide by zero");
            }
            Ok(Value::Int(to_i64(&a[0]).wrapping_rem(d)))
        }),
        ("max", max),
        ("biggest", max),
        ("min", min),
        ("ceil", |_, a| num1(a, |v| Value::Float(to_f64(v).ceil()))),
        ("floor", |_, a| num1(a, |v| Value::Float(to_f64(v).floor()))),
        ("round", round),
        ("randInt", |_, a| {
            arity(a, 2)?;
            let (lo, hi) = (arg_int(a, 0)?, arg_int(a, 1)?);
            if hi <= lo {
                return err("invalid argument to Intn");
            }
            Ok(Value::Int(rand::rng().random_range(lo..hi)))
        }),
        ("until", |_, a| {
            arity(a, 1)?;
            let n = arg_int(a, 0)?;
            let step = if n < 0 { -1 } else { 1 };
            Ok(int_list(until_step(0, n, step)?))
        }),
        ("untilStep", |_, a| {
            arity(a, 3)?;
            Ok(int_list(until_step(
                arg_int(a, 0)?,
                arg_int(a, 1)?,
                arg_int(a, 2)?,
            )?))
        }),
        ("seq", seq),
        // encodings and hashes
        ("b64enc", |_, a| {
            arity(a, 1)?;
            let raw = bytes_of(&a[0]);
            Ok(s(base64::engine::general_purpose::STANDARD.encode(raw)))
        }),
        ("b64dec", |_, a| {
            arity(a, 1)?;
            Ok(match go_b64_decode(&bytes::decode(arg_str(a, 0)?)) {
                Ok(raw) => sb(&raw),
                Err(pos) => s(format!("illegal base64 data at input byte {pos}")),
            })
        }),
        ("b32enc", |_, a| {
            arity(a, 1)?;
            Ok(s(b32_encode(&bytes_of(&a[0]))))
        }),
        ("b32dec", |_, a| {
            arity(a, 1)?;
            Ok(match b32_decode(&bytes::decode(arg_str(a, 0)?)) {
                Ok(raw) => sb(&raw),
                Err(pos) => s(format!("illegal base32 data at input byte {pos}")),
            })
        }),
        ("hexdec", |_, a| {
            arity(a, 1)?;
            Ok(match go_hex_decode(&bytes::decode(arg_str(a, 0)?)) {
                Ok(raw) => sb(&raw),
                Err(e) => s(e),
            })
        }),
        ("sha1sum", |_, a| {
            arity(a, 1)?;
            Ok(s(hex::encode(sha1::Sha1::digest(bytes_of(&a[0])))))
        }),
        ("sha256sum", |_, a| {
            arity(a, 1)?;
            Ok(s(hex::encode(sha2::Sha256::digest(bytes_of(&a[0])))))
        }),
        ("sha512sum", |_, a| {
            arity(a, 1)?;
            Ok(s(hex::encode(sha2::Sha512::digest(bytes_of(&a[0])))))
        }),
        ("adler32sum", |_, a| {
            arity(a, 1)?;
            Ok(s(adler32(&bytes_of(&a[0])).to_string()))
        }),
        ("bcrypt", |_, a| {
            arity(a, 1)?;
            Ok(s(bcrypt_hash(&bytes_of(&a[0]))))
        }),
        ("htpasswd", htpasswd),
        ("randBytes", |_, a| {
            arity(a, 1)?;
            let n = arg_int(a, 0)?;
            if n < 0 {
                return err("runtime error: makeslice: len out of range");
            }
            let n = alloc_ok(i128::from(n) * 2)? / 2;
            let mut buf = vec![0u8; n];
            rand::rng().fill(&mut buf[..]);
            Ok(s(base64::engine::general_purpose::STANDARD.encode(buf)))
        }),
        ("randAlphaNum", |_, a| {
            rand_from(
                a,
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
            )
        }),
        ("randAlpha", |_, a| {
            rand_from(a, b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        }),
        ("randNumeric", |_, a| rand_from(a, b"0123456789")),
        ("randAscii", |_, a| {
            let printable: Vec<u8> = (32u8..=126).collect();
            rand_from(a, &printable)
        }),
        ("shuffle", |_, a| {
            arity(a, 1)?;
            let mut chars: Vec<char> = arg_str(a, 0)?.chars().collect();
            chars.shuffle(&mut rand::rng());
            Ok(s(chars.into_iter().collect::<String>()))
        }),
        ("uuidv4", |_, a| {
            arity(a, 0)?;
            let mut b = [0u8; 16];
            rand::rng().fill(&mut b);
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let h = hex::encode(b);
            Ok(s(format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )))
        }),
        // defaults / flow
        ("default", |_, a| {
            arity_min(a, 1)?;
            let given = a.get(1);
            Ok(match given {
                Some(v) if !is_empty(v) => v.clone(),
                _ => a[0].clone(),
            })
        }),
        ("empty", |_, a| {
            arity(a, 1)?;
            Ok(Value::Bool(is_empty(&a[0])))
        }),
        ("coalesce", |_, a| {
            Ok(a.iter()
                .find(|v| !is_empty(v))
                .cloned()
                .unwrap_or(Value::Nil))
        }),
        ("all", |_, a| {
            Ok(Value::Bool(a.iter().all(|v| !is_empty(v))))
        }),
        ("any", |_, a| {
            Ok(Value::Bool(a.iter().any(|v| !is_empty(v))))
        }),
        ("compact", compact),
        ("mustCompact", compact),
        ("ternary", |_, a| {
            arity(a, 3)?;
            Ok(if arg_bool(a, 2)? {
                a[0].clone()
            } else {
                a[1].clone()
            })
        }),
        ("fail", fail),
        ("fromJson", |_, a| from_json(a).or(Ok(Value::Nil))),
        ("mustFromJson", |_, a| from_json(a)),
        ("toJson", |_, a| to_json(a, true).or(Ok(s("")))),
        ("mustToJson", |_, a| to_json(a, true)),
        ("toRawJson", |_, a| to_json(a, false)),
        ("mustToRawJson", |_, a| to_json(a, false)),
        ("toPrettyJson", |_, a| to_pretty_json(a).or(Ok(s("")))),
        ("mustToPrettyJson", to_pretty_json_ctx),
        ("deepCopy", |_, a| {
            arity(a, 1)?;
            Ok(a[0].clone())
        }),
        ("mustDeepCopy", |_, a| {
            arity(a, 1)?;
            Ok(a[0].clone())
        }),
        ("kindOf", |_, a| {
            arity(a, 1)?;
            Ok(s(kind_of(&a[0])))
        }),
        ("kindIs", |_, a| {
            arity(a, 2)?;
            Ok(Value::Bool(arg_str(a, 0)? == kind_of(&a[1])))
        }),
        ("deepEqual", |_, a| {
            arity(a, 2)?;
            Ok(Value::Bool(deep_equal(&a[0], &a[1])))
        }),
        ("now", |_, a| {
            arity(a, 0)?;
            Ok(s(go_now()))
        }),
        // paths
        ("base", |_, a| str1(a, path_base)),
        ("dir", |_, a| str1(a, path_dir)),
        ("clean", |_, a| str1(a, path_clean)),
        ("ext", |_, a| str1(a, path_ext)),
        ("isAbs", |_, a| {
            arity(a, 1)?;
            Ok(Value::Bool(arg_str(a, 0)?.starts_with('/')))
        }),
        // dicts
        ("dict", dict),
        ("get", |_, a| {
            arity(a, 2)?;
            let d = arg_map(a, 0)?;
            Ok(d.get(arg_str(a, 1)?).cloned().unwrap_or_else(|| s("")))
        }),
        ("set", |_, a| {
            arity(a, 3)?;
            let mut d = arg_map(a, 0)?.clone();
            d.insert(Arc::from(arg_str(a, 1)?), a[2].clone());
            Ok(map(d))
        }),
        ("unset", |_, a| {
            arity(a, 2)?;
            let mut d = arg_map(a, 0)?.clone();
            d.remove(arg_str(a, 1)?);
            Ok(map(d))
        }),
        ("hasKey", |_, a| {
            arity(a, 2)?;
            Ok(Value::Bool(arg_map(a, 0)?.contains_key(arg_str(a, 1)?)))
        }),
        ("pluck", |_, a| {
            arity_min(a, 1)?;
            let key = arg_str(a, 0)?;
            let mut out = Vec::new();
            for d in &a[1..] {
                if let Value::Map(m) = d
                    && let Some(v) = m.get(key)
                {
                    out.push(v.clone());
                }
            }
            Ok(list(out))
        }),
        ("keys", |_, a| {
            let mut out = Vec::new();
            for i in 0..a.len() {
                for k in arg_map(a, i)?.keys() {
                    out.push(Value::String(Arc::clone(k)));
                }
            }
            Ok(list(out))
        }),
        ("values", |_, a| {
            arity(a, 1)?;
            Ok(list(arg_map(a, 0)?.values().cloned().collect()))
        }),
        ("pick", |_, a| {
            arity_min(a, 1)?;
            let d = arg_map(a, 0)?;
            let mut out = BTreeMap::new();
            for k in &a[1..] {
                let k = match k {
                    Value::String(k) => k,
                    _ => return err("wrong type for value; expected string"),
                };
                if let Some(v) = d.get(k.as_ref()) {
                    out.insert(Arc::clone(k), v.clone());
                }
            }
            Ok(map(out))
        }),
        ("omit", |_, a| {
            arity_min(a, 1)?;
            let mut d = arg_map(a, 0)?.clone();
            for k in &a[1..] {
                d.remove(strval(k).as_str());
            }
            Ok(map(d))
        }),
        ("merge", |_, a| merge(a, false)),
        ("mustMerge", |_, a| merge(a, false)),
        ("mergeOverwrite", |_, a| merge(a, true)),
        ("mustMergeOverwrite", |_, a| merge(a, true)),
        ("dig", dig),
        // lists
        ("list", |_, a| Ok(list(a.to_vec()))),
        ("tuple", |_, a| Ok(list(a.to_vec()))),
        ("append", push),
        ("push", push),
        ("mustAppend", push),
        ("mustPush", push),
        ("prepend", prepend),
        ("mustPrepend", prepend),
        ("first", |_, a| {
            list_pick(a, "first", |l| l.first().cloned())
        }),
        ("mustFirst", |_, a| {
            list_pick(a, "first", |l| l.first().cloned())
        }),
        ("last", |_, a| list_pick(a, "last", |l| l.last().cloned())),
        ("mustLast", |_, a| {
            list_pick(a, "last", |l| l.last().cloned())
        }),
        ("rest", |_, a| {
            list_pick(a, "rest", |l| {
                (!l.is_empty()).then(|| list(l[1..].to_vec()))
            })
        }),
        ("mustRest", |_, a| {
            list_pick(a, "rest", |l| {
                (!l.is_empty()).then(|| list(l[1..].to_vec()))
            })
        }),
        ("initial", |_, a| {
            list_pick(a, "initial", |l| {
                (!l.is_empty()).then(|| list(l[..l.len() - 1].to_vec()))
            })
        }),
        ("mustInitial", |_, a| {
            list_pick(a, "initial", |l| {
                (!l.is_empty()).then(|| list(l[..l.len() - 1].to_vec()))
            })
        }),
        ("reverse", |_, a| {
            list_pick(a, "reverse", |l| {
                Some(list(l.iter().rev().cloned().collect()))
            })
        }),
        ("mustReverse", |_, a| {
            list_pick(a, "reverse", |l| {
                Some(list(l.iter().rev().cloned().collect()))
            })
        }),
        ("uniq", uniq),
        ("mustUniq", uniq),
        ("without", without),
        ("mustWithout", without),
        ("has", has),
        ("mustHas", has),
        ("slice", slice),
        ("mustSlice", slice),
        ("concat", |_, a| {
            let mut out = Vec::new();
            for v in a {
                match v {
                    Value::List(l) => {
                        count_ok((out.len() + l.len()) as i128)?;
                        out.extend(l.iter().cloned());
                    }
                    _ => return err(format!("Cannot concat type {} as list", kind_of(v))),
                }
            }
            Ok(list(out))
        }),
        ("chunk", chunk),
        ("mustChunk", chunk),
        // regex
        ("regexMatch", |_, a| re_match(a)),
        ("mustRegexMatch", |_, a| re_match(a)),
        ("regexFindAll", |_, a| re_find_all(a)),
        ("mustRegexFindAll", |_, a| re_find_all(a)),
        ("regexFind", |_, a| re_find(a)),
        ("mustRegexFind", |_, a| re_find(a)),
        ("regexReplaceAll", |_, a| re_replace(a, false)),
        ("mustRegexReplaceAll", |_, a| re_replace(a, false)),
        ("regexReplaceAllLiteral", |_, a| re_replace(a, true)),
        ("mustRegexReplaceAllLiteral", |_, a| re_replace(a, true)),
        ("regexSplit", |_, a| re_split(a)),
        ("mustRegexSplit", |_, a| re_split(a)),
        ("regexQuoteMeta", |_, a| str1(a, regex::escape)),
    ];
    for (name, func) in f {
        m.insert(name, *func);
    }
}

fn str1(a: &[Value], f: impl Fn(&str) -> String) -> FnResult {
    arity(a, 1)?;
    Ok(s(f(arg_str(a, 0)?)))
}

fn num1(a: &[Value], f: impl Fn(&Value) -> Value) -> FnResult {
    arity(a, 1)?;
    Ok(f(&a[0]))
}

fn go_len(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 1)?;
    match &a[0] {
        Value::String(x) => Ok(Value::Int(bytes::byte_len(x) as i64)),
        Value::List(l) => Ok(Value::Int(l.len() as i64)),
        Value::Map(m) => Ok(Value::Int(m.len() as i64)),
        v => err(format!("len of type {}", super::conv::go_type(v))),
    }
}

fn delegate(name: &str, a: &[Value]) -> FnResult {
    builtin_call(name, a)
}

fn go_printf(_: &Ctx, a: &[Value]) -> FnResult {
    arity_min(a, 1)?;
    let fmt = arg_str(a, 0)?;
    let directives = fmt.matches('%').count() as i128;
    let mut largest = 0usize;
    for v in &a[1..] {
        let mut budget = MAX_VALUE_BYTES;
        super::value_stats(v, 0, &mut budget);
        largest = largest.max(MAX_VALUE_BYTES - budget);
    }
    alloc_ok(fmt.len() as i128 + directives * (2 * 65_536 + largest as i128 * 2))?;
    builtin_call("printf", a)
}

fn trim_all(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 2)?;
    let cut = arg_str(a, 0)?;
    Ok(s(arg_str(a, 1)?.trim_matches(|c| cut.contains(c))))
}

/// Go `strings.Title` (deprecated but what sprig uses): upper-case letters that
/// follow a non-letter/digit/underscore/apostrophe.
fn title(x: &str) -> String {
    let mut prev_sep = true;
    let mut out = String::with_capacity(x.len());
    for c in x.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_' || c == '\'');
        if c.is_ascii() {
            prev_sep = !(c.is_ascii_alphanumeric() || c == '_') && c != '\'';
            if c.is_whitespace() {
                prev_sep = true;
            }
        }
    }
    out
}

fn untitle(x: &str) -> String {
    // goutils.Uncapitalize: lower-case the first letter of each whitespace-separated word.
    let mut out = String::with_capacity(x.len());
    let mut at_start = true;
    for c in x.chars() {
        if c.is_whitespace() {
            at_start = true;
            out.push(c);
        } else if at_start {
            out.extend(c.to_lowercase());
            at_start = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// sprig `substr`: byte offsets like Go; out-of-range offsets are a runtime error.
fn substr(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 3)?;
    let (start, end, x) = (arg_int(a, 0)?, arg_int(a, 1)?, arg_str(a, 2)?);
    let raw = bytes::decode(x);
    let len = raw.len() as i64;
    let (lo, hi) = if start < 0 {
        (0, end)
    } else if end < 0 || end > len {
        (start, len)
    } else {
        (start, end)
    };
    if lo < 0 || hi < lo || hi > len {
        return err(format!(
            "runtime error: slice bounds out of range [{lo}:{hi}]"
        ));
    }
    Ok(sb(&raw[lo as usize..hi as usize]))
}

fn trunc(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 2)?;
    let (c, x) = (arg_int(a, 0)?, arg_str(a, 1)?);
    let raw = bytes::decode(x);
    let len = raw.len() as i64;
    if c < 0 && len + c > 0 {
        return Ok(sb(&raw[(len + c) as usize..]));
    }
    if c >= 0 && len > c {
        return Ok(sb(&raw[..c as usize]));
    }
    Ok(s(x))
}

/// goutils.Abbreviate(s, width) as sprig calls it (width >= 4).
fn abbrev(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 2)?;
    let (w, x) = (arg_int(a, 0)?, arg_str(a, 1)?);
    if w < 4 {
        return Ok(s(x));
    }
    let len = x.chars().count() as i64;
    if len <= w {
        return Ok(s(x));
    }
    let keep: String = x.chars().take((w - 3) as usize).collect();
    Ok(s(format!("{keep}...")))
}

fn indent(a: &[Value], newline: bool) -> FnResult {
    arity(a, 2)?;
    let (n, x) = (arg_int(a, 0)?, arg_str(a, 1)?);
    let n = n.max(0);
    let lines = x.matches('\n').count() as i128 + 1;
    alloc_ok(x.len() as i128 + lines * i128::from(n) + 1)?;
    let pad = " ".repeat(n as usize);
    let body = format!("{pad}{}", x.replace('\n', &format!("\n{pad}")));
    Ok(s(if newline { format!("\n{body}") } else { body }))
}

/// Go `strings.Replace(src, old, new, -1)` (empty `old` inserts between runes).
fn go_replace(src: &str, old: &str, new: &str) -> String {
    if old.is_empty() {
        let mut out = String::from(new);
        for c in src.chars() {
            out.push(c);
            out.push_str(new);
        }
        return out;
    }
    src.replace(old, new)
}

/// Go `strings.SplitN` (n < 0: all; n == 0: nil).
fn go_split(x: &str, sep: &str, n: i64) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    if sep.is_empty() {
        let chars: Vec<String> = x.chars().map(String::from).collect();
        if n > 0 && (n as usize) < chars.len() {
            let head: Vec<String> = chars[..(n as usize - 1)].to_vec();
            let tail: String = chars[(n as usize - 1)..].concat();
            return head.into_iter().chain(std::iter::once(tail)).collect();
        }
        return chars;
    }
    if n > 0 {
        x.splitn(n as usize, sep).map(str::to_owned).collect()
    } else {
        x.split(sep).map(str::to_owned).collect()
    }
}

fn indexed_map(parts: Vec<String>) -> Value {
    map(parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| (Arc::from(format!("_{i}").as_str()), s(p)))
        .collect())
}

/// sprig `strslice`.
fn strslice(v: &Value) -> Vec<String> {
    match v {
        Value::List(l) => l
            .iter()
            .filter(|x| !matches!(x, Value::Nil))
            .map(strval)
            .collect(),
        Value::Nil => Vec::new(),
        other => vec![strval(other)],
    }
}

fn max(_: &Ctx, a: &[Value]) -> FnResult {
    arity_min(a, 1)?;
    Ok(Value::Int(a.iter().map(to_i64).max().unwrap_or(0)))
}

fn min(_: &Ctx, a: &[Value]) -> FnResult {
    arity_min(a, 1)?;
    Ok(Value::Int(a.iter().map(to_i64).min().unwrap_or(0)))
}

/// sprig `round(value, precision, roundOn=.5)`.
fn round(_: &Ctx, a: &[Value]) -> FnResult {
    arity_min(a, 2)?;
    let val = to_f64(&a[0]);
    let places = arg_int(a, 1)?.clamp(-308, 308) as i32;
    let round_on = a.get(2).map(to_f64).unwrap_or(0.5);
    let pow = 10f64.powi(places);
    let digit = pow * val;
    let div = digit.fract();
    let r = if div >= round_on {
        digit.ceil()
    } else {
        digit.floor()
    };
    Ok(Value::Float(r / pow))
}

fn until_step(start: i64, stop: i64, step: i64) -> Result<Vec<i64>, FnError> {
    let mut v = Vec::new();
    if step == 0 {
        return Ok(v);
    }
    let n = if stop < start {
        if step >= 0 {
            return Ok(v);
        }
        (i128::from(start) - i128::from(stop) + i128::from(-step) - 1) / i128::from(-step)
    } else {
        if step <= 0 {
            return Ok(v);
        }
        (i128::from(stop) - i128::from(start) + i128::from(step) - 1) / i128::from(step)
    };
    let n = count_ok(n)?;
    v.reserve(n);
    let mut i = start;
    for _ in 0..n {
        v.push(i);
        i = i.wrapping_add(step);
    }
    Ok(v)
}

fn int_list(v: Vec<i64>) -> Value {
    list(v.into_iter().map(Value::Int).collect())
}

fn seq(_: &Ctx, a: &[Value]) -> FnResult {
    let p: Vec<i64> = (0..a.len())
        .map(|i| arg_int(a, i))
        .collect::<Result<_, _>>()?;
    let mut inc = 1;
    let v = match p.as_slice() {
        [] => return Ok(s("")),
        [end] => {
            let start = 1;
            if *end < start {
                inc = -1;
            }
            until_step(start, end.wrapping_add(inc), inc)?
        }
        [start, end] => {
            if end < start {
                inc = -1;
            }
            until_step(*start, end.wrapping_add(inc), inc)?
        }
        [start, step, end] => {
            if end < start {
                inc = -1;
                if *step > 0 {
                    return Ok(s(""));
                }
            }
            until_step(*start, end.wrapping_add(inc), *step)?
        }
        _ => return err("too many arguments to seq"),
    };
    Ok(s(v
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(" ")))
}

/// Go's `base64.StdEncoding.DecodeString`; `Err(offset)` mirrors CorruptInputError.
pub(super) fn go_b64_decode(src: &[u8]) -> Result<Vec<u8>, usize> {
    fn val(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let nl = |c: u8| c == b'\n' || c == b'\r';
    let mut out = Vec::with_capacity(src.len() / 4 * 3);
    let mut si = 0usize;
    loop {
        let mut dbuf = [0u8; 4];
        let mut dlen = 4usize;
        let mut j = 0usize;
        let mut trailing: Option<usize> = None;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return Ok(out);
                }
                return Err(si - j);
            }
            let c = src[si];
            si += 1;
            if let Some(v) = val(c) {
                dbuf[j] = v;
                j += 1;
                continue;
            }
            if nl(c) {
                continue;
            }
            if c != b'=' {
                return Err(si - 1);
            }
            match j {
                0 | 1 => return Err(si - 1),
                2 => {
                    while si < src.len() && nl(src[si]) {
                        si += 1;
                    }
                    if si == src.len() {
                        return Err(src.len());
                    }
                    if src[si] != b'=' {
                        return Err(si - 1);
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && nl(src[si]) {
                si += 1;
            }
            if si < src.len() {
                trailing = Some(si);
            }
            dlen = j;
            break;
        }
        let v = (u32::from(dbuf[0]) << 18)
            | (u32::from(dbuf[1]) << 12)
            | (u32::from(dbuf[2]) << 6)
            | u32::from(dbuf[3]);
        let b = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&b[..dlen - 1]);
        if let Some(pos) = trailing {
            return Err(pos);
        }
        if dlen < 4 {
            return Ok(out);
        }
    }
}

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn b32_encode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len().div_ceil(5) * 8);
    for chunk in raw.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let v = buf.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let chars = match chunk.len() {
            1 => 2,
            2 => 4,
            3 => 5,
            4 => 7,
            _ => 8,
        };
        for i in 0..8 {
            if i < chars {
                out.push(B32[((v >> (35 - i * 5)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Go's `base32.StdEncoding.DecodeString` (newlines ignored; strict padding).
fn b32_decode(src: &[u8]) -> Result<Vec<u8>, usize> {
    let mut idx = Vec::with_capacity(src.len());
    for (i, &c) in src.iter().enumerate() {
        if c != b'\n' && c != b'\r' {
            idx.push((i, c));
        }
    }
    if idx.len() % 8 != 0 {
        let pos = idx.len() - idx.len() % 8;
        return Err(idx.get(pos).map(|p| p.0).unwrap_or(src.len()));
    }
    let mut out = Vec::new();
    for (q, quantum) in idx.chunks(8).enumerate() {
        let last = q == idx.len() / 8 - 1;
        let mut v = 0u64;
        let mut n = 0usize;
        for (k, &(pos, c)) in quantum.iter().enumerate() {
            if c == b'=' {
                let pads = 8 - k;
                if !last
                    || !matches!(pads, 6 | 4 | 3 | 1)
                    || quantum[k..].iter().any(|&(_, c)| c != b'=')
                {
                    return Err(pos);
                }
                break;
            }
            let Some(d) = B32.iter().position(|&x| x == c) else {
                return Err(pos);
            };
            v |= (d as u64) << (35 - k * 5);
            n += 1;
        }
        let bytes_out = match n {
            8 => 5,
            7 => 4,
            5 => 3,
            4 => 2,
            2 => 1,
            _ => 0,
        };
        for i in 0..bytes_out {
            out.push((v >> (32 - i * 8)) as u8);
        }
    }
    Ok(out)
}

/// Go's `hex.DecodeString`, error text as `err.Error()`.
fn go_hex_decode(src: &[u8]) -> Result<Vec<u8>, String> {
    fn val(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let bad = |c: u8| {
        let ch = char::from(c);
        let quoted = super::conv::go_quote(&ch.to_string());
        if ch.is_control() {
            format!("encoding/hex: invalid byte: U+{:04X}", c)
        } else {
            format!(
                "encoding/hex: invalid byte: U+{:04X} '{}'",
                c,
                &quoted[1..quoted.len() - 1]
            )
        }
    };
    let mut out = Vec::with_capacity(src.len() / 2);
    let mut j = 1;
    while j < src.len() {
        let (p, q) = (src[j - 1], src[j]);
        let a = val(p).ok_or_else(|| bad(p))?;
        let b = val(q).ok_or_else(|| bad(q))?;
        out.push((a << 4) | b);
        j += 2;
    }
    if src.len() % 2 == 1 {
        let c = src[j - 1];
        if val(c).is_none() {
            return Err(bad(c));
        }
        return Err("encoding/hex: odd length hex string".to_owned());
    }
    Ok(out)
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

fn bcrypt_hash(pw: &[u8]) -> String {
    // Go's bcrypt.GenerateFromPassword (cost 10, "$2a$"); it rejects > 72 bytes.
    if pw.len() > 72 {
        return "failed to encrypt string with bcrypt: bcrypt: password length exceeds 72 bytes"
            .to_owned();
    }
    match bcrypt::hash_with_result(pw, 10) {
        Ok(h) => h.format_for_version(bcrypt::Version::TwoA),
        Err(e) => format!("failed to encrypt string with bcrypt: {e}"),
    }
}

fn htpasswd(_: &Ctx, a: &[Value]) -> FnResult {
    arity_min(a, 2)?;
    let user = arg_str(a, 0)?;
    let pw = arg_str(a, 1)?;
    let algo = match a.get(2) {
        Some(Value::String(x)) => x.to_string(),
        _ => String::new(),
    };
    if user.contains(':') {
        return Ok(s(format!("invalid username: {user}")));
    }
    let pwb = bytes::decode(pw);
    if algo == "sha" {
        let sum = sha1::Sha1::digest(&pwb);
        return Ok(s(format!(
            "{user}:{{SHA}}{}",
            base64::engine::general_purpose::STANDARD.encode(sum)
        )));
    }
    Ok(s(format!("{user}:{}", bcrypt_hash(&pwb))))
}

fn rand_from(a: &[Value], alphabet: &[u8]) -> FnResult {
    arity(a, 1)?;
    let n = arg_int(a, 0)?;
    let n = alloc_ok(i128::from(n))?;
    let mut rng = rand::rng();
    let out: String = (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect();
    Ok(s(out))
}

fn compact(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 1)?;
    match &a[0] {
        Value::List(l) => Ok(list(l.iter().filter(|v| !is_empty(v)).cloned().collect())),
        v => err(format!("Cannot compact on type {}", kind_of(v))),
    }
}

fn fail(ctx: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 1)?;
    let msg = arg_str(a, 0)?;
    // A message that is literal template text is not secret; anything computed is hidden.
    if !msg.is_empty() && ctx.source.contains(msg) {
        err(msg.to_owned())
    } else {
        err("[message computed from data redacted]")
    }
}

fn from_json(a: &[Value]) -> FnResult {
    arity(a, 1)?;
    let raw = bytes::decode(arg_str(a, 0)?);
    match serde_json::from_slice::<serde_json::Value>(&raw) {
        Ok(v) => Ok(super::conv::from_serde_json(&v, true)),
        Err(_) => err("invalid JSON input"),
    }
}

fn to_json(a: &[Value], html: bool) -> FnResult {
    arity(a, 1)?;
    let mut out = String::new();
    super::conv::to_json(&a[0], html, &mut out)?;
    Ok(s(out))
}

fn to_pretty_json(a: &[Value]) -> FnResult {
    arity(a, 1)?;
    let mut out = String::new();
    super::conv::to_json_pretty(&a[0], 0, &mut out)?;
    Ok(s(out))
}

fn to_pretty_json_ctx(_: &Ctx, a: &[Value]) -> FnResult {
    to_pretty_json(a)
}

fn deep_equal(x: &Value, y: &Value) -> bool {
    match (x, y) {
        (Value::Nil, Value::Nil) => true,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::Uint(a), Value::Uint(b)) => a == b,
        (Value::Float(a), Value::Float(b)) => a == b,
        (Value::String(a), Value::String(b)) => a == b,
        (Value::List(a), Value::List(b)) => {
            a.len() == b.len() && a.iter().zip(b.iter()).all(|(p, q)| deep_equal(p, q))
        }
        (Value::Map(a), Value::Map(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| deep_equal(v, w)))
        }
        _ => false,
    }
}

/// Go's `time.Now().String()` in UTC, with the monotonic clock reading Go appends.
fn go_now() -> String {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let mono = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64();
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let nanos = d.subsec_nanos();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, mo, da) = civil_from_days(days);
    let mut frac = format!(".{nanos:09}");
    while frac.ends_with('0') {
        frac.pop();
    }
    if frac == "." {
        frac.clear();
    }
    format!(
        "{y:04}-{mo:02}-{da:02} {:02}:{:02}:{:02}{frac} +0000 UTC m=+{mono:.9}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Go `path.Clean`.
fn path_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_owned();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

fn path_base(p: &str) -> String {
    if p.is_empty() {
        return ".".to_owned();
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/".to_owned();
    }
    t.rsplit('/').next().unwrap_or(t).to_owned()
}

fn path_dir(p: &str) -> String {
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    path_clean(dir)
}

fn path_ext(p: &str) -> String {
    for (i, c) in p.char_indices().rev() {
        if c == '/' {
            break;
        }
        if c == '.' {
            return p[i..].to_owned();
        }
    }
    String::new()
}

fn arg_map(a: &[Value], i: usize) -> Result<&BTreeMap<Arc<str>, Value>, FnError> {
    match a.get(i) {
        Some(Value::Map(m)) => Ok(m),
        Some(v) => err(format!(
            "wrong type for value; expected map[string]interface {{}}; got {}",
            super::conv::go_type(v)
        )),
        None => err("missing argument"),
    }
}

fn dict(_: &Ctx, a: &[Value]) -> FnResult {
    let mut out = BTreeMap::new();
    for pair in a.chunks(2) {
        let k = strval(&pair[0]);
        let v = pair.get(1).cloned().unwrap_or_else(|| s(""));
        out.insert(Arc::from(k.as_str()), v);
    }
    Ok(map(out))
}

fn merge_into(
    dst: &mut BTreeMap<Arc<str>, Value>,
    src: &BTreeMap<Arc<str>, Value>,
    overwrite: bool,
) {
    for (k, v) in src {
        match (dst.get(k), v) {
            (Some(Value::Map(d)), Value::Map(sv)) => {
                let mut nd = (**d).clone();
                merge_into(&mut nd, sv, overwrite);
                dst.insert(Arc::clone(k), map(nd));
            }
            (Some(existing), _) => {
                // mergo: a non-empty source fills an empty destination, or overwrites.
                if !is_empty(v) && (overwrite || is_empty(existing)) {
                    dst.insert(Arc::clone(k), v.clone());
                }
            }
            (None, _) => {
                dst.insert(Arc::clone(k), v.clone());
            }
        }
    }
}

fn merge(a: &[Value], overwrite: bool) -> FnResult {
    arity_min(a, 1)?;
    let mut dst = arg_map(a, 0)?.clone();
    for i in 1..a.len() {
        let src = arg_map(a, i)?;
        merge_into(&mut dst, src, overwrite);
    }
    Ok(map(dst))
}

fn dig(_: &Ctx, a: &[Value]) -> FnResult {
    arity_min(a, 3)?;
    let n = a.len();
    let dict = arg_map(a, n - 1)?;
    let default = a[n - 2].clone();
    let keys: Vec<String> = a[..n - 2].iter().map(strval).collect();
    let mut cur: &BTreeMap<Arc<str>, Value> = dict;
    for (i, k) in keys.iter().enumerate() {
        match cur.get(k.as_str()) {
            None => return Ok(default),
            Some(v) if i == keys.len() - 1 => return Ok(v.clone()),
            Some(Value::Map(m)) => cur = m,
            Some(_) => return err("interface conversion: value is not map[string]interface {}"),
        }
    }
    Ok(default)
}

fn arg_list<'a>(a: &'a [Value], i: usize, what: &str) -> Result<&'a [Value], FnError> {
    match a.get(i) {
        Some(Value::List(l)) => Ok(l),
        Some(v) => err(format!("Cannot {what} on type {}", kind_of(v))),
        None => err("missing argument"),
    }
}

fn push(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 2)?;
    let l = arg_list(a, 0, "push")?;
    count_ok(l.len() as i128 + 1)?;
    let mut v = l.to_vec();
    v.push(a[1].clone());
    Ok(list(v))
}

fn prepend(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 2)?;
    let l = arg_list(a, 0, "prepend")?;
    count_ok(l.len() as i128 + 1)?;
    let mut v = vec![a[1].clone()];
    v.extend(l.iter().cloned());
    Ok(list(v))
}

fn list_pick(a: &[Value], what: &str, f: impl Fn(&[Value]) -> Option<Value>) -> FnResult {
    arity(a, 1)?;
    let l = match &a[0] {
        Value::List(l) => l,
        v => return err(format!("Cannot find {what} on type {}", kind_of(v))),
    };
    Ok(f(l).unwrap_or(Value::Nil))
}

fn uniq(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 1)?;
    let l = arg_list(a, 0, "uniq")?;
    let mut out: Vec<Value> = Vec::new();
    for v in l {
        if !out.iter().any(|x| deep_equal(x, v)) {
            out.push(v.clone());
        }
    }
    Ok(list(out))
}

fn without(_: &Ctx, a: &[Value]) -> FnResult {
    arity_min(a, 1)?;
    let l = arg_list(a, 0, "without")?;
    Ok(list(
        l.iter()
            .filter(|v| !a[1..].iter().any(|x| deep_equal(x, v)))
            .cloned()
            .collect(),
    ))
}

fn has(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 2)?;
    match &a[1] {
        Value::List(l) => Ok(Value::Bool(l.iter().any(|x| deep_equal(x, &a[0])))),
        Value::Nil => Ok(Value::Bool(false)),
        v => err(format!("Cannot find has on type {}", kind_of(v))),
    }
}

/// sprig `slice list [start [end]]`.
fn slice(_: &Ctx, a: &[Value]) -> FnResult {
    arity_min(a, 1)?;
    let l = arg_list(a, 0, "slice")?;
    let len = l.len() as i64;
    let start = if a.len() > 1 { to_i64(&a[1]) } else { 0 };
    let end = if a.len() > 2 { to_i64(&a[2]) } else { len };
    if start < 0 || end < start || end > len {
        return err(format!(
            "runtime error: slice bounds out of range [{start}:{end}]"
        ));
    }
    Ok(list(l[start as usize..end as usize].to_vec()))
}

fn chunk(_: &Ctx, a: &[Value]) -> FnResult {
    arity(a, 2)?;
    let size = arg_int(a, 0)?;
    let l = arg_list(a, 1, "chunk")?;
    if size <= 0 {
        return err("runtime error: chunk size must be positive");
    }
    Ok(list(
        l.chunks(size as usize).map(|c| list(c.to_vec())).collect(),
    ))
}

fn re(pat: &str) -> Result<regex::Regex, FnError> {
    regex::RegexBuilder::new(pat)
        .size_limit(4 << 20)
        .build()
        .or_else(|_| err("error parsing regexp"))
}

fn re_match(a: &[Value]) -> FnResult {
    arity(a, 2)?;
    Ok(Value::Bool(re(arg_str(a, 0)?)?.is_match(arg_str(a, 1)?)))
}

fn re_find_all(a: &[Value]) -> FnResult {
    arity(a, 3)?;
    let r = re(arg_str(a, 0)?)?;
    let x = arg_str(a, 1)?;
    let n = arg_int(a, 2)?;
    let it = r.find_iter(x).map(|m| s(m.as_str()));
    let v: Vec<Value> = if n < 0 {
        it.take(MAX_LIST_LEN + 1).collect()
    } else {
        it.take(n as usize).collect()
    };
    Ok(list(v))
}

fn re_find(a: &[Value]) -> FnResult {
    arity(a, 2)?;
    let r = re(arg_str(a, 0)?)?;
    Ok(s(r.find(arg_str(a, 1)?).map(|m| m.as_str()).unwrap_or("")))
}

fn re_replace(a: &[Value], literal: bool) -> FnResult {
    arity(a, 3)?;
    let r = re(arg_str(a, 0)?)?;
    let (x, repl) = (arg_str(a, 1)?, arg_str(a, 2)?);
    let n = r.find_iter(x).count() as i128;
    alloc_ok(x.len() as i128 + n * (repl.len() as i128 + 16) * if literal { 1 } else { 8 })?;
    Ok(s(if literal {
        r.replace_all(x, regex::NoExpand(repl)).into_owned()
    } else {
        r.replace_all(x, repl).into_owned()
    }))
}

fn re_split(a: &[Value]) -> FnResult {
    arity(a, 3)?;
    let r = re(arg_str(a, 0)?)?;
    let x = arg_str(a, 1)?;
    let n = arg_int(a, 2)?;
    if n == 0 {
        return Ok(list(Vec::new()));
    }
    if arg_str(a, 0)?.is_empty() && !x.is_empty() {
        // Go: empty pattern splits into characters.
        let chars: Vec<Value> = x.chars().map(|c| s(c.to_string())).collect();
        count_ok(chars.len() as i128)?;
        return Ok(list(chars));
    }
    let parts: Vec<Value> = if n > 0 {
        r.splitn(x, n as usize).map(s).collect()
    } else {
        r.split(x).take(MAX_LIST_LEN + 1).map(s).collect()
    };
    Ok(list(parts))
}
