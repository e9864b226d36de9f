//! The bootstrap state a setup script leaves on its VM, as read back over
//! SSH: one place for the file's format (the template writes it, this
//! parses it) and for the remote command that reads it with the log's tail.
//! Pure.

use serde::Serialize;

use super::{LOG_PATH, STATE_PATH};
use crate::base::names::NODE_PASSWORD_REJECTED;

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
    /// the script yet) is not done, and a step recorded in an earlier boot
    /// was interrupted there.
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
            // A run an earlier boot left at a step: the VM restarted under
            // it (a reboot mid-bootstrap) and exe.dev has not rerun it yet.
            _ if earlier_boot => BootstrapPhase::Running {
                step: format!(
                    "interrupted by a restart at {}; the setup script has not rerun yet",
                    step.unwrap_or_else(|| "an unknown step".to_string())
                ),
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
        out.push_str(&crate::base::text::one_line(l));
    }
    out
}

/// The systemd unit k3s runs under on a server or an agent (the setup
/// script's `$UNIT`).
pub fn k3s_unit(server: bool) -> &'static str {
    if server { "k3s" } else { "k3s-agent" }
}

/// Whether a failed step is one where k3s itself was running, so k3s's own
/// journal says why (`start k3s`, `wait for k3s-agent to be active`, `wait
/// for the API server (/readyz)`: the script's steps after the installer).
pub fn is_k3s_step(step: &str) -> bool {
    step.starts_with("start k3s")
        || step.starts_with("wait for k3s")
        || step.starts_with("wait for the API server")
}

/// The remote command that prints the last `lines` messages of the k3s
/// unit's journal (`sudo -n`: the system journal may need it).
pub fn k3s_journal_command(server: bool, lines: usize) -> Vec<String> {
    [
        "sudo",
        "-n",
        "journalctl",
        "-u",
        k3s_unit(server),
        "-n",
        &lines.to_string(),
        "--no-pager",
        "-o",
        "cat",
    ]
    .map(String::from)
    .to_vec()
}

/// Longest reason kept from a VM's journal.
const MAX_REASON_CHARS: usize = 400;

/// k3s's own reason for failing, from its journal: the message of the last
/// `level=fatal` line, else of the last `level=error` line or of an agent's
/// node password refused, whichever came last (k3s logs with logrus:
/// `time="..." level=fatal msg="..."`; the refusal is retried at info
/// level, so it is looked for by its words, [`NODE_PASSWORD_REJECTED`]).
/// Text from a VM: cut to a bounded length here, escaped where it is shown.
pub fn k3s_reason(journal: &str) -> Option<String> {
    let lines: Vec<&str> = journal.lines().collect();
    let pick = |level: &str| {
        lines.iter().rposition(|l| {
            l.contains(&format!("level={level} ")) || l.ends_with(&format!("level={level}"))
        })
    };
    let rejected = lines
        .iter()
        .rposition(|l| l.contains(NODE_PASSWORD_REJECTED));
    let at = pick("fatal").or_else(|| pick("error").max(rejected))?;
    if Some(at) == rejected {
        return Some(password_reason());
    }
    let line = lines[at];
    let msg = match line.split_once("msg=\"") {
        Some((_, rest)) => {
            let mut out = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    '"' => break,
                    c => out.push(c),
                }
            }
            out
        }
        None => line.to_string(),
    };
    let msg = msg.trim();
    (!msg.is_empty()).then(|| msg.chars().take(MAX_REASON_CHARS).collect())
}

/// k3s's words for a refused node password, and what to do in this fleet:
/// the name is held by a Node that remains from an earlier VM
/// (`docs/facts/node-password.md`); the tool never sets `--with-node-id`.
fn password_reason() -> String {
    format!(
        "{NODE_PASSWORD_REJECTED} (a node of this name remains from an earlier VM and k3s keeps its password: re-run apply, which deletes a lost agent's stale node first, or delete the node with kubectl)"
    )
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
        // A run left at a step by an earlier boot was interrupted there.
        let cut = format!(
            "state: running\nstep: run the k3s installer\nboot: aaa\ncurrent-boot: bbb\n{LOG_SEPARATOR}\n"
        );
        assert_eq!(
            BootstrapReport::parse(&cut).phase,
            BootstrapPhase::Running {
                step: "interrupted by a restart at run the k3s installer; the setup script has not rerun yet".into()
            }
        );
        // Without boot ids (no /proc): the state is taken as written.
        let bare = format!("state: done\nstep: \ncurrent-boot: \n{LOG_SEPARATOR}\n");
        assert_eq!(BootstrapReport::parse(&bare).phase, BootstrapPhase::Done);
    }

    #[test]
    fn k3s_reasons_come_from_the_last_fatal_line() {
        let journal = "Starting k3s-agent.service\n\
            time=\"t\" level=info msg=\"Starting k3s agent\"\n\
            time=\"t\" level=error msg=\"an earlier error\"\n\
            time=\"t\" level=fatal msg=\"failed to validate token: \\\"x\\\" returned 401\"\n\
            Stopped k3s-agent.service\n";
        assert_eq!(
            k3s_reason(journal).as_deref(),
            Some("failed to validate token: \"x\" returned 401")
        );
        assert_eq!(
            k3s_reason("level=error msg=\"only an error\"").as_deref(),
            Some("only an error")
        );
        assert_eq!(
            k3s_reason("level=info msg=\"fine\"\n-- No entries --"),
            None
        );
        // An agent refused its node password retries at info level.
        let refused = format!(
            "time=\"t\" level=error msg=\"Failed to validate connection\"\n\
             time=\"t\" level=info msg=\"Waiting to retrieve agent configuration; server is not ready: /var/lib/rancher/k3s/agent/serving-kubelet.crt: {NODE_PASSWORD_REJECTED}\"\n"
        );
        let r = k3s_reason(&refused).unwrap();
        assert!(
            r.starts_with("Node password rejected") && r.contains("re-run apply"),
            "{r}"
        );
        assert!(r.chars().count() <= MAX_REASON_CHARS, "{r}");
        let fixed_later = format!("{refused}level=error msg=\"later\"\n");
        assert_eq!(k3s_reason(&fixed_later).as_deref(), Some("later"));
        let long = format!("level=fatal msg=\"{}\"", "x".repeat(5000));
        assert_eq!(k3s_reason(&long).unwrap().len(), MAX_REASON_CHARS);
        assert!(is_k3s_step("wait for k3s-agent to be active"));
        assert!(is_k3s_step("wait for the API server (/readyz)"));
        assert!(!is_k3s_step("join the tailnet"));
        assert_eq!(
            k3s_journal_command(false, 5).join(" "),
            "sudo -n journalctl -u k3s-agent -n 5 --no-pager -o cat"
        );
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
