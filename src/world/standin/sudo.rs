//! `sudo` in a VM: exeuntu gives `exedev` passwordless sudo, so `-n` always
//! works. The command runs as root through the sandbox's init (see
//! `init.rs`) with sudo's environment policy (`env_reset`, Debian's
//! `secure_path` with the stand-ins first; `-E` keeps the environment,
//! `VAR=value` words before the command set variables).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;

use super::init::{
    SUDO_SOCKET_ENV, SudoRequest, TAG_EXIT, TAG_STDERR, TAG_STDIN, TAG_STDIN_END, TAG_STDOUT,
    read_frame, write_frame,
};
use crate::world::sandbox::{META_DIR, PATH};

const USAGE: &str = "usage: sudo [-nEH] [-u root] [VAR=value] [--] command [args...]";

/// Variables `env_reset` keeps.
fn kept(name: &str) -> bool {
    matches!(
        name,
        "TERM" | "LANG" | "LANGUAGE" | "TZ" | "COLORTERM" | "DISPLAY"
    ) || name.starts_with("LC_")
}

fn socket() -> Option<UnixStream> {
    if let Ok(p) = std::env::var(SUDO_SOCKET_ENV)
        && let Ok(s) = UnixStream::connect(p)
    {
        return Some(s);
    }
    // The variable may have been cleared: any live socket of this VM does.
    let mut entries: Vec<_> = std::fs::read_dir(META_DIR).ok()?.flatten().collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.file_name()));
    entries
        .into_iter()
        .filter(|e| e.file_name().to_string_lossy().starts_with("sudo-"))
        .find_map(|e| UnixStream::connect(e.path()).ok())
}

/// What a sudo command line asks for.
struct Request {
    /// `-E`: keep the caller's environment.
    preserve: bool,
    /// `VAR=value` words before the command.
    assignments: Vec<(String, String)>,
    argv: Vec<String>,
}

/// `sudo ARGS...`
pub fn run(args: Vec<String>) -> i32 {
    let req = match parse(args) {
        Ok(req) => req,
        Err(why) => {
            eprintln!("{why}");
            return 1;
        }
    };
    let me = super::client::uid();
    let env = environment(&req, me);
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/".into());
    let argv = req.argv;
    if me == 0 {
        let err = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(env)
            .exec();
        eprintln!("sudo: {}: {err}", argv[0]);
        return 1;
    }
    through_service(SudoRequest { argv, env, cwd })
}

/// sudo's options, the `VAR=value` words, the command; or what to say.
fn parse(args: Vec<String>) -> Result<Request, String> {
    let mut preserve = false;
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.peek().cloned() {
        if !a.starts_with('-') || a == "-" {
            break;
        }
        it.next();
        match a.as_str() {
            "--" => break,
            "-n" | "--non-interactive" | "-H" | "--set-home" | "-S" | "--stdin" => {}
            "-E" | "--preserve-env" => preserve = true,
            "-u" | "--user" => match it.next().as_deref() {
                Some("root" | "0" | "#0") => {}
                other => {
                    return Err(format!(
                        "sudo: the world's sudo runs commands as root only, not {other:?}"
                    ));
                }
            },
            s if s.starts_with("--preserve-env=") => preserve = true,
            s if s.starts_with("-u") && (s == "-uroot" || s == "-u0") => {}
            s if s.len() > 2
                && !s.starts_with("--")
                && s[1..].chars().all(|c| "nEHS".contains(c)) =>
            {
                preserve |= s.contains('E');
            }
            other => return Err(format!("sudo: unsupported option {other:?}\n{USAGE}")),
        }
    }
    let mut assignments = Vec::new();
    while let Some(a) = it.peek() {
        match a.split_once('=') {
            Some((k, v))
                if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                assignments.push((k.to_string(), v.to_string()));
                it.next();
            }
            _ => break,
        }
    }
    let argv: Vec<String> = it.collect();
    if argv.is_empty() {
        return Err(USAGE.to_string());
    }
    Ok(Request {
        preserve,
        assignments,
        argv,
    })
}

/// The command's environment by sudo's policy: `env_reset` (unless `-E`),
/// root's identity, the `SUDO_*` variables, then the `VAR=value` words.
fn environment(req: &Request, me: u32) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| req.preserve || kept(k))
        .filter(|(k, _)| !matches!(k.as_str(), "PATH" | "HOME" | "USER" | "LOGNAME" | "SHELL"))
        .collect();
    env.extend([
        ("PATH".to_string(), PATH.to_string()),
        ("HOME".into(), "/root".into()),
        ("USER".into(), "root".into()),
        ("LOGNAME".into(), "root".into()),
        ("SHELL".into(), "/bin/bash".into()),
        (
            "SUDO_USER".into(),
            if me == 0 {
                "root".into()
            } else {
                "exedev".into()
            },
        ),
        ("SUDO_UID".into(), me.to_string()),
        ("SUDO_GID".into(), me.to_string()),
        ("SUDO_COMMAND".into(), req.argv.join(" ")),
    ]);
    if let Ok(s) = std::env::var(SUDO_SOCKET_ENV) {
        env.push((SUDO_SOCKET_ENV.into(), s));
    }
    env.extend(req.assignments.iter().cloned());
    env
}

/// Runs the command as root through the VM's privilege service (the
/// sandbox's init): the request, then stdin in and stdout, stderr and the
/// exit status back, as frames.
fn through_service(req: SudoRequest) -> i32 {
    let Some(mut conn) = socket() else {
        eprintln!("sudo: a password is required (the VM's privilege service is not running)");
        return 1;
    };
    let Ok(mut line) = serde_json::to_string(&req) else {
        return 1;
    };
    line.push('\n');
    if conn.write_all(line.as_bytes()).is_err() {
        eprintln!("sudo: lost the VM's privilege service");
        return 1;
    }
    if let Ok(mut w) = conn.try_clone() {
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 8192];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if write_frame(&mut w, TAG_STDIN, &buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = write_frame(&mut w, TAG_STDIN_END, &[]);
        });
    }
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some((tag, data)) = read_frame(&mut conn) {
        match tag {
            TAG_STDOUT => {
                let _ = out.write_all(&data);
                let _ = out.flush();
            }
            TAG_STDERR => {
                let _ = err.write_all(&data);
            }
            TAG_EXIT if data.len() == 4 => {
                return i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            }
            _ => {}
        }
    }
    eprintln!("sudo: lost the VM's privilege service");
    1
}
