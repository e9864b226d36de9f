//! The bootstrap state a setup script leaves on its VM, as read back over
//! SSH: one place for the file's format (the template writes it, this
//! parses it) and for the remote command that reads it with the log's tail.
//! Pure.

use serde::Serialize;

use super::{LOG_PATH, STATE_PATH};

/// Separates the state file from the log tail in [`report_command`]'s
/// output.
const LOG_SEPARATOR: &str = "--- exedev-k8s bootstrap log ---";

/// How far a VM's setup script got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum BootstrapPhase {
    /// No state file: the script has not started (or the VM was not built
    /// by this version of the tool).
    NotStarted,
    /// The script is at `step` (or was killed there: a reboot reruns it).
    Running {
        /// The step it is at.
        step: String,
    },
    /// The node is up: k3s active (and, on servers, `/readyz` ok).
    Done,
    /// The script stopped at `step`; k3s may still be retrying on its own.
    Failed {
        /// The step that failed.
        step: String,
    },
}

impl BootstrapPhase {
    /// One word or phrase for a table cell.
    pub fn summary(&self) -> String {
        match self {
            BootstrapPhase::NotStarted => "not started".to_string(),
            BootstrapPhase::Running { step } => format!("running ({step})"),
            BootstrapPhase::Done => "done".to_string(),
            BootstrapPhase::Failed { step } => format!("failed ({step})"),
        }
    }
}

/// A VM's bootstrap state and the last lines of its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootstrapReport {
    /// How far the script got.
    #[serde(flatten)]
    pub phase: BootstrapPhase,
    /// The last lines of [`LOG_PATH`] (empty unless asked for).
    pub log_tail: Vec<String>,
}

/// Where Linux keeps the current boot's id: the script records it with each
/// state, so a `done` written before a reboot is told apart.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The remote command (words for `ssh::run`) that prints the state file (or
/// `state: absent`), the current boot id and the last `log_lines` lines of
/// the log. Needs no sudo: both files are world-readable and hold no
/// secret.
pub fn report_command(log_lines: usize) -> Vec<String> {
    vec![
        "sh".to_string(),
        "-c".to_string(),
        format!(
            "cat {STATE_PATH} 2>/dev/null || echo 'state: absent'; echo \"current-boot: $(cat {BOOT_ID} 2>/dev/null)\"; echo '{LOG_SEPARATOR}'; tail -n {log_lines} {LOG_PATH} 2>/dev/null || true"
        ),
    ]
}

impl BootstrapReport {
    /// Parses [`report_command`]'s output; a state file that says nothing
    /// recognisable reads as [`BootstrapPhase::Running`] at an unknown step
    /// (a script killed while writing it). A `done` recorded in an earlier
    /// boot than the current one (the VM restarted and exe.dev has not rerun
    /// the script yet) is not done.
    pub fn parse(output: &str) -> BootstrapReport {
        let (state_text, log) = output.split_once(LOG_SEPARATOR).unwrap_or((output, ""));
        let field = |name: &str| {
            state_text.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        let step = field("step").filter(|s| !s.is_empty());
        let boot = field("boot").filter(|s| !s.is_empty());
        let current = field("current-boot").filter(|s| !s.is_empty());
        let earlier_boot = matches!((&boot, &current), (Some(b), Some(c)) if b != c);
        let phase = match field("state").as_deref() {
            Some("absent") => BootstrapPhase::NotStarted,
            Some("done") if earlier_boot => BootstrapPhase::Running {
                step: "restarted; the setup script has not rerun yet".to_string(),
            },
            Some("done") => BootstrapPhase::Done,
            Some("failed") => BootstrapPhase::Failed {
                step: step.unwrap_or_else(|| "unknown step".to_string()),
            },
            _ => BootstrapPhase::Running {
                step: step.unwrap_or_else(|| "unknown step".to_string()),
            },
        };
        let log_tail = log
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        BootstrapReport { phase, log_tail }
    }
}

/// Log lines indented under an error or a status problem. They come from
/// a VM: control characters are shown as escapes, never sent to a terminal.
pub fn format_log(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut out = String::from("; last log lines:");
    for l in lines {
        out.push_str("\n    | ");
        out.push_str(&crate::text::one_line(l));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_phase() {
        let cases = [
            ("state: absent\n", BootstrapPhase::NotStarted),
            (
                "state: running\nstep: join the tailnet\nrole: agent\n",
                BootstrapPhase::Running {
                    step: "join the tailnet".into(),
                },
            ),
            ("state: done\nstep: \nrole: agent\n", BootstrapPhase::Done),
            (
                "state: failed\nstep: run the k3s installer\n",
                BootstrapPhase::Failed {
                    step: "run the k3s installer".into(),
                },
            ),
            (
                "",
                BootstrapPhase::Running {
                    step: "unknown step".into(),
                },
            ),
        ];
        for (state, want) in cases {
            let out = format!("{state}{LOG_SEPARATOR}\nline 1\n\nline 2\n");
            let r = BootstrapReport::parse(&out);
            assert_eq!(r.phase, want, "{state:?}");
            assert_eq!(r.log_tail, ["line 1", "line 2"]);
        }
    }

    #[test]
    fn a_done_from_an_earlier_boot_is_not_done() {
        let stale = format!("state: done\nstep: \nboot: aaa\ncurrent-boot: bbb\n{LOG_SEPARATOR}\n");
        assert!(matches!(
            BootstrapReport::parse(&stale).phase,
            BootstrapPhase::Running { .. }
        ));
        let fresh = format!("state: done\nstep: \nboot: bbb\ncurrent-boot: bbb\n{LOG_SEPARATOR}\n");
        assert_eq!(BootstrapReport::parse(&fresh).phase, BootstrapPhase::Done);
        // Without boot ids (no /proc): the state is taken as written.
        let bare = format!("state: done\nstep: \ncurrent-boot: \n{LOG_SEPARATOR}\n");
        assert_eq!(BootstrapReport::parse(&bare).phase, BootstrapPhase::Done);
    }

    #[test]
    fn log_lines_are_indented_under_the_message() {
        assert_eq!(format_log(&[]), "");
        assert_eq!(
            format_log(&["a".into(), "b".into()]),
            "; last log lines:\n    | a\n    | b"
        );
    }

    #[test]
    fn the_command_reads_both_files_without_sudo() {
        let c = report_command(7).join(" ");
        assert!(c.contains(STATE_PATH) && c.contains(LOG_PATH), "{c}");
        assert!(c.contains("tail -n 7") && !c.contains("sudo"), "{c}");
    }

    #[test]
    fn the_command_output_parses_when_run_for_real() {
        // No state file or log at these paths on the test machine: absent.
        let words = report_command(3);
        let out = std::process::Command::new(&words[0])
            .args(&words[1..])
            .output()
            .expect("run sh");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        if !std::path::Path::new(STATE_PATH).exists() {
            assert_eq!(
                BootstrapReport::parse(&text).phase,
                BootstrapPhase::NotStarted
            );
        }
    }
}
