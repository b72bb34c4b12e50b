//! A small, honest parser for the subset of Google's list-filter language (AIP-160) that
//! Secret Manager documents: `name:abc`, `labels.env=prod`, `labels.env:*`, `labels.env:pro*`,
//! `state:ENABLED`, `create_time<2021-01-01T06:00:00Z`, joined with `AND`, `OR`, whitespace
//! (implicit AND), `NOT`/`-` and parentheses. As in AIP-160, `OR` binds tighter than `AND`.
//! Anything else is rejected so callers learn early that the emulator would not understand it.

use chrono::{DateTime, Utc};

use crate::error::{ApiError, ApiResult};

/// The kind of resource a filter is evaluated against; decides which fields exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Secret,
    Version,
}

/// A field a filter may restrict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    Name,
    Label(String),
    Annotation(String),
    CreateTime,
    State,
    ReplicationAutomatic,
    ReplicationUserManaged,
    ReplicaLocation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Has,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Restriction(Field, Op, String),
}

/// What a resource reports for a field.
pub(crate) enum Value {
    Absent,
    Str(String),
    /// Several values (e.g. replica locations); a restriction matches if any matches.
    Many(Vec<String>),
    Time(DateTime<Utc>),
}

/// Anything a filter can be evaluated against.
pub(crate) trait Filterable {
    fn value(&self, field: &Field) -> Value;
}

/// A parsed filter. The empty filter matches everything.
#[derive(Debug, Clone)]
pub(crate) struct Filter(Option<Expr>);

impl Filter {
    pub(crate) fn parse(text: &str, kind: Kind) -> ApiResult<Self> {
        let tokens = lex(text)?;
        if tokens.is_empty() {
            return Ok(Self(None));
        }
        let mut p = Parser {
            tokens,
            pos: 0,
            kind,
            text,
        };
        let expr = p.expr()?;
        if p.pos != p.tokens.len() {
            return Err(p.error());
        }
        Ok(Self(Some(expr)))
    }

    pub(crate) fn matches(&self, item: &dyn Filterable) -> bool {
        self.0.as_ref().is_none_or(|e| eval(e, item))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    Word(String),
    Quoted(String),
    Op(Op),
}

fn invalid_filter(text: &str) -> ApiError {
    ApiError::invalid(format!("Invalid filter: {text}"))
}

fn lex(text: &str) -> ApiResult<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut after_op = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' {
            let mut s = String::new();
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                match chars[i] {
                    '\\' if i + 1 < chars.len() => {
                        s.push(chars[i + 1]);
                        i += 2;
                    }
                    '"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    other => {
                        s.push(other);
                        i += 1;
                    }
                }
            }
            if !closed {
                return Err(invalid_filter(text));
            }
            out.push(Token::Quoted(s));
            after_op = false;
            continue;
        }
        if after_op {
            // A bare value runs to whitespace or a closing parenthesis; it may contain ':'
            // (timestamps) and '*' (wildcards).
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != ')' {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
            after_op = false;
            continue;
        }
        match c {
            '(' => {
                out.push(Token::LParen);
                i += 1;
            }
            ')' => {
                out.push(Token::RParen);
                i += 1;
            }
            ':' | '=' | '<' | '>' | '!' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    (':', _) => (Op::Has, 1),
                    ('=', _) => (Op::Eq, 1),
                    ('!', Some('=')) => (Op::Ne, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('>', _) => (Op::Gt, 1),
                    _ => return Err(invalid_filter(text)),
                };
                out.push(Token::Op(op));
                i += len;
                after_op = true;
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], '(' | ')' | ':' | '=' | '<' | '>' | '!' | '"')
                {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    if after_op {
        return Err(invalid_filter(text));
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    kind: Kind,
    text: &'a str,
}

impl Parser<'_> {
    fn error(&self) -> ApiError {
        invalid_filter(self.text)
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == kw)
    }

    /// expr := sequence ("AND" sequence)*
    fn expr(&mut self) -> ApiResult<Expr> {
        let mut parts = vec![self.sequence()?];
        while self.peek_keyword("AND") {
            self.pos += 1;
            parts.push(self.sequence()?);
        }
        Ok(flatten_and(parts))
    }

    /// sequence := factor factor*   (implicit AND)
    fn sequence(&mut self) -> ApiResult<Expr> {
        let mut parts = vec![self.factor()?];
        while let Some(tok) = self.peek() {
            match tok {
                Token::RParen => break,
                Token::Word(w) if w == "AND" => break,
                _ => parts.push(self.factor()?),
            }
        }
        Ok(flatten_and(parts))
    }

    /// factor := term ("OR" term)*
    fn factor(&mut self) -> ApiResult<Expr> {
        let mut parts = vec![self.term()?];
        while self.peek_keyword("OR") {
            self.pos += 1;
            parts.push(self.term()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    /// term := ("NOT" | "-")? simple
    fn term(&mut self) -> ApiResult<Expr> {
        if self.peek_keyword("NOT") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.simple()?)));
        }
        if let Some(Token::Word(w)) = self.peek()
            && let Some(rest) = w.strip_prefix('-')
            && !rest.is_empty()
        {
            let rest = rest.to_string();
            self.tokens[self.pos] = Token::Word(rest);
            return Ok(Expr::Not(Box::new(self.simple()?)));
        }
        self.simple()
    }

    /// simple := "(" expr ")" | field op value
    fn simple(&mut self) -> ApiResult<Expr> {
        match self.peek().cloned() {
            Some(Token::LParen) => {
                self.pos += 1;
                let e = self.expr()?;
                if self.peek() != Some(&Token::RParen) {
                    return Err(self.error());
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Token::Word(field)) => {
                if matches!(field.as_str(), "AND" | "OR" | "NOT") {
                    return Err(self.error());
                }
                self.pos += 1;
                let Some(Token::Op(op)) = self.peek().cloned() else {
                    // Bare words (global text search) are not supported by the emulator.
                    return Err(self.error());
                };
                self.pos += 1;
                let value = match self.peek().cloned() {
                    Some(Token::Word(v)) | Some(Token::Quoted(v)) => v,
                    _ => return Err(self.error()),
                };
                self.pos += 1;
                let field = self.field(&field)?;
                self.check(&field, op, &value)?;
                Ok(Expr::Restriction(field, op, value))
            }
            _ => Err(self.error()),
        }
    }

    fn field(&self, path: &str) -> ApiResult<Field> {
        let err = || ApiError::invalid(format!("Invalid filter: unsupported field `{path}`"));
        if let Some(key) = path.strip_prefix("labels.") {
            return if self.kind == Kind::Secret && !key.is_empty() {
                Ok(Field::Label(key.to_string()))
            } else {
                Err(err())
            };
        }
        if let Some(key) = path.strip_prefix("annotations.") {
            return if self.kind == Kind::Secret && !key.is_empty() {
                Ok(Field::Annotation(key.to_string()))
            } else {
                Err(err())
            };
        }
        match (path, self.kind) {
            ("name", _) => Ok(Field::Name),
            ("create_time" | "createTime", _) => Ok(Field::CreateTime),
            ("state", Kind::Version) => Ok(Field::State),
            ("replication.automatic", Kind::Secret) => Ok(Field::ReplicationAutomatic),
            ("replication.user_managed" | "replication.userManaged", Kind::Secret) => {
                Ok(Field::ReplicationUserManaged)
            }
            (
                "replication.user_managed.replicas.location"
                | "replication.userManaged.replicas.location",
                Kind::Secret,
            ) => Ok(Field::ReplicaLocation),
            _ => Err(err()),
        }
    }

    fn check(&self, field: &Field, op: Op, value: &str) -> ApiResult<()> {
        let ordering = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
        match field {
            Field::CreateTime => {
                if value != "*" {
                    parse_time(value).ok_or_else(|| self.error())?;
                }
                Ok(())
            }
            Field::State => {
                if ordering
                    || !(value == "*"
                        || matches!(
                            value.to_ascii_uppercase().as_str(),
                            "ENABLED" | "DISABLED" | "DESTROYED"
                        ))
                {
                    return Err(self.error());
                }
                Ok(())
            }
            Field::ReplicationAutomatic | Field::ReplicationUserManaged => {
                if op == Op::Has && value == "*" {
                    Ok(())
                } else {
                    Err(self.error())
                }
            }
            _ if ordering => Err(self.error()),
            _ => Ok(()),
        }
    }
}

fn flatten_and(mut parts: Vec<Expr>) -> Expr {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        Expr::And(parts)
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn eval(expr: &Expr, item: &dyn Filterable) -> bool {
    match expr {
        Expr::And(parts) => parts.iter().all(|p| eval(p, item)),
        Expr::Or(parts) => parts.iter().any(|p| eval(p, item)),
        Expr::Not(inner) => !eval(inner, item),
        Expr::Restriction(field, op, value) => restriction(field, *op, value, item),
    }
}

fn restriction(field: &Field, op: Op, pattern: &str, item: &dyn Filterable) -> bool {
    let value = item.value(field);
    if op == Op::Has && pattern == "*" {
        return match value {
            Value::Absent => false,
            Value::Many(v) => !v.is_empty(),
            Value::Str(_) | Value::Time(_) => true,
        };
    }
    match value {
        Value::Absent => op == Op::Ne,
        Value::Str(s) => string_match(field, op, pattern, &s),
        Value::Many(list) => {
            if op == Op::Ne {
                list.iter().all(|s| string_match(field, op, pattern, s))
            } else {
                list.iter().any(|s| string_match(field, op, pattern, s))
            }
        }
        Value::Time(t) => {
            let Some(p) = parse_time(pattern) else {
                return false;
            };
            match op {
                Op::Has | Op::Eq => t == p,
                Op::Ne => t != p,
                Op::Lt => t < p,
                Op::Le => t <= p,
                Op::Gt => t > p,
                Op::Ge => t >= p,
            }
        }
    }
}

fn string_match(field: &Field, op: Op, pattern: &str, value: &str) -> bool {
    if *field == Field::State {
        let eq = value.eq_ignore_ascii_case(pattern);
        return if op == Op::Ne { !eq } else { eq };
    }
    match op {
        Op::Has => {
            // "has": case-insensitive substring, with '*' as a wildcard.
            let p = pattern.to_lowercase();
            let v = value.to_lowercase();
            glob(&format!("*{}*", p.trim_matches('*')), &v)
        }
        Op::Eq => glob(pattern, value),
        Op::Ne => !glob(pattern, value),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => false,
    }
}

/// Whole-string match where '*' matches any run of characters.
fn glob(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let mut rest = value;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(idx) = rest.find(part) {
            rest = &rest[idx + part.len()..];
        } else {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct S {
        name: String,
        labels: HashMap<String, String>,
    }

    impl Filterable for S {
        fn value(&self, field: &Field) -> Value {
            match field {
                Field::Name => Value::Str(self.name.clone()),
                Field::Label(k) => self
                    .labels
                    .get(k)
                    .map_or(Value::Absent, |v| Value::Str(v.clone())),
                _ => Value::Absent,
            }
        }
    }

    fn s(name: &str, labels: &[(&str, &str)]) -> S {
        S {
            name: format!("projects/1/secrets/{name}"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn m(f: &str, item: &S) -> bool {
        Filter::parse(f, Kind::Secret)
            .unwrap_or_else(|e| panic!("{f}: {e:?}"))
            .matches(item)
    }

    #[test]
    fn basic_restrictions() {
        let a = s("app-db", &[("env", "prod"), ("team", "core")]);
        let b = s("other", &[("env", "dev")]);
        assert!(m("", &a));
        assert!(m("name:db", &a));
        assert!(!m("name:db", &b));
        assert!(m("labels.env=prod", &a));
        assert!(!m("labels.env=prod", &b));
        assert!(m("labels.team:*", &a));
        assert!(!m("labels.team:*", &b));
        assert!(m("labels.env:pro", &a));
        assert!(m("name:app labels.env=prod", &a));
        assert!(m("name:app AND labels.env=prod", &a));
        assert!(!m("name:app AND labels.env=dev", &a));
        assert!(m("labels.env=dev OR labels.env=prod", &a));
        assert!(m("NOT labels.env=dev", &a));
        assert!(m("-labels.env=dev", &a));
        assert!(m("(name:other OR name:app) AND labels.env=\"prod\"", &a));
        assert!(m("name:APP*db", &a));
        assert!(m("labels.env != dev", &a));
    }

    #[test]
    fn rejects_unknown_syntax() {
        for f in [
            "bogus",
            "name:",
            "foo.bar=1",
            "name:a AND",
            "(name:a",
            "name ~ \"x\"",
            "labels.a<3",
            "state:ENABLED",
            "\"unterminated",
        ] {
            assert!(Filter::parse(f, Kind::Secret).is_err(), "{f} should fail");
        }
        assert!(Filter::parse("state:ENABLED", Kind::Version).is_ok());
        assert!(Filter::parse("create_time<2021-01-01T06:00:00Z", Kind::Version).is_ok());
    }
}
