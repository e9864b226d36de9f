//! What a CI pipeline relies on, through the real binary against an
//! in-process emulator on 127.0.0.1: exit codes (usage errors and panics
//! are 1, only `--detailed-exitcode` with changes is 2), plan-time secret
//! checks that report every missing secret at once, a read-only token for
//! pull-request jobs, stale saved plans that say how to re-plan, markdown
//! plans that fit a pull-request comment, secret k3s flags that reach the
//! setup script and nothing else, saved plans that apply from wherever CI
//! downloads them, teardown plans only through `destroy PLANFILE`, and a
//! label change that shows without the cluster.

use crate::common::{S3_SECRET, TS_KEY, assert_no_secret, secret_harness, text, trusting, utf8};
use exedev_k8s::emulator::VmRecord;

/// A one-server fleet with a pool of two; every secret a reference.
/// Line 7: k3s.token, line 10: the secret flag, line 14: authKey.
const SECRETS_FLEET: &str = "apiVersion: exedev-k8s/v1
kind: Fleet
metadata:
  name: sec
k3s:
  version: v1.31.4+k3s1
  token: {env: K3S_TOKEN}
  serverArgs:
    - --etcd-s3
    - {flag: --etcd-s3-secret-key, secret: {env: ETCD_S3_SECRET}}
network:
  tailscale:
    tailnet: tail1234.ts.net
    authKey: {file: secrets/ts-authkey}
pools:
  - name: work
    count: 2
";

#[test]
fn exit_codes_only_say_changes_when_there_are_changes() {
    let env = secret_harness(|_| {});
    let code = |args: &[&str]| env.run(args).status.code();
    // Usage errors: 1, as Terraform's (clap alone would say 2).
    for args in [
        &["plan", "-f", "base.yaml", "--taget", "x"][..],
        &[
            "plan",
            "-f",
            "base.yaml",
            "--detailed-exitcode",
            "--taget",
            "x",
        ][..],
        &["plan"][..],
        &["no-such-command"][..],
        &[][..],
        &["plan", "-f", "base.yaml", "--format", "yaml"][..],
        &["token", "mint", "--ssh-key", "k", "--read-only"][..],
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
    }
    assert_eq!(code(&["--help"]), Some(0));
    assert_eq!(code(&["--version"]), Some(0));
    assert_eq!(code(&["plan", "--help"]), Some(0));
    // Changes: 2 only with --detailed-exitcode.
    assert_eq!(code(&["plan", "-f", "base.yaml"]), Some(0));
    assert_eq!(
        code(&["plan", "-f", "base.yaml", "--detailed-exitcode"]),
        Some(2)
    );
    // Every failure is 1, with --detailed-exitcode too.
    std::fs::write(env.path("bad.yaml"), "kind: [").unwrap();
    let failing: Vec<(&str, std::process::Command)> = vec![
        (
            "invalid fleet",
            env.cmd(&["plan", "-f", "bad.yaml", "--detailed-exitcode"]),
        ),
        (
            "missing fleet",
            env.cmd(&["plan", "-f", "none.yaml", "--detailed-exitcode"]),
        ),
        ("no credentials", {
            let mut c = env.cmd(&["plan", "-f", "base.yaml", "--detailed-exitcode"]);
            c.env_remove("EXE_DEV_API_KEY");
            c
        }),
        ("token refused (401)", {
            let mut c = env.cmd(&["plan", "-f", "base.yaml", "--detailed-exitcode"]);
            c.env("EXE_DEV_API_KEY", "exe0.bm90.aXQ");
            c
        }),
        ("missing secret", {
            let mut c = env.cmd(&["plan", "-f", "base.yaml", "--detailed-exitcode"]);
            c.env_remove("TS_AUTHKEY");
            c
        }),
        ("panic", {
            let mut c = env.cmd(&["plan", "-f", "base.yaml", "--detailed-exitcode"]);
            c.env("EXEDEV_K8S_TEST_PANIC", "main");
            c
        }),
        ("panic in a task whose failure is ignored", {
            let mut c = env.cmd(&["plan", "-f", "base.yaml", "--detailed-exitcode"]);
            c.env("EXEDEV_K8S_TEST_PANIC", "task");
            c
        }),
        ("missing plan file", env.cmd(&["apply", "nothing.json"])),
    ];
    for (what, mut c) in failing {
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert!(
            utf8(&out.stderr).contains("error"),
            "{what}: {}",
            text(&out)
        );
    }
    let out = env
        .cmd(&["plan", "-f", "base.yaml"])
        .env("EXEDEV_K8S_TEST_PANIC", "main")
        .output()
        .unwrap();
    assert!(
        utf8(&out.stderr).contains("crashed (a bug"),
        "{}",
        text(&out)
    );
    assert_eq!(env.emu().count("new"), 0);
}

#[test]
fn plan_reports_every_missing_secret_at_once_and_skips_only_what_it_is_told() {
    let env = secret_harness(|_| {});
    env.write("sec.yaml", SECRETS_FLEET);
    std::fs::create_dir(env.path("secrets")).unwrap();
    // The Tailscale key file is missing, K3S_TOKEN is empty, ETCD_S3_SECRET
    // is unset: one run names all three, where they are written.
    let out = env
        .cmd(&[
            "plan",
            "-f",
            "sec.yaml",
            "--out",
            "p.json",
            "--detailed-exitcode",
        ])
        .env("K3S_TOKEN", "")
        .env_remove("ETCD_S3_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = utf8(&out.stderr);
    assert!(err.contains("3 secret(s) needed to create"), "{err}");
    assert!(
        err.contains("sec.yaml:7:10: k3s.token: environment variable K3S_TOKEN is empty"),
        "{err}"
    );
    assert!(
        err.contains("sec.yaml:10:44: k3s.serverArgs[1] (--etcd-s3-secret-key): environment variable ETCD_S3_SECRET is not set"),
        "{err}"
    );
    assert!(
        err.contains("sec.yaml:14:14: network.tailscale.authKey: cannot read secret file"),
        "{err}"
    );
    assert!(err.contains("--skip-secret-check"), "{err}");
    assert!(
        !env.path("p.json").exists(),
        "no plan is saved that apply would fail on"
    );
    assert_eq!(env.emu().count("new"), 0);

    // A pull-request job without the node secrets names what it lacks; the
    // rest is still checked.
    std::fs::write(env.path("secrets/ts-authkey"), format!("{TS_KEY}\n")).unwrap();
    let pr = |skip: &str| {
        env.cmd(&[
            "plan",
            "-f",
            "sec.yaml",
            "--format",
            "markdown",
            "--out",
            "p.json",
            "--detailed-exitcode",
            "--skip-secret-check",
            skip,
        ])
        .env_remove("K3S_TOKEN")
        .env_remove("ETCD_S3_SECRET")
        .output()
        .unwrap()
    };
    let out = pr("K3S_TOKEN");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(utf8(&out.stderr).contains("ETCD_S3_SECRET is not set"));
    assert!(!utf8(&out.stderr).contains("K3S_TOKEN is"));
    let out = pr("K3S_TOKEN,ETCD_S3_SECRET,NOT_USED");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = utf8(&out.stderr);
    assert!(
        err.contains("not checked here (--skip-secret-check): K3S_TOKEN, ETCD_S3_SECRET"),
        "{err}"
    );
    assert!(
        err.contains("names NOT_USED, which this plan does not need"),
        "{err}"
    );
    assert_no_secret("plan", &text(&out));

    // Apply checks them all, all at once, before any VM exists.
    let out = env
        .cmd(&["apply", "p.json"])
        .env_remove("K3S_TOKEN")
        .env_remove("ETCD_S3_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = utf8(&out.stderr);
    assert!(
        err.contains("2 secret(s)") && err.contains("K3S_TOKEN") && err.contains("ETCD_S3_SECRET"),
        "{err}"
    );
    assert_eq!(env.emu().count("new"), 0);
    env.ok(&["apply", "p.json"]);
    assert_eq!(env.emu().state().vms.len(), 3);
}

#[test]
fn an_existing_cluster_needs_its_stored_token_at_plan_time() {
    let env = secret_harness(|_| {});
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    let stored = env.path(".exedev-k8s/acme/k3s-token");
    std::fs::remove_file(&stored).unwrap();
    let f = std::fs::read_to_string(env.path("base.yaml")).unwrap();
    env.write("base.yaml", &f.replace("count: 2", "count: 3"));
    let out = env.run(&["plan", "-f", "base.yaml", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = utf8(&out.stderr);
    assert!(err.contains("base.yaml:6:3: k3s.token is not set"), "{err}");
    assert!(err.contains("{env: K3S_TOKEN}"), "{err}");
    let out = env.run(&[
        "plan",
        "-f",
        "base.yaml",
        "--detailed-exitcode",
        "--skip-secret-check",
        "k3s-token",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Nothing to create: nothing to check.
    env.write("base.yaml", &f);
    assert_eq!(
        env.run(&["plan", "-f", "base.yaml", "--detailed-exitcode"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn a_read_only_token_plans_and_cannot_change_anything() {
    let keys = tempfile::tempdir().unwrap();
    let key = crate::common::keygen(keys.path(), "k", "ed25519", &[], "");
    let env = secret_harness(trusting(&key));
    let mint = |extra: &[&str]| {
        let mut args = vec!["token", "mint", "--ssh-key", key.to_str().unwrap()];
        args.extend(extra);
        env.ok(&args).trim().to_string()
    };
    let ro = mint(&["--for-fleet", "base.yaml", "--read-only", "--exp", "30d"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["token", "inspect", &ro, "--json"])).unwrap();
    let mut cmds: Vec<&str> = inspect["cmds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    cmds.sort();
    assert_eq!(cmds, ["ls", "share show"]);
    let rw = mint(&["--for-fleet", "base.yaml"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&env.ok(&["token", "inspect", &rw, "--json"])).unwrap();
    assert!(inspect["cmds"].as_array().unwrap().len() > 2);

    let with =
        |tok: &str, args: &[&str]| env.cmd(args).env("EXE_DEV_API_KEY", tok).output().unwrap();
    let out = with(&ro, &["plan", "-f", "base.yaml", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = with(&ro, &["apply", "-f", "base.yaml", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("403") && text(&out).contains("\"new\""),
        "{}",
        text(&out)
    );
    assert!(env.emu().state().vms.is_empty());
    let out = with(&rw, &["apply", "-f", "base.yaml", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = with(&ro, &["status", "-f", "base.yaml", "--no-probe"]);
    assert_ne!(
        out.status.code(),
        Some(1),
        "status reads only: {}",
        text(&out)
    );
    let out = with(&ro, &["destroy", "-f", "base.yaml", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(env.emu().state().vms.len(), 9);
}

#[test]
fn a_stale_saved_plan_is_refused_with_the_way_to_re_plan() {
    let env = secret_harness(|_| {});
    env.ok(&["plan", "-f", "base.yaml", "--out", "plan.json"]);
    let mut vm = VmRecord::new("acme-web1");
    vm.tags = ["exk8s-fleet-acme", "exk8s-pool-web", "exk8s-role-agent"]
        .map(String::from)
        .to_vec();
    vm.comment = "exedev-k8s spec=000000000000".into();
    env.emu().insert_vm(vm).unwrap();
    let out = env.run(&["apply", "plan.json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = utf8(&out.stderr);
    assert!(
        err.contains("the VMs on exe.dev changed since it was made"),
        "{err}"
    );
    assert!(err.contains("Nothing was changed"), "{err}");
    assert!(
        err.contains("exedev-k8s plan -f base.yaml --out plan.json")
            && err.contains("exedev-k8s apply plan.json"),
        "{err}"
    );
    assert!(err.contains("Run workflow"), "{err}");
    assert_eq!(env.emu().count("new"), 0);
}

#[test]
fn a_500_vm_markdown_plan_fits_a_comment_and_the_full_plan_is_saved() {
    let env = secret_harness(|_| {});
    let pools: String = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|p| format!("  - name: pool{p}\n    count: 100\n"))
        .collect();
    env.write(
        "big.yaml",
        &crate::common::minimal_fleet(
            &[
                ("name: demo", "name: big"),
                ("channel: stable", "version: v1.31.4+k3s1"),
            ],
            &format!("controlPlane:\n  count: 3\npools:\n{pools}"),
        ),
    );
    let md = env.ok(&[
        "plan",
        "-f",
        "big.yaml",
        "--format",
        "markdown",
        "--out",
        "plan.json",
    ]);
    assert!(md.len() < 65_536, "{} bytes", md.len());
    assert!(
        md.starts_with(
            "### exedev-k8s plan: `big`
"
        ),
        "{}",
        &md[..200]
    );
    assert!(md.contains("**503 to create, 0 to update, 0 to upgrade, 0 to replace, 0 to delete**"));
    assert!(md.contains("the full plan is saved in `plan.json` (`exedev-k8s show plan.json`)"));
    let url = "https://github.com/o/r/actions/runs/1";
    let md = env.ok(&[
        "plan",
        "-f",
        "big.yaml",
        "--format",
        "markdown",
        "--full-plan-url",
        url,
    ]);
    assert!(md.len() < 65_536);
    assert!(md.contains(&format!("the full plan: {url}")), "{md}");
    // The saved plan holds every change; `show` prints it whole.
    let full = env.ok(&["show", "plan.json"]);
    assert_eq!(full.matches(" will be created").count(), 503);
    let whole_md = env.ok(&["show", "plan.json", "--format", "markdown"]);
    assert!(whole_md.len() > 65_536, "{}", whole_md.len());
    assert_eq!(env.emu().count("new"), 0);
}

#[test]
fn secret_k3s_flags_reach_the_server_script_and_are_shown_redacted() {
    let env = secret_harness(|_| {});
    env.write("sec.yaml", SECRETS_FLEET);
    std::fs::create_dir(env.path("secrets")).unwrap();
    std::fs::write(env.path("secrets/ts-authkey"), TS_KEY).unwrap();
    let mut seen = String::new();
    for args in [
        &["plan", "-f", "sec.yaml", "--out", "p.json"][..],
        &["plan", "-f", "sec.yaml", "--json"][..],
        &["plan", "-f", "sec.yaml", "--format", "markdown"][..],
        &["validate", "-f", "sec.yaml"][..],
        &["show", "p.json"][..],
    ] {
        let out = env.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        seen.push_str(&text(&out));
    }
    seen.push_str(&std::fs::read_to_string(env.path("p.json")).unwrap());
    assert!(
        seen.contains("--etcd-s3 --etcd-s3-secret-key=(secret from env ETCD_S3_SECRET)"),
        "{seen}"
    );
    assert_no_secret("plans", &seen);

    let out = env.run(&["apply", "p.json", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret("apply", &text(&out));
    let log: String = env
        .emu()
        .requests()
        .iter()
        .map(|r| r.words.join(" "))
        .collect();
    assert_no_secret("request log", &log);
    let st = env.emu().state();
    let server = st.vms["sec-cp1"].setup_script.clone().unwrap();
    assert!(server.contains(S3_SECRET), "the server needs it");
    assert!(server.contains("etcd-s3-secret-key:"), "in config.yaml");
    let agent = st.vms["sec-work1"].setup_script.clone().unwrap();
    assert!(!agent.contains(S3_SECRET), "agents get no server flag");

    // Rotating the value replaces nothing: the fingerprint leaves it out.
    let out = env
        .cmd(&["plan", "-f", "sec.yaml", "--detailed-exitcode"])
        .env("ETCD_S3_SECRET", "rotated-value")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// The GitHub layout: planned at the repository root, downloaded into
/// `reviewed/` of a fresh checkout, applied from the root. The fleet path
/// is the repository's, not the download's.
#[test]
fn a_saved_plan_applies_from_wherever_ci_downloads_it() {
    let env = secret_harness(|_| {});
    std::fs::create_dir(env.path(".git")).unwrap();
    env.ok(&["plan", "-f", "base.yaml", "--out", "plan.json"]);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("plan.json")).unwrap()).unwrap();
    assert_eq!(saved["fleet_file"], "base.yaml");
    assert_eq!(saved["fleet_file_base"], "repository");
    std::fs::create_dir(env.path("reviewed")).unwrap();
    std::fs::rename(env.path("plan.json"), env.path("reviewed/plan.json")).unwrap();
    // A checkout without the fleet: named, with where it was looked for.
    std::fs::rename(env.path("base.yaml"), env.path("gone.yaml")).unwrap();
    let out = env.run(&["apply", "reviewed/plan.json"]);
    let err = utf8(&out.stderr);
    assert!(
        err.contains("was made from a fleet file that is not at")
            && err.contains("relative to the root of the git repository"),
        "{err}"
    );
    assert!(!err.contains("--file"), "no --file was given: {err}");
    std::fs::rename(env.path("gone.yaml"), env.path("base.yaml")).unwrap();
    env.ok(&["apply", "reviewed/plan.json"]);
    assert_eq!(env.emu().count("new"), 9);
}

/// `destroy PLANFILE` carries out a reviewed teardown plan (no question:
/// it was reviewed) and refuses an apply plan; `apply PLANFILE` refuses a
/// teardown plan. Both before any change.
#[test]
fn teardown_plans_go_to_destroy_and_only_there() {
    let env = secret_harness(|_| {});
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    env.ok(&["plan", "-f", "base.yaml", "--destroy", "--out", "down.json"]);
    let out = env.run(&["apply", "down.json"]);
    let err = utf8(&out.stderr);
    assert!(
        err.contains("down.json is a teardown plan")
            && err.contains("apply never carries out a teardown")
            && err.contains("exedev-k8s destroy down.json"),
        "{err}"
    );
    env.ok(&["plan", "-f", "base.yaml", "--out", "up.json"]);
    let out = env.run(&["destroy", "up.json"]);
    let err = utf8(&out.stderr);
    assert!(
        err.contains("up.json is an apply plan, not a teardown plan"),
        "{err}"
    );
    assert_eq!(env.emu().count("rm"), 0);
    env.ok(&["destroy", "down.json"]);
    assert_eq!(env.emu().count("rm"), 9);
    assert!(env.emu().state().vms.is_empty());
}

/// Without the Kubernetes API (a pull request's plan), a label or taint
/// changed in the fleet is a change (exit 2), seen through what each VM
/// records; apply without the API refuses it, as only the API can set it.
#[test]
fn a_label_change_shows_without_the_cluster_and_apply_needs_it() {
    let env = secret_harness(|_| {});
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    let code = |f: &str| {
        env.run(&["plan", "-f", f, "--detailed-exitcode"])
            .status
            .code()
    };
    assert_eq!(code("base.yaml"), Some(0));
    let base = std::fs::read_to_string(env.path("base.yaml")).unwrap();
    env.write(
        "labels.yaml",
        &base.replace(
            "  - name: batch\n    count: 2\n",
            "  - name: batch\n    count: 2\n    labels: {tier: batch}\n",
        ),
    );
    env.write(
        "taints.yaml",
        &base.replace("dedicated=gpu:NoSchedule", "dedicated=gpu:NoExecute"),
    );
    for f in ["labels.yaml", "taints.yaml"] {
        assert_eq!(code(f), Some(2), "{f}");
    }
    let shown = env.ok(&["plan", "-f", "labels.yaml"]);
    assert!(
        shown.contains("acme-batch1")
            && shown.contains("labels and taints")
            && shown.contains("tier=batch"),
        "{shown}"
    );
    assert!(shown.contains("2 to update"), "{shown}");
    let comments = || -> Vec<String> {
        env.emu()
            .state()
            .vms
            .values()
            .map(|v| v.comment.clone())
            .collect()
    };
    let comments_before = comments();
    let out = env.run(&["apply", "-f", "labels.yaml", "--yes"]);
    let err = utf8(&out.stderr);
    assert!(
        !out.status.success() && err.contains("only the Kubernetes API can set"),
        "{err}"
    );
    assert_eq!(comments_before, comments(), "nothing recorded as set");
}

/// VMs made by the previous version (spec scheme 2, no `lbl=`) are kept:
/// a plan without the API plans nothing for them, names them once, and
/// never replaces them.
#[test]
fn scheme_two_vms_are_kept_and_named_until_their_labels_are_read() {
    let env = secret_harness(|_| {});
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    for mut vm in env.emu().state().vms.into_values() {
        let (head, _) = vm
            .comment
            .split_once(" lbl=")
            .expect("scheme 3 records lbl=");
        vm.comment = head.replacen("spec=3.", "spec=2.", 1);
        env.emu().insert_vm(vm).unwrap();
    }
    let out = env.run(&["plan", "-f", "base.yaml", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = utf8(&out.stdout);
    assert!(
        shown.contains("and 8 more do not record their labels and taints yet"),
        "{shown}"
    );
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    assert_eq!(env.emu().count("rm"), 0);
    assert_eq!(env.emu().count("new"), 9);
}
