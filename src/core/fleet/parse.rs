//! Reading a fleet file: YAML to [`FleetFile`], validation, then the
//! resolved [`Fleet`].

use serde_saphyr::{DuplicateKeyPolicy, MessageFormatter, UserMessageFormatter};

use super::error::{FleetError, FleetErrors};
use super::model::FleetFile;
use super::resolved::{Fleet, resolve};
use super::validate::validate;

/// Parses and validates a fleet file's text. `file_name` is only used in
/// error messages. Returns every validation error found, not just the first;
/// a YAML or type error stops reading, so it comes alone.
pub fn parse(source: &str, file_name: &str) -> Result<Fleet, FleetErrors> {
    // Tags and control characters first: serde would decode `!!binary`
    // silently, and a CR or ESC in a value would reach scripts and terminals.
    let refused: Vec<FleetError> = crate::base::yaml_guard::check(source)
        .into_iter()
        .map(|issue| {
            let hint = match issue.problem {
                crate::base::yaml_guard::Problem::Tag(_) => {
                    "write the value as plain text, without a tag"
                }
                crate::base::yaml_guard::Problem::Control(_) => {
                    "remove the character: fleet values are single-line printable text"
                }
            };
            FleetError::at(
                file_name,
                issue.line as u64,
                issue.column as u64,
                issue.message(),
                hint,
            )
        })
        .collect();
    if !refused.is_empty() {
        return Err(FleetErrors(refused));
    }
    let options = serde_saphyr::options! {
        duplicate_keys: DuplicateKeyPolicy::Error,
        with_snippet: false,
    };
    let file: FleetFile = serde_saphyr::from_str_with_options(source, options)
        .map_err(|e| FleetErrors::from(yaml_error(&e, file_name, source)))?;
    let errors = validate(&file, file_name);
    if !errors.is_empty() {
        return Err(FleetErrors(errors));
    }
    resolve(&file, file_name)
}

/// A key written with nothing after its colon where a mapping belongs
/// (`tailscale:` on line `line`, `column` just past the colon): its name,
/// and what its following lines show. Usually the lines meant to be inside
/// it are indented as far as the key itself, which makes them its
/// siblings.
fn empty_mapping_key(source: &str, line: u64, column: u64) -> Option<(String, String)> {
    let lines: Vec<&str> = source.lines().collect();
    let at = usize::try_from(line).ok()?.checked_sub(1)?;
    let text = lines.get(at)?;
    let colon = text
        .char_indices()
        .take_while(|(i, _)| (*i as u64) < column)
        .filter(|(_, c)| *c == ':')
        .last()?
        .0;
    let after = text[colon + 1..].trim();
    if !(after.is_empty() || after.starts_with('#')) {
        return None;
    }
    let key_text = text[..colon].trim_start_matches([' ', '-']);
    let key = key_text.trim();
    if key.is_empty() {
        return None;
    }
    let indent = text.len() - text.trim_start_matches([' ', '-']).len();
    let next = lines
        .iter()
        .enumerate()
        .skip(at + 1)
        .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let hint = match next {
        Some((i, next)) if next.len() - next.trim_start().len() <= indent => format!(
            "line {} is indented no further than `{key}:` ({indent} spaces), so YAML reads it as a sibling of `{key}`, not inside it: if the keys of `{key}` start there, indent them further, e.g. {} spaces",
            i + 1,
            indent + 2
        ),
        _ => format!("write the keys of `{key}` under it, indented further than `{key}:`"),
    };
    Some((
        format!("`{key}:` has no value: expected a mapping (key: value) under it"),
        hint,
    ))
}

/// Turns serde-saphyr's error into a [`FleetError`], with a hint chosen from
/// the kind of mistake.
fn yaml_error(err: &serde_saphyr::Error, file_name: &str, source: &str) -> FleetError {
    use serde_saphyr::Error as E;
    let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
    let mut inner = err;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    // serde's words name Rust types ("invalid u32", "expected string
    // scalar"); a fleet author reads YAML.
    let message = match inner {
        E::InvalidScalar { ty, .. } if ty.starts_with('u') || ty.starts_with('i') => {
            "not a whole number".to_string()
        }
        E::InvalidScalar { ty, .. } if ty.contains("float") => "not a number".to_string(),
        E::InvalidScalar { ty, .. } if ty.contains("bool") => "not true or false".to_string(),
        E::Unexpected { expected, .. } if expected.contains("string scalar") => {
            "expected a single value (text) here, not a list or mapping".to_string()
        }
        E::Unexpected { expected, .. } if expected.contains("sequence") => {
            "expected a list here".to_string()
        }
        E::Unexpected { expected, .. } if expected.contains("mapping") => {
            "expected a mapping (key: value) here".to_string()
        }
        _ => UserMessageFormatter.format_message(inner).into_owned(),
    };
    let hint = match inner {
        E::SerdeUnknownField { .. } | E::SerdeUnknownVariant { .. } => {
            "remove this key or fix its spelling; `exedev-k8s schema` prints every allowed key"
        }
        E::DuplicateMappingKey { .. } => "keep only one of the repeated keys",
        E::SerdeMissingField { .. } => "add the missing key to this mapping",
        E::InvalidBooleanStrict { .. } => "write true or false",
        E::InvalidScalar { ty, .. } if ty.contains("bool") => "write true or false",
        E::InvalidScalar { ty, .. } if ty.starts_with('u') || ty.starts_with('i') => {
            "write a whole number here"
        }
        E::Unexpected { expected, .. } if expected.contains("sequence") => {
            "write a list here, e.g. [a, b] or one `- item` per line"
        }
        E::Unexpected { expected, .. } if expected.contains("mapping") => {
            "write a mapping here (key: value)"
        }
        E::Unexpected { .. }
        | E::InvalidScalar { .. }
        | E::NullIntoString { .. }
        | E::SerdeInvalidType { .. }
        | E::SerdeInvalidValue { .. }
        | E::SerdeInvalidLength { .. } => {
            "write a value of the expected type here; `exedev-k8s schema` describes every key"
        }
        E::Message { msg, .. } if msg.contains("secret reference") => {
            "write {env: NAME} or {file: path}"
        }
        E::Message { msg, .. } if msg.contains("secret k3s flag") => {
            "write the flag and where its value comes from, e.g. {flag: --etcd-s3-secret-key, secret: {env: ETCD_S3_SECRET}}"
        }
        _ => "fix the YAML syntax here (indentation, colons, quotes, brackets)",
    };
    // An empty key where a mapping belongs: name it and the likely
    // indentation slip.
    let (message, hint) = match inner {
        E::Unexpected { expected, .. } if expected.contains("mapping") => {
            empty_mapping_key(source, line, column).unwrap_or_else(|| (message, hint.to_string()))
        }
        _ => (message, hint.to_string()),
    };
    FleetError {
        file: file_name.to_string(),
        line,
        column,
        message,
        hint: Some(hint),
    }
}
