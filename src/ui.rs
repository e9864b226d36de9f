//! The terminal: colour decisions, confirmation prompts, and apply progress
//! (indicatif bars on a terminal, timestamped lines otherwise, JSON events
//! with `--json`).

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::apply::{Event, Reporter};

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

/// Builds the reporter for `total` changes.
pub fn reporter(mode: ProgressMode, total: usize) -> Reporter {
    match mode {
        ProgressMode::Json => Arc::new(|e: Event| {
            if let Ok(line) = serde_json::to_string(&e) {
                println!("{}", crate::text::json_safe(&line));
            }
        }),
        ProgressMode::Lines => {
            let start = Instant::now();
            Arc::new(move |e: Event| {
                let t = start.elapsed().as_secs_f64();
                let line = match &e {
                    Event::Start { vm, action } => format!("{vm}: {action:?} started"),
                    Event::Step { vm, step } => format!("{vm}: {step}"),
                    Event::Done {
                        vm,
                        action,
                        seconds,
                    } => format!("{vm}: {action:?} done in {seconds:.1}s"),
                    Event::Failed { vm, action, error } => {
                        format!("{vm}: {action:?} FAILED: {error}")
                    }
                    Event::Skipped { vm, action, reason } => {
                        format!("{vm}: {action:?} skipped ({reason})")
                    }
                };
                // Steps and errors quote exe.dev: one line, no escapes.
                eprintln!(
                    "{} [{t:6.1}s] {}",
                    timestamp(),
                    crate::text::one_line(&line)
                );
            })
        }
        ProgressMode::Bars => {
            let multi = MultiProgress::new();
            let overall = multi.add(ProgressBar::new(total as u64));
            overall.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} changes {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            overall.enable_steady_tick(Duration::from_millis(200));
            let bars: Arc<Mutex<HashMap<String, ProgressBar>>> = Arc::default();
            let spinner =
                ProgressStyle::with_template("  {spinner} {prefix:<24} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
            Arc::new(move |e: Event| {
                let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
                let vm = match &e {
                    Event::Start { vm, .. }
                    | Event::Step { vm, .. }
                    | Event::Done { vm, .. }
                    | Event::Failed { vm, .. }
                    | Event::Skipped { vm, .. } => crate::text::one_line(vm).into_owned(),
                };
                let bar = bars
                    .entry(vm.clone())
                    .or_insert_with(|| {
                        let b = multi.insert_before(&overall, ProgressBar::new_spinner());
                        b.set_style(spinner.clone());
                        b.set_prefix(vm.clone());
                        b.enable_steady_tick(Duration::from_millis(120));
                        b
                    })
                    .clone();
                match e {
                    Event::Start { action, .. } => bar.set_message(format!("{action:?}")),
                    Event::Step { step, .. } => {
                        bar.set_message(crate::text::one_line(&step).into_owned())
                    }
                    Event::Done {
                        action, seconds, ..
                    } => {
                        bar.finish_with_message(format!("✓ {action:?} in {seconds:.1}s"));
                        overall.inc(1);
                    }
                    Event::Failed { action, error, .. } => {
                        bar.finish_with_message(format!(
                            "✗ {action:?}: {}",
                            crate::text::one_line(error.lines().next().unwrap_or(""))
                        ));
                        overall.inc(1);
                    }
                    Event::Skipped { reason, .. } => {
                        bar.finish_with_message(format!(
                            "skipped: {}",
                            crate::text::one_line(&reason)
                        ));
                        overall.inc(1);
                    }
                }
                if overall.position() >= overall.length().unwrap_or(0) {
                    overall.finish();
                }
            })
        }
    }
}
