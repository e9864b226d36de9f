//! The emulator's account state (VMs, proxy settings, exe1 handles) and its
//! persistence.
//!
//! One mutex guards a [`Store`]; every mutation saves the whole state before
//! the lock is released, so a restarted emulator sees exactly what the last
//! successful reply promised. Saving is atomic: a temporary file in the same
//! directory is written, fsynced and renamed over the state file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::core::api::types::{ShareInfo, Visibility, VmInfo};

use super::EmulatorError;

/// Region every emulated VM lives in (exe.dev's documented example).
pub const REGION: &str = "lon";
/// Display name of [`REGION`].
pub const REGION_DISPLAY: &str = "London, UK";
/// The default image, whose `EXPOSE 8000` sets the default proxy port.
pub const DEFAULT_IMAGE: &str = "exeuntu";

/// Milliseconds since the Unix epoch: the state file outlives the process,
/// so instants are wall-clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The HTTPS proxy settings of one VM (`share show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareSettings {
    pub port: u16,
    pub public: bool,
}

/// One VM with everything `new` was given, so tests can check what a fleet
/// tool really sent (setup scripts included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: String,
    pub image: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub tags: Vec<String>,
    pub env: Vec<(String, String)>,
    pub setup_script: Option<String>,
    pub command: Option<String>,
    pub comment: String,
    pub no_email: bool,
    pub created_ms: u64,
    /// When the current boot started (creation, or the last resize, which
    /// restarts the VM); the VM is `running` once the boot time has passed.
    pub boot_started_ms: u64,
    /// A status that overrides the boot computation (tests plant `stopped`
    /// VMs with it).
    #[serde(default)]
    pub pinned_status: Option<String>,
    pub share: ShareSettings,
}

impl VmRecord {
    /// A VM with exe.dev's defaults (2 CPUs, 4GB, 20GB, exeuntu, private on
    /// port 8000), created now; tests plant VMs with it.
    pub fn new(name: &str) -> Self {
        let now = now_ms();
        VmRecord {
            name: name.to_string(),
            image: DEFAULT_IMAGE.to_string(),
            cpus: 2,
            memory_bytes: 4 << 30,
            disk_bytes: 20 << 30,
            tags: Vec::new(),
            env: Vec::new(),
            setup_script: None,
            command: None,
            comment: String::new(),
            no_email: false,
            created_ms: now,
            boot_started_ms: now,
            pinned_status: None,
            share: ShareSettings {
                port: default_port(DEFAULT_IMAGE),
                public: false,
            },
        }
    }

    /// `starting` until `boot` has elapsed since the boot began, then
    /// `running`; computed lazily so no background task is needed.
    pub fn status(&self, boot: Duration, now_ms: u64) -> String {
        if let Some(s) = &self.pinned_status {
            return s.clone();
        }
        if now_ms.saturating_sub(self.boot_started_ms) >= boot.as_millis() as u64 {
            "running".to_string()
        } else {
            "starting".to_string()
        }
    }

    /// The `ls` view of this VM.
    pub fn info(&self, boot: Duration, now_ms: u64) -> VmInfo {
        VmInfo {
            vm_name: self.name.clone(),
            status: self.status(boot, now_ms),
            region: REGION.into(),
            region_display: REGION_DISPLAY.into(),
            https_url: format!("https://{}.exe.xyz", self.name),
            ssh_dest: format!("{}.exe.xyz", self.name),
            image: self.image.clone(),
            comment: self.comment.clone(),
            tags: self.tags.clone(),
            allocated_cpus: self.cpus,
            memory_capacity_bytes: self.memory_bytes,
            disk_capacity_bytes: self.disk_bytes,
        }
    }

    /// The `share show` view of this VM.
    pub fn share_info(&self) -> ShareInfo {
        ShareInfo {
            vm_name: self.name.clone(),
            status: Visibility::from_public(self.share.public),
            port: self.share.port,
            url: format!("https://{}.exe.xyz/", self.name),
            users: None,
            links: None,
        }
    }
}

/// The default proxy port for an image: exeuntu `EXPOSE`s 8000; for other
/// images the emulator cannot read `EXPOSE` and assumes 80 (exe.dev prefers
/// 80 when an image exposes it).
pub fn default_port(image: &str) -> u16 {
    if image == DEFAULT_IMAGE { 8000 } else { 80 }
}

/// An exe1 handle: the exe0 token it stands for and the namespace it was
/// validated under (only API-namespace handles work on `/exec`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exe1Handle {
    pub exe0: String,
    pub namespace: String,
}

impl std::fmt::Debug for Exe1Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exe1Handle")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Everything the emulator persists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmulatorState {
    /// VMs by name (ordered, as `ls` lists them).
    pub vms: BTreeMap<String, VmRecord>,
    /// exe1 token → handle.
    #[serde(default)]
    pub exe1: BTreeMap<String, Exe1Handle>,
}

/// The state plus where it is saved.
#[derive(Debug)]
pub struct Store {
    pub state: EmulatorState,
    path: Option<PathBuf>,
}

impl Store {
    /// Loads the state file if it exists (an absent file is an empty
    /// account; an unreadable one is an error, never silently discarded).
    pub fn open(path: Option<PathBuf>) -> Result<Self, EmulatorError> {
        let state = match &path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    EmulatorError::State(format!("cannot read {}: {e}", p.display()))
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    EmulatorError::State(format!(
                        "{} is not an emulator state file: {e}",
                        p.display()
                    ))
                })?
            }
            _ => EmulatorState::default(),
        };
        Ok(Store { state, path })
    }

    /// Saves the whole state atomically; a no-op without a state file.
    pub fn save(&self) -> Result<(), EmulatorError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        save_atomically(path, &self.state)
            .map_err(|e| EmulatorError::State(format!("cannot save {}: {e}", path.display())))
    }
}

fn save_atomically(path: &Path, state: &EmulatorState) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            // The state holds setup scripts and exe1 handles: owner only.
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(&dir) {
        // Make the rename itself durable; not all filesystems allow it.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_transition_is_lazy() {
        let mut vm = VmRecord::new("vm-one");
        vm.boot_started_ms = 1_000;
        let boot = Duration::from_millis(300);
        assert_eq!(vm.status(boot, 1_100), "starting");
        assert_eq!(vm.status(boot, 1_300), "running");
        vm.pinned_status = Some("stopped".into());
        assert_eq!(vm.status(boot, 9_999), "stopped");
    }

    #[test]
    fn save_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = Store::open(Some(path.clone())).unwrap();
        s.state.vms.insert("vm-one".into(), VmRecord::new("vm-one"));
        s.save().unwrap();
        let again = Store::open(Some(path)).unwrap();
        assert_eq!(again.state, s.state);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
