//! The host-side `ssh` stand-in (`EXEDEV_K8S_SSH`): takes the arguments
//! `exedev-k8s` passes to the system ssh (see `src/edges/ssh.rs`), reaches
//! `<vm>.exe.xyz` in the emulator's world and runs the remote command there
//! as `exedev`, in the VM's sandbox; `-N -L [addr:]port:host:hostport`
//! forwards local connections to `host:hostport` as seen from the VM (its
//! `127.0.0.1:6443` is its k3s API). Connection failures exit 255, as ssh
//! does. Options about keys, multiplexing and host keys are accepted and
//! have no effect: the world has no SSH server to authenticate to.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use super::client;
use crate::world::protocol::{CONNECT, Connect, ConnectReply, SSH, SshReply, SshSession};

/// ssh's "could not connect" exit code.
const CONNECT_FAILED: i32 = 255;

/// Options that take an argument.
const WITH_ARG: &str = "BbcDEeFIiJLlmOoPpQRSWw";

#[derive(Debug, Default)]
struct Args {
    world: String,
    forwards: Vec<String>,
    no_command: bool,
    control: Option<String>,
    host: String,
    command: Vec<String>,
}

fn parse(args: Vec<String>) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.into_iter();
    while let Some(w) = it.next() {
        if !a.host.is_empty() {
            if a.command.is_empty() && w == "--" {
                continue;
            }
            a.command.push(w);
            continue;
        }
        if w == "--world" {
            a.world = it.next().unwrap_or_default();
        } else if w == "--" {
            continue;
        } else if let Some(flags) = w.strip_prefix('-').filter(|f| !f.is_empty()) {
            let chars: Vec<char> = flags.chars().collect();
            for (i, c) in chars.iter().enumerate() {
                if WITH_ARG.contains(*c) {
                    let rest: String = chars[i + 1..].iter().collect();
                    let v = if rest.is_empty() {
                        it.next().unwrap_or_default()
                    } else {
                        rest
                    };
                    match c {
                        'L' => a.forwards.push(v),
                        'O' => a.control = Some(v),
                        _ => {}
                    }
                    break;
                }
                if *c == 'N' {
                    a.no_command = true;
                }
            }
        } else {
            a.host = w;
        }
    }
    if a.world.is_empty() {
        return Err(
            "ssh stand-in: --world URL is missing (use the shim the emulator writes)".into(),
        );
    }
    if a.host.is_empty() {
        return Err("usage: ssh [options] destination [command]".into());
    }
    Ok(a)
}

/// `<vm>.exe.xyz` (optionally `user@`) → the VM name.
fn vm_of(host: &str) -> Option<String> {
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host.strip_suffix(".exe.xyz")
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn forward(world: &str, vm: &str, spec: &str) -> Result<(), String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (bind, lport, host, hport) = match parts.as_slice() {
        [l, h, p] => ("127.0.0.1", *l, *h, *p),
        [b, l, h, p] => (*b, *l, *h, *p),
        _ => return Err(format!("Bad local forwarding specification '{spec}'")),
    };
    let hport: u16 = hport
        .parse()
        .map_err(|_| format!("Bad local forwarding specification '{spec}'"))?;
    let listener = TcpListener::bind(format!("{bind}:{lport}"))
        .map_err(|e| format!("bind [{bind}]:{lport}: {e}\nCould not request local forwarding."))?;
    let (world, vm, host) = (world.to_string(), vm.to_string(), host.to_string());
    std::thread::spawn(move || {
        // Each connection opens its channel on a thread of its own, as ssh
        // opens channels on its one connection without waiting for the
        // previous: a client opening several connections at once (a kube
        // client's pool) is not served one after the other.
        for (n, conn) in listener.incoming().flatten().enumerate() {
            let req = Connect {
                vm: vm.clone(),
                host: host.clone(),
                port: hport,
            };
            let world = world.clone();
            std::thread::spawn(move || open_channel(&world, n, conn, &req));
        }
    });
    Ok(())
}

/// Opens forwarded channel `n` for local connection `conn` and pumps it
/// both ways until either side closes.
fn open_channel(world: &str, n: usize, conn: TcpStream, req: &Connect) {
    let reply: Result<ConnectReply, String> = client::post(world, CONNECT, req);
    let upstream = match reply {
        Ok(ConnectReply::Port { port }) => {
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())
        }
        Ok(ConnectReply::Refused { message }) => Err(message),
        Err(e) => Err(e),
    };
    match upstream {
        Ok(up) => {
            let (Ok(c2), Ok(u2)) = (conn.try_clone(), up.try_clone()) else {
                return;
            };
            std::thread::spawn(move || pump(u2, c2));
            pump(conn, up);
        }
        Err(e) => {
            eprintln!("channel {n}: open failed: connect failed: {e}");
        }
    }
}

/// `ssh ARGS...` (after `--world URL`).
pub fn run(args: Vec<String>) -> i32 {
    let a = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return CONNECT_FAILED;
        }
    };
    if a.control.is_some() {
        // `-O check|exit`: there is no master connection to control.
        return 0;
    }
    let Some(vm) = vm_of(&a.host) else {
        eprintln!(
            "ssh: Could not resolve hostname {}: Name or service not known",
            a.host
        );
        return CONNECT_FAILED;
    };
    let command = (!a.no_command && !a.command.is_empty()).then(|| a.command.join(" "));
    let req = SshSession {
        vm: vm.clone(),
        command: command.clone(),
    };
    let reply: SshReply = match client::post(&a.world, SSH, &req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ssh: connect to host {}: {e}", a.host);
            return CONNECT_FAILED;
        }
    };
    let bwrap_args = match reply {
        SshReply::Sandbox { bwrap_args } => bwrap_args,
        SshReply::Refused { message } => {
            eprintln!("{message}");
            return CONNECT_FAILED;
        }
    };
    if a.no_command {
        for f in &a.forwards {
            if let Err(e) = forward(&a.world, &vm, f) {
                eprintln!("{e}");
                return CONNECT_FAILED;
            }
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    match std::process::Command::new("bwrap")
        .args(&bwrap_args)
        .status()
    {
        Ok(s) => super::init::exit_code(s),
        Err(e) => {
            eprintln!("ssh: cannot start the session on {vm}: {e}");
            CONNECT_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_what_the_cli_passes() {
        let a = parse(v("--world http://127.0.0.1:1 -o HostKeyAlias=exe.dev -o BatchMode=yes -o ControlPath=/tmp/x/%C -i /k demo-cp1.exe.xyz -- sudo -n cat /etc/rancher/k3s/k3s.yaml")).unwrap();
        assert_eq!(a.host, "demo-cp1.exe.xyz");
        assert_eq!(
            a.command,
            ["sudo", "-n", "cat", "/etc/rancher/k3s/k3s.yaml"]
        );
        let a = parse(v("--world http://127.0.0.1:1 -N -L 127.0.0.1:4000:127.0.0.1:6443 -o ExitOnForwardFailure=yes demo-cp1.exe.xyz")).unwrap();
        assert!(a.no_command);
        assert_eq!(a.forwards, ["127.0.0.1:4000:127.0.0.1:6443"]);
        assert_eq!(
            vm_of("exedev@demo-cp1.exe.xyz").as_deref(),
            Some("demo-cp1")
        );
        assert_eq!(vm_of("example.com"), None);
        assert!(parse(v("-o X=y host")).is_err());
    }
}
