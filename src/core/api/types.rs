//! JSON shapes of exe.dev's replies. The emulator serialises these and the
//! client deserialises them, so the two cannot drift.
//!
//! Lenient where the facts say shapes vary: `null` arrays read as empty,
//! unknown fields are ignored, unknown VM statuses are kept as text.

use serde::{Deserialize, Deserializer, Serialize};

fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// One VM as `ls --json` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct VmInfo {
    pub vm_name: String,
    /// Only `running` is verified; others are kept verbatim.
    pub status: String,
    pub region: String,
    pub region_display: String,
    pub https_url: String,
    pub ssh_dest: String,
    pub image: String,
    pub comment: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
    pub allocated_cpus: u32,
    pub memory_capacity_bytes: u64,
    pub disk_capacity_bytes: u64,
}

impl VmInfo {
    /// Whether exe.dev reports the VM as running (the one verified status).
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// `ls --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LsReply {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub vms: Vec<VmInfo>,
}

/// `new --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct NewReply {
    pub vm_name: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
    pub ssh_command: String,
    pub ssh_dest: String,
    pub ssh_port: u16,
    pub https_url: String,
}

/// `rm --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RmReply {
    #[serde(deserialize_with = "null_as_empty")]
    pub deleted: Vec<String>,
    #[serde(deserialize_with = "null_as_empty")]
    pub failed: Vec<String>,
}

/// Proxy visibility as `share show` reports it in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

impl Visibility {
    pub fn from_public(public: bool) -> Self {
        if public {
            Visibility::Public
        } else {
            Visibility::Private
        }
    }
    pub fn is_public(self) -> bool {
        self == Visibility::Public
    }
}

/// `share show --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareInfo {
    pub vm_name: String,
    /// The visibility (exe.dev calls it `status` here).
    pub status: Visibility,
    pub port: u16,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub users: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub links: Option<Vec<serde_json::Value>>,
}

/// `share port|set-public|set-private --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareUpdate {
    pub vm_name: String,
    pub port: u16,
    pub share: Visibility,
    pub status: String,
}

/// `whoami --json`: only the fields a fleet tool shows; others ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct WhoamiReply {
    pub email: String,
    pub user_id: String,
}

/// One entry of `ssh-key list --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SshKeyInfo {
    pub public_key: String,
    pub fingerprint: String,
    pub name: String,
    pub current: bool,
}

/// `ssh-key list --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SshKeyList {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub ssh_keys: Vec<SshKeyInfo>,
}

/// `exe0-to-exe1 --json`.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Exe1Reply {
    pub token: String,
}

impl std::fmt::Debug for Exe1Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exe1Reply { token: [redacted] }")
    }
}

/// Every error body: `{"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_documented_ls_shape() {
        let json = r#"{"vms":[{"vm_name":"web-a","status":"running","region":"lon","region_display":"London, UK",
          "https_url":"https://web-a.exe.xyz","ssh_dest":"web-a.exe.xyz","image":"exeuntu",
          "comment":"","tags":["k8s"],"allocated_cpus":2,
          "memory_capacity_bytes":4294967296,"disk_capacity_bytes":21474836480}]}"#;
        let ls: LsReply = serde_json::from_str(json).unwrap();
        assert_eq!(ls.vms[0].vm_name, "web-a");
        assert_eq!(ls.vms[0].allocated_cpus, 2);
        assert!(ls.vms[0].is_running());
    }

    #[test]
    fn lenient_where_shapes_vary() {
        let ls: LsReply = serde_json::from_str(r#"{"vms":null}"#).unwrap();
        assert!(ls.vms.is_empty());
        let ls: LsReply = serde_json::from_str(
            r#"{"vms":[{"vm_name":"x","status":"hibernating","tags":null,"new_field":{"a":1}}],"extra":1}"#,
        )
        .unwrap();
        assert_eq!(ls.vms[0].status, "hibernating");
        assert!(!ls.vms[0].is_running());
        let s: ShareInfo = serde_json::from_str(
            r#"{"vm_name":"x","status":"public","port":8000,"url":"https://x.exe.xyz/","users":null,"links":null}"#,
        )
        .unwrap();
        assert!(s.status.is_public());
        let rm: RmReply = serde_json::from_str(r#"{"deleted":null,"failed":["x"]}"#).unwrap();
        assert_eq!(rm.failed, ["x"]);
    }

    #[test]
    fn strict_where_shapes_are_known() {
        assert!(
            serde_json::from_str::<ShareInfo>(r#"{"vm_name":"x","status":"sideways","port":1}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<ShareUpdate>(r#"{"vm_name":"x"}"#).is_err());
    }

    #[test]
    fn compact_like_go() {
        let s = serde_json::to_string(&ErrorBody {
            error: "unknown command".into(),
        })
        .unwrap();
        assert_eq!(s, r#"{"error":"unknown command"}"#);
    }
}
