//! Node passwords: how a k3s node proves the name it registers under
//! (rules and sources in `docs/facts/node-password.md`, k3s @1feb5ae).
//!
//! - Each VM keeps a password in `/etc/rancher/node/password`, made (16
//!   random bytes, hex) at the node's first kubelet-certificate request and
//!   read back at every later one (`pkg/agent/config/config.go:206-227`): it
//!   survives restarts and reboots of the VM; a new VM has a new one.
//! - The server a node asks keeps the password's hash in the Secret
//!   `kube-system/<node>.node-password.k3s` (type
//!   `k3s.cattle.io/node-password`): verified when it exists, created
//!   otherwise (`pkg/nodepassword/nodepassword.go:46-88`). A mismatch is a
//!   403 (`validate.go:80-85`); the agent says "Node password rejected, …"
//!   (`config.go:180-182`) and retries its whole configuration every 5 s
//!   with jitter up to 10 s, forever (`config.go:57-76`).
//! - Once the Node exists, k3s's node-password controller gives the Secret
//!   an ownerReference to it (`controller.go:67-97`), so the garbage
//!   collector (the store's `gc`) deletes the Secret with the Node.
//! - A server's own node is verified locally against its password file:
//!   its agent asks the local supervisor before the API server starts
//!   (`pkg/cli/server/server.go:534-630`, `agent.Run` before
//!   `StartServer`), when the controller does not exist yet
//!   (`validate.go:62-65,127-168`); the Secret is checked once the API is
//!   up, and a mismatch is only a warning event (`validate.go:185-208`).
//! - The first start after a cluster reset deletes the node's own Secret
//!   (`pkg/cluster/managed.go:58-62,133-143`).
//!
//! The world's own choices, each marked where made: a server's file is
//! made when it becomes Ready (k3s: at its agent's first request, earlier
//! in the same start); the hash (k3s uses
//! scrypt with a random salt, `nodepassword.go:21`; here a salted SHA-256,
//! the Secret holding no password either way); a retry every
//! `Timings::restart_ms` (k3s: 5-10 s, the same 5 s base as the unit's
//! `RestartSec`), without jitter; the orphan sweep of Secrets without a
//! Node after 10 minutes (`controller.go:25-29,99-123`) and
//! `--with-node-id` are not modelled (the tool sets neither).

use base64::Engine as _;
use serde_json::{Value, json};

use super::K3sProc;
use crate::world::kube::{ApiStore, objects};
use crate::world::model::{Effect, Model};

/// Where a node keeps its password (`config.go:487,493`, not rootless).
pub const PASSWORD_PATH: &str = crate::base::names::NODE_PASSWORD_FILE;
/// The Secrets' type (`nodepassword.go:24`, `version.Program` = `k3s`).
pub const SECRET_TYPE: &str = "k3s.cattle.io/node-password";
/// What the agent says on a 403 (`config.go:181`, with its file's path).
pub const REJECTED: &str = crate::base::names::NODE_PASSWORD_REJECTED;
/// The first certificate the agent asks for (`config.go:480,525-527`
/// prefixes its error with the file's path).
const SERVING_CERT: &str = "/var/lib/rancher/k3s/agent/serving-kubelet.crt";

/// The Secret's name (`nodepassword.go:46-48`), in one place:
/// [`crate::base::names::node_password_secret`].
pub fn secret_name(node: &str) -> String {
    crate::base::names::node_password_secret(node)
}

/// The stored hash of a password. The world's own (see the module doc).
fn hash(pass: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("k3s-node-password:{pass}").as_bytes());
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("$world-sha256${hex}")
}

/// `verifyHash` (`nodepassword.go:50-62`): the error is k3s's wording.
fn verify(secret: &Value, node: &str, pass: &str) -> Result<(), String> {
    let stored = secret["data"]["hash"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    match stored {
        Some(h) if h == hash(pass) => Ok(()),
        Some(_) => Err(format!(
            "unable to verify password for node {node}: hash does not match"
        )),
        None => Err(format!(
            "unable to verify password for node {node}: password hash not found in node secret"
        )),
    }
}

/// `ensure` (`nodepassword.go:64-88`): verifies the node's Secret if it
/// exists, else creates it (immutable, the hash under `data.hash`).
pub fn ensure(api: &mut ApiStore, node: &str, pass: &str) -> Result<(), String> {
    let name = secret_name(node);
    if let Ok(s) = api.get(&objects::SECRETS, "kube-system", &name) {
        return verify(&s, node, pass);
    }
    let data = base64::engine::general_purpose::STANDARD.encode(hash(pass));
    let secret = json!({
        "metadata": {"name": name},
        "immutable": true,
        "data": {"hash": data},
        "type": SECRET_TYPE,
    });
    // Only a missing namespace can fail here; k3s then lets the node in
    // and retries the Secret later (`validate.go:86-93`): so does the world.
    let _ = api.create(&objects::SECRETS, "kube-system", secret);
    Ok(())
}

/// `onChangeNode` (`controller.go:67-97`): the Secret of a registered Node
/// gets an ownerReference to it, once.
pub fn own(api: &mut ApiStore, node: &str) {
    let Ok(n) = api.get(&objects::NODES, "", node) else {
        return;
    };
    let uid = n["metadata"]["uid"].clone();
    let name = secret_name(node);
    let Ok(mut s) = api.get(&objects::SECRETS, "kube-system", &name) else {
        return;
    };
    let refs = s["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if refs.iter().any(|r| r["uid"] == uid && r["kind"] == "Node") {
        return;
    }
    let mut refs = refs;
    refs.push(json!({"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}));
    s["metadata"]["ownerReferences"] = Value::Array(refs);
    let _ = api.replace(&objects::SECRETS, "kube-system", &name, s);
}

impl Model {
    /// The node's password: the file's, or a new one written there (k3s's
    /// 16 random bytes as hex: the world's secrets are 32 hex digits too).
    fn node_password(&mut self, vm: &str, p: &mut K3sProc, fx: &mut Vec<Effect>) -> String {
        if let Some(pw) = &p.node_password {
            return pw.clone();
        }
        let pw = self.new_secret("");
        fx.push(Effect::WriteFile {
            vm: vm.to_string(),
            path: PASSWORD_PATH.to_string(),
            mode: 0o600,
            content: format!("{pw}\n"),
        });
        p.node_password = Some(pw.clone());
        pw
    }

    /// An agent whose server (on `target`, of cluster `cid`) answered:
    /// admitted (it boots) or refused its password (it asks again after
    /// the retry interval).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn agent_join(
        &mut self,
        vm: &str,
        unit: &str,
        p: &mut K3sProc,
        cid: String,
        target: &str,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        if let Err(why) = self.agent_password(vm, p, &cid, target, now, fx) {
            p.password_retry_at = Some(now + self.timings.restart_ms);
            return self.wait(vm, unit, p, now, why);
        }
        p.password_retry_at = None;
        p.cluster = Some(cid);
        p.phase = super::Phase::Booting {
            ready_at: now + self.timings.agent_ready_ms,
        };
    }

    /// An agent asking the Ready server on `target` for its kubelet
    /// certificates: `Err` is the agent's retry message after a 403, which
    /// the server logs too (`pkg/util/apierrors.go:32-45`).
    fn agent_password(
        &mut self,
        vm: &str,
        p: &mut K3sProc,
        cid: &str,
        target: &str,
        now: u64,
        fx: &mut Vec<Effect>,
    ) -> Result<(), String> {
        let pass = self.node_password(vm, p, fx);
        let Some(c) = self.clusters.get_mut(cid) else {
            return Ok(());
        };
        let Err(e) = ensure(&mut c.api, &p.node_name, &pass) else {
            return Ok(());
        };
        let from = p.node_ip.map(|i| i.to_string()).unwrap_or_default();
        if let Some(v) = self.vms.get_mut(target) {
            v.log(
                now,
                "k3s",
                "k3s",
                format!("level=error msg=\"Sending HTTP/1.1 403 response to {from}: {e}\""),
            );
        }
        Err(format!(
            "Waiting to retrieve agent configuration; server is not ready: {SERVING_CERT}: {REJECTED}"
        ))
    }

    /// A server's own node once its API is up: verified locally before
    /// (never refused), its Secret now ensured; after a reset the old one
    /// is deleted first (the cleanup runs as the controllers start; k3s's
    /// deferred check polls every 5 s, so the cleanup is taken to come
    /// first: the order is a race in k3s, the world's choice). A mismatch
    /// is logged as k3s's warning event says it.
    pub(super) fn server_password(
        &mut self,
        vm: &str,
        unit: &str,
        p: &mut K3sProc,
        cid: &str,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let pass = self.node_password(vm, p, fx);
        let Some(c) = self.clusters.get_mut(cid) else {
            return;
        };
        if p.after_reset {
            let _ = c
                .api
                .delete(&objects::SECRETS, "kube-system", &secret_name(&p.node_name));
        }
        let result = ensure(&mut c.api, &p.node_name, &pass);
        own(&mut c.api, &p.node_name);
        if let Err(e) = result {
            self.k3s_log(
                vm,
                unit,
                now,
                format!("level=warning msg=\"Event(Node {}): NodePasswordValidationFailed: Deferred node password secret validation failed: {e}\"", p.node_name),
            );
        }
    }
}
