//! The fleet's files on this machine, read and written here so that the
//! pure core never touches a disk: the fleet file (read once, parsed and
//! fingerprinted), saved plans, and the secrets a fleet references.

use std::path::{Path, PathBuf};

use crate::base::secret::Secret;
use crate::core::fleet::{self, Fleet, FleetError, FleetErrors, SecretRef};
use crate::core::plan::{self, Plan, file::PlanFileError};

/// A fleet file, parsed and validated, with the fingerprint of its bytes
/// (saved plans record it to detect an edited file).
#[derive(Debug, Clone)]
pub struct LoadedFleet {
    pub fleet: Fleet,
    pub fingerprint: String,
    /// The objects of the fleet's `manifests:`, in file order
    /// ([`read_manifests`]).
    pub manifests: Vec<serde_json::Value>,
}

/// Reads and validates the fleet file at `path`. Errors name the file as the
/// user wrote it, so they can be clicked in a terminal.
pub fn load_fleet(path: &Path) -> Result<LoadedFleet, FleetErrors> {
    let file_name = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| FleetError {
        file: file_name.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read the fleet file: {e}"),
        hint: Some("check the path given with --file".to_string()),
    })?;
    let fleet = fleet::parse(&source, &file_name)?;
    let manifests = read_manifests(&fleet, &fleet_dir(path))?;
    Ok(LoadedFleet {
        fleet,
        fingerprint: plan::hex12(source.as_bytes()),
        manifests,
    })
}

/// The largest manifest file read: a cluster's own objects, not a bundle.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// Reads the fleet's `manifests:` (relative to `dir`, the fleet file's
/// directory): each file must read, pass `yaml_guard` (no tags, no control
/// characters) and hold YAML documents that are Kubernetes objects
/// (`apiVersion`, `kind`, `metadata.name`). Every failure at once, located
/// at the fleet file's entry, with the manifest's own line where there is
/// one.
pub fn read_manifests(f: &Fleet, dir: &Path) -> Result<Vec<serde_json::Value>, FleetErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for m in &f.manifests {
        let shown = crate::base::text::one_line(&m.value).into_owned();
        let fail = |what: String| {
            FleetError::at(
                &f.file,
                m.at.line,
                m.at.column,
                format!("manifest {shown}: {what}"),
                "fix the manifest, or remove it from `manifests:`",
            )
        };
        let path = dir.join(&m.value);
        let text = match std::fs::metadata(&path) {
            Ok(md) if md.len() > MAX_MANIFEST_BYTES => {
                errors.push(fail(format!(
                    "is {} bytes, more than {MAX_MANIFEST_BYTES}",
                    md.len()
                )));
                continue;
            }
            Ok(_) => match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(fail(format!("cannot be read: {e}")));
                    continue;
                }
            },
            Err(e) => {
                errors.push(fail(format!(
                    "cannot be read at {}: {e}",
                    crate::base::text::one_line(&path.display().to_string())
                )));
                continue;
            }
        };
        match parse_manifest(&text) {
            Ok(objects) => out.extend(objects),
            Err(why) => errors.push(fail(why)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(FleetErrors(errors))
    }
}

/// The Kubernetes objects of a manifest's YAML documents (empty documents
/// skipped), or what is wrong, with the manifest's line.
pub fn parse_manifest(text: &str) -> Result<Vec<serde_json::Value>, String> {
    if let Some(issue) = crate::base::yaml_guard::check(text).first() {
        return Err(format!("line {}: {}", issue.line, issue.message()));
    }
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| crate::edges::cluster::yaml_error_without_content(&e))?;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let field = |k: &str| {
            doc.get(k)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let name = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty());
        if field("apiVersion").is_none() || field("kind").is_none() || name.is_none() {
            return Err(format!(
                "document {} is not a Kubernetes object (it needs apiVersion, kind and metadata.name)",
                i + 1
            ));
        }
        out.push(doc);
    }
    Ok(out)
}

/// The directory a fleet file's relative paths and local state hang off.
pub fn fleet_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The root of the git repository holding `dir` (the nearest ancestor
/// with a `.git` directory, or a `.git` file as in a worktree), if any.
/// `dir` should be absolute.
pub fn repository_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// The repository a CI job runs for (GitHub's `GITHUB_REPOSITORY`), if
/// any: recorded in saved plans and checked by apply.
pub fn ci_repository() -> Option<String> {
    std::env::var("GITHUB_REPOSITORY")
        .ok()
        .filter(|r| !r.is_empty())
}

fn real(q: &Path) -> PathBuf {
    std::fs::canonicalize(q)
        .or_else(|_| std::path::absolute(q))
        .unwrap_or_else(|_| q.to_path_buf())
}

/// Writes a plan for `apply PLANFILE`. Its fleet path is recorded relative
/// to the root of the git repository holding the fleet, or, outside any
/// repository, relative to the plan file's directory
/// ([`plan::FleetFileBase`] says why).
pub fn save_plan(p: &Plan, path: &Path) -> Result<(), PlanFileError> {
    let mut p = p.clone();
    if !p.fleet_file.is_empty() {
        let fleet = real(Path::new(&p.fleet_file));
        match repository_root(&fleet_dir(&fleet)) {
            Some(root) => {
                p.fleet_file = plan::file::fleet_path_for_saving(&root, &fleet);
                p.fleet_file_base = plan::FleetFileBase::Repository;
            }
            None => {
                let plan_dir = real(&fleet_dir(path));
                p.fleet_file = plan::file::fleet_path_for_saving(&plan_dir, &fleet);
                p.fleet_file_base = plan::FleetFileBase::PlanFile;
            }
        }
    }
    p.repository = ci_repository();
    let text = plan::file::to_text(&p, &path.display().to_string())?;
    std::fs::write(path, text).map_err(|source| PlanFileError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// `path` relative to the working directory when it lies under it (as a
/// user would type it in a hint), else as it is.
fn shorter(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .map(|d| real(&d))
        .and_then(|d| path.strip_prefix(d).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_path_buf())
}

/// Reads a plan saved with `plan --out`, its `fleet_file` made usable from
/// the working directory. A repository-relative path is resolved against
/// the repository holding the plan file, else the one holding the working
/// directory (a plan downloaded outside the checkout, e.g. to
/// `$RUNNER_TEMP`), else the working directory itself.
pub fn load_plan(path: &Path) -> Result<Plan, PlanFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let mut p = plan::file::from_text(&text, &path.display().to_string())?;
    p.fleet_file = match p.fleet_file_base {
        plan::FleetFileBase::PlanFile => plan::file::fleet_path_after_loading(path, &p.fleet_file),
        plan::FleetFileBase::Repository => {
            // Saved from inside the repository, it never leaves it; a path
            // that does was edited in (a plan file is CI's artifact).
            let stored = Path::new(&p.fleet_file);
            if !stored
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            {
                return Err(PlanFileError::Format {
                    path: path.display().to_string(),
                    detail: format!(
                        "its fleet path {:?} is not inside the repository (was the plan file edited?)",
                        crate::base::text::one_line(&p.fleet_file)
                    ),
                });
            }
            let root = repository_root(&real(&fleet_dir(path))).or_else(|| {
                std::env::current_dir()
                    .ok()
                    .and_then(|d| repository_root(&d))
            });
            match root {
                Some(r) => shorter(&r.join(&p.fleet_file)).display().to_string(),
                None => p.fleet_file.clone(),
            }
        }
    };
    Ok(p)
}

/// The largest secret file read: every secret goes into a setup script,
/// which exe.dev limits to 10 KiB (`limits::MAX_SETUP_SCRIPT_BYTES`), so a
/// larger file is a mistake (`{file: /dev/zero}` would otherwise grow
/// memory until the machine gives out).
pub const MAX_SECRET_FILE_BYTES: usize = crate::base::limits::MAX_SETUP_SCRIPT_BYTES;

/// A secret file's text, read up to [`MAX_SECRET_FILE_BYTES`] (and one
/// byte more, to know it is larger); its content never in an error.
fn read_secret_file(full: &Path) -> Result<String, FleetError> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| {
        FleetError::global(
            format!("cannot read secret file {}: {e}", full.display()),
            "create the file, or fix the path (relative paths start at the fleet file's directory)",
        )
    };
    let file = std::fs::File::open(full).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > MAX_SECRET_FILE_BYTES {
        return Err(FleetError::global(
            format!(
                "secret file {} is larger than {} KiB, more than a setup script (exe.dev's limit) can hold",
                full.display(),
                MAX_SECRET_FILE_BYTES / 1024
            ),
            "point the reference at the file holding just the secret",
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        FleetError::global(
            format!("secret file {} is not UTF-8 text", full.display()),
            "point the reference at the file holding just the secret",
        )
    })
}

/// Reads a secret the fleet references, now. Done only when a command needs
/// the value (not during validation), so `validate` works without any
/// secrets present. Relative file paths are resolved against `base_dir`, the
/// fleet file's directory, so the file works from any working directory.
pub fn resolve_secret(r: &SecretRef, base_dir: &Path) -> Result<Secret, FleetError> {
    let value = match r {
        SecretRef::Env(name) => std::env::var(name).map_err(|_| {
            FleetError::global(
                format!("environment variable {name} is not set (or not UTF-8)"),
                format!("export {name}=... before running, or use {{file: path}}"),
            )
        })?,
        SecretRef::File(path) => {
            let full = base_dir.join(path);
            read_secret_file(&full)?
        }
        SecretRef::Literal => {
            return Err(FleetError::global(
                "a literal secret is not allowed in the fleet file",
                "write a reference such as {env: TS_AUTHKEY} or {file: secrets/ts.key}",
            ));
        }
    };
    let trimmed = value.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        let what = match r {
            SecretRef::Env(name) => format!("environment variable {name}"),
            SecretRef::File(path) => format!("secret file {}", base_dir.join(path).display()),
            SecretRef::Literal => "secret".to_string(),
        };
        return Err(FleetError::global(
            format!("{what} is empty"),
            "put the secret value there",
        ));
    }
    Ok(Secret::new(trimmed))
}

#[cfg(test)]
mod tests {

    /// A manifest's documents are its objects; empty documents are
    /// skipped; anything else, tags and control characters included, is
    /// refused with the document or line, never its text.
    #[test]
    fn manifests_hold_kubernetes_objects_only() {
        let two = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: b, namespace: a}\n";
        let objects = parse_manifest(two).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1]["kind"], "DaemonSet");
        assert!(
            parse_manifest("kind: Pod\nmetadata: {name: x}\n")
                .unwrap_err()
                .contains("document 1 is not a Kubernetes object")
        );
        let tagged = parse_manifest(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: !!binary aGk=\n",
        )
        .unwrap_err();
        assert!(tagged.starts_with("line 4: the YAML tag"), "{tagged}");
        let broken = parse_manifest("apiVersion: [v1\nkind: x\n").unwrap_err();
        assert!(!broken.contains("kind: x"), "{broken}");
    }
    use super::*;

    fn bare_plan(fleet_file: String) -> Plan {
        Plan {
            format_version: plan::FORMAT_VERSION,
            fleet: "demo".into(),
            mode: plan::Mode::Apply,
            changes: Vec::new(),
            summary: Default::default(),
            warnings: Vec::new(),
            fleet_file,
            fleet_file_base: plan::FleetFileBase::PlanFile,
            nodes_observed: false,
            targets: Vec::new(),
            fleet_fingerprint: "f".into(),
            observed_fingerprint: "o".into(),
            release: None,
            refusals: Vec::new(),
            repository: None,
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
        let plan = bare_plan(root.join("repo/fleet.yaml").display().to_string());
        let file = root.join("repo/plans/p.plan");
        save_plan(&plan, &file).unwrap();
        let stored: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(stored["fleet_file"], "../fleet.yaml");
        let loaded = load_plan(&file).unwrap();
        assert_eq!(
            Path::new(&loaded.fleet_file).canonicalize().unwrap(),
            root.join("repo/fleet.yaml")
        );
    }

    /// Issue 22, finding 7 (secret files). Repro: `authKey: {file:
    /// /dev/zero}` made `plan` read the "file" whole, growing to 7.7 GB in
    /// 15 s. A secret file is read up to what a setup script can hold
    /// (10 KiB); a larger one is refused, named with the limit.
    #[test]
    fn a_secret_file_is_read_only_up_to_what_a_script_can_hold() {
        let dir = tempfile::tempdir().unwrap();
        let big = "k".repeat(MAX_SECRET_FILE_BYTES + 1);
        std::fs::write(dir.path().join("big"), &big).unwrap();
        std::fs::write(dir.path().join("fits"), &big[1..]).unwrap();
        assert!(resolve_secret(&SecretRef::File("fits".into()), dir.path()).is_ok());
        for path in ["big", "/dev/zero"] {
            let err = resolve_secret(&SecretRef::File(path.into()), dir.path())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(path) && err.contains("larger than 10 KiB"),
                "{err}"
            );
            assert!(!err.contains("kkkk"), "the content is never shown: {err}");
        }
    }

    /// The GitHub case: planned at the root of one checkout, downloaded
    /// into `reviewed/` of another; the fleet is the second checkout's.
    #[test]
    fn in_a_repository_the_fleet_path_is_kept_relative_to_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for checkout in ["pr", "main"] {
            std::fs::create_dir_all(root.join(checkout).join(".git")).unwrap();
            std::fs::create_dir_all(root.join(checkout).join("env")).unwrap();
            std::fs::write(root.join(checkout).join("env/fleet.yaml"), "x").unwrap();
        }
        let plan = bare_plan(root.join("pr/env/fleet.yaml").display().to_string());
        save_plan(&plan, &root.join("pr/plan.json")).unwrap();
        let text = std::fs::read_to_string(root.join("pr/plan.json")).unwrap();
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(stored["fleet_file"], "env/fleet.yaml");
        assert_eq!(stored["fleet_file_base"], "repository");
        std::fs::create_dir_all(root.join("main/reviewed")).unwrap();
        std::fs::write(root.join("main/reviewed/plan.json"), text).unwrap();
        let loaded = load_plan(&root.join("main/reviewed/plan.json")).unwrap();
        assert_eq!(
            Path::new(&loaded.fleet_file),
            root.join("main/env/fleet.yaml")
        );
        assert_eq!(
            repository_root(&root.join("main/env")),
            Some(root.join("main"))
        );
        assert_eq!(repository_root(&root), None);
        // A path edited to leave the repository is refused.
        for edited in ["../../etc/passwd", "/etc/passwd", "env/../../x.yaml"] {
            let mut v = stored.clone();
            v["fleet_file"] = edited.into();
            std::fs::write(root.join("main/reviewed/plan.json"), v.to_string()).unwrap();
            let e = load_plan(&root.join("main/reviewed/plan.json")).unwrap_err();
            assert!(
                e.to_string().contains("is not inside the repository"),
                "{edited}: {e}"
            );
        }
    }

    #[test]
    fn secret_refs_resolve_from_env_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/key"), "tskey-abc\n").unwrap();
        let file = SecretRef::File(PathBuf::from("secrets/key"));
        assert_eq!(
            resolve_secret(&file, dir.path()).unwrap().expose(),
            "tskey-abc"
        );
        let missing = SecretRef::File(PathBuf::from("secrets/nope"));
        let err = resolve_secret(&missing, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("secrets/nope"), "{err}");

        let unset = SecretRef::Env("EXK8S_SURELY_UNSET_VAR_12345".into());
        let err = resolve_secret(&unset, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("EXK8S_SURELY_UNSET_VAR_12345 is not set"),
            "{err}"
        );
        assert!(
            err.contains("hint: export EXK8S_SURELY_UNSET_VAR_12345="),
            "{err}"
        );
        if std::env::var("PATH").is_ok_and(|p| !p.is_empty()) {
            assert!(resolve_secret(&SecretRef::Env("PATH".into()), dir.path()).is_ok());
        }
        let err = resolve_secret(&SecretRef::Literal, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("{env: TS_AUTHKEY}"), "{err}");
        std::fs::write(dir.path().join("secrets/empty"), "\n").unwrap();
        let err = resolve_secret(&SecretRef::File("secrets/empty".into()), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn fleet_files_are_read_once_and_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.yaml");
        std::fs::write(&path, crate::core::fleet::fixtures::MINIMAL).unwrap();
        let a = load_fleet(&path).unwrap();
        assert_eq!(a.fleet.name, "demo");
        assert_eq!(a.fingerprint.len(), 12);
        let err = load_fleet(&dir.path().join("nope.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.yaml") && err.contains("--file"), "{err}");
        assert_eq!(fleet_dir(Path::new("f.yaml")), PathBuf::from("."));
        assert_eq!(fleet_dir(Path::new("a/f.yaml")), PathBuf::from("a"));
    }
}
