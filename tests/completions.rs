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
        for word in ["plan", "apply", "destroy", "status", "detailed-exitcode"] {
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
