//! Go `text/template` rendering (ESO template engine v2) for `spec.target.template`,
//! `templateFrom`, PushSecret templates and rewrite `transform`.
//!
//! # Engine
//! Built on [`gotmpl`] (a Rust port of Go's `text/template` with Go-compatible output,
//! `missingkey=error`, closures as functions, a range-iteration budget, recursion and
//! printf-width caps). It was chosen over `gtmpl-ng` after a spike: `gtmpl-ng` renders a
//! missing key as `<no value>` (no `missingkey=error`, which ESO relies on) and only takes
//! bare `fn` pointers as custom functions, so per-render state (deadline, call budget,
//! redaction) could not be threaded through; its sprig set would have needed re-checking
//! function by function anyway. The sprig and ESO functions here are our own code.
//!
//! # Bytes
//! Values are raw secret bytes (Go strings) but `gotmpl` strings are UTF-8. Every byte
//! that is not part of valid UTF-8 travels as one private-use code point
//! (`U+10FF00 + byte`, see [`bytes`](self::bytes)); genuine code points of that block are
//! escaped too, so the mapping is lossless and is undone on output. Byte-oriented
//! functions (`b64enc`, `sha256sum`, `pkcs12*`, `rsaDecrypt`, `len`...) decode first and
//! re-encode their binary results. Limits: character-oriented text functions
//! (`upper`, `title`, `trunc`, `substr`, `printf` `%x`/`%q`...) treat one invalid byte as
//! one character and leave it unchanged where Go would sometimes substitute U+FFFD or
//! count bytes differently; valid UTF-8 behaves like Go.
//!
//! # Supported functions
//! Go builtins (`and or not len index slice print printf println eq ne lt le gt ge html
//! js urlquery call`), most of sprig v3 (strings, lists, dicts, defaults, math on ints,
//! encodings, hashes, regex, JSON, `bcrypt`/`htpasswd`, random strings, `uuidv4`, `now`,
//! `date`/`unixEpoch` over `now`) and all of ESO's own functions (`pkcs12key(Pass)`,
//! `pkcs12cert(Pass)`, `pemToPkcs12(Pass)`, `fullPemToPkcs12(Pass)`,
//! `pemTruststoreToPKCS12(Pass)`, `filterPEM`, `filterCertChain`, `certSANs`,
//! `jwkPublicKeyPem`, `jwkPrivateKeyPem` (RSA, EC P-256/384/521, Ed25519), `toYaml`,
//! `fromYaml`, `rsaDecrypt`). [`UNSUPPORTED_FUNCTIONS`] lists what is not implemented;
//! using one fails at parse time with `function "x" not defined`. `env`, `expandenv` and
//! `getHostByName` are excluded on purpose, as in ESO. Known divergence: sprig's
//! `set`/`unset` mutate a dict in place in Go; here values are immutable, so they return
//! the updated dict (`$d = set $d "k" "v"` works, a discarded `$_ := set $d ...` does not).
//!
//! # Hostile input
//! Bounded: template source ([`MAX_SOURCE_BYTES`]), output ([`MAX_OUTPUT_BYTES`], the
//! Secret size limit), any function result or argument set ([`MAX_VALUE_BYTES`], list
//! length [`MAX_LIST_LEN`], nesting [`MAX_VALUE_DEPTH`]), `range` iterations
//! ([`MAX_RANGE_ITERS`]), function calls ([`MAX_FUNC_CALLS`]) and wall time
//! ([`MAX_RENDER_TIME`]); allocating functions (`repeat`, `until`, `seq`, `indent`,
//! `rand*`...) check their size before allocating. Exceeding one gives
//! [`TemplateError::Limit`].
//!
//! # Errors and secrecy
//! Error messages never carry secret values: function errors are written without their
//! inputs, and every message is scrubbed of each input value (and of `fail` messages that
//! are not literal text of the template) before it is returned.

mod bytes;
mod conv;
mod eso;
mod sprig;
#[cfg(test)]
mod tests;
mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gotmpl::{MissingKey, Template, Value};

use self::conv::{FnError, FnResult};

/// Template input: `.KEY` = raw secret bytes.
pub type TemplateValues = BTreeMap<String, Vec<u8>>;

/// Largest rendered output (the Kubernetes Secret size limit).
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Largest template source.
pub const MAX_SOURCE_BYTES: usize = 256 * 1024;
/// Largest value a function may take (all arguments together) or return.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;
/// Longest list a function may return.
pub const MAX_LIST_LEN: usize = 100_000;
/// Deepest list/dict nesting a function may return.
pub const MAX_VALUE_DEPTH: usize = 64;
/// Total `range` iterations per render.
pub const MAX_RANGE_ITERS: u64 = 1_000_000;
/// Total function calls per render.
pub const MAX_FUNC_CALLS: u64 = 1_000_000;
/// Wall-time budget per render.
pub const MAX_RENDER_TIME: Duration = Duration::from_secs(5);

/// sprig v3 / ESO functions that are not implemented (a template using one fails to
/// parse with `function "NAME" not defined`).
pub const UNSUPPORTED_FUNCTIONS: &[&str] = &[
    // dates (only `now`, `date`, `unixEpoch` over `now` are supported)
    "ago",
    "date_in_zone",
    "dateInZone",
    "date_modify",
    "dateModify",
    "must_date_modify",
    "mustDateModify",
    "duration",
    "durationRound",
    "htmlDate",
    "htmlDateInZone",
    "toDate",
    "mustToDate",
    // strings whose Go library semantics were not reproduced
    "abbrevboth",
    "initials",
    "swapcase",
    "snakecase",
    "camelcase",
    "kebabcase",
    "wrap",
    "wrapWith",
    // decimal float arithmetic (shopspring/decimal)
    "add1f",
    "addf",
    "subf",
    "divf",
    "mulf",
    "maxf",
    "minf",
    "toDecimal",
    // reflection on Go types
    "typeOf",
    "typeIs",
    "typeIsLike",
    // crypto / certificates
    "genPrivateKey",
    "derivePassword",
    "buildCustomCert",
    "genCA",
    "genCAWithKey",
    "genSelfSignedCert",
    "genSelfSignedCertWithKey",
    "genSignedCert",
    "genSignedCertWithKey",
    "encryptAES",
    "decryptAES",
    // misc
    "semver",
    "semverCompare",
    "urlParse",
    "urlJoin",
    "osBase",
    "osClean",
    "osDir",
    "osExt",
    "osIsAbs",
];

/// Rendering failure. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template does not parse (or uses an unknown function).
    #[error("unable to parse template at key {name}: {message}")]
    Parse { name: String, message: String },
    /// Execution failed (missing key, function error, type error...).
    #[error("unable to execute template at key {name}: {message}")]
    Exec { name: String, message: String },
    /// A hostile-input bound was exceeded.
    #[error("template at key {name} exceeded a limit: {message}")]
    Limit { name: String, message: String },
}

/// Parse only (for `refsync validate` and the admission webhook).
pub fn check(name: &str, source: &str) -> Result<(), TemplateError> {
    let ctx = Arc::new(Ctx::new(source, Vec::new()));
    build(name, source, &ctx).map(|_| ())
}

/// Render `source` with `.KEY` = values[KEY] (raw bytes). missingkey=error.
pub fn render(name: &str, source: &str, values: &TemplateValues) -> Result<Vec<u8>, TemplateError> {
    let mut m = BTreeMap::new();
    let mut secrets = Vec::new();
    for (k, v) in values {
        let enc = bytes::encode(v);
        secrets.push(enc.clone());
        secrets.push(String::from_utf8_lossy(v).into_owned());
        m.insert(
            Arc::from(k.as_str()),
            Value::String(Arc::from(enc.as_str())),
        );
    }
    execute(name, source, &conv::map(m), secrets)
}

/// Render with arbitrary JSON-shaped data (for rewrite `transform`, which sees `.value`,
/// and for future use). JSON numbers become ints when integral, else float64.
pub fn render_json(
    name: &str,
    source: &str,
    data: &serde_json::Value,
) -> Result<Vec<u8>, TemplateError> {
    let mut secrets = Vec::new();
    collect_strings(data, &mut secrets);
    execute(name, source, &conv::from_serde_json(data, false), secrets)
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// Per-render state shared by all function closures.
pub(crate) struct Ctx {
    deadline: Instant,
    calls: AtomicU64,
    limit: Mutex<Option<String>>,
    /// Template source: `fail` messages that appear in it are not secret.
    source: String,
    secrets: Vec<String>,
}

impl Ctx {
    fn new(source: &str, secrets: Vec<String>) -> Self {
        let start = Instant::now();
        Ctx {
            deadline: start + MAX_RENDER_TIME,
            calls: AtomicU64::new(0),
            limit: Mutex::new(None),
            source: source.to_owned(),
            secrets,
        }
    }

    fn set_limit(&self, msg: String) {
        if let Ok(mut g) = self.limit.lock()
            && g.is_none()
        {
            *g = Some(msg);
        }
    }

    fn limit_hit(&self) -> Option<String> {
        self.limit.lock().ok().and_then(|g| g.clone())
    }

    fn tick(&self) -> Result<(), String> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        if n >= MAX_FUNC_CALLS {
            return Err(format!("more than {MAX_FUNC_CALLS} function calls"));
        }
        if n.is_multiple_of(64) && Instant::now() > self.deadline {
            return Err(format!("render took longer than {MAX_RENDER_TIME:?}"));
        }
        Ok(())
    }

    /// Remove every secret value from `msg`.
    fn scrub(&self, msg: &str) -> String {
        let mut out = msg.to_owned();
        let mut secrets: Vec<&String> = self.secrets.iter().filter(|s| s.len() >= 3).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "[redacted]");
            }
        }
        // Escape-block characters are binary secret bytes; never show them.
        let mut clean: String = out
            .chars()
            .map(|c| {
                if bytes::is_plain(c.encode_utf8(&mut [0; 4])) {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if clean.len() > 1024 {
            let mut cut = 1024;
            while !clean.is_char_boundary(cut) {
                cut -= 1;
            }
            clean.truncate(cut);
            clean.push_str("...");
        }
        clean
    }
}

type Func = fn(&Ctx, &[Value]) -> FnResult;

fn all_funcs() -> &'static BTreeMap<&'static str, Func> {
    static FUNCS: OnceLock<BTreeMap<&'static str, Func>> = OnceLock::new();
    FUNCS.get_or_init(|| {
        let mut m: BTreeMap<&'static str, Func> = BTreeMap::new();
        sprig::register(&mut m);
        eso::register(&mut m);
        m
    })
}

/// Size (bytes, roughly) and nesting depth of a value, stopping early past the bounds.
fn value_stats(v: &Value, depth: usize, budget: &mut usize) -> usize {
    let cost = |budget: &mut usize, n: usize| *budget = budget.saturating_sub(n);
    match v {
        Value::String(s) => {
            cost(budget, s.len());
            depth
        }
        Value::List(l) => {
            cost(budget, l.len() + 2);
            let mut d = depth + 1;
            for item in l.iter() {
                if *budget == 0 || d > MAX_VALUE_DEPTH {
                    break;
                }
                d = d.max(value_stats(item, depth + 1, budget));
            }
            d
        }
        Value::Map(m) => {
            cost(budget, m.len() + 2);
            let mut d = depth + 1;
            for (k, item) in m.iter() {
                if *budget == 0 || d > MAX_VALUE_DEPTH {
                    break;
                }
                cost(budget, k.len());
                d = d.max(value_stats(item, depth + 1, budget));
            }
            d
        }
        _ => {
            cost(budget, 8);
            depth
        }
    }
}

fn check_value(v: &Value) -> Result<(), String> {
    if let Value::List(l) = v
        && l.len() > MAX_LIST_LEN
    {
        return Err(format!("list longer than {MAX_LIST_LEN} items"));
    }
    let mut budget = MAX_VALUE_BYTES;
    let depth = value_stats(v, 0, &mut budget);
    if budget == 0 {
        return Err(format!("value larger than {MAX_VALUE_BYTES} bytes"));
    }
    if depth > MAX_VALUE_DEPTH {
        return Err(format!("value nested deeper than {MAX_VALUE_DEPTH}"));
    }
    Ok(())
}

fn check_args(args: &[Value]) -> Result<(), String> {
    let mut budget = MAX_VALUE_BYTES;
    for a in args {
        value_stats(a, 0, &mut budget);
        if budget == 0 {
            return Err(format!("arguments larger than {MAX_VALUE_BYTES} bytes"));
        }
    }
    Ok(())
}

fn wrap(
    ctx: &Arc<Ctx>,
    name: &'static str,
    f: Func,
) -> impl Fn(&[Value]) -> gotmpl::Result<Value> + Send + Sync + 'static {
    let ctx = Arc::clone(ctx);
    move |args: &[Value]| {
        let limit = |msg: String| {
            ctx.set_limit(format!("{name}: {msg}"));
            Err(gotmpl::TemplateError::Exec(format!(
                "error calling {name}: limit exceeded"
            )))
        };
        if let Err(m) = ctx.tick().and_then(|()| check_args(args)) {
            return limit(m);
        }
        match f(&ctx, args) {
            Ok(v) => match check_value(&v) {
                Ok(()) => Ok(v),
                Err(m) => limit(m),
            },
            Err(FnError::Msg(m)) => Err(gotmpl::TemplateError::Exec(format!(
                "error calling {name}: {m}"
            ))),
            Err(FnError::Limit(m)) => limit(m),
        }
    }
}

fn build(name: &str, source: &str, ctx: &Arc<Ctx>) -> Result<Template, TemplateError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(TemplateError::Limit {
            name: name.to_owned(),
            message: format!("template source larger than {MAX_SOURCE_BYTES} bytes"),
        });
    }
    let mut t = Template::new(name)
        .missing_key(MissingKey::Error)
        .max_range_iters(MAX_RANGE_ITERS);
    for (fname, f) in all_funcs() {
        t = t.func(fname, wrap(ctx, fname, *f));
    }
    let src = bytes::escape_str(source);
    let t = t.parse(&src).map_err(|e| TemplateError::Parse {
        name: name.to_owned(),
        message: ctx.scrub(&e.to_string()),
    })?;
    // gotmpl resolves functions at execution; Go rejects unknown ones at parse time.
    if let Ok((tree, defines)) = gotmpl::parse::Parser::with_name(Some(name), &src, "{{", "}}")
        .and_then(gotmpl::parse::Parser::parse)
    {
        let mut unknown = None;
        walk_list(&tree, &mut unknown);
        for d in &defines {
            walk_list(&d.body, &mut unknown);
        }
        if let Some((fname, line)) = unknown {
            return Err(TemplateError::Parse {
                name: name.to_owned(),
                message: format!("template: {name}:{line}: function \"{fname}\" not defined"),
            });
        }
    }
    Ok(t)
}

const GO_BUILTINS: &[&str] = &[
    "and", "or", "not", "index", "slice", "call", "eq", "ne", "lt", "le", "gt", "ge", "html", "js",
    "urlquery", "print", "printf", "println", "len",
];

fn known_function(name: &str) -> bool {
    GO_BUILTINS.contains(&name) || all_funcs().contains_key(name)
}

type Unknown = Option<(String, usize)>;

fn walk_list(l: &gotmpl::parse::ListNode, out: &mut Unknown) {
    for n in &l.nodes {
        walk_node(n, out);
    }
}

fn walk_node(n: &gotmpl::parse::Node, out: &mut Unknown) {
    use gotmpl::parse::Node;
    match n {
        Node::List(l) => walk_list(l, out),
        Node::Action(a) => walk_pipe(&a.pipe, out),
        Node::If(b) | Node::Range(b) | Node::With(b) => {
            walk_pipe(&b.pipe, out);
            walk_list(&b.body, out);
            if let Some(e) = &b.else_body {
                walk_list(e, out);
            }
        }
        Node::Template(t) => {
            if let Some(p) = &t.pipe {
                walk_pipe(p, out);
            }
        }
        Node::Define(d) => walk_list(&d.body, out),
        Node::Text(_) | Node::Break(_) | Node::Continue(_) => {}
    }
}

fn walk_pipe(p: &gotmpl::parse::PipeNode, out: &mut Unknown) {
    for c in &p.commands {
        for e in &c.args {
            walk_expr(e, out);
        }
    }
}

fn walk_expr(e: &gotmpl::parse::Expr, out: &mut Unknown) {
    use gotmpl::parse::Expr;
    match e {
        Expr::Identifier(pos, name) if out.is_none() && !known_function(name) => {
            *out = Some((name.to_string(), pos.line));
        }
        Expr::Pipe(_, p) => walk_pipe(p, out),
        Expr::Chain(_, inner, _) => walk_expr(inner, out),
        _ => {}
    }
}

/// `fmt::Write` sink that enforces the output bound and the deadline.
struct LimitWriter<'a> {
    out: String,
    ctx: &'a Ctx,
}

impl std::fmt::Write for LimitWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.out.len() + s.len() > MAX_OUTPUT_BYTES.saturating_mul(4)
            || bytes::byte_len(&self.out) + bytes::byte_len(s) > MAX_OUTPUT_BYTES
        {
            self.ctx
                .set_limit(format!("output larger than {MAX_OUTPUT_BYTES} bytes"));
            return Err(std::fmt::Error);
        }
        if Instant::now() > self.ctx.deadline {
            self.ctx
                .set_limit(format!("render took longer than {MAX_RENDER_TIME:?}"));
            return Err(std::fmt::Error);
        }
        self.out.push_str(s);
        Ok(())
    }
}

fn execute(
    name: &str,
    source: &str,
    data: &Value,
    secrets: Vec<String>,
) -> Result<Vec<u8>, TemplateError> {
    let ctx = Arc::new(Ctx::new(source, secrets));
    let t = build(name, source, &ctx)?;
    let mut w = LimitWriter {
        out: String::new(),
        ctx: &ctx,
    };
    match t.execute_fmt(&mut w, data) {
        Ok(()) => Ok(bytes::decode(&w.out)),
        Err(e) => {
            if let Some(m) = ctx.limit_hit() {
                return Err(TemplateError::Limit {
                    name: name.to_owned(),
                    message: m,
                });
            }
            if matches!(e, gotmpl::TemplateError::RangeIterLimit) {
                return Err(TemplateError::Limit {
                    name: name.to_owned(),
                    message: format!("more than {MAX_RANGE_ITERS} range iterations"),
                });
            }
            if matches!(e, gotmpl::TemplateError::RecursionLimit) {
                return Err(TemplateError::Limit {
                    name: name.to_owned(),
                    message: "template recursion too deep".to_owned(),
                });
            }
            Err(TemplateError::Exec {
                name: name.to_owned(),
                message: ctx.scrub(&e.to_string()),
            })
        }
    }
}

/// Helpers that run one of gotmpl's own builtins (`printf`, `print`...) on a separate
/// template, so that our registered wrapper can check sizes first and then delegate.
fn builtin_call(fname: &str, args: &[Value]) -> FnResult {
    type Cache = Mutex<HashMap<(String, usize), Arc<Template>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let n = args.len();
    if n > 256 {
        return conv::err("too many arguments");
    }
    let key = (fname.to_owned(), n);
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let tpl = {
        let mut guard = cache
            .lock()
            .map_err(|_| FnError::Msg("internal error".into()))?;
        if let Some(t) = guard.get(&key) {
            Arc::clone(t)
        } else {
            let mut src = format!("{{{{{fname}");
            for i in 0..n {
                src.push_str(&format!(" (index . {i})"));
            }
            src.push_str("}}");
            let t = Template::new("builtin")
                .parse(&src)
                .map_err(|e| FnError::Msg(e.to_string()))?;
            let t = Arc::new(t);
            guard.insert(key, Arc::clone(&t));
            t
        }
    };
    let data = conv::list(args.to_vec());
    tpl.execute_to_string(&data)
        .map(conv::s)
        .map_err(|e| FnError::Msg(e.to_string()))
}
