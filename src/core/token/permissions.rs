//! The permission JSON inside an exe0 token, validated exactly as exe.dev
//! documents it. The minting code builds it here and the emulator checks it
//! here: one implementation of the rules.
//!
//! Rules: only `exp`, `nbf`, `cmds`, `ctx` at top level; `exp`/`nbf` integers
//! (no decimals, no exponents) between 2000-01-01 and 2100-01-01; no leading
//! or trailing whitespace, no newline, no NUL; no duplicate key at any level.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// Earliest timestamp exe.dev accepts for `exp`/`nbf` (2000-01-01 UTC).
pub const MIN_TIMESTAMP: i64 = 946_684_800;
/// Latest timestamp exe.dev accepts for `exp`/`nbf` (2100-01-01 UTC).
pub const MAX_TIMESTAMP: i64 = 4_102_444_800;

/// Decoded, validated permissions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Permissions {
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    /// `None` means the documented defaults (the catalogue's
    /// `default_grant` entries, `crate::core::api::command::default_grants`).
    pub cmds: Option<Vec<String>>,
    /// Passed verbatim to VM servers as `X-ExeDev-Token-Ctx`.
    pub ctx: Option<Value>,
}

/// A rule of the permission JSON that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error("permissions JSON has leading or trailing whitespace")]
    Whitespace,
    #[error("permissions JSON contains a newline")]
    Newline,
    #[error("permissions JSON contains a NUL byte")]
    Nul,
    #[error("permissions JSON is not valid JSON: {0}")]
    Syntax(String),
    #[error("permissions JSON must be an object")]
    NotObject,
    #[error(
        "permissions JSON has unknown top-level field {0:?}; only exp, nbf, cmds and ctx are allowed"
    )]
    UnknownField(String),
    #[error("`{0}` must be an integer Unix timestamp (no decimals or exponents)")]
    NotInteger(&'static str),
    #[error("`{field}` = {value} is outside 946684800..=4102444800 (years 2000 to 2100)")]
    OutOfRange { field: &'static str, value: i64 },
    #[error("`cmds` must be an array of command-name strings")]
    BadCmds,
}

impl Permissions {
    /// The commands this token may run.
    pub fn allowed_cmds(&self) -> Vec<&str> {
        match &self.cmds {
            Some(c) => c.iter().map(String::as_str).collect(),
            None => crate::core::api::command::default_grants(),
        }
    }

    /// Whether `cmd` (a full command name such as `share port`) is granted:
    /// names match exactly, a parent never grants a subcommand.
    pub fn allows(&self, cmd: &str) -> bool {
        self.allowed_cmds().contains(&cmd)
    }

    /// Compact JSON in a fixed field order; these exact bytes are signed.
    pub fn to_compact_json(&self) -> String {
        let mut m = Map::new();
        if let Some(exp) = self.exp {
            m.insert("exp".into(), exp.into());
        }
        if let Some(nbf) = self.nbf {
            m.insert("nbf".into(), nbf.into());
        }
        if let Some(cmds) = &self.cmds {
            m.insert("cmds".into(), cmds.clone().into());
        }
        if let Some(ctx) = &self.ctx {
            m.insert("ctx".into(), ctx.clone());
        }
        Value::Object(m).to_string()
    }

    /// Checks the exact bytes against every documented rule and decodes them.
    pub fn parse(bytes: &[u8]) -> Result<Self, PermissionError> {
        if bytes.contains(&0) {
            return Err(PermissionError::Nul);
        }
        if bytes.contains(&b'\n') || bytes.contains(&b'\r') {
            return Err(PermissionError::Newline);
        }
        let ws = |b: &u8| b.is_ascii_whitespace();
        if bytes.first().is_some_and(ws) || bytes.last().is_some_and(ws) {
            return Err(PermissionError::Whitespace);
        }
        let strict: Strict =
            serde_json::from_slice(bytes).map_err(|e| PermissionError::Syntax(e.to_string()))?;
        let Strict::Object(fields) = strict else {
            return Err(PermissionError::NotObject);
        };
        let mut p = Permissions::default();
        for (key, value) in fields {
            match key.as_str() {
                "exp" => p.exp = Some(timestamp("exp", &value)?),
                "nbf" => p.nbf = Some(timestamp("nbf", &value)?),
                "cmds" => {
                    let Strict::Array(items) = value else {
                        return Err(PermissionError::BadCmds);
                    };
                    let cmds = items
                        .into_iter()
                        .map(|i| match i {
                            Strict::String(s) => Ok(s),
                            _ => Err(PermissionError::BadCmds),
                        })
                        .collect::<Result<_, _>>()?;
                    p.cmds = Some(cmds);
                }
                "ctx" => p.ctx = Some(value.into_value()),
                other => return Err(PermissionError::UnknownField(other.to_string())),
            }
        }
        Ok(p)
    }
}

fn timestamp(field: &'static str, v: &Strict) -> Result<i64, PermissionError> {
    let value = match v {
        Strict::Int(i) => *i,
        _ => return Err(PermissionError::NotInteger(field)),
    };
    if !(MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&value) {
        return Err(PermissionError::OutOfRange { field, value });
    }
    Ok(value)
}

/// A JSON value read with the strictness serde_json's `Value` lacks:
/// duplicate keys are an error at any depth, and integers stay apart from
/// floats (`2e9` and `2000000000.0` arrive as floats).
enum Strict {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Array(Vec<Strict>),
    Object(Vec<(String, Strict)>),
}

impl Strict {
    fn into_value(self) -> Value {
        match self {
            Strict::Null => Value::Null,
            Strict::Bool(b) => b.into(),
            Strict::Int(i) => i.into(),
            Strict::Float(f) => f.into(),
            Strict::String(s) => s.into(),
            Strict::Array(a) => a.into_iter().map(Strict::into_value).collect(),
            Strict::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, v.into_value())).collect())
            }
        }
    }
}

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Strict, E> {
                Ok(Strict::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> Result<Strict, E> {
                Ok(Strict::Int(i))
            }
            fn visit_u64<E: de::Error>(self, u: u64) -> Result<Strict, E> {
                i64::try_from(u)
                    .map(Strict::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E>(self, f: f64) -> Result<Strict, E> {
                Ok(Strict::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> Result<Strict, E> {
                Ok(Strict::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Strict, E> {
                Ok(Strict::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Strict::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
                let mut fields: Vec<(String, Strict)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    let value = map.next_value()?;
                    fields.push((key, value));
                }
                Ok(Strict::Object(fields))
            }
        }
        d.deserialize_any(V)
    }
}

/// The exact text of top-level field `name` in a permission JSON object
/// (`None` when absent or when the bytes are not an object).
///
/// `ctx` reaches a VM's server verbatim (`X-ExeDev-Token-Ctx`): decoding it
/// and serializing it again could change key order, number spelling or
/// escapes, and the VM may compare the signed bytes. Meant for payloads that
/// [`Permissions::parse`] accepted (no duplicate keys, valid JSON).
pub fn raw_field<'a>(payload: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(payload).ok()?;
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        match b.get(i)? {
            b'}' => return None,
            b',' => i = skip_ws(b, i + 1),
            _ => {}
        }
        let key_end = end_of_string(b, i)?;
        let key: String = serde_json::from_str(text.get(i..key_end)?).ok()?;
        i = skip_ws(b, key_end);
        if *b.get(i)? != b':' {
            return None;
        }
        i = skip_ws(b, i + 1);
        let end = end_of_value(b, i)?;
        if key == name {
            return text.get(i..end);
        }
        i = end;
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// One past the closing quote of the string starting at `i`.
fn end_of_string(b: &[u8], i: usize) -> Option<usize> {
    if *b.get(i)? != b'"' {
        return None;
    }
    let mut j = i + 1;
    loop {
        match b.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// One past the end of the JSON value starting at `i`.
fn end_of_value(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => end_of_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match b.get(j)? {
                    b'"' => {
                        j = end_of_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(c) = b.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_field_is_verbatim() {
        let p = br#"{"exp":2000000000, "ctx" : {"b":1.50,"a":["x}","\""]},"nbf":1000000000}"#;
        assert_eq!(raw_field(p, "ctx"), Some(r#"{"b":1.50,"a":["x}","\""]}"#));
        assert_eq!(raw_field(p, "exp"), Some("2000000000"));
        assert_eq!(raw_field(p, "nbf"), Some("1000000000"));
        assert_eq!(raw_field(p, "cmds"), None);
        assert_eq!(raw_field(br#"{"c\u0074x":"v"}"#, "ctx"), Some(r#""v""#));
        assert_eq!(raw_field(b"[1]", "ctx"), None);
        assert_eq!(raw_field(br#"{"ctx":"#, "ctx"), None);
        assert_eq!(raw_field(b"{}", "ctx"), None);
    }

    fn parse(s: &str) -> Result<Permissions, PermissionError> {
        Permissions::parse(s.as_bytes())
    }

    #[test]
    fn empty_object_means_defaults() {
        let p = parse("{}").unwrap();
        assert!(p.allows("ls") && p.allows("share show") && !p.allows("rm"));
    }

    #[test]
    fn cmds_match_exactly() {
        let p = parse(r#"{"cmds":["share","ssh-key"]}"#).unwrap();
        assert!(p.allows("share") && !p.allows("share port") && !p.allows("ssh-key list"));
        assert!(!p.allows("ls"), "explicit cmds replace the defaults");
    }

    #[test]
    fn each_rule_is_enforced() {
        use PermissionError::*;
        assert_eq!(parse(" {}"), Err(Whitespace));
        assert_eq!(parse("{}\t"), Err(Whitespace));
        assert_eq!(parse("{\n}"), Err(Newline));
        assert_eq!(parse("{\r}"), Err(Newline));
        assert_eq!(parse("{\"ctx\":\"\0\"}"), Err(Nul));
        assert_eq!(parse("[]"), Err(NotObject));
        assert_eq!(parse(r#"{"aud":1}"#), Err(UnknownField("aud".into())));
        assert_eq!(parse(r#"{"exp":2000000000.0}"#), Err(NotInteger("exp")));
        assert_eq!(parse(r#"{"exp":2e9}"#), Err(NotInteger("exp")));
        assert_eq!(parse(r#"{"nbf":"1"}"#), Err(NotInteger("nbf")));
        assert!(matches!(
            parse(r#"{"exp":946684799}"#),
            Err(OutOfRange { .. })
        ));
        assert!(matches!(
            parse(r#"{"nbf":4102444801}"#),
            Err(OutOfRange { .. })
        ));
        assert!(parse(r#"{"exp":946684800,"nbf":4102444800}"#).is_ok());
        assert!(matches!(parse(r#"{"exp":1,"exp":2}"#), Err(Syntax(_))));
        assert!(matches!(parse(r#"{"ctx":{"a":1,"a":2}}"#), Err(Syntax(_))));
        assert!(matches!(
            parse(r#"{"ctx":[{"b":{"c":1,"c":1}}]}"#),
            Err(Syntax(_))
        ));
        assert_eq!(parse(r#"{"cmds":"ls"}"#), Err(BadCmds));
        assert_eq!(parse(r#"{"cmds":[1]}"#), Err(BadCmds));
        assert!(matches!(parse("{"), Err(Syntax(_))));
    }

    #[test]
    fn compact_json_round_trips() {
        let p = Permissions {
            exp: Some(2_000_000_000),
            nbf: None,
            cmds: Some(vec!["ls".into(), "share port".into()]),
            ctx: Some(serde_json::json!({"who":"ci","n":[1,2]})),
        };
        let json = p.to_compact_json();
        assert_eq!(
            json,
            r#"{"exp":2000000000,"cmds":["ls","share port"],"ctx":{"who":"ci","n":[1,2]}}"#
        );
        assert_eq!(Permissions::parse(json.as_bytes()).unwrap(), p);
    }
}
