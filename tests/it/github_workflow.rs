//! The example GitHub workflow is safe as written: it installs this project
//! at a pinned revision, gives the pull-request job a read-only token and no
//! node secrets, applies exactly the reviewed plan artifact, tells exit code
//! 0 from 2 from everything else, updates one comment, shows both ways to
//! reach the cluster, scopes each secret to the step that uses it and pins
//! third-party actions by commit. Its shell passes shellcheck, and its plan
//! step is run for real against a stub of the binary. (actionlint checks
//! the rest: `.ci/run`; `tests/it/github_workflow_run.rs` runs the whole
//! workflow against the VM world.)

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn workflow_path() -> PathBuf {
    root().join("examples/github/exedev-k8s.yml")
}

fn workflow() -> Value {
    let text = std::fs::read_to_string(workflow_path()).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("workflow YAML: {e}"))
}

fn job<'a>(w: &'a Value, name: &str) -> &'a Value {
    &w["jobs"][name]
}

fn steps(job: &Value) -> Vec<&Value> {
    job["steps"]
        .as_array()
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

fn step<'a>(job: &'a Value, name: &str) -> &'a Value {
    steps(job)
        .into_iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name:?}"))
}

/// Every `${{ ... }}` expression in a value, as written.
fn expressions(v: &Value) -> Vec<String> {
    let text = v.to_string();
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("${{") {
        let tail = &rest[i..];
        let end = tail.find("}}").map_or(tail.len(), |e| e + 2);
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn the_tool_is_installed_pinned_and_never_by_bare_name() {
    let w = workflow();
    let rev = w["env"]["EXEDEV_K8S_REV"].as_str().unwrap();
    assert_eq!(rev.len(), 40, "a full commit SHA");
    assert!(rev.bytes().all(|c| c.is_ascii_hexdigit()));
    for name in ["plan", "apply"] {
        let j = job(&w, name);
        let install = step(j, "install exedev-k8s at the pinned revision");
        let run = install["run"].as_str().unwrap();
        assert_eq!(
            run.trim(),
            r#"cargo install --locked --git "$EXEDEV_K8S_GIT" --rev "$EXEDEV_K8S_REV""#
        );
        let cache = steps(j)
            .into_iter()
            .find(|s| {
                s["uses"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("actions/cache@"))
            })
            .expect("cached between runs");
        assert!(
            cache["with"]["key"]
                .as_str()
                .unwrap()
                .contains("env.EXEDEV_K8S_REV"),
            "the cache is keyed on the revision"
        );
        // The pin check runs before the install, and refuses the placeholder.
        let names: Vec<&str> = steps(j).iter().filter_map(|s| s["name"].as_str()).collect();
        let check = names.iter().position(|n| *n == "check the pin").unwrap();
        let inst = names
            .iter()
            .position(|n| *n == "install exedev-k8s at the pinned revision")
            .unwrap();
        assert!(check < inst);
        let script = step(j, "check the pin")["run"].as_str().unwrap();
        for (git, rev, ok) in [
            ("https://github.com/YOUR-ORG/exedev-k8s", rev, false),
            ("https://github.com/acme/exedev-k8s", rev, false),
            ("https://github.com/acme/exedev-k8s", "abc123", false),
            ("https://github.com/acme/exedev-k8s", &"g".repeat(40), false),
            (
                "https://github.com/acme/exedev-k8s",
                &"0123456789abcdef0123".repeat(2),
                true,
            ),
        ] {
            let out = Command::new("bash")
                .args(["-eo", "pipefail", "-c", script])
                .env("EXEDEV_K8S_GIT", git)
                .env("EXEDEV_K8S_REV", rev)
                .output()
                .unwrap();
            assert_eq!(out.status.success(), ok, "{git} {rev}");
        }
    }
    // Nowhere does the project tell anyone to install by bare crate name:
    // `cargo install` always comes with --git (pinned) or --path.
    let mut docs = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    for dir in ["examples", "examples/github", "docs"] {
        if let Ok(entries) = std::fs::read_dir(root().join(dir)) {
            docs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    for path in docs {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(at) = line.find("cargo install") {
                // A wrapped command continues on the next line.
                let rest = format!("{} {}", &line[at..], lines.get(i + 1).unwrap_or(&""));
                assert!(
                    rest.contains("--path") || (rest.contains("--git") && rest.contains("--rev")),
                    "{}:{}: {line}",
                    path.display(),
                    i + 1
                );
            }
        }
    }
}

#[test]
fn the_pull_request_job_holds_a_read_only_token_and_no_node_secrets() {
    let w = workflow();
    assert_eq!(
        w["permissions"],
        serde_json::json!({}),
        "nothing by default"
    );
    assert!(
        expressions(&w["env"])
            .iter()
            .all(|e| !e.contains("secrets.")),
        "no secret is workflow-wide"
    );
    let plan = job(&w, "plan");
    let secrets: Vec<String> = expressions(plan)
        .into_iter()
        .filter(|e| e.contains("secrets."))
        .collect();
    assert!(
        !secrets.is_empty()
            && secrets
                .iter()
                .all(|e| e == "${{ secrets.EXE_DEV_PLAN_TOKEN }}"),
        "{secrets:?}"
    );
    assert_eq!(
        plan["permissions"],
        serde_json::json!({"contents": "read", "pull-requests": "write"})
    );
    let run = step(plan, "plan")["run"].as_str().unwrap();
    assert!(run.contains("--skip-secret-check \"$SKIP_SECRET_CHECK\""));
    assert!(run.contains("--detailed-exitcode") && run.contains("--out plan.json"));
    // The token it names is minted read-only (the setup notes say how).
    let text = std::fs::read_to_string(workflow_path()).unwrap();
    assert!(
        text.contains("--for-fleet fleet.yaml\n#    --read-only"),
        "{text}"
    );
    // The apply job, on main only and in a protected environment, holds
    // the rest.
    let apply = job(&w, "apply");
    assert_eq!(apply["environment"], "fleet-production");
    assert!(
        apply["if"]
            .as_str()
            .unwrap()
            .contains("github.ref == 'refs/heads/main'")
    );
    let secrets: Vec<String> = expressions(apply)
        .into_iter()
        .filter(|e| e.contains("secrets."))
        .collect();
    for s in [
        "EXE_DEV_API_KEY",
        "TS_AUTHKEY",
        "K3S_TOKEN",
        "K3S_AGENT_TOKEN",
    ] {
        assert!(secrets.iter().any(|e| e.contains(s)), "{s}: {secrets:?}");
    }
    assert!(!secrets.iter().any(|e| e.contains("EXE_DEV_PLAN_TOKEN")));
}

#[test]
fn apply_carries_out_the_reviewed_artifact_and_waits_for_the_cluster() {
    let w = workflow();
    let apply = job(&w, "apply");
    let download = steps(apply)
        .into_iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/download-artifact@"))
        })
        .expect("downloads the plan");
    assert_eq!(download["with"]["name"], "fleet-plan");
    assert_eq!(
        download["with"]["run-id"],
        "${{ steps.find.outputs.run_id }}"
    );
    let upload = steps(job(&w, "plan"))
        .into_iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/upload-artifact@"))
        })
        .expect("uploads the plan");
    assert_eq!(upload["with"]["name"], "fleet-plan");
    assert!(
        upload["with"]["path"]
            .as_str()
            .unwrap()
            .contains("plan.json")
    );
    // The apply step applies the saved plan, never a fresh one.
    let run = step(apply, "apply")["run"].as_str().unwrap();
    assert!(
        run.contains("exedev-k8s apply -f \"$FLEET\" reviewed/plan.json --wait"),
        "{run}"
    );
    // The only plan in the apply job runs after a failure, into the job
    // summary: never saved, never applied.
    for s in steps(apply) {
        let r = s["run"].as_str().unwrap_or_default();
        if r.contains("exedev-k8s plan") {
            assert_eq!(s["name"], "plan main after a refusal");
            assert!(s["if"].as_str().unwrap().starts_with("failure()"), "{s}");
            assert!(
                !r.contains("--out") && !r.contains("exedev-k8s apply"),
                "{r}"
            );
        }
    }
    // Both ways to the API: the Tailscale action, or an SSH tunnel.
    assert!(steps(apply).iter().any(|s| {
        s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("tailscale/github-action@"))
    }));
    assert!(run.contains("--via-ssh-tunnel"));
    // Apply talks to the VMs over SSH in both ways.
    assert!(step(apply, "SSH key for exe.dev")["if"].is_null());
    assert_eq!(apply["concurrency"]["cancel-in-progress"], false);
}

#[test]
fn one_comment_is_updated_by_its_marker() {
    let w = workflow();
    let comment = step(job(&w, "plan"), "comment");
    let script = comment["with"]["script"].as_str().unwrap();
    assert!(script.contains("const marker = `<!-- exedev-k8s plan: ${process.env.FLEET} -->`"));
    assert!(script.contains("readFileSync('comment.md'"));
    assert!(script.contains("c.body.startsWith(marker)"));
    assert!(script.contains("updateComment") && script.contains("createComment"));
    assert!(
        comment["if"].as_str().unwrap().contains("always()"),
        "a failed plan replaces the comment"
    );
    // The body, written by a `run:` step, starts with the same marker.
    let body = step(job(&w, "plan"), "comment body")["run"]
        .as_str()
        .unwrap();
    assert!(
        body.contains("echo \"<!-- exedev-k8s plan: $FLEET -->\""),
        "{body}"
    );
    // A fork's read-only token may not post: that must not fail the job.
    assert_eq!(
        comment["continue-on-error"],
        "${{ steps.access.outputs.token != 'yes' }}"
    );
}

/// Secrets reach only the steps that use them (a third-party action or a
/// `run:` step sees none it does not need); third-party actions are pinned
/// by commit, as a tag can be moved to other code.
#[test]
fn secrets_are_step_scoped_and_third_party_actions_pinned_by_commit() {
    let w = workflow();
    for (name, j) in w["jobs"].as_object().unwrap() {
        assert!(
            !expressions(&j["env"])
                .iter()
                .any(|e| e.contains("secrets.")),
            "job {name} has job-wide secrets"
        );
        for s in steps(j) {
            let uses = s["uses"].as_str().unwrap_or_default();
            if !uses.is_empty() && !uses.starts_with("actions/") {
                let rev = uses.split_once('@').map_or("", |(_, r)| r);
                assert!(
                    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()),
                    "{name}: {uses} is not pinned by a full commit SHA"
                );
            }
            // A step's secrets are in its own env or with.
            let own: Vec<String> = [&s["env"], &s["with"]]
                .into_iter()
                .flat_map(expressions)
                .filter(|e| e.contains("secrets."))
                .collect();
            let all: Vec<String> = expressions(s)
                .into_iter()
                .filter(|e| e.contains("secrets."))
                .collect();
            assert_eq!(own, all, "{name}/{}", s["name"]);
        }
    }
    let apply = job(&w, "apply");
    let holders: Vec<&str> = steps(apply)
        .into_iter()
        .filter(|s| {
            expressions(&s["env"])
                .iter()
                .any(|e| e.contains("secrets.K3S_TOKEN"))
        })
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        holders,
        ["apply"],
        "the node secrets reach the apply step only"
    );
    // The first apply's tokens: how to make them is in the header.
    let text = std::fs::read_to_string(workflow_path()).unwrap();
    assert!(
        text.contains("openssl rand -hex 32   # K3S_TOKEN"),
        "{text}"
    );
}

/// The `run:` scripts, with `${{ }}` expressions replaced the way the
/// runner would leave a plain word.
fn run_scripts(w: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (jname, j) in w["jobs"].as_object().unwrap() {
        for s in steps(j) {
            if let Some(run) = s["run"].as_str() {
                let mut script = run.to_string();
                for e in expressions(&Value::String(run.to_string())) {
                    script = script.replace(&e, "EXPR");
                }
                let name = s["name"].as_str().unwrap_or("(unnamed)");
                out.push((format!("{jname}/{name}"), script));
            }
        }
    }
    out
}

#[test]
fn every_run_script_passes_shellcheck() {
    let w = workflow();
    let dir = tempfile::tempdir().unwrap();
    let scripts = run_scripts(&w);
    assert!(scripts.len() >= 8, "{}", scripts.len());
    for (name, script) in scripts {
        // GitHub runs `bash --noprofile --norc -eo pipefail {0}`.
        let path = dir.path().join("step.sh");
        std::fs::write(
            &path,
            format!("#!/usr/bin/env bash\nset -eo pipefail\n{script}"),
        )
        .unwrap();
        let out = Command::new("shellcheck")
            .args(["-s", "bash", "-e", "SC2154"])
            .arg(&path)
            .output()
            .expect("shellcheck must be installed");
        assert!(
            out.status.success(),
            "{name}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The plan step, run with a stub `exedev-k8s` exiting `code`: what it
/// writes to $GITHUB_OUTPUT, and whether the step succeeds.
fn run_plan_step(code: i32) -> (bool, String) {
    let w = workflow();
    let script = run_scripts(&w)
        .into_iter()
        .find(|(n, _)| n == "plan/plan")
        .unwrap()
        .1;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let stub = bin.join("exedev-k8s");
    std::fs::write(
        &stub,
        "#!/bin/sh\nif [ \"$1\" = plan ]; then echo '### plan'; exit \"$STUB_CODE\"; fi\necho shown\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = dir.path().join("output");
    let summary = dir.path().join("summary");
    std::fs::write(&output, "").unwrap();
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("STUB_CODE", code.to_string())
        .env("FLEET", "fleet.yaml")
        .env("SKIP_SECRET_CHECK", "TS_AUTHKEY,K3S_TOKEN")
        .env("RUN_URL", "https://example.invalid/run")
        .env("GITHUB_OUTPUT", &output)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    (
        out.status.success(),
        std::fs::read_to_string(&output).unwrap(),
    )
}

#[test]
fn the_plan_step_accepts_exactly_0_and_2() {
    assert_eq!(run_plan_step(0), (true, "changes=false\n".to_string()));
    assert_eq!(run_plan_step(2), (true, "changes=true\n".to_string()));
    for code in [1, 3, 101, 130] {
        let (ok, output) = run_plan_step(code);
        assert!(
            !ok && output.is_empty(),
            "exit code {code} must fail the step"
        );
    }
}
