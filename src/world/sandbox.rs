//! Running a process "inside" a VM: bubblewrap (`bwrap`) with the VM's own
//! directories bound over `/etc`, `/var`, `/usr/local`, `/exe.dev`, `/run`,
//! `/tmp`, `/home`, `/root`, `/opt`, `/srv`, the host's `/usr` (and
//! `/bin`, `/lib`...) read-only, its own PID, IPC, UTS and network
//! namespaces (the host name is the VM's), and the stand-ins at
//! `/exedev-world`:
//!
//! - `/exedev-world/exedev-k8s`: this binary, read-only;
//! - `/exedev-world/bin`: one shim per stand-in, first on `PATH`;
//! - `/exedev-world/meta`: `vm.json`, the sudo sockets and `world.sock`.
//!
//! The sandbox starts as root and runs `exedev-k8s __world init`, which
//! serves `sudo` and runs the program as `exedev` (uid 1000).
//!
//! The network is the VM's own (`--unshare-net`: a loopback of its own and
//! nothing else), as on a real VM, which shares no loopback with another:
//! nothing inside reaches the host's 127.0.0.1, where the emulator's own
//! endpoints (the state, with every setup script's secrets; admin
//! kubeconfigs) and the other VMs' API listeners are. The ways out are the
//! stand-ins, and they have one: this VM's Unix socket
//! [`WORLD_SOCKET`], which the emulator serves for this VM alone (a call
//! naming another VM is refused), through which the tailnet (other VMs,
//! as the policy allows) and the world's "internet" (installer, channel
//! and S3 stand-ins) are reached.

use std::path::Path;

use super::vmroot::{EXEDEV_UID, VmRoot};

/// Where the stand-in binary appears in a VM.
pub const STANDIN: &str = "/exedev-world/exedev-k8s";
/// Where the shims appear in a VM.
pub const SHIM_DIR: &str = "/exedev-world/bin";
/// Where the metadata appears in a VM.
pub const META_DIR: &str = "/exedev-world/meta";
/// The socket's file name in a VM's meta directory.
pub const SOCKET_NAME: &str = "world.sock";
/// The VM's one channel to the emulator, as the stand-ins inside see it
/// (the host side is `<vm root>/meta/world.sock`).
pub const WORLD_SOCKET: &str = "/exedev-world/meta/world.sock";

/// The stand-ins first on a VM's `PATH`. `k3s` and `kubectl` are not
/// among them: the k3s installer puts them in `/usr/local/bin`, so a script
/// sees k3s only once it is installed. `getent` answers host lookups with
/// the VM's resolver (MagicDNS on a tailnet node, as tailscaled's
/// 100.100.100.100 does) and hands every other database to the host's.
pub const SHIMS: &[&str] = &[
    "sudo",
    "systemctl",
    "journalctl",
    "curl",
    "tailscale",
    "tailscaled",
    "logger",
    "hostname",
    "getent",
];

/// `PATH` of the setup script and of SSH sessions.
pub const PATH: &str =
    "/exedev-world/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Checks that bubblewrap runs here, with the namespaces a VM gets.
pub fn check_bwrap() -> Result<(), String> {
    let out = std::process::Command::new("bwrap")
        .args([
            "--ro-bind",
            "/",
            "/",
            "--unshare-pid",
            "--unshare-net",
            "--die-with-parent",
            "true",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "bubblewrap (bwrap) cannot create a sandbox here: {} (the VM world needs root or unprivileged user namespaces)",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!(
            "bubblewrap (bwrap) is needed to run setup scripts: {e}; install it (`apt-get install bubblewrap`)"
        )),
    }
}

fn write_exec(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

/// Writes the stand-in shims to `<world>/bin` (`sleep` too when the world
/// scales the scripts' waits).
pub fn write_shims(world_dir: &Path, scaled_sleep: bool) -> Result<(), String> {
    let dir = world_dir.join("bin");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let sleep: &[&str] = if scaled_sleep { &["sleep"] } else { &[] };
    for name in SHIMS.iter().chain(sleep) {
        write_exec(
            &dir.join(name),
            &format!("#!/bin/sh\nexec {STANDIN} __world {name} \"$@\"\n"),
        )?;
    }
    Ok(())
}

/// Writes the host-side `ssh` stand-in: point `EXEDEV_K8S_SSH` at it.
pub fn write_ssh_shim(path: &Path, binary: &Path, url: &str) -> Result<(), String> {
    let q = |s: &str| crate::base::shellwords::single_quote(s);
    write_exec(
        path,
        &format!(
            "#!/bin/sh\n# ssh stand-in of the exedev-k8s emulator's VM world\nexec {} __world ssh --world {} \"$@\"\n",
            q(&binary.display().to_string()),
            q(url)
        ),
    )
}

/// The `bwrap` arguments that run `program` in `vm` as `exedev` (or root
/// with `as_root`), with `cwd` as working directory.
pub fn bwrap_args(
    root: &VmRoot,
    binary: &Path,
    shim_dir: &Path,
    vm: &str,
    as_root: bool,
    program: &[String],
) -> Vec<String> {
    let mut a: Vec<String> = [
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--hostname",
        vm,
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(t) = std::fs::read_link(&host) {
                    a.extend([
                        "--symlink".into(),
                        t.display().to_string(),
                        format!("/{top}"),
                    ]);
                }
            }
            Ok(m) if m.is_dir() => {
                a.extend(["--ro-bind".into(), format!("/{top}"), format!("/{top}")]);
            }
            _ => {}
        }
    }
    for (vm_path, host) in root.binds() {
        a.extend(["--bind".into(), host.display().to_string(), vm_path]);
    }
    a.extend(
        [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--perms",
            "0755",
            "--dir",
            "/exedev-world",
            "--ro-bind",
            &binary.display().to_string(),
            STANDIN,
            "--ro-bind",
            &shim_dir.display().to_string(),
            SHIM_DIR,
            "--bind",
            &root.meta().display().to_string(),
            META_DIR,
            "--chdir",
            "/",
            "--clearenv",
            "--setenv",
            "PATH",
            PATH,
            "--setenv",
            "LANG",
            "C.UTF-8",
            "--",
            STANDIN,
            "__world",
            "init",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    if !as_root {
        a.extend(["--uid".into(), EXEDEV_UID.to_string()]);
    }
    a.push("--".into());
    a.extend(program.iter().cloned());
    a
}
