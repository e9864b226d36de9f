//! `completions` and `man` come from the same clap definitions as the
//! parser: bash really completes with the script, every shell's script and
//! every man page names the commands and flags, and `man` renders the pages.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
}

fn stdout(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Completes `words` (the last one partial) with the bash script loaded.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let words_q: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let prog = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_LINE='{}'\nCOMP_POINT=${{#COMP_LINE}}\n_exedev_k8s exedev-k8s '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        words_q.join(" "),
        words.len() - 1,
        words.join(" "),
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &prog])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_commands_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("exedev-k8s.bash");
    std::fs::write(&script, stdout(&["completions", "bash"])).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success(), "the bash script must parse");
    assert_eq!(bash_complete(&script, &["exedev-k8s", "pl"]), ["plan"]);
    let flags = bash_complete(&script, &["exedev-k8s", "apply", "--par"]);
    assert_eq!(flags, ["--parallelism"]);
    let shells = bash_complete(&script, &["exedev-k8s", "completions", ""]);
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(shells.iter().any(|s| s == shell), "{shells:?}");
    }
}

#[test]
fn every_shell_gets_a_script_naming_the_commands() {
    for (shell, marker) in [
        (
            "bash",
            "complete -F _exedev_k8s -o nosort -o bashdefault -o default exedev-k8s",
        ),
        ("zsh", "#compdef exedev-k8s"),
        ("fish", "complete -c exedev-k8s"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let script = stdout(&["completions", shell]);
        assert!(script.contains(marker), "{shell} lacks {marker}");
        for word in [
            "plan",
            "apply",
            "destroy",
            "status",
            "check",
            "detailed-exitcode",
        ] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    let out = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "unknown shells are refused by clap (a usage error: exit 1)"
    );
}

#[test]
fn man_pages_render_for_every_command() {
    let page = stdout(&["man"]);
    assert!(page.contains(".TH exedev-k8s 1"), "{page}");
    assert!(page.contains("plan") && page.contains("apply"));
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    for cmd in [
        "",
        "-plan",
        "-apply",
        "-destroy",
        "-completions",
        "-token-mint",
    ] {
        let file = dir.path().join(format!("exedev-k8s{cmd}.1"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(text.contains(".TH"), "{}", file.display());
    }
    let plan = std::fs::read_to_string(dir.path().join("exedev-k8s-plan.1")).unwrap();
    assert!(plan.contains("detailed\\-exitcode"), "flags are documented");
    // Rendered by man itself where it is installed.
    if let Ok(out) = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(dir.path().join("exedev-k8s-plan.1"))
        .env("MANWIDTH", "100")
        .output()
        && out.status.success()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("--detailed-exitcode"), "{text}");
    }
}

/// The man pages say what clap_mangen leaves out: the environment each
/// command reads and what its exit codes mean (2 is "changes").
#[test]
fn man_pages_have_environment_and_exit_status() {
    let page = stdout(&["man"]);
    for section in [".SH ENVIRONMENT", ".SH \"EXIT STATUS\""] {
        assert!(page.contains(section), "{section}:\n{page}");
    }
    for var in [
        "EXE_DEV_ENDPOINT",
        "EXE_DEV_API_KEY",
        "EXE_DEV_SSH_KEY",
        "EXE_DEV_SSH_KEY_PASSPHRASE",
        "EXEDEV_K8S_SSH",
        "EXEDEV_K8S_KUBECONFIG",
        "EXEDEV_K8S_CHANNEL_SERVER",
        "NO_COLOR",
    ] {
        assert!(page.contains(&format!("\\fB{var}\\fR")), "{var}");
    }
    let exit = &page[page.find(".SH \"EXIT STATUS\"").unwrap()..];
    insta::assert_snapshot!(exit.split(".SH VERSION").next().unwrap(), @r#"
    .SH "EXIT STATUS"
    .TP
    \fB0\fR
    Success. With plan \-\-detailed\-exitcode: success and no changes.
    .TP
    \fB1\fR
    Any failure: a usage error, an invalid fleet, an API error, a refused or stale plan, a missing secret, a path check found broken, a bug (a panic).
    .TP
    \fB2\fR
    plan \-\-detailed\-exitcode: success, and the plan has changes. status: something differs from the fleet. Nothing that failed exits 2.
    .TP
    \fB130\fR
    Interrupted twice (Ctrl\-C).
    "#);
    // A command's own page lists only what it reads.
    let dir = tempfile::tempdir().unwrap();
    assert!(
        bin()
            .args(["man", "--dir"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success()
    );
    let plan = std::fs::read_to_string(dir.path().join("exedev-k8s-plan.1")).unwrap();
    let env = &plan[plan.find(".SH ENVIRONMENT").expect("plan's ENVIRONMENT")
        ..plan.find(".SH \"EXIT STATUS\"").unwrap()];
    assert!(
        env.contains("\\fBEXE_DEV_ENDPOINT\\fR\nSets \\-\\-endpoint: "),
        "{env}"
    );
    assert!(env.contains("EXEDEV_K8S_SSH"), "{env}");
    let schema = std::fs::read_to_string(dir.path().join("exedev-k8s-schema.1")).unwrap();
    assert!(
        !schema.contains(".SH ENVIRONMENT"),
        "schema reads no variable"
    );
    assert!(schema.contains(".SH \"EXIT STATUS\""));
}

/// `completions` without a shell: its help (the shells, how to install)
/// on stderr, exit 1, nothing on stdout.
#[test]
fn completions_without_a_shell_prints_the_shells() {
    let out = bin().arg("completions").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[possible values: bash, elvish, fish, powershell, zsh]"),
        "{err}"
    );
    assert!(
        err.contains("Usage: exedev-k8s completions <SHELL>"),
        "{err}"
    );
    assert!(err.contains("completions bash > "), "{err}");
}

/// `--help` shows which variable sets a flag, never its value (clap would
/// print `[env: EXE_DEV_ENDPOINT=]` with an unset variable, or a set one's
/// value).
#[test]
fn help_names_variables_without_values() {
    let out = bin()
        .args(["plan", "--help"])
        .env("EXE_DEV_ENDPOINT", "http://127.0.0.1:9/exec")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[env: EXE_DEV_ENDPOINT]"), "{help}");
    assert!(
        !help.contains("127.0.0.1:9") && !help.contains("EXE_DEV_ENDPOINT="),
        "{help}"
    );
}

/// A fleet file given without -f: every command that takes one says how.
#[test]
fn a_positional_fleet_file_suggests_dash_f() {
    for cmd in ["validate", "plan", "status", "destroy", "kubeconfig"] {
        let out = bin().args([cmd, "fleet.yaml"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        let hint = err.lines().last().unwrap_or_default();
        assert_eq!(
            hint,
            format!(
                "hint: did you mean `exedev-k8s {cmd} -f fleet.yaml`? (without -f, it reads fleet.yaml in the working directory)"
            ),
            "{err}"
        );
    }
    let out = bin().args(["validate", "fleet.yaml"]).output().unwrap();
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr), @r"
    error: unexpected argument 'fleet.yaml' found

    Usage: exedev-k8s validate [OPTIONS]

    For more information, try '--help'.
    hint: did you mean `exedev-k8s validate -f fleet.yaml`? (without -f, it reads fleet.yaml in the working directory)
    ");
}

/// Without -f, `fleet.yaml` of the working directory; when there is none,
/// that is what is said (not "is not a valid fleet").
#[test]
fn without_dash_f_the_working_directorys_fleet_yaml_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("validate")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr), @r"
    error: fleet.yaml does not exist (relative to the working directory)
    hint: name the fleet file with -f FLEET; without -f, exedev-k8s reads fleet.yaml in the working directory
    ");
    let out = bin()
        .args(["validate", "-f", "nonexist.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stderr), @r"
    error: nonexist.yaml does not exist (relative to the working directory)
    hint: name the fleet file with -f FLEET; without -f, exedev-k8s reads fleet.yaml in the working directory
    ");
    std::fs::write(
        dir.path().join("fleet.yaml"),
        include_str!("../fleets/minimal.yaml"),
    )
    .unwrap();
    let out = bin()
        .arg("validate")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("fleet.yaml is valid: fleet \"demo\""),
        "{text}"
    );
}
