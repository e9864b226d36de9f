//! `systemctl` in a VM. Units: `tailscaled` (exeuntu ships Tailscale) and
//! every unit file in `/etc/systemd/system` (the k3s installer's), whose
//! process is the k3s model. `start`/`restart` of a `Type=notify` unit
//! block until the service is ready or its start fails, as systemd does
//! (the installer's `systemctl restart` therefore blocks until a joining
//! node has joined: facts "The installer, and what blocks"); `--no-block`
//! returns at once. Changing units needs root.

use std::sync::Arc;
use std::time::Duration;

use super::Args;
use crate::world::Inner;
use crate::world::k3s::Phase;
use crate::world::protocol::{Call, Output};

/// The unit exeuntu ships for Tailscale.
pub const TAILSCALED: &str = "tailscaled";

/// What `systemctl cat tailscaled` shows (Tailscale's Debian package unit).
const TAILSCALED_UNIT: &str = "[Unit]\nDescription=Tailscale node agent\nWants=network-pre.target\nAfter=network-pre.target NetworkManager.service systemd-resolved.service\n\n[Service]\nExecStart=/usr/sbin/tailscaled --state=/var/lib/tailscale/tailscaled.state --socket=/run/tailscale/tailscaled.sock --port=${PORT} $FLAGS\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n";

fn unit_name(u: &str) -> String {
    u.strip_suffix(".service").unwrap_or(u).to_string()
}

fn exists(inner: &Inner, vm: &str, unit: &str) -> bool {
    unit == TAILSCALED
        || inner
            .root(vm)
            .exists(&format!("/etc/systemd/system/{unit}.service"))
}

/// `is-active`'s word for a unit.
pub fn state(inner: &Inner, vm: &str, unit: &str) -> &'static str {
    let m = inner.model();
    let Some(v) = m.vms.get(vm) else {
        return "inactive";
    };
    if unit == TAILSCALED {
        return if v.tailscaled { "active" } else { "inactive" };
    }
    v.units
        .get(unit)
        .and_then(|u| u.k3s.as_ref())
        .map_or("inactive", |p| p.active_state())
}

fn enabled(inner: &Inner, vm: &str, unit: &str) -> bool {
    inner
        .model()
        .vms
        .get(vm)
        .and_then(|v| v.units.get(unit))
        .is_some_and(|u| u.enabled)
}

fn denied(verb: &str, unit: &str) -> Output {
    Output::fail(
        1,
        format!(
            "Failed to {verb} {unit}.service: Interactive authentication required.\nSee system logs and 'systemctl status {unit}.service' for details."
        ),
    )
}

fn not_found(verb: &str, unit: &str) -> Output {
    Output::fail(
        5,
        format!("Failed to {verb} {unit}.service: Unit {unit}.service not found."),
    )
}

/// Starts a unit; with `block`, waits as systemd does for its type.
async fn start(inner: &Arc<Inner>, call: &Call, unit: &str, block: bool) -> Output {
    let vm = call.vm.as_str();
    if unit == TAILSCALED {
        inner.start_tailscaled(vm);
        return Output::default();
    }
    let running = inner
        .model()
        .proc(vm, unit)
        .is_some_and(|p| !matches!(p.phase, Phase::Failed { .. }));
    if !running {
        inner.start_unit(vm, unit);
    }
    if !block {
        return Output::default();
    }
    loop {
        let (phase, notify) = {
            let m = inner.model();
            if m.vms.get(vm).is_none_or(|v| v.boot != call.boot || !v.up) {
                return Output::fail(1, "systemctl: the VM is going down");
            }
            match m.proc(vm, unit) {
                Some(p) => (p.phase.clone(), p.notify),
                None => return Output::fail(1, format!("Job for {unit}.service canceled.")),
            }
        };
        match phase {
            Phase::Ready => return Output::default(),
            Phase::Failed { .. } => {
                return Output::fail(
                    1,
                    format!(
                        "Job for {unit}.service failed because the control process exited with error code.\nSee \"systemctl status {unit}.service\" and \"journalctl -xeu {unit}.service\" for details."
                    ),
                );
            }
            _ if !notify => return Output::default(),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn stop(inner: &Arc<Inner>, vm: &str, unit: &str) {
    let now = crate::world::now_ms();
    if unit == TAILSCALED {
        inner.model().stop_tailscaled(vm, now);
        return;
    }
    let mut m = inner.model();
    let fx = m.stop_k3s(vm, unit, now);
    inner.settle(m, fx);
}

fn set_enabled(inner: &Inner, vm: &str, unit: &str, on: bool) {
    if let Some(v) = inner.model().vms.get_mut(vm) {
        v.units.entry(unit.to_string()).or_default().enabled = on;
    }
}

fn status(inner: &Inner, vm: &str, unit: &str) -> Output {
    if !exists(inner, vm, unit) {
        return Output::fail(4, format!("Unit {unit}.service could not be found."));
    }
    let st = state(inner, vm, unit);
    let en = if enabled(inner, vm, unit) {
        "enabled"
    } else {
        "disabled"
    };
    let sub = match st {
        "active" => "active (running)",
        "activating" => "activating (start)",
        "failed" => "failed (Result: exit-code)",
        _ => "inactive (dead)",
    };
    let m = inner.model();
    let lines: Vec<String> = m
        .vms
        .get(vm)
        .map(|v| {
            let mut l: Vec<String> = v
                .journal
                .iter()
                .filter(|j| j.unit == unit)
                .rev()
                .take(10)
                .map(|j| format!("{} {}[1]: {}", vm, j.ident, j.message))
                .collect();
            l.reverse();
            l
        })
        .unwrap_or_default();
    let text = format!(
        "● {unit}.service\n     Loaded: loaded (/etc/systemd/system/{unit}.service; {en})\n     Active: {sub}\n\n{}\n",
        lines.join("\n")
    );
    Output {
        code: if st == "active" { 0 } else { 3 },
        stdout: text,
        stderr: String::new(),
    }
}

/// `systemctl ARGS...`
/// systemctl's options, as this world reads them.
#[derive(Default)]
struct Opts {
    no_block: bool,
    quiet: bool,
    now: bool,
    value: bool,
    props: Vec<String>,
}

/// The options and the words (verb, units) of a command line.
fn parse(call: &Call) -> Result<(Opts, Vec<String>), Output> {
    let mut o = Opts::default();
    let mut words = Vec::new();
    let mut args = Args::new(&call.args, Args::long_options);
    while let Some(flag) = args.next_flag() {
        match flag {
            "--no-block" => o.no_block = true,
            "-q" | "--quiet" => o.quiet = true,
            "--now" => o.now = true,
            "--value" => o.value = true,
            "--no-pager" | "--system" | "--full" | "-l" | "--no-legend" | "--no-ask-password" => {}
            "-p" | "--property" => o.props.extend(
                args.value()
                    .into_iter()
                    .flat_map(|p| p.split(',').map(str::to_string).collect::<Vec<_>>()),
            ),
            "--user" => {
                return Err(Output::fail(
                    1,
                    "Failed to connect to bus: No medium found (the world has no user manager)",
                ));
            }
            s if s.starts_with('-') => {
                let s = args.whole();
                return Err(Output::fail(
                    1,
                    format!("systemctl: unrecognized option '{s}'"),
                ));
            }
            _ => words.push(args.whole().to_string()),
        }
    }
    Ok((o, words))
}

pub async fn run(inner: &Arc<Inner>, call: &Call) -> Output {
    let (o, words) = match parse(call) {
        Ok(parsed) => parsed,
        Err(out) => return out,
    };
    let Some((verb, units)) = words.split_first() else {
        return Output::fail(
            1,
            "systemctl: the world's systemctl needs a verb (start, stop, restart, enable, disable, is-active, is-enabled, status, show, daemon-reload)",
        );
    };
    let units: Vec<String> = units.iter().map(|u| unit_name(u)).collect();
    let vm = call.vm.as_str();
    let root = call.uid == 0;
    match verb.as_str() {
        "daemon-reload" | "reset-failed" => {
            if root {
                Output::default()
            } else {
                Output::fail(
                    1,
                    format!("Failed to {verb}: Interactive authentication required."),
                )
            }
        }
        "start" | "restart" | "try-restart" | "reload-or-restart" => {
            for u in &units {
                if !root {
                    return denied(verb, u);
                }
                if !exists(inner, vm, u) {
                    return not_found(verb, u);
                }
                if verb != "start" {
                    stop(inner, vm, u);
                }
                let out = start(inner, call, u, !o.no_block).await;
                if out.code != 0 {
                    return out;
                }
            }
            Output::default()
        }
        "stop" => {
            for u in &units {
                if !root {
                    return denied(verb, u);
                }
                stop(inner, vm, u);
            }
            Output::default()
        }
        "enable" | "disable" => enable_disable(inner, call, verb, &units, &o).await,
        "is-active" | "is-failed" => is_active(inner, vm, verb, &units, &o),
        "is-enabled" => is_enabled(inner, vm, &units, &o),
        "cat" => cat(inner, vm, &units),
        "status" => match units.first() {
            Some(u) => status(inner, vm, u),
            None => Output::fail(1, "systemctl status: which unit?"),
        },
        "show" => match units.first() {
            Some(u) => show(inner, vm, u, &o),
            None => Output::fail(1, "systemctl show: which unit?"),
        },
        other => Output::fail(
            1,
            format!(
                "Unknown command verb '{other}' (the world's systemctl knows start, stop, restart, enable, disable, is-active, is-enabled, is-failed, status, show, cat, daemon-reload)"
            ),
        ),
    }
}

/// `enable`/`disable` (with `--now`: start/stop too).
async fn enable_disable(
    inner: &Arc<Inner>,
    call: &Call,
    verb: &str,
    units: &[String],
    o: &Opts,
) -> Output {
    let vm = call.vm.as_str();
    let root = call.uid == 0;
    let on = verb == "enable";
    let mut err = String::new();
    for u in units {
        if !root {
            return Output::fail(1, format!("Failed to {verb} unit: Access denied"));
        }
        if !exists(inner, vm, u) {
            return Output::fail(
                1,
                format!("Failed to {verb} unit: Unit file {u}.service does not exist."),
            );
        }
        set_enabled(inner, vm, u, on);
        err.push_str(&if on {
        format!("Created symlink /etc/systemd/system/multi-user.target.wants/{u}.service → /etc/systemd/system/{u}.service.\n")
    } else {
        format!("Removed \"/etc/systemd/system/multi-user.target.wants/{u}.service\".\n")
    });
        if o.now {
            if on {
                let out = start(inner, call, u, !o.no_block).await;
                if out.code != 0 {
                    return out;
                }
            } else {
                stop(inner, vm, u);
            }
        }
    }
    Output {
        code: 0,
        stdout: String::new(),
        stderr: err,
    }
}

/// `is-active`/`is-failed`: exit 0 when every unit is (any is) so.
fn is_active(inner: &Inner, vm: &str, verb: &str, units: &[String], o: &Opts) -> Output {
    let states: Vec<&str> = units.iter().map(|u| state(inner, vm, u)).collect();
    let good = if verb == "is-active" {
        states.iter().all(|s| *s == "active")
    } else {
        states.contains(&"failed")
    };
    Output {
        code: if good {
            0
        } else if verb == "is-active" {
            3
        } else {
            1
        },
        stdout: if o.quiet {
            String::new()
        } else {
            states.iter().map(|s| format!("{s}\n")).collect()
        },
        stderr: String::new(),
    }
}

/// `is-enabled`.
fn is_enabled(inner: &Inner, vm: &str, units: &[String], o: &Opts) -> Output {
    let mut out = String::new();
    let mut all = true;
    for u in units {
        if !exists(inner, vm, u) {
            return Output::fail(
                1,
                format!("Failed to get unit file state for {u}.service: No such file or directory"),
            );
        }
        let e = enabled(inner, vm, u);
        all &= e;
        out.push_str(if e { "enabled\n" } else { "disabled\n" });
    }
    Output {
        code: if all { 0 } else { 1 },
        stdout: if o.quiet { String::new() } else { out },
        stderr: String::new(),
    }
}

/// `cat`: the unit files.
fn cat(inner: &Inner, vm: &str, units: &[String]) -> Output {
    let mut out = String::new();
    for u in units {
        let text = if u == TAILSCALED {
            Some(TAILSCALED_UNIT.to_string())
        } else {
            inner
                .root(vm)
                .read(&format!("/etc/systemd/system/{u}.service"))
        };
        match text {
            Some(t) => out.push_str(&format!("# /etc/systemd/system/{u}.service\n{t}\n")),
            None => return Output::fail(1, format!("No files found for {u}.service.")),
        }
    }
    Output::ok(out)
}

/// `show UNIT` (`-p`/`--property`, `--value`).
fn show(inner: &Inner, vm: &str, u: &str, o: &Opts) -> Output {
    let st = state(inner, vm, u);
    let sub = match st {
        "active" => "running",
        "activating" => "start",
        "failed" => "failed",
        _ => "dead",
    };
    let all = [
        ("ActiveState", st.to_string()),
        ("SubState", sub.to_string()),
        (
            "UnitFileState",
            if enabled(inner, vm, u) {
                "enabled"
            } else {
                "disabled"
            }
            .to_string(),
        ),
        (
            "LoadState",
            if exists(inner, vm, u) {
                "loaded"
            } else {
                "not-found"
            }
            .to_string(),
        ),
    ];
    let text: String = all
        .iter()
        .filter(|(k, _)| o.props.is_empty() || o.props.iter().any(|p| p == k))
        .map(|(k, v)| {
            if o.value {
                format!("{v}\n")
            } else {
                format!("{k}={v}\n")
            }
        })
        .collect();
    Output::ok(text)
}
