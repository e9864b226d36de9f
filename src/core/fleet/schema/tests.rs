//! The schema against real JSON Schema validation (the `jsonschema` crate,
//! a dev-dependency): every fleet `validate` accepts passes it, every
//! invalid fleet in `tests/fleets/invalid/` fails `validate` and fails the
//! schema where its `# schema:` lines say.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;

fn validator() -> jsonschema::Validator {
    match jsonschema::validator_for(&json_schema()) {
        Ok(v) => v,
        Err(e) => panic!("the schema does not compile: {e}"),
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn as_json(path: &Path) -> (String, Value) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value = serde_saphyr::from_str::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (text, value)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_schema_is_valid_json_schema_with_an_id() {
    let schema = json_schema();
    if let Err(e) = jsonschema::meta::validate(&schema) {
        panic!("not a valid JSON Schema: {e}");
    }
    assert_eq!(schema["$id"], schema_id());
    assert_eq!(schema_id(), "urn:exedev-k8s:v1:fleet-schema");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

/// A rule put on a property schemars did not generate (a renamed field)
/// would check nothing: every property carries schemars' description.
#[test]
fn every_rule_lands_on_a_generated_property() {
    let schema = json_schema();
    for (name, def) in schema["$defs"].as_object().into_iter().flatten() {
        for (prop, p) in def["properties"].as_object().into_iter().flatten() {
            assert!(p.get("description").is_some(), "{name}.{prop}: {p}");
        }
    }
}

#[test]
fn every_valid_fleet_passes() {
    let v = validator();
    let mut files = yaml_files(&root().join("tests/fleets"));
    files.extend(yaml_files(&root().join("examples")));
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let (text, json) = as_json(&f);
        assert!(
            crate::core::fleet::parse(&text, "f.yaml").is_ok(),
            "{}",
            f.display()
        );
        let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
}

/// The invalid fleets of `tests/fleets/invalid/` (the examples of issue 14,
/// a control plane of 2, share port 80, version plus channel, `Prod_X`,
/// taint `x=y:Nope`, cpu 128, memory `lots`, and every located error
/// `validate` can give): `validate` refuses each (what it says is each
/// file's snapshot, `tests/it/invalid_fleets.rs`), and each file's
/// `# schema:` lines say what the schema does with it:
/// - `# schema: /json/pointer` (one line per node): the schema refuses it,
///   at exactly these nodes;
/// - `# schema: accepts`: a rule the schema cannot express (names computed
///   from two fields, a value's type being what is wrong in YAML but not
///   in JSON, sizes below a role's minimum): the schema accepts it;
/// - `# schema: unreadable`: not a YAML document a JSON value can be read
///   from (a syntax error, a duplicate key), so no schema sees it.
#[test]
fn every_invalid_example_fails_validate_and_the_schema_as_its_header_says() {
    let v = validator();
    let files = yaml_files(&root().join("tests/fleets/invalid"));
    assert!(files.len() >= 60, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            crate::core::fleet::parse(&text, "f.yaml").is_err(),
            "{}: validate accepted it",
            f.display()
        );
        let header: BTreeSet<&str> = text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# schema: "))
            .collect();
        assert!(!header.is_empty(), "{}: no `# schema:` line", f.display());
        let json = serde_saphyr::from_str::<Value>(&text);
        let special = header.contains("unreadable") || header.contains("accepts");
        assert!(!special || header.len() == 1, "{}: {header:?}", f.display());
        if header.contains("unreadable") {
            assert!(json.is_err(), "{}: readable after all", f.display());
            continue;
        }
        let json = json.unwrap_or_else(|e| panic!("{}: unreadable: {e}", f.display()));
        let errors: Vec<(String, String)> = v
            .iter_errors(&json)
            .map(|e| (e.instance_path().to_string(), e.to_string()))
            .collect();
        if header.contains("accepts") {
            assert!(
                errors.is_empty(),
                "{}: the schema refuses it after all: {errors:#?}",
                f.display()
            );
            continue;
        }
        let refused: BTreeSet<&str> = errors.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            refused,
            header,
            "{}: refused elsewhere than its `# schema:` lines: {errors:#?}",
            f.display()
        );
    }
}
