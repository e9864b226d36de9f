//! The first process of a VM sandbox (as root): it serves `sudo` on a Unix
//! socket in `/exedev-world/meta`, then runs the program as `exedev`
//! (uid 1000) and exits with its status. `sudo` connects, sends the command
//! line, environment and working directory, relays its standard input, and
//! gets back standard output, standard error and the exit code: a real root
//! process in the same VM, the way passwordless sudo gives one on exeuntu.
//!
//! Frames: one byte tag, four bytes big-endian length, the bytes. Client to
//! init: 0 stdin data, 1 stdin end. Init to client: 1 stdout, 2 stderr,
//! 3 exit code (4 bytes, big-endian i32).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::world::sandbox::META_DIR;
use crate::world::vmroot::EXEDEV_UID;

/// Environment variable naming the sudo socket of this sandbox.
pub const SUDO_SOCKET_ENV: &str = "EXEDEV_WORLD_SUDO";

pub const TAG_STDIN: u8 = 0;
pub const TAG_STDIN_END: u8 = 1;
pub const TAG_STDOUT: u8 = 1;
pub const TAG_STDERR: u8 = 2;
pub const TAG_EXIT: u8 = 3;

/// What `sudo` asks for.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SudoRequest {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, tag: u8, data: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(5 + data.len());
    buf.push(tag);
    buf.extend_from_slice(&(data.len() as u32).to_be_bytes());
    buf.extend_from_slice(data);
    w.write_all(&buf)
}

/// Reads one frame; `None` at end of stream.
pub fn read_frame(r: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut data = vec![0u8; len];
    r.read_exact(&mut data).ok()?;
    Some((head[0], data))
}

/// Exit code of a finished process, shell style (128 + signal).
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn serve(conn: UnixStream) {
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let out = Arc::new(Mutex::new(conn));
    let send = |tag: u8, data: &[u8]| {
        let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = write_frame(&mut *w, tag, data);
    };
    let req: SudoRequest = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            send(TAG_STDERR, format!("sudo: bad request: {e}\n").as_bytes());
            send(TAG_EXIT, &1i32.to_be_bytes());
            return;
        }
    };
    let Some((prog, args)) = req.argv.split_first() else {
        send(TAG_EXIT, &1i32.to_be_bytes());
        return;
    };
    let child = Command::new(prog)
        .args(args)
        .env_clear()
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .current_dir(if req.cwd.is_empty() { "/" } else { &req.cwd })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let msg = if e.kind() == std::io::ErrorKind::NotFound {
                format!("sudo: {prog}: command not found\n")
            } else {
                format!("sudo: unable to execute {prog}: {e}\n")
            };
            send(TAG_STDERR, msg.as_bytes());
            send(TAG_EXIT, &1i32.to_be_bytes());
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            while let Some((tag, data)) = read_frame(&mut reader) {
                if tag == TAG_STDIN_END || stdin.write_all(&data).is_err() {
                    break;
                }
            }
        });
    }
    let pump = |mut src: Box<dyn Read + Send>, tag: u8| {
        let out = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match src.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
                        if write_frame(&mut *w, tag, &buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        })
    };
    let mut pumps = Vec::new();
    if let Some(o) = child.stdout.take() {
        pumps.push(pump(Box::new(o), TAG_STDOUT));
    }
    if let Some(e) = child.stderr.take() {
        pumps.push(pump(Box::new(e), TAG_STDERR));
    }
    let code = child.wait().map(exit_code).unwrap_or(1);
    for p in pumps {
        let _ = p.join();
    }
    send(TAG_EXIT, &code.to_be_bytes());
}

/// `__world init [--uid N] -- PROGRAM ARGS...`
pub fn run(args: Vec<String>) -> i32 {
    let mut uid = None;
    let mut it = args.into_iter();
    let mut program = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--uid" => uid = it.next().and_then(|u| u.parse::<u32>().ok()),
            "--" => {
                program = it.collect();
                break;
            }
            other => {
                eprintln!("exedev-k8s __world init: unexpected {other:?}");
                return 2;
            }
        }
    }
    let Some((prog, prog_args)) = program.split_first() else {
        eprintln!("exedev-k8s __world init: no program");
        return 2;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let sock = format!("{META_DIR}/sudo-{}-{nanos}.sock", std::process::id());
    let listener = match UnixListener::bind(&sock) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("exedev-k8s __world init: cannot serve sudo at {sock}: {e}");
            return 1;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666));
    }
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    let mut cmd = Command::new(prog);
    cmd.args(prog_args).env(SUDO_SOCKET_ENV, &sock);
    match uid {
        Some(u) => {
            cmd.uid(u)
                .gid(EXEDEV_UID)
                .env("HOME", "/home/exedev")
                .env("USER", "exedev")
                .env("LOGNAME", "exedev")
                .env("SHELL", "/bin/bash")
                .current_dir("/home/exedev");
        }
        None => {
            cmd.env("HOME", "/root")
                .env("USER", "root")
                .env("LOGNAME", "root")
                .env("SHELL", "/bin/bash")
                .current_dir("/root");
        }
    }
    let code = match cmd.status() {
        Ok(s) => exit_code(s),
        Err(e) => {
            eprintln!("{prog}: {e}");
            if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            }
        }
    };
    let _ = std::fs::remove_file(&sock);
    code
}
