//! Saved plans (`plan --out FILE`, `apply FILE`): the plan as JSON, with the
//! fingerprints that let apply refuse a plan that has gone stale. Holds no
//! secret: plans never contain any.

use std::path::{Component, Path, PathBuf};

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

/// Writes the plan as JSON. Its `fleet_file` is stored relative to the
/// plan file's directory, so `apply dir/p.plan` finds the fleet from any
/// working directory, and a plan kept beside the fleet in a repository keeps
/// working wherever the repository is checked out.
pub fn save(plan: &Plan, path: &Path) -> Result<(), PlanFileError> {
    let mut plan = plan.clone();
    if !plan.fleet_file.is_empty() {
        plan.fleet_file = fleet_path_from(path, Path::new(&plan.fleet_file))
            .display()
            .to_string();
    }
    let text = serde_json::to_string_pretty(&plan).map_err(|e| PlanFileError::Format {
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
    let mut plan: Plan = serde_json::from_value(value).map_err(|e| PlanFileError::Format {
        path: p,
        detail: e.to_string(),
    })?;
    // Stored relative to the plan file (see `save`): make it usable from here.
    let stored = Path::new(&plan.fleet_file);
    if !plan.fleet_file.is_empty() && stored.is_relative() {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            plan.fleet_file = dir.join(stored).display().to_string();
        }
    }
    Ok(plan)
}

/// `fleet` (relative to the working directory, or absolute) as seen from the
/// directory of the plan file `plan`.
fn fleet_path_from(plan: &Path, fleet: &Path) -> PathBuf {
    let real = |p: &Path| {
        std::fs::canonicalize(p)
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let plan_dir = match plan.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => real(d),
        None => real(Path::new(".")),
    };
    relative_to(&plan_dir, &real(fleet))
}

/// The path from directory `from` to `to`, both absolute: `../fleet.yaml`.
pub fn relative_to(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to_parts: Vec<Component> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    if common == 0 {
        return to.to_path_buf();
    }
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to_parts[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// A YAML file, or one that reads like a fleet (`apply fleet.yaml` with the
/// `-f` forgotten).
fn looks_like_a_fleet(path: &Path, text: &str) -> bool {
    let yaml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    yaml || text
        .lines()
        .any(|l| l.starts_with("apiVersion:") || l.starts_with("kind: Fleet"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_between_directories() {
        for (from, to, want) in [
            ("/w/repo", "/w/repo/fleet.yaml", "fleet.yaml"),
            ("/w/repo/plans", "/w/repo/fleet.yaml", "../fleet.yaml"),
            ("/w/repo", "/w/repo/env/prod.yaml", "env/prod.yaml"),
            ("/tmp/x/y", "/w/fleet.yaml", "../../../w/fleet.yaml"),
        ] {
            assert_eq!(relative_to(Path::new(from), Path::new(to)), Path::new(want));
        }
    }

    /// Saved from one directory, loaded from another: the fleet path points
    /// at the same file.
    #[test]
    fn the_fleet_path_is_kept_relative_to_the_plan_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("repo/plans")).unwrap();
        std::fs::write(root.join("repo/fleet.yaml"), "x").unwrap();
        let plan = Plan {
            format_version: FORMAT_VERSION,
            fleet: "demo".into(),
            mode: "apply".into(),
            changes: Vec::new(),
            summary: Default::default(),
            warnings: Vec::new(),
            fleet_file: root.join("repo/fleet.yaml").display().to_string(),
            targets: Vec::new(),
            fleet_fingerprint: "f".into(),
            observed_fingerprint: "o".into(),
        };
        let file = root.join("repo/plans/p.plan");
        save(&plan, &file).unwrap();
        let stored: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(stored["fleet_file"], "../fleet.yaml");
        let loaded = load(&file).unwrap();
        assert_eq!(
            Path::new(&loaded.fleet_file).canonicalize().unwrap(),
            root.join("repo/fleet.yaml")
        );
    }
}
