//! `journalctl` and `logger` in a VM, over the VM's journal: units' logs
//! (k3s's, tailscaled's, the setup script's output under `exe.dev-setup`)
//! and `logger` lines. Any user may read it (whether exeuntu puts
//! `exedev` in the `adm` or `systemd-journal` group is not in the facts).

use super::Args;
use crate::world::Inner;
use crate::world::model::JournalEntry;
use crate::world::protocol::{Call, Output};

fn line(vm: &str, e: &JournalEntry, cat: bool) -> String {
    if cat {
        return format!("{}\n", e.message);
    }
    let t = crate::world::kube::rfc3339(e.unix_ms);
    format!("{} {vm} {}: {}\n", t, e.ident, e.message)
}

/// `journalctl ARGS...`
pub fn journalctl(inner: &Inner, call: &Call) -> Output {
    let mut units = Vec::new();
    let mut idents = Vec::new();
    let mut lines: Option<usize> = None;
    let mut cat = false;
    let mut args = Args::new(&call.args, Args::long_options);
    while let Some(flag) = args.next_flag() {
        let mut value = || args.value().unwrap_or_default();
        match flag {
            "-u" | "--unit" => units.push(value().trim_end_matches(".service").to_string()),
            "-t" | "--identifier" => idents.push(value()),
            "-n" | "--lines" => lines = value().parse().ok(),
            "-o" | "--output" => cat = value() == "cat",
            "--since" | "--until" | "-p" | "--priority" => {
                let _ = value();
            }
            "-f" | "--follow" => {
                return Output::fail(
                    1,
                    "journalctl: --follow never ends; the world's journalctl prints and exits (use -n)",
                );
            }
            "-b" | "--boot" | "-e" | "--pager-end" | "-x" | "--catalog" | "--no-pager" | "-q"
            | "--quiet" | "-a" | "--all" | "--no-hostname" => {}
            s if s.starts_with("-u") && s.len() > 2 => {
                units.push(s[2..].trim_end_matches(".service").to_string())
            }
            s if s.starts_with("-n") && s.len() > 2 => lines = s[2..].parse().ok(),
            s if s.starts_with('-') => {
                return Output::fail(1, format!("journalctl: unrecognized option '{s}'"));
            }
            _ => {}
        }
    }
    let m = inner.model();
    let Some(v) = m.vms.get(&call.vm) else {
        return Output::fail(1, "no such VM");
    };
    let mut picked: Vec<&JournalEntry> = v
        .journal
        .iter()
        .filter(|e| units.is_empty() || units.contains(&e.unit))
        .filter(|e| idents.is_empty() || idents.contains(&e.ident))
        .collect();
    if let Some(n) = lines {
        let skip = picked.len().saturating_sub(n);
        picked.drain(..skip);
    }
    if picked.is_empty() {
        return Output::ok("-- No entries --\n");
    }
    Output::ok(
        picked
            .iter()
            .map(|e| line(&call.vm, e, cat))
            .collect::<String>(),
    )
}

/// `logger ARGS...` (message from the arguments, else standard input).
pub fn logger(inner: &Inner, call: &Call) -> Output {
    let mut tag = if call.uid == 0 { "root" } else { "exedev" }.to_string();
    let mut words = Vec::new();
    let mut also_stderr = false;
    let mut args = Args::new(&call.args, Args::long_options);
    while let Some(flag) = args.next_flag() {
        match flag {
            "-t" | "--tag" => tag = args.value().unwrap_or_default(),
            "-p" | "--priority" | "--id" => {
                let _ = args.value();
            }
            "-s" | "--stderr" => also_stderr = true,
            "--" => {
                words.extend(args.rest().cloned());
                break;
            }
            s if s.starts_with('-') && s.len() > 1 => {}
            _ => words.push(args.whole().to_string()),
        }
    }
    let messages: Vec<String> = if words.is_empty() {
        call.stdin
            .as_deref()
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    } else {
        vec![words.join(" ")]
    };
    let now = crate::world::now_ms();
    let mut m = inner.model();
    if let Some(v) = m.vms.get_mut(&call.vm) {
        for msg in &messages {
            v.log(now, "", &tag, msg.clone());
        }
    }
    Output {
        code: 0,
        stdout: String::new(),
        stderr: if also_stderr {
            messages.iter().map(|m| format!("{tag}: {m}\n")).collect()
        } else {
            String::new()
        },
    }
}

/// `getent hosts|ahosts|ahostsv4 NAME...`: what the VM's resolver answers
/// (`localhost`, the VM's own name from its `/etc/hosts`, MagicDNS names
/// when the VM is on the tailnet and MagicDNS is on). Exit code 2 when a
/// name is not found, as getent's.
pub fn getent(inner: &Inner, call: &Call) -> Output {
    let m = inner.model();
    let db = call.args.first().map(String::as_str).unwrap_or_default();
    let mut out = String::new();
    for name in &call.args[1..] {
        let ip = if name == &call.vm {
            Some(std::net::Ipv4Addr::new(127, 0, 1, 1))
        } else {
            m.resolve(&call.vm, name)
        };
        let Some(ip) = ip else {
            return Output {
                code: 2,
                stdout: out,
                stderr: String::new(),
            };
        };
        match db {
            "hosts" => out.push_str(&format!("{ip:<15} {name}\n")),
            _ => {
                for kind in ["STREAM", "DGRAM", "RAW"] {
                    let label = if kind == "STREAM" { name.as_str() } else { "" };
                    out.push_str(&format!("{ip:<15} {kind:<6} {label}\n"));
                }
            }
        }
    }
    Output::ok(out)
}

/// `hostname ARGS...`: the VM's name (exe.dev names the host after the VM).
pub fn hostname(inner: &Inner, call: &Call) -> Output {
    let m = inner.model();
    let Some(v) = m.vms.get(&call.vm) else {
        return Output::fail(1, "no such VM");
    };
    match call.args.first().map(String::as_str) {
        None | Some("-s" | "--short" | "-f" | "--fqdn" | "--long" | "-A" | "--all-fqdns") => {
            Output::ok(format!("{}\n", v.name))
        }
        Some("-I" | "--all-ip-addresses") => {
            let mut ips = vec![v.lan_ip.to_string()];
            ips.extend(m.tailnet_ip(&call.vm).map(|i| i.to_string()));
            Output::ok(format!("{} \n", ips.join(" ")))
        }
        Some("-i" | "--ip-address") => Output::ok("127.0.1.1\n"),
        Some(s) if s.starts_with('-') => {
            Output::fail(1, format!("hostname: invalid option -- '{s}'"))
        }
        Some(_) if call.uid != 0 => {
            Output::fail(1, "hostname: you must be root to change the host name")
        }
        Some(_) => Output::fail(
            1,
            "hostname: the world keeps each VM's host name equal to its VM name (renaming is not modelled)",
        ),
    }
}
