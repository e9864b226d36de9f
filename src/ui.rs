//! The terminal: colour decisions, confirmation prompts, and apply progress
//! (indicatif bars on a terminal, timestamped lines otherwise, JSON events
//! with `--json`), notices while progress shows (Ctrl-C), and the summary.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::apply::{ApplyReport, Event, Reporter};

/// Colour only on a terminal and never with `NO_COLOR` set.
pub fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Asks for `yes`. Off a terminal it never asks: it returns an error naming
/// the flag to pass instead.
pub fn confirm(question: &str, flag: &str) -> Result<bool, String> {
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "refusing to go ahead without confirmation: stdin is not a terminal. Review the plan above and pass {flag} to proceed"
        ));
    }
    print!("\n{question} Only 'yes' will be accepted: ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(line.trim() == "yes")
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Bars,
    Lines,
    Json,
}

impl ProgressMode {
    /// Bars on a terminal, lines elsewhere, JSON when asked.
    pub fn pick(json: bool) -> Self {
        if json {
            ProgressMode::Json
        } else if std::io::stderr().is_terminal() {
            ProgressMode::Bars
        } else {
            ProgressMode::Lines
        }
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// One JSON-lines event: `{"time": <RFC 3339, ms>, "event": ..., ...}`, the
/// time first so that a log of events reads (and sorts) by it; text from
/// exe.dev inside it is escaped (`text::json_safe`).
pub fn json_event(event: &impl serde::Serialize) -> String {
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let mut out = serde_json::Map::new();
    out.insert("time".into(), time.into());
    match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(fields)) => out.extend(fields),
        Ok(other) => {
            out.insert("value".into(), other);
        }
        Err(e) => {
            out.insert("error".into(), e.to_string().into());
        }
    }
    crate::base::text::json_safe(&serde_json::Value::Object(out).to_string()).into_owned()
}

/// Says something to the user while progress is showing.
pub type Notifier = Arc<dyn Fn(&str) + Send + Sync>;

/// Spinner of a VM whose change runs: its own clock.
const RUNNING_TEMPLATE: &str = "  {spinner} {prefix:<24} {msg} ({elapsed})";
/// A VM whose change ended: the message carries the duration, once.
const FINISHED_TEMPLATE: &str = "    {prefix:<24} {msg}";

/// Progress of one apply or destroy: a reporter for [`crate::apply`]'s
/// events and a notifier for messages in between (Ctrl-C), drawn so that
/// neither tramples the other.
pub struct Progress {
    reporter: Reporter,
    notifier: Notifier,
}

impl Progress {
    /// Progress for `total` changes. Skips are not shown one by one (the
    /// summary lists them once); failures are, and the summary repeats
    /// their errors.
    pub fn new(mode: ProgressMode, total: usize) -> Progress {
        match mode {
            ProgressMode::Json => Progress {
                reporter: Arc::new(|e: Event| println!("{}", json_event(&e))),
                notifier: Arc::new(|message: &str| {
                    println!(
                        "{}",
                        json_event(&serde_json::json!({"event": "notice", "message": message}))
                    );
                    eprintln!("{message}");
                }),
            },
            ProgressMode::Lines => {
                let start = Instant::now();
                Progress {
                    reporter: Arc::new(move |e: Event| {
                        if let Some(line) = line_for(&e) {
                            let t = start.elapsed().as_secs_f64();
                            // Steps and errors quote exe.dev: one line, no escapes.
                            eprintln!(
                                "{} [{t:6.1}s] {}",
                                timestamp(),
                                crate::base::text::one_line(&line)
                            );
                        }
                    }),
                    notifier: Arc::new(|message: &str| {
                        eprintln!("{} {message}", timestamp());
                    }),
                }
            }
            ProgressMode::Bars => bars(total),
        }
    }

    pub fn reporter(&self) -> Reporter {
        self.reporter.clone()
    }

    pub fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }
}

/// The line of an event in `Lines` mode; none for skips (the summary lists
/// them once).
fn line_for(e: &Event) -> Option<String> {
    Some(match e {
        Event::Start { vm, action } => format!("{vm}: {} started", action.as_str()),
        Event::Step { vm, step } => format!("{vm}: {step}"),
        Event::Done {
            vm,
            action,
            seconds,
        } => format!("{vm}: {} done in {seconds:.1}s", action.as_str()),
        Event::Failed { vm, action, error } => {
            format!("{vm}: {} FAILED: {error}", action.as_str())
        }
        Event::Skipped { .. } => return None,
    })
}

/// The final message of a VM's bar; the running clock is gone by then, so
/// the duration shows once.
fn finished_message(e: &Event) -> Option<String> {
    match e {
        Event::Done {
            action, seconds, ..
        } => Some(format!("✓ {} in {seconds:.1}s", action.as_str())),
        Event::Failed { action, error, .. } => Some(format!(
            "✗ {}: {}",
            action.as_str(),
            crate::base::text::one_line(error.lines().next().unwrap_or(""))
        )),
        _ => None,
    }
}

fn bars(total: usize) -> Progress {
    let multi = MultiProgress::new();
    let overall = multi.add(ProgressBar::new(total as u64));
    overall.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} changes {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    overall.enable_steady_tick(Duration::from_millis(200));
    let bars: Arc<Mutex<HashMap<String, ProgressBar>>> = Arc::default();
    let running = ProgressStyle::with_template(RUNNING_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let finished = ProgressStyle::with_template(FINISHED_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let notify_multi = multi.clone();
    let reporter: Reporter = Arc::new(move |e: Event| {
        let finish_overall = |overall: &ProgressBar| {
            overall.inc(1);
            if overall.position() >= overall.length().unwrap_or(0) {
                overall.finish();
            }
        };
        if matches!(e, Event::Skipped { .. }) {
            // Never started: no bar of its own; the summary names it.
            finish_overall(&overall);
            return;
        }
        let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
        let vm = match &e {
            Event::Start { vm, .. }
            | Event::Step { vm, .. }
            | Event::Done { vm, .. }
            | Event::Failed { vm, .. }
            | Event::Skipped { vm, .. } => crate::base::text::one_line(vm).into_owned(),
        };
        let bar = bars
            .entry(vm.clone())
            .or_insert_with(|| {
                let b = multi.insert_before(&overall, ProgressBar::new_spinner());
                b.set_style(running.clone());
                b.set_prefix(vm.clone());
                b.enable_steady_tick(Duration::from_millis(120));
                b
            })
            .clone();
        if let Some(msg) = finished_message(&e) {
            bar.set_style(finished.clone());
            bar.finish_with_message(msg);
            finish_overall(&overall);
            return;
        }
        match e {
            Event::Start { action, .. } => bar.set_message(action.as_str()),
            Event::Step { step, .. } => {
                bar.set_message(crate::base::text::one_line(&step).into_owned())
            }
            _ => {}
        }
    });
    let notifier: Notifier = Arc::new(move |message: &str| {
        // Above the bars: a plain eprintln would be overdrawn by them.
        if notify_multi.println(message).is_err() {
            eprintln!("{message}");
        }
    });
    Progress { reporter, notifier }
}

/// The human summary after an apply or destroy (`verb`: "Apply" or
/// "Destroy"): counts, each failure with its error, and the skipped VMs
/// once, grouped by reason.
pub fn summary(verb: &str, report: &ApplyReport) -> String {
    let mut out = format!(
        "{verb} {}: {} done, {} failed, {} skipped in {:.1}s.\n",
        if report.ok() {
            "complete"
        } else {
            "incomplete"
        },
        report.done.len(),
        report.failed.len(),
        report.skipped.len(),
        report.seconds
    );
    // VM names and errors may quote exe.dev: no control characters.
    for f in &report.failed {
        out.push_str(&format!(
            "  ✗ {} ({}): {}\n",
            crate::base::text::one_line(&f.vm),
            f.action.as_str(),
            crate::base::text::lines(&f.error)
        ));
    }
    let mut skipped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &report.skipped {
        skipped
            .entry(crate::base::text::one_line(&s.reason).into_owned())
            .or_default()
            .push(crate::base::text::one_line(&s.vm).into_owned());
    }
    const SHOWN: usize = 10;
    for (reason, vms) in skipped {
        let more = vms.len().saturating_sub(SHOWN);
        let mut names = vms[..vms.len().min(SHOWN)].join(", ");
        if more > 0 {
            names.push_str(&format!(" and {more} more"));
        }
        out.push_str(&format!("  - skipped ({reason}): {names}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Done, Failed, Skipped};
    use crate::core::plan::Action;

    #[test]
    fn a_finished_bar_shows_its_duration_once() {
        assert!(RUNNING_TEMPLATE.contains("{elapsed}"));
        assert!(
            !FINISHED_TEMPLATE.contains("{elapsed"),
            "the message has it"
        );
        let done = Event::Done {
            vm: "v".into(),
            action: Action::Create,
            seconds: 5.12,
        };
        assert_eq!(finished_message(&done).as_deref(), Some("✓ create in 5.1s"));
        let skipped = Event::Skipped {
            vm: "v".into(),
            action: Action::Create,
            reason: "interrupted".into(),
        };
        assert_eq!(finished_message(&skipped), None);
        assert_eq!(line_for(&skipped), None, "skips are listed by the summary");
    }

    #[test]
    fn json_events_carry_a_time_first() {
        let line = json_event(&Event::Start {
            vm: "v".into(),
            action: Action::Delete,
        });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["time", "event", "vm", "action"]);
        let time = v["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
        assert_eq!(v["event"], "start");
        assert_eq!(v["action"], "delete");
    }

    #[test]
    fn the_summary_lists_each_vm_once() {
        let mut report = ApplyReport {
            done: vec![Done {
                vm: "d-cp1".into(),
                action: Action::Delete,
            }],
            failed: vec![Failed {
                vm: "d-cp2".into(),
                action: Action::Delete,
                error: "HTTP 500".into(),
            }],
            skipped: Vec::new(),
            seconds: 1.25,
        };
        for i in 1..=12 {
            report.skipped.push(Skipped {
                vm: format!("d-web{i}"),
                action: Action::Delete,
                reason: "interrupted".into(),
            });
        }
        insta::assert_snapshot!(summary("Destroy", &report), @r"
        Destroy incomplete: 1 done, 1 failed, 12 skipped in 1.2s.
          ✗ d-cp2 (delete): HTTP 500
          - skipped (interrupted): d-web1, d-web2, d-web3, d-web4, d-web5, d-web6, d-web7, d-web8, d-web9, d-web10 and 2 more
        ");
    }
}
