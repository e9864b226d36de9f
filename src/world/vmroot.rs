//! A VM's own directories on the host: `/etc`, `/var`, `/usr/local`,
//! `/exe.dev`, `/run`, `/tmp`, `/home`, `/root`, `/opt`, `/srv` live under
//! `<world>/vms/<vm>/root/`; `<world>/vms/<vm>/meta/` holds what the
//! stand-ins need (which VM, which boot, where the emulator is) and the
//! sudo sockets. Everything else a VM sees (`/usr`, `/bin`, `/lib`) is the
//! host's, read-only.
//!
//! The emulator acts on these files as the VM's root would (k3s writing its
//! kubeconfig, the k3s model reading config.yaml), so every access checks
//! that no path component inside the VM is a symlink: a script cannot make
//! the emulator read or write a host file.

use std::io;
use std::path::{Component, Path, PathBuf};

/// The VM paths that are the VM's own, and their directory under `root/`.
pub const VM_DIRS: &[(&str, &str)] = &[
    ("/etc", "etc"),
    ("/var", "var"),
    ("/usr/local", "usr-local"),
    ("/exe.dev", "exe.dev"),
    ("/run", "run"),
    ("/tmp", "tmp"),
    ("/home", "home"),
    ("/root", "root"),
    ("/opt", "opt"),
    ("/srv", "srv"),
];

/// The `exedev` user exe.dev runs setup scripts as.
pub const EXEDEV_UID: u32 = 1000;

/// Host files copied into every new VM's `/etc`, as exeuntu's own `/etc`
/// has them: without the alternatives links and the loader cache, host
/// tools like `awk` would not run.
const SEED_FROM_HOST: &[&str] = &[
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "nsswitch.conf",
    "localtime",
    "bash.bashrc",
    "profile",
];

/// One VM's directories.
#[derive(Debug, Clone)]
pub struct VmRoot {
    base: PathBuf,
}

fn denied(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, what.to_string())
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from)?;
        let _ = std::fs::remove_file(to);
        std::os::unix::fs::symlink(target, to)
    } else if meta.is_dir() {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

impl VmRoot {
    pub fn new(world_dir: &Path, vm: &str) -> Self {
        VmRoot {
            base: super::vm_dir(world_dir, vm),
        }
    }

    /// `<world>/vms/<vm>`.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The stand-ins' metadata directory (bound at `/exedev-world/meta`).
    pub fn meta(&self) -> PathBuf {
        self.base.join("meta")
    }

    /// Host directories bound into the sandbox: (VM path, host path).
    pub fn binds(&self) -> Vec<(String, PathBuf)> {
        VM_DIRS
            .iter()
            .map(|(vm, dir)| (vm.to_string(), self.base.join("root").join(dir)))
            .collect()
    }

    /// The host path of a VM path, if it lies in the VM's own directories
    /// and no component is a symlink.
    pub fn host_path(&self, vm_path: &str) -> io::Result<PathBuf> {
        let p = Path::new(vm_path);
        if !p.is_absolute() {
            return Err(denied("VM paths are absolute"));
        }
        let mut parts = Vec::new();
        for c in p.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => return Err(denied("`..` in a VM path")),
            }
        }
        let joined = format!("/{}", parts.join("/"));
        let (prefix, dir) = VM_DIRS
            .iter()
            .filter(|(vm, _)| joined == *vm || joined.starts_with(&format!("{vm}/")))
            .max_by_key(|(vm, _)| vm.len())
            .ok_or_else(|| denied("not one of the VM's own directories"))?;
        let mut host = self.base.join("root").join(dir);
        let rest = joined[prefix.len()..].trim_start_matches('/');
        for part in rest.split('/').filter(|s| !s.is_empty()) {
            host.push(part);
            if let Ok(m) = std::fs::symlink_metadata(&host)
                && m.file_type().is_symlink()
            {
                return Err(denied("a symlink in the VM path"));
            }
        }
        Ok(host)
    }

    /// A file's text.
    pub fn read(&self, vm_path: &str) -> Option<String> {
        std::fs::read_to_string(self.host_path(vm_path).ok()?).ok()
    }

    /// Whether a path exists.
    pub fn exists(&self, vm_path: &str) -> bool {
        self.host_path(vm_path).is_ok_and(|p| p.exists())
    }

    /// Entry names of a directory.
    pub fn list(&self, vm_path: &str) -> Vec<String> {
        self.host_path(vm_path)
            .ok()
            .and_then(|p| std::fs::read_dir(p).ok())
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Writes a file atomically (parents created 0755), with `mode`.
    pub fn write(&self, vm_path: &str, mode: u32, content: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let host = self.host_path(vm_path)?;
        if let Some(parent) = host.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = host.with_extension("exedev-world-tmp");
        std::fs::write(&tmp, content)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, &host)
    }

    /// Removes a file (absent is fine).
    pub fn remove(&self, vm_path: &str) -> io::Result<()> {
        match std::fs::remove_file(self.host_path(vm_path)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// Creates a directory (and parents), 0700 for the last.
    pub fn mkdir(&self, vm_path: &str) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let host = self.host_path(vm_path)?;
        std::fs::create_dir_all(&host)?;
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o700))
    }

    /// A fresh VM disk: its directories, a minimal `/etc` for user
    /// `exedev` (uid 1000, passwordless sudo on exeuntu), and the setup
    /// script at `/exe.dev/setup` (world-readable, as on exe.dev).
    pub fn create(&self, vm: &str, script: Option<&str>) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_dir_all(&self.base);
        for (_, dir) in VM_DIRS {
            std::fs::create_dir_all(self.base.join("root").join(dir))?;
        }
        let r = self.base.join("root");
        for d in [
            "var/lib",
            "var/log",
            "var/tmp",
            "usr-local/bin",
            "usr-local/sbin",
            "etc/systemd/system",
            "home/exedev",
        ] {
            std::fs::create_dir_all(r.join(d))?;
        }
        for sticky in ["tmp", "var/tmp"] {
            std::fs::set_permissions(r.join(sticky), std::fs::Permissions::from_mode(0o1777))?;
        }
        std::fs::set_permissions(r.join("root"), std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(
            r.join("home/exedev"),
            std::fs::Permissions::from_mode(0o750),
        )?;
        std::os::unix::fs::chown(r.join("home/exedev"), Some(EXEDEV_UID), Some(EXEDEV_UID))?;
        for name in SEED_FROM_HOST {
            let from = Path::new("/etc").join(name);
            if from.exists() {
                copy_tree(&from, &r.join("etc").join(name))?;
            }
        }
        let etc = |name: &str, text: String| std::fs::write(r.join("etc").join(name), text);
        etc(
            "passwd",
            "root:x:0:0:root:/root:/bin/bash\nexedev:x:1000:1000:exe.dev:/home/exedev:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n".into(),
        )?;
        etc(
            "group",
            "root:x:0:\nadm:x:4:exedev\nsudo:x:27:exedev\nexedev:x:1000:\nnogroup:x:65534:\n"
                .into(),
        )?;
        etc("hostname", format!("{vm}\n"))?;
        etc(
            "hosts",
            format!("127.0.0.1 localhost\n127.0.1.1 {vm}\n::1 localhost ip6-localhost\n"),
        )?;
        etc(
            "os-release",
            "PRETTY_NAME=\"Ubuntu 24.04.1 LTS (exedev-k8s world)\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\n".into(),
        )?;
        etc("resolv.conf", "nameserver 100.100.100.100\n".into())?;
        std::fs::create_dir_all(self.meta())?;
        if let Some(s) = script {
            let p = r.join("exe.dev/setup");
            std::fs::write(&p, s)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(())
    }

    /// A boot starts with empty `/run` and `/tmp` (tmpfs on a real VM).
    pub fn reset_volatile(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let r = self.base.join("root");
        for d in ["run", "tmp"] {
            let p = r.join(d);
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p)?;
        }
        std::fs::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
        let meta = self.meta();
        let _ = std::fs::remove_dir_all(&meta);
        std::fs::create_dir_all(&meta)
    }

    /// What the stand-ins read first: which VM, which boot, the emulator.
    pub fn write_meta(&self, vm: &str, boot: u64, url: &str, sleep_scale: f64) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(self.meta())?;
        let p = self.meta().join("vm.json");
        let text =
            serde_json::json!({"vm": vm, "boot": boot, "url": url, "sleep_scale": sleep_scale})
                .to_string();
        std::fs::write(&p, text)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
    }
}

impl super::k3s_config::Files for VmRoot {
    fn read(&self, path: &str) -> Option<String> {
        VmRoot::read(self, path)
    }
    fn list(&self, dir: &str) -> Vec<String> {
        VmRoot::list(self, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_vm() {
        let dir = tempfile::tempdir().unwrap();
        let r = VmRoot::new(dir.path(), "vm-one");
        r.create("vm-one", Some("#!/bin/sh\n")).unwrap();
        assert!(
            r.host_path("/etc/rancher/k3s/config.yaml")
                .unwrap()
                .starts_with(dir.path())
        );
        assert!(
            r.host_path("/usr/local/bin/k3s")
                .unwrap()
                .ends_with("root/usr-local/bin/k3s")
        );
        assert!(r.host_path("/usr/bin/curl").is_err());
        assert!(r.host_path("/etc/../usr/bin/x").is_err());
        assert!(r.host_path("etc/x").is_err());
        // A symlink planted by the VM is never followed.
        std::os::unix::fs::symlink("/etc", r.host_path("/etc/evil").unwrap()).unwrap();
        assert!(r.write("/etc/evil/passwd", 0o644, b"x").is_err());
        assert!(r.read("/etc/evil/hostname").is_none());
        r.write("/etc/rancher/k3s/k3s.yaml", 0o600, b"kc").unwrap();
        assert_eq!(r.read("/etc/rancher/k3s/k3s.yaml").as_deref(), Some("kc"));
        assert_eq!(r.read("/etc/hostname").as_deref(), Some("vm-one\n"));
        assert!(r.exists("/exe.dev/setup"));
        r.remove("/etc/rancher/k3s/k3s.yaml").unwrap();
        r.remove("/etc/rancher/k3s/k3s.yaml").unwrap();
        assert!(!r.exists("/etc/rancher/k3s/k3s.yaml"));
    }
}
