//! The schema against real JSON Schema validation (the `jsonschema` crate,
//! a dev-dependency): every fleet `validate` accepts passes it, every
//! invalid example in `tests/fleets/invalid/` fails both.

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
            crate::fleet::parse(&text, "f.yaml").is_ok(),
            "{}",
            f.display()
        );
        let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
}

/// The invalid examples of issue 14 (a control plane of 2, share port 80,
/// version plus channel, `Prod_X`, taint `x=y:Nope`, cpu 128, memory
/// `lots`) and more: `validate` refuses each with the message in its
/// `# expect:` line, and the schema refuses each too, at the node named in
/// its `# schema:` line.
#[test]
fn every_invalid_example_fails_validate_and_the_schema() {
    let v = validator();
    let files = yaml_files(&root().join("tests/fleets/invalid"));
    assert!(files.len() >= 20, "{files:?}");
    for f in files {
        let (text, json) = as_json(&f);
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: ...`", f.display()));
        match crate::fleet::parse(&text, "f.yaml") {
            Ok(_) => panic!("{}: validate accepted it", f.display()),
            Err(e) => {
                assert_eq!(e.0.len(), 1, "{}: {e}", f.display());
                assert!(e.0[0].message.contains(expect), "{}: {e}", f.display());
            }
        }
        // The schema refuses it at the node at fault (its `# schema:` line).
        let at = text
            .lines()
            .nth(1)
            .and_then(|l| l.strip_prefix("# schema: "))
            .unwrap_or_else(|| panic!("{}: second line must be `# schema: /path`", f.display()));
        let errors: Vec<(String, String)> = v
            .iter_errors(&json)
            .map(|e| (e.instance_path().to_string(), e.to_string()))
            .collect();
        assert!(
            !errors.is_empty(),
            "{}: the schema accepted it",
            f.display()
        );
        assert!(
            errors.iter().all(|(path, _)| path == at),
            "{}: refused elsewhere than {at}: {errors:#?}",
            f.display()
        );
    }
}
