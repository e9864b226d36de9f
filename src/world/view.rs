//! The `world` object `/_emulator/state` shows per VM, and the tailnet:
//! what a test needs to see the world without going through the CLI.

use serde_json::{Value, json};

use super::k3s::Phase;
use super::kube::objects;
use super::model::Model;

/// `{tailscale, setup, k3s}` of a VM.
pub fn vm(m: &Model, name: &str) -> Value {
    let Some(v) = m.vms.get(name) else {
        return Value::Null;
    };
    let dev = m.device_of(name);
    let tailscale = json!({
        "hostname": dev.map(|d| d.name.clone()),
        "dns_name": dev.map(|d| m.tailnet.dns_name(d)),
        "ip": dev.map(|d| d.ip.to_string()),
        "online": dev.is_some_and(|d| d.reachable()),
        "tailscaled": v.tailscaled,
    });
    let setup = json!({
        "runs": v.setup.runs,
        "exit_code": v.setup.exit_code,
        "running": v.setup.running,
        "timed_out": v.setup.timed_out,
        "interrupted": v.setup.interrupted,
        "log_tail": v.setup.log_tail,
    });
    let k3s = m.any_proc(name).map(|(unit, p)| {
        let cluster = p.cluster.as_ref().and_then(|c| m.clusters.get(c));
        let member = cluster.and_then(|c| c.members.iter().find(|mm| mm.vm == name));
        let node = cluster.and_then(|c| c.api.get(&objects::NODES, "", &p.node_name).ok());
        let taints: Vec<String> = node
            .as_ref()
            .and_then(|n| n["spec"]["taints"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|t| match t["value"].as_str() {
                Some(val) if !val.is_empty() => format!(
                    "{}={}:{}",
                    t["key"].as_str().unwrap_or_default(),
                    val,
                    t["effect"].as_str().unwrap_or_default()
                ),
                _ => format!(
                    "{}:{}",
                    t["key"].as_str().unwrap_or_default(),
                    t["effect"].as_str().unwrap_or_default()
                ),
            })
            .collect();
        let (phase, error) = match &p.phase {
            Phase::Starting => ("starting".to_string(), None),
            Phase::Waiting(why) => ("waiting".to_string(), Some(why.clone())),
            Phase::Learner => ("etcd-learner".to_string(), None),
            Phase::Booting { .. } => ("booting".to_string(), None),
            Phase::Ready => ("ready".to_string(), None),
            Phase::Failed { error, .. } => ("failed".to_string(), Some(error.clone())),
        };
        json!({
            "unit": unit,
            "role": p.role.as_str(),
            "ready": p.is_ready(),
            "state": p.active_state(),
            "phase": phase,
            "error": error,
            "version": p.version,
            "node_name": p.node_name,
            "cluster": p.cluster,
            "etcd_member": member.is_some(),
            // The cluster's members, dead ones included (a VM removed
            // behind the tool's back keeps its member until its Node is
            // deleted): what a lost server's replacement must keep at the
            // fleet's count.
            "etcd_members": cluster.map_or(0, |c| c.members.len()),
            "etcd_learner": member.is_some_and(|mm| mm.learner_since.is_some()),
            "etcd_peer_ip": p.etcd_peer_ip.map(|i| i.to_string()),
            "node_ip": p.node_ip.map(|i| i.to_string()),
            "labels": node.as_ref().map(|n| n["metadata"]["labels"].clone()).unwrap_or(json!({})),
            "taints": taints,
            "unschedulable": node.as_ref().is_some_and(|n| n["spec"]["unschedulable"] == json!(true)),
            "kubelet_version": node.as_ref().map(|n| n["status"]["nodeInfo"]["kubeletVersion"].clone()),
            "starts": v.units.get(unit).map_or(0, |u| u.starts),
        })
    });
    json!({"tailscale": tailscale, "setup": setup, "k3s": k3s.unwrap_or(Value::Null)})
}

/// Every device on the tailnet.
pub fn tailnet(m: &Model) -> Value {
    let devices: Vec<Value> = m
        .tailnet
        .devices
        .values()
        .map(|d| {
            json!({"name": d.name, "dns_name": m.tailnet.dns_name(d), "ip": d.ip.to_string(),
                   "online": d.online, "ephemeral": d.ephemeral, "tags": d.tags, "vm": d.vm,
                   "needs_approval": d.needs_approval,
                   "advertised_routes": d.advertised_routes, "approved_routes": d.approved_routes})
        })
        .collect();
    json!({"name": m.tailnet.config.name, "devices": devices})
}
