//! The fleet file: its format, its validation and the VMs it asks for.
//!
//! Pure except for [`load`] (reads the fleet file) and
//! [`SecretRef::resolve`] (reads a referenced secret): everything else works
//! on strings and values, so the plan and the tests need no disk or network.

mod desired;
mod error;
mod model;
mod parse;
mod validate;

pub use desired::{
    CONTROL_PLANE_POOL, CONTROL_PLANE_TAINT, DesiredVm, FLEET_LABEL_KEY, POOL_LABEL_KEY,
    RESERVED_LABEL_PREFIX, RESERVED_TAG_PREFIX, Role, ShareSpec, desired_vms, fleet_label,
    ownership_tag, owns, pool_label, pool_tag, role_tag, vm_name,
};
pub use error::{FleetError, FleetErrors};
pub use model::*;
pub use parse::{load, parse};

/// The JSON schema of the fleet file, for editors (YAML language server) and
/// the `schema` command. Descriptions come from the model's doc comments.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(Fleet).to_value()
}
