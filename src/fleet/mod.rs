//! The fleet file: its format, its validation and the VMs it asks for.
//!
//! Pure except for [`load`] (reads the fleet file) and
//! [`SecretRef::resolve`] (reads a referenced secret): everything else works
//! on strings and values, so the plan and the tests need no disk or network.

mod desired;
mod error;
mod model;
mod parse;
mod schema;
mod validate;

pub use desired::{
    CONTROL_PLANE_POOL, CONTROL_PLANE_TAINT, DesiredVm, FLEET_LABEL_KEY, POOL_LABEL_KEY,
    RESERVED_LABEL_PREFIX, RESERVED_TAG_PREFIX, Role, SHARE_TAG, ShareSpec, desired_vms,
    fleet_label, ownership_tag, owns, pool_label, pool_tag, role_tag,
};
pub use error::{FleetError, FleetErrors};
pub use model::*;
pub use parse::{load, parse};

#[cfg(test)]
pub(crate) use schema::pattern_matcher;
pub use schema::{json_schema, schema_id};

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name)
    }

    #[test]
    fn minimal_example_validates() {
        let f = match load(&example("minimal.yaml")) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(f.metadata.name.value, "demo");
        let vms = desired_vms(&f);
        let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["demo-cp1"]);
    }

    #[test]
    fn ha_example_validates() {
        let f = match load(&example("ha.yaml")) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(f.metadata.name.value, "prod");
        let vms = desired_vms(&f);
        let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "prod-cp1",
                "prod-cp2",
                "prod-cp3",
                "prod-general1",
                "prod-general2",
                "prod-general3",
                "prod-gpu1",
                "prod-ingress1",
                "prod-ingress2",
            ]
        );
        assert!(vms[..3].iter().all(|v| v.taints == [CONTROL_PLANE_TAINT]));
        assert_eq!(vms[6].taints, ["dedicated=gpu:NoSchedule"]);
        assert_eq!(
            vms[7].share,
            Some(ShareSpec {
                port: 8000,
                public: true
            })
        );
    }

    #[test]
    fn load_reports_missing_file_with_its_name() {
        let err = match load(Path::new("/nonexistent/fleet.yaml")) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        };
        assert!(
            err.to_string()
                .starts_with("/nonexistent/fleet.yaml: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn schema_covers_the_format_with_descriptions() {
        let schema = json_schema();
        let text = schema.to_string();
        for key in [
            "apiVersion",
            "controlPlane",
            "pools",
            "serverArgs",
            "authKey",
            "tailnet",
            "share",
        ] {
            assert!(text.contains(&format!("\"{key}\"")), "schema lacks {key}");
        }
        assert!(
            text.contains("etcd needs an odd count"),
            "doc comments become descriptions"
        );
        assert!(
            text.contains("\"additionalProperties\":false"),
            "unknown keys are refused"
        );
        assert!(text.contains("\"env\"") && text.contains("\"file\""));
        assert_eq!(schema["properties"]["apiVersion"]["const"], API_VERSION);
        assert_eq!(schema["properties"]["kind"]["const"], KIND);
        let secret = &schema["$defs"]["SecretRef"]["anyOf"];
        assert_eq!(secret[0]["additionalProperties"], false, "{secret}");
    }

    #[test]
    fn debug_of_a_fleet_shows_only_secret_references() {
        let yaml = std::fs::read_to_string(example("ha.yaml")).unwrap_or_default();
        let f = match parse(&yaml, "ha.yaml") {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        let dbg = format!("{f:?}");
        assert!(dbg.contains("{env: K3S_TOKEN}"), "{dbg}");
        assert!(dbg.contains("{file: secrets/ts-authkey}"));
        // A literal is dropped while reading: it never reaches the model.
        let lit = yaml.replace("{env: K3S_TOKEN}", "hunter2-secret-value");
        let errs = match parse(&lit, "ha.yaml") {
            Ok(_) => panic!("literal secret accepted"),
            Err(e) => e,
        };
        assert!(!format!("{errs:?}{errs}").contains("hunter2"));
        let model: Result<Fleet, _> = serde_saphyr::from_str(&lit);
        assert!(!format!("{model:?}").contains("hunter2"));
    }

    #[test]
    fn secret_refs_resolve_from_env_and_files() {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        std::fs::create_dir(dir.path().join("secrets")).unwrap_or_default();
        std::fs::write(dir.path().join("secrets/key"), "tskey-abc\n").unwrap_or_default();
        let file = SecretRef::File(PathBuf::from("secrets/key"));
        match file.resolve(dir.path()) {
            Ok(s) => assert_eq!(s.expose(), "tskey-abc"),
            Err(e) => panic!("{e}"),
        }
        let missing = SecretRef::File(PathBuf::from("secrets/nope"));
        let err = missing
            .resolve(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("secrets/nope"), "{err}");

        let unset = SecretRef::Env("EXK8S_SURELY_UNSET_VAR_12345".into());
        let err = unset
            .resolve(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("EXK8S_SURELY_UNSET_VAR_12345 is not set"),
            "{err}"
        );
        assert!(
            err.contains("hint: export EXK8S_SURELY_UNSET_VAR_12345="),
            "{err}"
        );
        if std::env::var("PATH").is_ok_and(|p| !p.is_empty()) {
            assert!(SecretRef::Env("PATH".into()).resolve(dir.path()).is_ok());
        }
        let err = SecretRef::Literal
            .resolve(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("{env: TS_AUTHKEY}"), "{err}");
    }
}
