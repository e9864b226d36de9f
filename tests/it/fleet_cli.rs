//! The real binary's plan, apply and destroy against an in-process emulator
//! on 127.0.0.1: snapshots of every action and output format, validation
//! with no API call, stale plan files, prompts off a terminal, ownership,
//! secrets, fault-injected convergence and interrupted applies.

use std::time::Duration;

use crate::common::{K3S_TOKEN, TS_KEY, assert_no_secret, secret_harness, utf8};
use exedev_k8s::emulator::VmRecord;
use ssh_key::{Algorithm, PrivateKey};

const BASE_VMS: [&str; 9] = [
    "acme-batch1",
    "acme-batch2",
    "acme-cp1",
    "acme-cp2",
    "acme-cp3",
    "acme-gpu1",
    "acme-web1",
    "acme-web2",
    "acme-web3",
];

#[test]
fn plan_snapshots_cover_every_action_and_format() {
    let env = secret_harness(|_| {});
    // Empty account: everything is created.
    let human = env.ok(&["plan", "-f", "base.yaml"]);
    insta::assert_snapshot!("create_all_human", human);
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    assert_eq!(env.vm_names(), BASE_VMS);
    assert!(env.ok(&["plan", "-f", "base.yaml"]).contains("No changes"));

    // The changed fleet needs one of each action.
    let human = env.ok(&[
        "plan",
        "-f",
        "changed.yaml",
        "--target",
        "web",
        "--target",
        "batch",
        "--target",
        "gpu",
        "--target",
        "db",
    ]);
    insta::assert_snapshot!("every_action_human", human);
    let json = env.ok(&["plan", "-f", "changed.yaml", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["format_version"], 4);
    assert_eq!(
        v["summary"],
        serde_json::json!({"create": 1, "update": 3, "upgrade": 0, "replace": 1, "delete": 1})
    );
    insta::assert_snapshot!("every_action_json", json);
    let md = env.ok(&["plan", "-f", "changed.yaml", "--format", "markdown"]);
    insta::assert_snapshot!("every_action_markdown", md);
    let destroy = env.ok(&[
        "plan",
        "-f",
        "changed.yaml",
        "--destroy",
        "--format",
        "markdown",
    ]);
    insta::assert_snapshot!("destroy_markdown", destroy);

    // Without the Kubernetes API, removals need --skip-drain.
    let out = env.run(&["apply", "-f", "changed.yaml", "--yes"]);
    assert!(!out.status.success() && utf8(&out.stderr).contains("--skip-drain"));
    assert_eq!(env.emu().count("rm"), 0);
    // Apply converges; the next plan is empty.
    env.ok(&["apply", "-f", "changed.yaml", "--yes", "--skip-drain"]);
    assert!(
        env.ok(&["plan", "-f", "changed.yaml"])
            .contains("No changes")
    );
    let st = env.emu().state();
    assert_eq!(st.vms["acme-web1"].cpus, 4);
    assert!(st.vms["acme-web2"].share.public);
    // The agent with a new image was replaced create-before-destroy: its
    // successor holds the pool's next index.
    assert!(!st.vms.contains_key("acme-gpu1"));
    assert_eq!(st.vms["acme-gpu2"].image, "ubuntu:24.04");
    assert!(!st.vms.contains_key("acme-batch2"));
    assert!(st.vms.contains_key("acme-db1"));
}

/// A resize restarts the VM: like a removal, it waits for a drain, so
/// without the Kubernetes API apply refuses it unless told --skip-drain.
#[test]
fn a_restart_whose_node_cannot_be_drained_needs_skip_drain() {
    let env = secret_harness(|_| {});
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    let shown = env.ok(&["plan", "-f", "changed.yaml", "--target", "web"]);
    assert!(
        shown.contains(
            "acme-web1 (agent, pool web) will be updated in place (the VM restarts; drained first)"
        ),
        "{shown}"
    );
    assert!(shown.contains("deleted, replaced or restarted"), "{shown}");
    let out = env.run(&["apply", "-f", "changed.yaml", "--target", "web", "--yes"]);
    let err = utf8(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("refusing to delete, replace or restart VMs whose nodes cannot be drained")
            && err.contains("--skip-drain"),
        "{err}"
    );
    assert_eq!(env.emu().count("resize"), 0, "nothing was changed");
    env.ok(&[
        "apply",
        "-f",
        "changed.yaml",
        "--target",
        "web",
        "--yes",
        "--skip-drain",
    ]);
    assert_eq!(env.emu().state().vms["acme-web1"].cpus, 4);
}

#[test]
fn detailed_exitcode_and_plan_uses_one_ls_plus_needed_share_shows() {
    let env = secret_harness(|_| {});
    let out = env.run(&["plan", "-f", "base.yaml", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    std::thread::sleep(Duration::from_millis(100));
    let before_ls = env.emu().count("ls");
    let before_show = env.emu().count("share show");
    let out = env.run(&["plan", "-f", "base.yaml", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", utf8(&out.stdout));
    assert_eq!(env.emu().count("ls") - before_ls, 1);
    assert_eq!(
        env.emu().count("share show") - before_show,
        3,
        "only the web pool's proxy is managed"
    );
}

#[test]
fn invalid_fleets_fail_with_locations_and_make_no_api_call() {
    let env = secret_harness(|_| {});
    std::fs::write(
        env.path("bad.yaml"),
        std::fs::read_to_string(env.path("base.yaml"))
            .unwrap()
            .replace("count: 3\npools", "count: 2\npools"),
    )
    .unwrap();
    let out = env.run(&["plan", "-f", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = utf8(&out.stderr);
    assert!(
        err.contains("bad.yaml:15:10") && err.to_lowercase().contains("quorum"),
        "{err}"
    );
    assert!(
        env.emu().requests().is_empty(),
        "no API call for an invalid fleet"
    );
    let out = env.run(&["validate", "-f", "bad.yaml"]);
    assert!(!out.status.success());
    assert!(env.ok(&["validate", "-f", "base.yaml"]).contains("9 VMs"));
}

/// A fleet's manifests are read with it: one that is missing or holds a
/// document that is not a Kubernetes object is named at its entry, and
/// plan stops before any API call, as for any invalid fleet.
#[test]
fn unusable_manifests_are_named_at_their_entry_before_any_call() {
    let env = secret_harness(|_| {});
    std::fs::create_dir_all(env.path("m")).unwrap();
    std::fs::write(
        env.path("m/not-an-object.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\njust: a map\n",
    )
    .unwrap();
    let base = std::fs::read_to_string(env.path("base.yaml")).unwrap();
    let lines = base.lines().count();
    std::fs::write(
        env.path("m.yaml"),
        format!("{base}manifests:\n  - m/missing.yaml\n  - m/not-an-object.yaml\n"),
    )
    .unwrap();
    let out = env.run(&["plan", "-f", "m.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = utf8(&out.stderr);
    assert!(
        err.contains(&format!(
            "m.yaml:{}:5: manifest m/missing.yaml: cannot be read",
            lines + 2
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "m.yaml:{}:5: manifest m/not-an-object.yaml: document 2 is not a Kubernetes object",
            lines + 3
        )),
        "{err}"
    );
    assert!(env.emu().requests().is_empty());
    std::fs::remove_file(env.path("m/not-an-object.yaml")).unwrap();
    std::fs::write(
        env.path("m/missing.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    )
    .unwrap();
    std::fs::write(
        env.path("m/not-an-object.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n",
    )
    .unwrap();
    env.ok(&["validate", "-f", "m.yaml"]);
}

#[test]
fn apply_never_prompts_off_a_terminal() {
    let env = secret_harness(|_| {});
    let out = env.run(&["apply", "-f", "base.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(utf8(&out.stderr).contains("--yes"), "{}", utf8(&out.stderr));
    assert_eq!(env.emu().count("new"), 0);
}

#[test]
fn saved_plans_are_applied_exactly_or_refused_when_stale() {
    let env = secret_harness(|_| {});
    env.ok(&["plan", "-f", "base.yaml", "--out", "plan.json"]);
    let saved = std::fs::read_to_string(env.path("plan.json")).unwrap();
    assert_no_secret("plan file", &saved);

    // exe.dev changed since: refused, nothing created.
    env.plant_with_comment(
        "acme-web1",
        &["exk8s-fleet-acme", "exk8s-pool-web", "exk8s-role-agent"],
        "exedev-k8s spec=000000000000",
    );
    let out = env.run(&["apply", "plan.json"]);
    assert!(!out.status.success());
    assert!(
        utf8(&out.stderr).contains("VMs on exe.dev changed"),
        "{}",
        utf8(&out.stderr)
    );
    assert_eq!(env.emu().count("new"), 0);

    // The fleet changed since: refused. (The cluster exists now and its
    // stored token is not here: plan is told so, see below.)
    let skip = ["--skip-secret-check", "k3s-token,k3s-agent-token"];
    env.ok(&[
        &["plan", "-f", "base.yaml", "--out", "plan.json"][..],
        &skip,
    ]
    .concat());
    let f = std::fs::read_to_string(env.path("base.yaml")).unwrap();
    std::fs::write(env.path("base.yaml"), f.replace("count: 2", "count: 1")).unwrap();
    let out = env.run(&["apply", "plan.json"]);
    assert!(
        utf8(&out.stderr).contains("fleet file changed"),
        "{}",
        utf8(&out.stderr)
    );
    std::fs::write(env.path("base.yaml"), f).unwrap();

    // A hand-edited plan (a delete slipped in) is refused.
    env.ok(&[
        &["plan", "-f", "base.yaml", "--out", "plan.json"][..],
        &skip,
    ]
    .concat());
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("plan.json")).unwrap()).unwrap();
    v["changes"][0]["action"] = "delete".into();
    std::fs::write(env.path("plan.json"), v.to_string()).unwrap();
    let out = env.run(&["apply", "plan.json", "--skip-drain"]);
    assert!(
        utf8(&out.stderr).contains("was the plan file edited"),
        "{}",
        utf8(&out.stderr)
    );
    assert_eq!(env.emu().count("rm"), 0);
    // So is one whose release was edited into something else.
    v["changes"][0]["action"] = "create".into();
    v["release"]["version"] = "latest".into();
    std::fs::write(env.path("plan.json"), v.to_string()).unwrap();
    let out = env.run(&["apply", "plan.json", "--skip-drain"]);
    let err = utf8(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "the plan installs k3s latest, but the fleet file pins k3s.version v1.31.4+k3s1"
            ),
        "{err}"
    );
    assert_eq!(env.emu().count("new"), 0);

    // Fresh: carried out without a prompt (it was reviewed), but never
    // narrowed: --target with a saved plan is refused before any call.
    env.ok(&[
        &["plan", "-f", "base.yaml", "--out", "plan.json"][..],
        &skip,
    ]
    .concat());
    let calls = env.emu().requests().len();
    let out = env.run(&["apply", "plan.json", "--target", "web", "--skip-drain"]);
    let err = utf8(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--target cannot be combined with a saved plan"),
        "{err}"
    );
    assert!(
        err.contains("plan -f FLEET --target web --out FILE"),
        "{err}"
    );
    assert_eq!(env.emu().requests().len(), calls, "no call");
    // The fleet already owns a VM: no k3s token is invented for it (a new
    // one would keep every new node out of the existing cluster), and plan
    // says so already.
    let out = env.run(&["plan", "-f", "base.yaml", "--out", "plan.json"]);
    assert!(
        !out.status.success()
            && utf8(&out.stderr).contains("stored k3s token")
            && utf8(&out.stderr).contains("stored k3s agent token"),
        "{}",
        utf8(&out.stderr)
    );
    env.ok(&[
        &["plan", "-f", "base.yaml", "--out", "plan.json"][..],
        &skip,
    ]
    .concat());
    let out = env.run(&["apply", "plan.json", "--skip-drain"]);
    assert!(
        !out.status.success() && utf8(&out.stderr).contains("stored k3s token"),
        "{}",
        utf8(&out.stderr)
    );
    assert_eq!(env.emu().count("new"), 0);
    std::fs::create_dir_all(env.path(".exedev-k8s/acme")).unwrap();
    std::fs::write(
        env.path(".exedev-k8s/acme/k3s-token"),
        "existing-cluster-token\n",
    )
    .unwrap();
    // Nor an agent token.
    let out = env.run(&["apply", "plan.json", "--skip-drain"]);
    assert!(
        !out.status.success() && utf8(&out.stderr).contains("stored k3s agent token"),
        "{}",
        utf8(&out.stderr)
    );
    assert_eq!(env.emu().count("new"), 0);
    std::fs::write(
        env.path(".exedev-k8s/acme/k3s-agent-token"),
        "existing-agent-token\n",
    )
    .unwrap();
    env.ok(&["apply", "plan.json", "--skip-drain"]);
    let script = env.emu().state().vms["acme-cp1"]
        .setup_script
        .clone()
        .unwrap();
    assert!(script.contains("existing-cluster-token"));
    assert!(script.contains("existing-agent-token"));
    // acme-web1 was planted by an earlier exedev-k8s (spec scheme 1): kept,
    // its comment migrated; acme-web2 is new.
    assert!(
        env.emu().state().vms["acme-web1"]
            .comment
            .starts_with("exedev-k8s spec=2.")
    );
    let agent = env.emu().state().vms["acme-web2"]
        .setup_script
        .clone()
        .unwrap();
    assert!(agent.contains("existing-agent-token"));
    assert!(!agent.contains("existing-cluster-token"));
    assert_eq!(env.vm_names(), BASE_VMS);
}

/// Owned means the ownership tag, a name the fleet generates and the spec
/// comment: a VM tagged by mistake (`precious-db`), or carrying the tag
/// under a fleet-like name without the comment, is reported and survives
/// apply and destroy.
#[test]
fn a_tag_alone_never_makes_a_vm_the_fleets() {
    let env = secret_harness(|_| {});
    env.plant("precious-db", &["exk8s-fleet-acme"]);
    env.plant(
        "acme-batch7",
        &["exk8s-fleet-acme", "exk8s-pool-batch", "exk8s-role-agent"],
    );
    let plan = env.ok(&["plan", "-f", "base.yaml"]);
    assert!(
        plan.contains("precious-db carries fleet \"acme\"'s ownership tag but lacks a name fleet \"acme\" generates and the spec comment"),
        "{plan}"
    );
    assert!(
        plan.contains(
            "acme-batch7 carries fleet \"acme\"'s ownership tag but lacks the spec comment"
        ),
        "{plan}"
    );
    assert!(
        plan.contains("9 to create, 0 to update, 0 to upgrade, 0 to replace, 0 to delete"),
        "{plan}"
    );
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    let destroy = env.ok(&["destroy", "-f", "base.yaml", "--yes"]);
    assert!(destroy.contains("precious-db carries"), "{destroy}");
    assert_eq!(env.vm_names(), ["acme-batch7", "precious-db"]);
    assert!(env.emu().requests().iter().all(|r| {
        !r.words
            .iter()
            .any(|w| w == "precious-db" || w == "acme-batch7")
            || r.command.as_deref() == Some("ls")
    }));

    // Under a desired name, a tagged VM without the comment is a collision.
    env.plant("acme-cp1", &["exk8s-fleet-acme"]);
    let out = env.run(&["plan", "-f", "base.yaml"]);
    let err = utf8(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("\"acme-cp1\" exists but is not owned"),
        "{err}"
    );
    assert!(err.contains("lacks the spec comment"), "{err}");
}

/// Fleets whose names prefix each other (`acme`, `acme-eu`) never see each
/// other's VMs: no warnings about them, and a plan saved for one stays
/// fresh while the other applies.
#[test]
fn fleets_whose_names_prefix_each_other_do_not_interfere() {
    let env = secret_harness(|_| {});
    let base = std::fs::read_to_string(env.path("base.yaml")).unwrap();
    std::fs::write(
        env.path("eu.yaml"),
        base.replace("name: acme", "name: acme-eu"),
    )
    .unwrap();
    env.ok(&["plan", "-f", "base.yaml", "--out", "plan.json"]);
    env.ok(&["apply", "-f", "eu.yaml", "--yes"]);
    let plan = env.ok(&["plan", "-f", "base.yaml"]);
    assert!(!plan.contains("acme-eu"), "{plan}");
    assert!(!plan.contains("Warnings"), "{plan}");
    env.ok(&["apply", "plan.json"]);
    assert_eq!(env.vm_names().len(), 18);
    let eu = env.ok(&["plan", "-f", "eu.yaml"]);
    assert!(
        eu.contains("No changes") && !eu.contains("acme-cp") && !eu.contains("acme-web"),
        "{eu}"
    );
    let warnings = eu.split("Warnings:").nth(1).unwrap_or_default();
    assert!(
        !warnings.contains("acme") && warnings.contains("API is not reachable"),
        "only the note that labels are not compared: {eu}"
    );
}

/// A VM's comment and image are whatever anyone with the account wrote:
/// `plan` shows them escaped in every format.
#[test]
fn what_exe_dev_reports_is_escaped_in_every_plan_format() {
    let env = secret_harness(|_| {});
    let mut vm = VmRecord::new("acme-web1");
    vm.tags = ["exk8s-fleet-acme", "exk8s-pool-web", "exk8s-role-agent"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    vm.comment = "exedev-k8s spec=\u{1b}]0;TITLE\u{7}\u{1b}[31m".into();
    let mut other = vm.clone();
    env.emu().insert_vm(vm).unwrap();
    // A comment is shown when it is rewritten (web1, kept); an image when
    // it forces a replacement (web2).
    other.name = "acme-web2".into();
    other.comment = "exedev-k8s spec=0123456789ab".into();
    other.image = "x<!--".into();
    env.emu().insert_vm(other).unwrap();
    // The planted VM makes the cluster exist: its stored tokens belong here.
    for f in ["k3s-token", "k3s-agent-token"] {
        std::fs::create_dir_all(env.path(".exedev-k8s/acme")).unwrap();
        std::fs::write(
            env.path(&format!(".exedev-k8s/acme/{f}")),
            format!("{f}-value"),
        )
        .unwrap();
    }
    let raw_controls = |s: &str| {
        s.chars()
            .any(|c| exedev_k8s::base::text::is_control(c) && c != '\n')
    };
    let human = env.ok(&["plan", "-f", "base.yaml"]);
    assert!(!raw_controls(&human), "{human:?}");
    assert!(
        human.contains("exedev-k8s spec=\\u{1b}]0;TITLE\\u{7}\\u{1b}[31m"),
        "{human}"
    );
    let md = env.ok(&["plan", "-f", "base.yaml", "--format", "markdown"]);
    assert!(!raw_controls(&md), "{md:?}");
    let table = md.split("<details>").next().unwrap_or_default();
    assert!(
        table.contains("x&lt;!--") && !table.contains("<!--"),
        "{md}"
    );
    let json = env.ok(&["plan", "-f", "base.yaml", "--json"]);
    assert!(!raw_controls(&json), "{json:?}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v["changes"].to_string().contains("TITLE"));
}

/// Raw `exec` keeps `--env` values and unknown commands' arguments out of
/// its errors and out of the emulator's log.
#[test]
fn raw_exec_never_echoes_env_values_or_unknown_arguments() {
    let env = secret_harness(|_| {});
    let out = env.run(&[
        "exec",
        "--",
        "new",
        "--name=vm-one",
        "--env=API_KEY=hunter2-env-secret",
        "--env",
        "DB_PASSWORD=hunter3-env-secret",
        "--cpu=999",
    ]);
    let err = utf8(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("422") && err.contains("--cpu"), "{err}");
    assert!(err.contains("--env=<26 bytes redacted>"), "{err}");
    assert!(!err.contains("hunter"), "{err}");
    let log = format!("{:?}", env.emu().requests());
    assert!(log.contains("--env=<26 bytes redacted>"), "{log}");
    assert!(!log.contains("hunter"), "{log}");

    let out = env.run(&[
        "exec",
        "--",
        "frobnicate",
        "exe0.abc.sig",
        "hunter4-argument",
    ]);
    let err = utf8(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("unknown lobby command `frobnicate <2 more words redacted>`"),
        "{err}"
    );
    assert!(
        !err.contains("hunter") && !err.contains("exe0.abc"),
        "{err}"
    );
}

#[test]
fn unowned_vms_survive_apply_and_destroy_and_collisions_are_refused() {
    let env = secret_harness(|_| {});
    env.plant("acme-web2", &["someone"]);
    env.plant("acme-old1", &["exk8s-fleet-other"]);
    env.plant("bystander", &[]);
    let out = env.run(&["plan", "-f", "base.yaml"]);
    assert!(!out.status.success());
    let err = utf8(&out.stderr);
    assert!(
        err.contains("acme-web2") && err.contains("not owned") && err.contains("never takes over"),
        "{err}"
    );
    let out = env.run(&["apply", "-f", "base.yaml", "--yes"]);
    assert!(!out.status.success());
    assert_eq!(env.emu().count("new"), 0);

    // Remove the collision; the others are left alone through apply and destroy.
    let removed = env.rt.block_on(async {
        let c = exedev_k8s::edges::client::Client::new(
            &env.emu().url,
            exedev_k8s::base::secret::Secret::new(env.token.clone()),
            Default::default(),
        )
        .unwrap();
        c.rm("acme-web2").await
    });
    assert!(removed.is_ok());
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    env.ok(&["destroy", "-f", "base.yaml", "--yes"]);
    assert_eq!(env.vm_names(), ["acme-old1", "bystander"]);
    let rms: Vec<_> = env
        .emu()
        .requests()
        .into_iter()
        .filter(|r| r.command.as_deref() == Some("rm"))
        .collect();
    assert!(
        rms.iter()
            .all(|r| { !r.words.iter().any(|w| w == "acme-old1" || w == "bystander") })
    );
}

#[test]
fn secrets_reach_the_setup_script_and_nothing_else() {
    let env = secret_harness(|_| {});
    let mut all = String::new();
    for args in [
        &["plan", "-f", "base.yaml", "--out", "p.json"][..],
        &["plan", "-f", "base.yaml", "--json"][..],
        &["plan", "-f", "base.yaml", "--format", "markdown"][..],
        &["apply", "p.json", "--json"][..],
        &["apply", "-f", "changed.yaml", "--yes", "--skip-drain"][..],
    ] {
        let out = env.run(args);
        all.push_str(&utf8(&out.stdout));
        all.push_str(&utf8(&out.stderr));
    }
    all.push_str(&std::fs::read_to_string(env.path("p.json")).unwrap());
    assert_no_secret("output", &all);
    let log: String = env
        .emu()
        .requests()
        .iter()
        .map(|r| r.words.join(" "))
        .collect();
    assert_no_secret("request log", &log);
    let st = env.emu().state();
    let script = st.vms["acme-cp1"].setup_script.clone().unwrap();
    let k3s = std::fs::read_to_string(env.path(".exedev-k8s/acme/k3s-token")).unwrap();
    assert!(
        script.contains(TS_KEY) && script.contains(k3s.trim()),
        "the VM needs them"
    );
    assert_no_secret("output", &all.replace(k3s.trim(), "SECRETTOKEN"));
    assert!(script.contains("cluster-init"));
    assert!(
        st.vms["acme-cp2"]
            .setup_script
            .as_ref()
            .unwrap()
            .contains("JOIN='acme-cp1.tail1234.ts.net'"),
        "acme-cp2 joins acme-cp1 (found by address in the peer list)"
    );
}

#[test]
fn generated_k3s_token_is_stored_private_and_purged_only_on_request() {
    let env = secret_harness(|_| {});
    let f = std::fs::read_to_string(env.path("base.yaml")).unwrap();
    assert!(
        !f.contains("token:"),
        "base.yaml has no k3s token reference"
    );
    let out = env.run(&["apply", "-f", "base.yaml", "--yes"]);
    assert!(out.status.success(), "{}", utf8(&out.stderr));
    let tok = env.path(".exedev-k8s/acme/k3s-token");
    let agent_tok = env.path(".exedev-k8s/acme/k3s-agent-token");
    let stored = std::fs::read_to_string(&tok).unwrap();
    let stored_agent = std::fs::read_to_string(&agent_tok).unwrap();
    assert_ne!(stored, stored_agent);
    // Said once, on stderr, with where they are and why to keep them.
    let err = utf8(&out.stderr);
    assert_eq!(err.matches("Generated the k3s tokens").count(), 1, "{err}");
    assert!(
        err.contains("./.exedev-k8s/acme/k3s-token")
            && err.contains("./.exedev-k8s/acme/k3s-agent-token")
            && err.contains("restoring etcd snapshots"),
        "{err}"
    );
    assert!(!utf8(&out.stdout).contains("Generated the k3s tokens"));
    assert!(
        !err.contains(stored.trim()) && !err.contains(stored_agent.trim()),
        "the tokens themselves are never printed"
    );
    // git ignores the whole state directory.
    assert_eq!(
        std::fs::read_to_string(env.path(".exedev-k8s/.gitignore")).unwrap(),
        "*\n"
    );
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env.dir.path())
            .output()
            .unwrap()
    };
    assert!(git(&["init", "-q"]).status.success());
    for f in [
        ".exedev-k8s/acme/k3s-token",
        ".exedev-k8s/acme/k3s-agent-token",
    ] {
        assert!(
            git(&["check-ignore", "-q", f]).status.success(),
            "git must ignore {f}"
        );
    }
    let status = utf8(&git(&["status", "--porcelain", "--untracked-files=all"]).stdout);
    assert!(!status.contains(".exedev-k8s"), "{status}");
    use std::os::unix::fs::PermissionsExt;
    for t in [&tok, &agent_tok] {
        assert_eq!(
            std::fs::metadata(t).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let script = |vm: &str| env.emu().state().vms[vm].setup_script.clone().unwrap();
    // Servers hold both tokens; agents only the agent token.
    assert!(script("acme-cp1").contains(stored.trim()));
    assert!(script("acme-cp1").contains(stored_agent.trim()));
    assert!(script("acme-web1").contains(stored_agent.trim()));
    assert!(!script("acme-web1").contains(stored.trim()));
    // Later applies that create VMs use the stored tokens and say nothing.
    let out = env.run(&["apply", "-f", "changed.yaml", "--yes", "--skip-drain"]);
    assert!(out.status.success(), "{}", utf8(&out.stderr));
    assert!(!utf8(&out.stderr).contains("Generated the k3s"));
    assert!(script("acme-db1").contains(stored_agent.trim()));
    env.ok(&["destroy", "-f", "base.yaml", "--yes"]);
    assert!(tok.exists(), "kept: needed to restore etcd snapshots");
    let out = env.ok(&["destroy", "-f", "base.yaml", "--yes", "--purge-secrets"]);
    assert!(!tok.exists() && !agent_tok.exists());
    // It says what went: both tokens (and the kubeconfig when there is one).
    assert!(
        out.contains(
            "Removed the local state of fleet \"acme\": ./.exedev-k8s/acme (its k3s-agent-token and k3s-token)."
        ),
        "{out}"
    );
}

/// `-o json`, as kubectl users type it, is `--json` for plan, show and
/// status.
#[test]
fn dash_o_json_is_json() {
    let env = secret_harness(|_| {});
    let json = env.ok(&["plan", "-f", "base.yaml", "-o", "json"]);
    assert_eq!(json, env.ok(&["plan", "-f", "base.yaml", "--json"]));
    assert!(
        serde_json::from_str::<serde_json::Value>(&json).is_ok(),
        "{json}"
    );
    env.ok(&["plan", "-f", "base.yaml", "--out", "p.json"]);
    let shown = env.ok(&["show", "p.json", "-o", "json"]);
    assert!(
        serde_json::from_str::<serde_json::Value>(&shown).is_ok(),
        "{shown}"
    );
    let out = env.run(&[
        "status",
        "-f",
        "base.yaml",
        "-o",
        "json",
        "--no-ssh",
        "--no-probe",
    ]);
    let status = utf8(&out.stdout);
    assert!(
        serde_json::from_str::<serde_json::Value>(&status).is_ok(),
        "{status}"
    );
}

#[test]
fn protected_fleets_are_never_destroyed() {
    let env = secret_harness(|_| {});
    let f = std::fs::read_to_string(env.path("base.yaml"))
        .unwrap()
        .replace("name: acme", "name: acme\n  protect: true");
    std::fs::write(env.path("p.yaml"), f).unwrap();
    env.ok(&["apply", "-f", "p.yaml", "--yes"]);
    let out = env.run(&["destroy", "-f", "p.yaml", "--yes"]);
    assert!(!out.status.success() && utf8(&out.stderr).contains("protect"));
    // Reviewing the teardown is fine, and says apply would refuse it.
    let shown = env.ok(&["plan", "-f", "p.yaml", "--destroy"]);
    assert!(shown.contains("apply and destroy refuse"), "{shown}");
    // Saving it is refused at plan time: nobody could carry it out.
    let out = env.run(&["plan", "-f", "p.yaml", "--destroy", "--out", "d.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        utf8(&out.stderr).contains("not saving d.json")
            && utf8(&out.stderr).contains("apply would refuse"),
        "{}",
        utf8(&out.stderr)
    );
    assert!(!env.path("d.json").exists());
    // A teardown plan saved before the fleet was protected is refused too.
    env.ok(&["plan", "-f", "base.yaml", "--destroy", "--out", "d.json"]);
    let mut saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("d.json")).unwrap()).unwrap();
    saved["fleet_file"] = "p.yaml".into();
    std::fs::write(env.path("d.json"), saved.to_string()).unwrap();
    let out = env.run(&["destroy", "d.json"]);
    assert!(!out.status.success() && utf8(&out.stderr).contains("protected"));
    // And apply never carries out a teardown plan, protected or not.
    let out = env.run(&["apply", "d.json"]);
    assert!(
        !out.status.success() && utf8(&out.stderr).contains("apply never carries out a teardown"),
        "{}",
        utf8(&out.stderr)
    );
    assert_eq!(env.vm_names().len(), 9);
    assert_eq!(env.emu().count("rm"), 0);
}

#[test]
fn destroy_off_a_terminal_needs_yes() {
    let env = secret_harness(|_| {});
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    let out = env.run(&["destroy", "-f", "base.yaml"]);
    assert!(!out.status.success() && utf8(&out.stderr).contains("--yes"));
    assert_eq!(env.vm_names().len(), 9);
}

#[test]
fn forbidden_commands_name_the_missing_grant() {
    let env = secret_harness(|_| {});
    let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap();
    drop(key);
    // A token for the fleet but without `share port`.
    let dir = tempfile::tempdir().unwrap();
    let kp = crate::common::keygen(dir.path(), "k", "ed25519", &[], "");
    let env2 = secret_harness(|c| {
        c.authorized_keys =
            exedev_k8s::edges::credentials::load_public_keys(&kp.with_extension("pub")).unwrap()
    });
    drop(env);
    let tok = String::from_utf8(
        env2.cmd(&[
            "token",
            "mint",
            "--ssh-key",
            kp.to_str().unwrap(),
            "--cmds",
            "ls,new,share show,share set-public",
        ])
        .output()
        .unwrap()
        .stdout,
    )
    .unwrap();
    let out = env2
        .cmd(&["apply", "-f", "base.yaml", "--yes"])
        .env("EXE_DEV_API_KEY", tok.trim())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = utf8(&out.stdout) + &utf8(&out.stderr);
    assert!(
        all.contains("403") && all.contains("\"share port\""),
        "{all}"
    );
    // And --for-fleet grants exactly what apply needs.
    let tok = String::from_utf8(
        env2.cmd(&[
            "token",
            "mint",
            "--ssh-key",
            kp.to_str().unwrap(),
            "--for-fleet",
            "base.yaml",
        ])
        .output()
        .unwrap()
        .stdout,
    )
    .unwrap();
    let out = env2
        .cmd(&["apply", "-f", "base.yaml", "--yes"])
        .env("EXE_DEV_API_KEY", tok.trim())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", utf8(&out.stderr));
    // Minting on the fly from the key works too.
    let out = env2
        .cmd(&["destroy", "-f", "base.yaml", "--yes"])
        .env_remove("EXE_DEV_API_KEY")
        .env("EXE_DEV_SSH_KEY", &kp)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", utf8(&out.stderr));
    assert!(env2.vm_names().is_empty());
    // An explicit --ssh-key beats an expired token in the environment (the
    // expired token's own advice says "or pass --ssh-key"): ignored, with a
    // note, and the key mints.
    let now = exedev_k8s::edges::credentials::now_unix();
    let expired = exedev_k8s::core::token::mint(
        &exedev_k8s::edges::credentials::load_private_key(&kp).unwrap(),
        &exedev_k8s::core::token::Permissions {
            exp: Some(now - 3600),
            ..Default::default()
        },
        exedev_k8s::core::token::API_NAMESPACE,
    )
    .unwrap();
    let out = env2
        .cmd(&["plan", "-f", "base.yaml", "--ssh-key", kp.to_str().unwrap()])
        .env("EXE_DEV_API_KEY", expired.expose())
        .env_remove("EXE_DEV_SSH_KEY")
        .output()
        .unwrap();
    let err = utf8(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("EXE_DEV_API_KEY is set but --ssh-key was given")
            && err.contains("its token expired 1 hour"),
        "{err}"
    );
    assert!(!err.contains(expired.expose()), "the token is never shown");
}

/// Repeated seeded applies under 20% injected faults converge to exactly
/// the desired VMs: none duplicated, none lost, unowned ones untouched.
#[test]
fn applies_converge_under_injected_faults() {
    for seed in [1u64, 7, 42] {
        let env = secret_harness(|c| {
            c.fault_rate = 0.2;
            c.seed = seed;
        });
        env.plant("acme-zzz1", &["not-ours"]);
        env.plant("bystander", &["exk8s-fleet-other"]);
        let mut converged = false;
        for _ in 0..12 {
            let out = env.run(&["apply", "-f", "changed.yaml", "--yes", "--skip-drain"]);
            let plan = env.run(&["plan", "-f", "changed.yaml", "--detailed-exitcode"]);
            if out.status.success() && plan.status.code() == Some(0) {
                converged = true;
                break;
            }
        }
        assert!(converged, "seed {seed} did not converge");
        let mut want: Vec<String> = [
            "acme-batch1",
            "acme-cp1",
            "acme-cp2",
            "acme-cp3",
            "acme-db1",
            "acme-gpu1",
            "acme-web1",
            "acme-web2",
            "acme-web3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        want.extend(["acme-zzz1".to_string(), "bystander".to_string()]);
        want.sort();
        assert_eq!(env.vm_names(), want, "seed {seed}");
        let st = env.emu().state();
        assert_eq!(st.vms["acme-zzz1"].tags, ["not-ours"]);
        assert!(
            env.emu()
                .requests()
                .iter()
                .filter(|r| r.command.as_deref() == Some("new"))
                .count()
                >= 7
        );
    }
}

/// kill -9 in the middle of an apply, then apply again: converges with no
/// duplicates.
#[test]
fn interrupted_apply_converges_on_rerun() {
    let env = secret_harness(|c| c.latency = Duration::from_millis(150));
    let mut child = env
        .cmd(&["apply", "-f", "base.yaml", "--yes", "--parallelism", "2"])
        .spawn()
        .unwrap();
    // Wait until some, not all, VMs exist.
    for _ in 0..200 {
        if env.vm_names().len() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let partial = env.vm_names().len();
    assert!(partial > 0 && partial < 9, "killed mid-way: {partial} VMs");
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    assert_eq!(env.vm_names(), BASE_VMS);
    assert!(env.ok(&["plan", "-f", "base.yaml"]).contains("No changes"));
}

/// Ctrl-C stops starting new work, lets changes in flight finish, reports
/// what was skipped, and a re-run converges.
#[test]
fn ctrl_c_finishes_in_flight_changes_and_skips_the_rest() {
    let env = secret_harness(|c| c.latency = Duration::from_millis(120));
    let child = env
        .cmd(&["apply", "-f", "base.yaml", "--yes", "--parallelism", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if env.vm_names().len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let (stdout, stderr) = (utf8(&out.stdout), utf8(&out.stderr));
    let all = stdout.clone() + &stderr;
    // The notice shows once, on stderr, with what to do.
    assert_eq!(
        stderr
            .matches("Ctrl-C: finishing the changes in flight")
            .count(),
        1,
        "{all}"
    );
    assert!(stderr.contains("re-run apply to converge"), "{all}");
    let partial = env.vm_names().len();
    assert!(partial < 9, "stopped early: {partial}");
    // Each skipped VM is named once, in the summary.
    let skipped: Vec<&str> = BASE_VMS
        .iter()
        .copied()
        .filter(|vm| !env.vm_names().iter().any(|v| v == vm))
        .collect();
    assert!(!skipped.is_empty());
    assert!(stdout.contains("- skipped (interrupted): "), "{all}");
    // After the plan (which names every VM): progress and summary.
    let after_plan = stdout[stdout.find("\nPlan: ").unwrap()..].to_string() + &stderr;
    for vm in &skipped {
        assert_eq!(
            after_plan.matches(vm).count(),
            1,
            "{vm} named once:\n{after_plan}"
        );
    }
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    assert_eq!(env.vm_names(), BASE_VMS);
}

/// On a terminal (a pseudo-terminal made by `script`): each finished VM
/// shows its duration once, and Ctrl-C typed at the keyboard prints its
/// notice above the progress bars.
#[test]
fn progress_on_a_terminal_shows_durations_once_and_the_ctrl_c_notice() {
    use std::io::Write;
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: util-linux `script` is needed for a pseudo-terminal");
        return;
    }
    let env = secret_harness(|c| c.latency = Duration::from_millis(120));
    let bin = env!("CARGO_BIN_EXE_exedev-k8s");
    let mut cmd = env.cmd(&[]);
    let mut child = std::process::Command::new("script")
        .args([
            "-qefc",
            &format!("'{bin}' apply -f base.yaml --yes --parallelism 1"),
            "/dev/null",
        ])
        .current_dir(env.dir.path())
        .envs(
            cmd.get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env("TERM", "xterm")
        .env("COLUMNS", "160")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = &mut cmd;
    for _ in 0..500 {
        if env.vm_names().len() >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let screen = utf8(&out.stdout);
    assert!(
        screen.contains("Ctrl-C: finishing the changes in flight"),
        "{screen}"
    );
    let finished: Vec<&str> = screen.split("✓ create in ").skip(1).collect();
    assert!(!finished.is_empty(), "{screen}");
    for rest in finished {
        let secs_end = rest.find('s').unwrap();
        assert!(rest[..secs_end].parse::<f64>().is_ok(), "{rest}");
        assert!(
            !rest[secs_end + 1..].starts_with(" ("),
            "duration shown twice: ✓ create in {}",
            &rest[..rest.len().min(30)]
        );
    }
    assert!(env.vm_names().len() < 9, "stopped early");
}

/// A pool that had `share: {public: true}` loses it: the plan shows its VMs
/// going private (a `share show` only for the VMs the tool had shared), apply
/// makes them private and drops the share tag, and later plans read no
/// `share show` at all.
#[test]
fn a_pool_that_loses_its_share_goes_private() {
    let env = secret_harness(|_| {});
    let base = std::fs::read_to_string(env.path("base.yaml")).unwrap();
    let public = base.replace(
        "share: {port: 8080, public: false}",
        "share: {port: 8080, public: true}",
    );
    assert_ne!(public, base);
    std::fs::write(env.path("shared.yaml"), &public).unwrap();
    env.ok(&["apply", "-f", "shared.yaml", "--yes"]);
    let web = ["acme-web1", "acme-web2", "acme-web3"];
    let st = env.emu().state();
    for vm in web {
        assert!(st.vms[vm].share.public, "{vm}");
        assert!(st.vms[vm].tags.iter().any(|t| t == "exk8s-share"), "{vm}");
    }
    assert!(
        !st.vms["acme-batch1"]
            .tags
            .iter()
            .any(|t| t == "exk8s-share")
    );

    let unshared = public.replace("\n    share: {port: 8080, public: true}", "");
    assert!(!unshared.contains("share:"));
    std::fs::write(env.path("unshared.yaml"), &unshared).unwrap();
    let shows = env.emu().count("share show");
    let out = env.run(&["plan", "-f", "unshared.yaml", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", utf8(&out.stderr));
    let plan = utf8(&out.stdout);
    for vm in web {
        assert!(
            plan.contains(&format!("{vm} (agent, pool web) will be updated in place")),
            "{plan}"
        );
    }
    assert_eq!(
        plan.matches("share.public   true → false").count(),
        3,
        "{plan}"
    );
    assert_eq!(
        plan.matches("proxy no longer shared: made private").count(),
        3
    );
    assert!(
        plan.contains("Plan: 0 to create, 3 to update, 0 to upgrade, 0 to replace, 0 to delete.")
    );
    assert_eq!(
        env.emu().count("share show") - shows,
        3,
        "share show only for the VMs carrying the share tag"
    );

    env.ok(&["apply", "-f", "unshared.yaml", "--yes"]);
    let st = env.emu().state();
    for vm in web {
        assert!(!st.vms[vm].share.public, "{vm} is still public");
        assert!(!st.vms[vm].tags.iter().any(|t| t == "exk8s-share"), "{vm}");
        assert!(
            st.vms[vm].tags.iter().any(|t| t == "team-a"),
            "user tags stay"
        );
    }
    let shows = env.emu().count("share show");
    let out = env.run(&["plan", "-f", "unshared.yaml", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", utf8(&out.stdout));
    assert_eq!(env.emu().count("share show"), shows, "nothing left to read");
}

/// Each mistake a new user makes is named for what it is, before anything
/// is sent: endpoint without a scheme or with a wrong path, expired vs
/// garbled token, a past `--exp`, a fleet given as a plan file,
/// `--parallelism 0`.
#[test]
fn mistakes_are_named_before_anything_is_sent() {
    let env = secret_harness(|_| {});
    let origin = env.emu().url.trim_end_matches("/exec").to_string();
    let port = origin.rsplit(':').next().unwrap().to_string();

    // A bare origin, with or without a final slash, means its /exec.
    for endpoint in [format!("{origin}/"), origin.clone()] {
        let out = env
            .cmd(&["plan", "-f", "base.yaml"])
            .env("EXE_DEV_ENDPOINT", &endpoint)
            .output()
            .unwrap();
        assert!(out.status.success(), "{endpoint}: {}", utf8(&out.stderr));
    }
    let before = env.emu().requests().len();
    let nothing_sent = |args: &[&str], envs: &[(&str, &str)], code: i32, says: &[&str]| {
        let mut c = env.cmd(args);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = utf8(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        for s in says {
            assert!(err.contains(s), "{args:?} lacks {s:?}: {err}");
        }
        assert!(!err.contains("may or may not"), "{err}");
        assert_eq!(
            env.emu().requests().len(),
            before,
            "{args:?} sent a request"
        );
        err
    };
    nothing_sent(
        &["plan", "-f", "base.yaml"],
        &[("EXE_DEV_ENDPOINT", &format!("127.0.0.1:{port}"))],
        1,
        &[
            "has no scheme",
            &format!("did you mean http://127.0.0.1:{port}/exec?"),
        ],
    );
    nothing_sent(
        &[
            "plan",
            "-f",
            "base.yaml",
            "--endpoint",
            &format!("{origin}/api/v1"),
        ],
        &[],
        1,
        &[&format!("did you mean {origin}/exec?")],
    );

    // Expired and garbled tokens get different messages, both local.
    let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap();
    let now = exedev_k8s::edges::credentials::now_unix();
    let expired = exedev_k8s::core::token::mint(
        &key,
        &exedev_k8s::core::token::Permissions {
            exp: Some(now - 7200),
            ..Default::default()
        },
        exedev_k8s::core::token::API_NAMESPACE,
    )
    .unwrap();
    let e1 = nothing_sent(
        &["plan", "-f", "base.yaml"],
        &[("EXE_DEV_API_KEY", expired.expose())],
        1,
        &["expired 2 hours ago", "token mint"],
    );
    let e2 = nothing_sent(
        &["plan", "-f", "base.yaml"],
        &[("EXE_DEV_API_KEY", "not-a-token")],
        1,
        &["not an exe.dev token"],
    );
    assert_ne!(e1, e2);
    assert_no_secret("token errors", &(e1.clone() + &e2));
    assert!(
        !e1.contains(expired.expose()),
        "the token itself is never shown"
    );

    // A token that is already expired is not minted.
    let dir = tempfile::tempdir().unwrap();
    let kp = crate::common::keygen(dir.path(), "k", "ed25519", &[], "");
    let out = env
        .cmd(&[
            "token",
            "mint",
            "--ssh-key",
            kp.to_str().unwrap(),
            "--exp",
            "2020-01-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no token printed");
    assert!(
        utf8(&out.stderr).contains("--exp is in the past"),
        "{}",
        utf8(&out.stderr)
    );

    // `apply fleet.yaml` without -f.
    nothing_sent(
        &["apply", "base.yaml"],
        &[],
        1,
        &[
            "is a fleet file, not a saved plan",
            "did you mean `exedev-k8s apply -f base.yaml`?",
        ],
    );
    // --parallelism 0 never reaches apply.
    nothing_sent(
        &["apply", "-f", "base.yaml", "--yes", "--parallelism", "0"],
        &[],
        1,
        &["invalid value '0' for '--parallelism"],
    );
    nothing_sent(
        &["destroy", "-f", "base.yaml", "--yes", "--parallelism", "0"],
        &[],
        1,
        &["--parallelism"],
    );
}

/// A saved plan finds its fleet from any directory: the fleet path is kept
/// relative to the plan file.
#[test]
fn saved_plans_apply_from_any_directory() {
    let env = secret_harness(|_| {});
    std::fs::create_dir_all(env.path("plans")).unwrap();
    std::fs::create_dir_all(env.path("elsewhere/deeper")).unwrap();
    env.ok(&["plan", "-f", "base.yaml", "--out", "plans/p.plan"]);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.path("plans/p.plan")).unwrap()).unwrap();
    assert_eq!(saved["fleet_file"], "../base.yaml");
    let out = env
        .cmd(&["apply", "../../plans/p.plan"])
        .current_dir(env.path("elsewhere/deeper"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", utf8(&out.stderr));
    assert_eq!(env.vm_names(), BASE_VMS);
    // The generated k3s token lives beside the fleet, not the working dir.
    assert!(env.path(".exedev-k8s/acme/k3s-token").exists());
    assert!(!env.path("elsewhere/deeper/.exedev-k8s").exists());
}

/// `apply --json` and `destroy --json`: every line is one JSON event with a
/// time; the summary names its operation and lists objects, not tuples.
/// The human destroy ends with "Destroy complete".
#[test]
fn json_events_are_timestamped_and_summaries_name_their_operation() {
    let env = secret_harness(|_| {});
    let check = |out: &str, operation: &str, done: usize| {
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        for l in &lines {
            let time = l["time"].as_str().unwrap_or_else(|| panic!("no time: {l}"));
            assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
            assert!(l["event"].is_string(), "{l}");
        }
        let summary = lines.last().unwrap();
        assert_eq!(summary["event"], "summary");
        assert_eq!(summary["operation"], operation);
        assert_eq!(summary["ok"], true);
        assert!(summary["seconds"].is_f64());
        let d = summary["done"].as_array().unwrap();
        assert_eq!(d.len(), done);
        assert!(
            d[0]["vm"].is_string() && d[0]["action"].is_string(),
            "{summary}"
        );
        assert_eq!(summary["failed"], serde_json::json!([]));
        assert_eq!(summary["skipped"], serde_json::json!([]));
    };
    check(
        &env.ok(&["apply", "-f", "base.yaml", "--yes", "--json"]),
        "apply",
        9,
    );
    check(
        &env.ok(&["destroy", "-f", "base.yaml", "--yes", "--json"]),
        "destroy",
        9,
    );
    env.ok(&["apply", "-f", "base.yaml", "--yes"]);
    let out = env.ok(&["destroy", "-f", "base.yaml", "--yes"]);
    assert!(
        out.contains("\nDestroy complete: 9 done, 0 failed, 0 skipped in "),
        "{out}"
    );
    assert!(!out.contains("Apply"), "{out}");
}

/// When the first server cannot be created, no agent is created: each
/// would only retry joining a server that does not exist. Updates and
/// deletions of agents need no server and still run.
#[test]
fn agents_are_not_created_when_the_first_server_fails() {
    use exedev_k8s::apply::{self, ApplyOptions};
    use exedev_k8s::core::plan::{PlanOptions, diff, spec::ClusterSecrets};
    use std::sync::{Arc, Mutex};
    let env = secret_harness(|_| {});
    let fleet = exedev_k8s::edges::workspace::load_fleet(&env.path("base.yaml"))
        .unwrap()
        .fleet;
    let client = exedev_k8s::edges::client::Client::new(
        &env.emu().url,
        exedev_k8s::base::secret::Secret::new(env.token.clone()),
        Default::default(),
    )
    .unwrap();
    let observed = env
        .rt
        .block_on(exedev_k8s::edges::observe::observe(&client, &fleet, true))
        .unwrap();
    let plan = diff(&fleet, "fp", &observed, &PlanOptions::default()).unwrap();
    /// No node ever becomes Ready.
    struct NeverReady;
    impl apply::NodeOps for NeverReady {
        fn wait_ready<'a>(
            &'a self,
            vm: &'a str,
            _: Option<&'a str>,
            _: apply::StepSink,
        ) -> Option<apply::Pending<'a>> {
            Some(Box::pin(async move {
                Err(apply::HookError::new(std::io::Error::other(format!(
                    "{vm} never became Ready"
                ))))
            }))
        }
    }
    let opts = ApplyOptions {
        ops: Arc::new(NeverReady),
        ..ApplyOptions::default()
    };
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let report = env.rt.block_on(apply::apply(
        &client,
        &fleet,
        &plan,
        &ClusterSecrets::placeholders(),
        &[],
        &opts,
        Arc::new(move |e| seen.lock().unwrap().push(e)),
    ));
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(report.failed[0].vm, "acme-cp1");
    assert_eq!(report.skipped.len(), 8, "{report:?}");
    // The summary keeps each skip's own reason.
    assert_eq!(
        report
            .skipped
            .iter()
            .filter(|s| s.reason.contains("no server is up for it to join"))
            .count(),
        6,
        "{report:?}"
    );
    assert_eq!(env.vm_names(), ["acme-cp1"], "no agent was created");
    assert_eq!(env.emu().count("new"), 1);
    let skipped_agents = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, apply::Event::Skipped { reason, .. } if reason.contains("no server is up for it to join")))
        .count();
    assert_eq!(skipped_agents, 6);
}

/// `etcd.snapshots` with S3 keys: plan in every format, the saved plan
/// file, `validate` and `show` never show the keys'
/// values (which reach only a server's 0600 drop-in, through the change
/// script over SSH: `bootstrap::tests` and the HA demo).
#[test]
fn snapshot_keys_never_reach_plans_or_output() {
    let env = crate::common::harness(|_| {}).secrets(&[
        ("TS_AUTHKEY", TS_KEY),
        ("K3S_TOKEN", K3S_TOKEN),
        ("S3_ACCESS_KEY", "SECRETVALUE-s3-access"),
    ]);
    std::fs::create_dir_all(env.path("secrets")).unwrap();
    env.write("secrets/s3-secret-key", "SECRETVALUE-s3-secret\n");
    let base = std::fs::read_to_string(env.path("base.yaml")).unwrap();
    env.write(
        "snap.yaml",
        &format!(
            "{base}etcd:
  snapshots:
    schedule: \"0 */6 * * *\"
    retention: 3
    s3:
      endpoint: s3.emulator.internal
      bucket: acme-snapshots
      accessKey: {{env: S3_ACCESS_KEY}}
      secretKey: {{file: secrets/s3-secret-key}}
"
        ),
    );
    let mut all = String::new();
    for args in [
        &["validate", "-f", "snap.yaml"][..],
        &["plan", "-f", "snap.yaml", "--out", "p.json"][..],
        &["plan", "-f", "snap.yaml", "--json"][..],
        &["plan", "-f", "snap.yaml", "--format", "markdown"][..],
        &["show", "p.json"][..],
    ] {
        all.push_str(&env.ok(args));
        all.push_str(&utf8(&env.run(args).stderr));
    }
    all.push_str(&std::fs::read_to_string(env.path("p.json")).unwrap());
    assert_no_secret("output", &all);
    assert!(all.contains("snap.yaml"), "{all}");
}
