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
        "the plan is stale: the fleet file changed since it was made (fingerprint then {planned}, now {now})"
    )]
    FleetChanged { planned: String, now: String },
    #[error(
        "the plan is stale: the VMs on exe.dev changed since it was made (fingerprint then {planned}, now {now})"
    )]
    ObservedChanged { planned: String, now: String },
    #[error(
        "the plan's changes are not what the fleet and exe.dev call for now: {detail} (was the plan file edited?)"
    )]
    ChangesDiffer { detail: String },
    #[error("the plan is for fleet {planned:?} but the fleet file is {now:?}")]
    WrongFleet { planned: String, now: String },
    #[error("the plan was saved in repository {planned:?}, but this runs in {now:?}")]
    WrongRepository { planned: String, now: String },
    #[error(
        "the plan installs k3s {planned}, but the fleet file pins k3s.version {now} (was the plan file edited?)"
    )]
    ReleaseNotPinned { planned: String, now: String },
    #[error(
        "the plan is stale: it installs k3s {planned} from channel {channel}, which now resolves to {now}"
    )]
    ChannelMoved {
        planned: String,
        channel: String,
        now: String,
    },
    #[error(
        "the plan installs k3s {planned}, but the fleet and exe.dev call for {now} (was the plan file edited?)"
    )]
    ReleaseDiffers { planned: String, now: String },
    #[error("the plan is a {planned} plan, but a {now} plan is being carried out")]
    ModeDiffers { planned: String, now: String },
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
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) if looks_like_a_fleet(path, text) => {
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
fn looks_like_a_fleet(path: &str, text: &str) -> bool {
    let yaml = Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    yaml || text
        .lines()
        .any(|l| l.starts_with("apiVersion:") || l.starts_with("kind: Fleet"))
}

/// In a saved plan, `fleet_file` is relative to the plan file's directory,
/// so `apply dir/p.plan` finds the fleet from any working directory and a
/// plan kept beside its fleet in a repository works wherever that is
/// checked out. `plan_dir` and `fleet` are absolute (the caller resolves
/// them on disk).
pub fn fleet_path_for_saving(plan_dir: &Path, fleet: &Path) -> String {
    relative_to(plan_dir, fleet).display().to_string()
}

/// The saved `fleet_file` of a plan read from `plan_path`, as a path usable
/// from the working directory.
pub fn fleet_path_after_loading(plan_path: &Path, stored: &str) -> String {
    let stored_path = Path::new(stored);
    match plan_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !stored.is_empty() && stored_path.is_relative() => {
            dir.join(stored_path).display().to_string()
        }
        _ => stored.to_string(),
    }
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

impl PlanFileError {
    /// Whether the plan no longer matches the world (as opposed to a file
    /// that cannot be read): the remedy is a fresh, reviewed plan.
    pub fn is_stale(&self) -> bool {
        matches!(
            self,
            PlanFileError::FleetChanged { .. }
                | PlanFileError::ObservedChanged { .. }
                | PlanFileError::ReleaseNotPinned { .. }
                | PlanFileError::ChannelMoved { .. }
                | PlanFileError::ReleaseDiffers { .. }
                | PlanFileError::ModeDiffers { .. }
                | PlanFileError::ChangesDiffer { .. }
                | PlanFileError::WrongFleet { .. }
                | PlanFileError::WrongRepository { .. }
        )
    }
}

/// Refuses a saved plan that disagrees with `fresh`, the plan re-derived
/// from the fleet file being applied and exe.dev now (and the release the
/// fleet calls for now): its fleet, its fleet file, its mode, its release,
/// the VMs it was made against, its changes. A saved plan is a claim (in
/// CI, an artifact its pull request's author controls), checked here
/// field by field; the caller then carries out `fresh`, not the file.
pub fn check_fresh(saved: &Plan, fresh: &Plan) -> Result<(), PlanFileError> {
    let one = |s: &str| crate::base::text::one_line(s).into_owned();
    if saved.fleet != fresh.fleet {
        return Err(PlanFileError::WrongFleet {
            planned: one(&saved.fleet),
            now: fresh.fleet.clone(),
        });
    }
    if saved.mode != fresh.mode {
        return Err(PlanFileError::ModeDiffers {
            planned: saved.mode.as_str().to_string(),
            now: fresh.mode.as_str().to_string(),
        });
    }
    if saved.fleet_fingerprint != fresh.fleet_fingerprint {
        return Err(PlanFileError::FleetChanged {
            planned: one(&saved.fleet_fingerprint),
            now: fresh.fleet_fingerprint.clone(),
        });
    }
    if saved.release != fresh.release {
        let version = |r: &Option<super::PlanRelease>| {
            r.as_ref().map_or("(none)".to_string(), |r| one(&r.version))
        };
        let planned = version(&saved.release);
        let now = version(&fresh.release);
        let saved_channel = saved.release.as_ref().and_then(|r| r.channel.as_deref());
        return Err(match fresh.release.as_ref().map(|r| r.channel.as_deref()) {
            Some(None) => PlanFileError::ReleaseNotPinned { planned, now },
            Some(Some(c)) if saved_channel == Some(c) => PlanFileError::ChannelMoved {
                planned,
                channel: c.to_string(),
                now,
            },
            _ => PlanFileError::ReleaseDiffers { planned, now },
        });
    }
    if saved.observed_fingerprint != fresh.observed_fingerprint {
        return Err(PlanFileError::ObservedChanged {
            planned: one(&saved.observed_fingerprint),
            now: fresh.observed_fingerprint.clone(),
        });
    }
    if saved.changes != fresh.changes {
        return Err(PlanFileError::ChangesDiffer {
            detail: first_difference(saved, fresh),
        });
    }
    Ok(())
}

/// The first VM whose change differs between a saved plan and the fresh
/// one, in words: `acme-web1: delete in the plan, none now`.
fn first_difference(saved: &Plan, fresh: &Plan) -> String {
    let one = |s: &str| crate::base::text::one_line(s).into_owned();
    let action = |p: &Plan, vm: &str| {
        p.changes
            .iter()
            .find(|c| c.vm == vm)
            .map_or("none", |c| c.action.as_str())
    };
    let vms = saved.changes.iter().chain(&fresh.changes).map(|c| &c.vm);
    for vm in vms {
        let a = saved.changes.iter().find(|c| &c.vm == vm);
        let b = fresh.changes.iter().find(|c| &c.vm == vm);
        if a != b {
            let (was, now) = (action(saved, vm), action(fresh, vm));
            return if was == now {
                format!("{}: {was} in both, with other details", one(vm))
            } else {
                format!("{}: {was} in the plan, {now} now", one(vm))
            };
        }
    }
    "the same changes in another order".to_string()
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
        assert_eq!(
            fleet_path_after_loading(Path::new("plans/p.plan"), "../fleet.yaml"),
            "plans/../fleet.yaml"
        );
        assert_eq!(
            fleet_path_after_loading(Path::new("p.plan"), "fleet.yaml"),
            "fleet.yaml"
        );
        assert_eq!(
            fleet_path_after_loading(Path::new("d/p.plan"), "/abs/f.yaml"),
            "/abs/f.yaml"
        );
    }

    #[test]
    fn a_fleet_given_as_a_plan_is_named_for_what_it_is() {
        let e = from_text("apiVersion: exedev-k8s/v1\nkind: Fleet\n", "fleet.yaml").unwrap_err();
        assert!(matches!(e, PlanFileError::FleetNotPlan { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("did you mean `exedev-k8s apply -f fleet.yaml`?")
        );
        let e = from_text("garbage", "p.plan").unwrap_err();
        assert!(matches!(e, PlanFileError::Format { .. }), "{e}");
    }
}
