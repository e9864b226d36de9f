//! What the stand-ins and the emulator say to each other over HTTP
//! (`POST /_world/...`: inside a VM on its own Unix socket, on the host on
//! the emulator's loopback port), one type per message, used on both sides.

use serde::{Deserialize, Serialize};

/// Path of [`Call`].
pub const CALL: &str = "/_world/call";
/// Path of [`Fetch`].
pub const FETCH: &str = "/_world/fetch";
/// Path of [`SshSession`].
pub const SSH: &str = "/_world/ssh";
/// Path of [`Connect`].
pub const CONNECT: &str = "/_world/connect";

/// A command run by a stand-in inside a VM: the emulator does it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Call {
    pub vm: String,
    /// The boot the caller belongs to: calls from a previous boot (a
    /// process that should be dead) are refused.
    pub boot: u64,
    /// The caller's user id (0: root).
    pub uid: u32,
    /// `systemctl`, `tailscale`, `k3s`, `kubectl`, ...
    pub command: String,
    pub args: Vec<String>,
    /// Standard input, for commands that read it (`logger` without a
    /// message) or files the stand-in read for the emulator
    /// (`tailscale up --auth-key=file:...`).
    #[serde(default)]
    pub stdin: Option<String>,
    /// The few environment variables a command reads (`KUBECONFIG`, the
    /// installed k3s's version from its shim).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// What the command printed and returned.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn ok(stdout: impl Into<String>) -> Self {
        Output {
            code: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
    pub fn fail(code: i32, stderr: impl Into<String>) -> Self {
        let mut e: String = stderr.into();
        if !e.ends_with('\n') {
            e.push('\n');
        }
        Output {
            code,
            stdout: String::new(),
            stderr: e,
        }
    }
}

/// An HTTP(S) request from inside a VM (`curl`): the emulator is the
/// internet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fetch {
    pub vm: String,
    pub boot: u64,
    pub url: String,
    pub method: String,
    /// `-k`: no certificate check.
    pub insecure: bool,
    /// `--cacert` contents.
    #[serde(default)]
    pub cacert: Option<String>,
}

/// The answer to a [`Fetch`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FetchReply {
    /// A response (any status).
    Response {
        status: u16,
        #[serde(default)]
        location: Option<String>,
        /// Base64.
        body: String,
    },
    /// A transport failure, as curl reports it: its exit code and message.
    Error { code: i32, message: String },
}

/// `ssh <vm>.exe.xyz`: how to run a session in the VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshSession {
    pub vm: String,
    /// The remote command line (run with `bash -c`); `None`: a login shell.
    #[serde(default)]
    pub command: Option<String>,
}

/// The answer to [`SshSession`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SshReply {
    /// Run `bwrap` with these arguments.
    Sandbox { bwrap_args: Vec<String> },
    /// ssh fails (exit code 255) with this message.
    Refused { message: String },
}

/// A forwarded TCP connection (`ssh -L`): `host:port` as seen from `vm`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connect {
    pub vm: String,
    pub host: String,
    pub port: u16,
}

/// The answer to [`Connect`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConnectReply {
    /// Connect to this port on 127.0.0.1.
    Port {
        port: u16,
    },
    Refused {
        message: String,
    },
}
