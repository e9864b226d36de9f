//! The stand-in processes: `exedev-k8s __world <command> ARGS...`, run
//! through the shims in a VM's `/exedev-world/bin` (and the k3s binary the
//! installer downloads). Most forward their arguments to the emulator,
//! which knows the world, and print what it answers; the ones that must act
//! in the caller's own process do so here: `sudo` (runs the command as
//! root through the sandbox's init), `curl` (its flags, retries and output
//! file), `init` (the sandbox's first process), the host-side `ssh`.

pub mod client;
pub mod curl;
pub mod init;
pub mod ssh;
pub mod sudo;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use crate::world::protocol::{CALL, Call, Output};

/// The hidden subcommand: `exedev-k8s __world <command> ARGS...`.
pub const HIDDEN_COMMAND: &str = "__world";

/// Runs a stand-in; `args[0]` is its name. Returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    let Some((name, rest)) = args.split_first() else {
        eprintln!("exedev-k8s __world: which command?");
        return 2;
    };
    let rest = rest.to_vec();
    match name.as_str() {
        "init" => init::run(rest),
        "sudo" => sudo::run(rest),
        "curl" => curl::run(rest),
        "ssh" => ssh::run(rest),
        "tailscaled" => tailscaled(rest),
        "sleep" => sleep(rest),
        "tailscale" => forward(name, read_auth_key_file(rest), None),
        "logger" => logger(rest),
        "k3s" | "kubectl" | "crictl" | "ctr" => k3s(name, rest),
        "systemctl" | "journalctl" | "hostname" => forward(name, rest, None),
        "getent" => getent(rest),
        other => {
            eprintln!("exedev-k8s __world: unknown command {other:?}");
            127
        }
    }
}

/// Sends one call and prints its output; returns its exit code.
fn call(
    command: &str,
    args: Vec<String>,
    stdin: Option<String>,
    env: BTreeMap<String, String>,
) -> i32 {
    let meta = match client::meta() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let req = Call {
        vm: meta.vm,
        boot: meta.boot,
        uid: client::uid(),
        command: command.to_string(),
        args,
        stdin,
        env,
    };
    match client::post::<_, Output>(&meta.url, CALL, &req) {
        Ok(out) => {
            let _ = std::io::stdout().write_all(out.stdout.as_bytes());
            let _ = std::io::stderr().write_all(out.stderr.as_bytes());
            let _ = std::io::stdout().flush();
            out.code
        }
        Err(e) => {
            eprintln!("{command}: {e}");
            1
        }
    }
}

fn forward(command: &str, args: Vec<String>, stdin: Option<String>) -> i32 {
    call(command, args, stdin, BTreeMap::new())
}

/// `tailscale up --auth-key=file:PATH` reads the key from a file, here in
/// the caller's process (with the caller's permissions).
fn read_auth_key_file(args: Vec<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (flag, value) = match a.split_once('=') {
            Some((f, v)) if f == "--authkey" || f == "--auth-key" => {
                (f.to_string(), Some(v.to_string()))
            }
            _ if a == "--authkey" || a == "--auth-key" => (a.clone(), it.next()),
            _ => {
                out.push(a);
                continue;
            }
        };
        let value = value.unwrap_or_default();
        let value = match value.strip_prefix("file:") {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(k) => k.trim().to_string(),
                Err(e) => {
                    eprintln!("tailscale: reading auth key file {path}: {e}");
                    std::process::exit(1);
                }
            },
            None => value,
        };
        out.push(format!("{flag}={value}"));
    }
    out
}

/// `sleep DURATION...` (`5`, `0.5s`, `2m`, `1h`, `infinity`), shortened by
/// the world's sleep scale.
fn sleep(args: Vec<String>) -> i32 {
    let scale = client::meta().map(|m| m.sleep_scale).unwrap_or(1.0);
    let mut total = 0.0f64;
    for a in &args {
        if a == "infinity" {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        let (num, unit) = match a.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => (&a[..i], c),
            _ => (a.as_str(), 's'),
        };
        let factor = match unit {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => f64::NAN,
        };
        match num.parse::<f64>() {
            Ok(n) if n >= 0.0 && factor.is_finite() => total += n * factor,
            _ => {
                eprintln!("sleep: invalid time interval '{a}'");
                return 1;
            }
        }
    }
    if args.is_empty() {
        eprintln!("sleep: missing operand");
        return 1;
    }
    std::thread::sleep(std::time::Duration::from_secs_f64(total * scale));
    0
}

/// tailscaled is a daemon: once registered it stays in the foreground until
/// killed, as the real one does (run it with `&` or through systemd).
fn tailscaled(args: Vec<String>) -> i32 {
    let one_shot = args.iter().any(|a| {
        matches!(
            a.as_str(),
            "--version" | "-version" | "--cleanup" | "-cleanup" | "-h" | "--help"
        )
    });
    let code = forward("tailscaled", args, None);
    if code != 0 || one_shot {
        return code;
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Host lookups go to the world's resolver; other databases (`passwd`,
/// `group`, ...) to the host's getent over the VM's own `/etc`.
fn getent(args: Vec<String>) -> i32 {
    use std::os::unix::process::CommandExt;
    let host_db = matches!(
        args.first().map(String::as_str),
        Some("hosts" | "ahosts" | "ahostsv4")
    );
    if host_db && args.len() > 1 {
        return forward("getent", args, None);
    }
    let err = std::process::Command::new("/usr/bin/getent")
        .args(&args)
        .exec();
    eprintln!("getent: {err}");
    1
}

/// `logger` without a message logs its standard input.
fn logger(args: Vec<String>) -> i32 {
    let has_message = {
        let mut it = args.iter();
        let mut found = false;
        while let Some(a) = it.next() {
            match a.as_str() {
                "-t" | "--tag" | "-p" | "--priority" | "-f" | "--file" | "--id" => {
                    it.next();
                }
                "--" => {
                    found = it.next().is_some();
                    break;
                }
                s if s.starts_with('-') => {}
                _ => {
                    found = true;
                    break;
                }
            }
        }
        found
    };
    let stdin = if has_message {
        None
    } else {
        let mut s = String::new();
        let _ = std::io::stdin().read_to_string(&mut s);
        Some(s)
    };
    forward("logger", args, stdin)
}

/// k3s and its kubectl. kubectl needs its kubeconfig, read here with the
/// caller's permissions (k3s.yaml is 0600 unless write-kubeconfig-mode).
fn k3s(name: &str, args: Vec<String>) -> i32 {
    let mut env = BTreeMap::new();
    if let Ok(v) = std::env::var("EXEDEV_WORLD_K3S_VERSION") {
        env.insert("EXEDEV_WORLD_K3S_VERSION".to_string(), v);
    }
    let kubectl = name == "kubectl" || args.first().is_some_and(|a| a == "kubectl");
    let mut stdin = None;
    if kubectl {
        let explicit = args
            .iter()
            .position(|a| a == "--kubeconfig")
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| {
                args.iter()
                    .find_map(|a| a.strip_prefix("--kubeconfig=").map(str::to_string))
            });
        let path = explicit
            .or_else(|| std::env::var("KUBECONFIG").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| crate::world::k3s::KUBECONFIG_PATH.to_string());
        match std::fs::read_to_string(&path) {
            Ok(text) => stdin = Some(text),
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                    std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
                    _ => e.to_string(),
                };
                eprintln!("error: error loading config file \"{path}\": open {path}: {why}");
                return 1;
            }
        }
    }
    call(name, args, stdin, env)
}
