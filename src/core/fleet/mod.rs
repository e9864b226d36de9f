//! The fleet file: its format, its validation and the VMs it asks for.
//!
//! Pure: everything works on strings and values, so the plan and the tests
//! need no disk or network. Reading the file and resolving the secrets it
//! references happen at the edge (`crate::edges::workspace`).

mod desired;
mod error;
mod model;
mod parse;
mod resolved;
mod schema;
pub mod secret_flags;
pub mod snapshots;
mod validate;

pub use desired::{
    CONTROL_PLANE_POOL, CONTROL_PLANE_TAINT, DesiredVm, FLEET_LABEL_KEY, MAX_SERVERS, Ownership,
    POOL_LABEL_KEY, RESERVED_LABEL_PREFIX, RESERVED_TAG_PREFIX, Role, SERVER_COUNTS, SHARE_TAG,
    SPEC_COMMENT_PREFIX, ShareSpec, concerns, desired_group, desired_vms, fleet_label,
    group_templates, has_ownership_tag, is_desired_name, ownership, ownership_tag, owns,
    pool_label, pool_tag, role_tag,
};
pub use error::{FleetError, FleetErrors};
pub use model::*;
pub use parse::parse;
pub use resolved::{
    EtcdSnapshots, Fleet, K3sFlag, K3sRelease, K3sSpec, Located, Location, NodeGroup, SnapshotS3,
    TailscaleSpec, Taint, TaintEffect,
};

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
pub(crate) use schema::pattern_matcher;
pub use schema::{json_schema, schema_id};

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn load(path: &Path) -> Result<Fleet, FleetErrors> {
        crate::edges::workspace::load_fleet(path).map(|l| l.fleet)
    }

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
        assert_eq!(f.name, "demo");
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
        assert_eq!(f.name, "prod");
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
        // k3s flags: a string, or a secret flag {flag, secret}.
        let arg = &schema["$defs"]["K3sArg"]["anyOf"];
        assert_eq!(arg[0]["type"], "string", "{arg}");
        assert_eq!(arg[1]["additionalProperties"], false, "{arg}");
        assert_eq!(
            arg[1]["required"],
            serde_json::json!(["flag", "secret"]),
            "{arg}"
        );
        assert_eq!(
            schema["properties"]["k3s"]["$ref"]
                .as_str()
                .map(|r| r.ends_with("K3s")),
            Some(true)
        );
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
        // The S3 keys of etcd.snapshots, likewise.
        assert!(dbg.contains("{env: S3_ACCESS_KEY}"), "{dbg}");
        assert!(dbg.contains("{file: secrets/s3-secret-key}"), "{dbg}");
        // A literal is dropped while reading: it never reaches the model.
        let lit = yaml.replace("{env: K3S_TOKEN}", "hunter2-secret-value");
        let errs = match parse(&lit, "ha.yaml") {
            Ok(_) => panic!("literal secret accepted"),
            Err(e) => e,
        };
        assert!(!format!("{errs:?}{errs}").contains("hunter2"));
        let model: Result<FleetFile, _> = serde_saphyr::from_str(&lit);
        assert!(!format!("{model:?}").contains("hunter2"));
    }
}
