//! The fleet file's JSON Schema, for editors (YAML language server) and CI.
//!
//! The structure and descriptions come from the model (schemars, doc
//! comments); the rules come from the constants the validator checks with:
//! ranges (`CPU_RANGE`, `SHARE_PORTS`, `MAX_POOL_COUNT`, `MIN_MAX_UNAVAILABLE`), enums
//! (`SERVER_COUNTS`, `DISABLABLE`, `TAINT_EFFECTS`), snapshot rules
//! (`snapshots::MIN_RETENTION`, the S3 bucket patterns), name rules
//! (`names::*_PATTERN`, tag length, reserved prefixes), sizes
//! (`sizes::UNITS`) and `validate::patterns`, each proven equal to the
//! validator's function by this module's tests. So an editor refuses what
//! `validate` refuses, as far as a schema can say it. What it cannot say is
//! left to `validate`: per-role minimum sizes, computed VM name lengths,
//! duplicate pool names, the 253-character limit of DNS names, a snapshot
//! schedule's cron grammar and `serverArgs` repeating `etcd.snapshots`.

use serde_json::{Map, Value, json};

use super::desired::{CONTROL_PLANE_POOL, SERVER_COUNTS, ownership_tag, pool_tag};
use super::model::{API_VERSION, FleetFile};
use super::snapshots::{BUCKET_PATTERN, BUCKET_REFUSED_PATTERN, MIN_RETENTION};
use super::validate::{
    CPU_RANGE, DISABLABLE, MAX_POOL_COUNT, MIN_MAX_UNAVAILABLE, SHARE_PORTS, patterns,
};
use crate::base::names::{MAX_TAG_LEN, NAME_SEGMENT_PATTERN, POOL_SEGMENT_PATTERN, tag_pattern};

/// The schema's identity: one per fleet format version.
pub fn schema_id() -> String {
    format!("urn:{}:fleet-schema", API_VERSION.replace('/', ":"))
}

/// The JSON Schema of the fleet file.
pub fn json_schema() -> Value {
    let mut schema = schemars::schema_for!(FleetFile).to_value();
    let root = obj(&mut schema);
    root.insert("$id".into(), schema_id().into());

    let cluster = prop(&mut schema, "Metadata", "name");
    cluster.insert("pattern".into(), NAME_SEGMENT_PATTERN.into());
    cluster.insert(
        "maxLength".into(),
        (MAX_TAG_LEN - ownership_tag("").len()).into(),
    );

    // Exactly one of version and channel.
    obj(def(&mut schema, "K3s")).insert(
        "oneOf".into(),
        json!([{"required": ["version"]}, {"required": ["channel"]}]),
    );
    prop(&mut schema, "K3s", "version").insert("pattern".into(), patterns::K3S_VERSION.into());
    prop(&mut schema, "K3s", "channel").insert("pattern".into(), patterns::k3s_channel().into());
    for args in ["serverArgs", "agentArgs"] {
        items(&mut schema, "K3s", args).insert("pattern".into(), patterns::K3S_ARG.into());
    }
    items(&mut schema, "K3s", "disable").insert("enum".into(), json!(DISABLABLE));

    let tailnet = prop(&mut schema, "Tailscale", "tailnet");
    tailnet.insert("pattern".into(), patterns::tailnet().into());
    tailnet.insert("maxLength".into(), 253.into());

    for secret in schema
        .pointer_mut("/$defs/SecretRef/anyOf")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(env) = secret
            .pointer_mut("/properties/env")
            .and_then(Value::as_object_mut)
        {
            env.insert("pattern".into(), patterns::ENV_NAME.into());
        }
        if let Some(file) = secret
            .pointer_mut("/properties/file")
            .and_then(Value::as_object_mut)
        {
            file.insert("minLength".into(), 1.into());
        }
    }

    for group in ["Defaults", "ControlPlane", "Pool"] {
        prop(&mut schema, group, "image").insert("pattern".into(), patterns::IMAGE.into());
        let cpu = prop(&mut schema, group, "cpu");
        cpu.insert("minimum".into(), (*CPU_RANGE.start()).into());
        cpu.insert("maximum".into(), (*CPU_RANGE.end()).into());
        for size in ["memory", "disk"] {
            prop(&mut schema, group, size).insert("pattern".into(), patterns::size().into());
        }
        let tag = items(&mut schema, group, "tags");
        tag.insert("pattern".into(), tag_pattern().into());
        tag.insert("not".into(), json!({"pattern": patterns::reserved_tag()}));
        if group != "Defaults" {
            let labels = prop(&mut schema, group, "labels");
            labels.insert(
                "propertyNames".into(),
                json!({
                    "pattern": patterns::label_key_full(),
                    "not": {"pattern": patterns::reserved_label()},
                }),
            );
            labels.insert(
                "additionalProperties".into(),
                json!({"type": "string", "pattern": patterns::label_value()}),
            );
            items(&mut schema, group, "taints").insert("pattern".into(), patterns::taint().into());
        }
    }

    let mut counts: Vec<Value> = SERVER_COUNTS.iter().map(|c| json!(c)).collect();
    counts.push(Value::Null);
    prop(&mut schema, "ControlPlane", "count").insert("enum".into(), counts.into());

    let pool = prop(&mut schema, "Pool", "name");
    pool.insert("pattern".into(), POOL_SEGMENT_PATTERN.into());
    pool.insert(
        "maxLength".into(),
        (MAX_TAG_LEN - pool_tag("").len()).into(),
    );
    pool.insert("not".into(), json!({"const": CONTROL_PLANE_POOL}));
    prop(&mut schema, "Pool", "count").insert("maximum".into(), MAX_POOL_COUNT.into());
    prop(&mut schema, "Pool", "maxUnavailable")
        .insert("minimum".into(), MIN_MAX_UNAVAILABLE.into());

    prop(&mut schema, "Snapshots", "retention").insert("minimum".into(), MIN_RETENTION.into());
    let bucket = prop(&mut schema, "SnapshotS3", "bucket");
    bucket.insert("pattern".into(), BUCKET_PATTERN.into());
    bucket.insert("not".into(), json!({"pattern": BUCKET_REFUSED_PATTERN}));

    let port = prop(&mut schema, "Share", "port");
    port.insert("minimum".into(), (*SHARE_PORTS.start()).into());
    port.insert("maximum".into(), (*SHARE_PORTS.end()).into());
    schema
}

/// `v` as an object. The schemars output is an object at every place this
/// module touches (a test checks that no rule lands on a made-up property);
/// anything else is a bug, and then a fresh map keeps `schema` printable
/// instead of panicking.
fn obj(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        other => obj(other),
    }
}

fn def<'a>(schema: &'a mut Value, name: &str) -> &'a mut Value {
    obj(obj(schema).entry("$defs").or_insert_with(|| json!({})))
        .entry(name)
        .or_insert_with(|| json!({}))
}

fn prop<'a>(schema: &'a mut Value, def_name: &str, name: &str) -> &'a mut Map<String, Value> {
    let d = obj(def(schema, def_name));
    let props = obj(d.entry("properties").or_insert_with(|| json!({})));
    obj(props.entry(name).or_insert_with(|| json!({})))
}

fn items<'a>(schema: &'a mut Value, def_name: &str, name: &str) -> &'a mut Map<String, Value> {
    obj(prop(schema, def_name, name)
        .entry("items")
        .or_insert_with(|| json!({})))
}

/// A string test against `pattern` with JSON Schema's own semantics (the
/// `jsonschema` crate), for tests proving a pattern equals its validator.
#[cfg(test)]
pub(crate) fn pattern_matcher(pattern: &str) -> impl Fn(&str) -> bool {
    let v = jsonschema::validator_for(&json!({"type": "string", "pattern": pattern}))
        .unwrap_or_else(|e| panic!("pattern {pattern:?}: {e}"));
    move |s: &str| v.is_valid(&json!(s))
}

#[cfg(test)]
mod tests;
