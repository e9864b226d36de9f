//! Saved plans (`plan --out FILE`, `apply FILE`): the plan as JSON, with the
//! fingerprints that let apply refuse a plan that has gone stale. Holds no
//! secret: plans never contain any.

use std::path::Path;

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
        "{path} is a fleet file, not a saved plan: did you mean `exedev-k8s apply -f {path}`? (a plan file comes from `plan --out`)"
    )]
    FleetNotPlan { path: String },
    #[error(
        "{path} has plan format {found}; this exedev-k8s reads format {FORMAT_VERSION}: re-run `plan --out`"
    )]
    Version { path: String, found: u32 },
    #[error(
        "the plan is stale: the fleet file changed since it was made (plan {planned}, now {now}); run `plan --out` again and review it"
    )]
    FleetChanged { planned: String, now: String },
    #[error(
        "the plan is stale: the VMs on exe.dev changed since it was made (plan {planned}, now {now}); run `plan --out` again and review it"
    )]
    ObservedChanged { planned: String, now: String },
    #[error(
        "the plan's changes are not what the fleet and exe.dev call for now (was the file edited?); run `plan --out` again and review it"
    )]
    ChangesDiffer,
    #[error("the plan is for fleet {planned:?} but the fleet file is {now:?}")]
    WrongFleet { planned: String, now: String },
}

/// Writes the plan as JSON.
pub fn save(plan: &Plan, path: &Path) -> Result<(), PlanFileError> {
    let text = serde_json::to_string_pretty(plan).map_err(|e| PlanFileError::Format {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    std::fs::write(path, text + "\n").map_err(|source| PlanFileError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a saved plan.
pub fn load(path: &Path) -> Result<Plan, PlanFileError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Read {
        path: p.clone(),
        source,
    })?;
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(_) if looks_like_a_fleet(path, &text) => {
            return Err(PlanFileError::FleetNotPlan { path: p });
        }
        Err(e) => {
            return Err(PlanFileError::Format {
                path: p,
                detail: e.to_string(),
            });
        }
    };
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

/// A YAML file, or one that reads like a fleet (`apply fleet.yaml` with the
/// `-f` forgotten).
fn looks_like_a_fleet(path: &Path, text: &str) -> bool {
    let yaml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    yaml || text.lines().any(|l| l.starts_with("apiVersion:") || l.starts_with("kind: Fleet"))
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
