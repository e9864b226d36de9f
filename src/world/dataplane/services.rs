//! What the API server fills in on a Service (facts "Services"): a
//! cluster IP from the service CIDR and, for `NodePort` and
//! `LoadBalancer`, a node port from 30000-32767 for each port that has
//! none. Kubernetes picks both at random; the world takes the lowest free
//! one (deterministic tests). A value the client gives is kept as it is:
//! the world does not refuse a taken or out-of-range one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::cidr::{Cidr, DEFAULT_CLUSTER_DNS, DEFAULT_SERVICE_CIDR};

/// k3s's `service-node-port-range` default (facts "Addresses").
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Fills in `spec.clusterIP(s)` and node ports of `svc`, given the other
/// Services of the cluster. `10.43.0.1` (the `kubernetes` Service) and the
/// cluster DNS address are never handed out.
pub fn allocate(svc: &mut Value, others: &[Value]) {
    let spec = &mut svc["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    if ty == "ExternalName" {
        return;
    }
    let given = spec["clusterIP"].as_str().unwrap_or_default().to_string();
    if given.is_empty() {
        let taken: BTreeSet<Ipv4Addr> = others
            .iter()
            .filter_map(|o| o["spec"]["clusterIP"].as_str()?.parse().ok())
            .chain([Ipv4Addr::new(10, 43, 0, 1), DEFAULT_CLUSTER_DNS])
            .collect();
        let ip = Cidr::parse(DEFAULT_SERVICE_CIDR).ok().and_then(|c| {
            (2..65535)
                .filter_map(|n| c.nth(n))
                .find(|ip| !taken.contains(ip))
        });
        if let Some(ip) = ip {
            spec["clusterIP"] = json!(ip.to_string());
            spec["clusterIPs"] = json!([ip.to_string()]);
        }
    } else if spec["clusterIPs"].is_null() {
        spec["clusterIPs"] = json!([given]);
    }
    if !matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        return;
    }
    let mut taken: BTreeSet<u64> = others
        .iter()
        .flat_map(|o| o["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["nodePort"].as_u64())
        .collect();
    if let Some(ports) = spec["ports"].as_array_mut() {
        taken.extend(ports.iter().filter_map(|p| p["nodePort"].as_u64()));
        for p in ports.iter_mut().filter(|p| p["nodePort"].is_null()) {
            if let Some(n) = NODE_PORTS.map(u64::from).find(|n| !taken.contains(n)) {
                p["nodePort"] = json!(n);
                taken.insert(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ips_skip_the_api_and_dns_addresses_and_taken_ones() {
        let mut a = json!({"spec": {"ports": [{"port": 80}]}});
        allocate(&mut a, &[]);
        assert_eq!(a["spec"]["clusterIP"], "10.43.0.2");
        assert_eq!(a["spec"]["clusterIPs"], json!(["10.43.0.2"]));
        assert!(a["spec"]["ports"][0]["nodePort"].is_null());
        let mut b = json!({"spec": {"clusterIP": ""}});
        allocate(&mut b, &[a.clone()]);
        assert_eq!(b["spec"]["clusterIP"], "10.43.0.3");
        let mut fixed = json!({"spec": {"clusterIP": "10.43.0.9"}});
        allocate(&mut fixed, &[]);
        assert_eq!(fixed["spec"]["clusterIPs"], json!(["10.43.0.9"]));
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        allocate(&mut headless, &[]);
        assert_eq!(headless["spec"]["clusterIP"], "None");
        let mut many = json!({"spec": {}});
        let others: Vec<Value> = (2..10)
            .map(|n| json!({"spec": {"clusterIP": format!("10.43.0.{n}")}}))
            .collect();
        allocate(&mut many, &others);
        assert_eq!(
            many["spec"]["clusterIP"], "10.43.0.11",
            "10.43.0.10 is cluster DNS"
        );
    }

    #[test]
    fn node_ports_from_the_range_for_node_port_services_only() {
        let other =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 1, "nodePort": 30000}]}});
        let mut s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81, "nodePort": 30001}, {"port": 82}]}});
        allocate(&mut s, &[other]);
        let ports: Vec<u64> = s["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["nodePort"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [30002, 30001, 30003]);
        let mut ext = json!({"spec": {"type": "ExternalName", "externalName": "example.com"}});
        allocate(&mut ext, &[]);
        assert!(ext["spec"]["clusterIP"].is_null());
    }
}
