//! Saved plans (`plan --out FILE`, `apply FILE`): the plan as JSON, with the
//! fingerprints that let apply refuse a plan that has gone stale. Holds no
//! secret: plans never contain any.

use super::{FORMAT_VERSION, Plan};

/// Why a saved plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read plan file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write plan file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an exedev-k8s plan file: {detail}")]
    Format { path: String, detail: String },
    #[error(
        "{path} has plan format {found}; this exedev-k8s reads format {FORMAT_VERSION}: re-run `plan --out`"
    )]
    Version { path: String, found: u32 },
    #[error(
        "the plan is stale: the fleet file changed since it was made (fingerprint then {planned}, now {now})"
    )]
    FleetChanged { planned: String, now: String },
    #[error(
        "the plan is stale: the VMs on exe.dev changed since it was made (fingerprint then {planned}, now {now})"
    )]
    ObservedChanged { planned: String, now: String },
    #[error(
        "the plan's changes are not what the fleet and exe.dev call for now (was the plan file edited?)"
    )]
    ChangesDiffer,
    #[error("the plan is for fleet {planned:?} but the fleet file is {now:?}")]
    WrongFleet { planned: String, now: String },
}

/// The plan as saved: pretty JSON and a final newline. `path` names the
/// file in errors.
pub fn to_text(plan: &Plan, path: &str) -> Result<String, PlanFileError> {
    serde_json::to_string_pretty(plan)
        .map(|t| t + "\n")
        .map_err(|e| PlanFileError::Format {
            path: path.to_string(),
            detail: e.to_string(),
        })
}

/// Reads a saved plan's text, refusing another format version first so that
/// an old file gets "re-run plan", not a field error.
pub fn from_text(text: &str, path: &str) -> Result<Plan, PlanFileError> {
    let p = path.to_string();
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| PlanFileError::Format {
            path: p.clone(),
            detail: e.to_string(),
        })?;
    let found = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    if found != FORMAT_VERSION {
        return Err(PlanFileError::Version { path: p, found });
    }
    serde_json::from_value(value).map_err(|e| PlanFileError::Format {
        path: p,
        detail: e.to_string(),
    })
}

impl PlanFileError {
    /// Whether the plan no longer matches the world (as opposed to a file
    /// that cannot be read): the remedy is a fresh, reviewed plan.
    pub fn is_stale(&self) -> bool {
        matches!(
            self,
            PlanFileError::FleetChanged { .. }
                | PlanFileError::ObservedChanged { .. }
                | PlanFileError::ChangesDiffer
                | PlanFileError::WrongFleet { .. }
        )
    }
}

/// Refuses a saved plan whose fleet or observed state no longer matches.
pub fn check_fresh(saved: &Plan, fresh: &Plan) -> Result<(), PlanFileError> {
    if saved.fleet != fresh.fleet {
        return Err(PlanFileError::WrongFleet {
            planned: saved.fleet.clone(),
            now: fresh.fleet.clone(),
        });
    }
    if saved.fleet_fingerprint != fresh.fleet_fingerprint {
        return Err(PlanFileError::FleetChanged {
            planned: saved.fleet_fingerprint.clone(),
            now: fresh.fleet_fingerprint.clone(),
        });
    }
    if saved.observed_fingerprint != fresh.observed_fingerprint {
        return Err(PlanFileError::ObservedChanged {
            planned: saved.observed_fingerprint.clone(),
            now: fresh.observed_fingerprint.clone(),
        });
    }
    if saved.changes != fresh.changes {
        return Err(PlanFileError::ChangesDiffer);
    }
    Ok(())
}
