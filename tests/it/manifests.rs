//! The bundled manifests (`manifests/`) ride in the first server's setup
//! script, which exe.dev caps at 10 KiB: they must fit with room to spare,
//! and only the first server carries them.

use exedev_k8s::core::bootstrap::{self, MAX_SETUP_SCRIPT_BYTES};
use exedev_k8s::core::fleet;
use exedev_k8s::core::plan::spec::{ClusterSecrets, MANIFESTS, bootstrap_input};

const FLEET: &str = "apiVersion: exedev-k8s/v1
kind: Fleet
metadata:
  name: a-rather-long-fleet-name
k3s:
  version: v1.31.4+k3s1
  disable: [traefik, servicelb, metrics-server]
network:
  tailscale:
    tailnet: a-long-tailnet-name-1234.ts.net
    authKey: {env: TS_AUTHKEY}
controlPlane:
  count: 3
pools:
  - name: web
    count: 2
";

#[test]
fn the_system_manifest_is_bundled_and_fits_in_the_first_server_script() {
    assert!(MANIFESTS.iter().any(|(name, content)| *name == "system"
        && content.contains("name: exedev-k8s-system")
        && content.contains("name: exedev-k8s-fleet")));
    let fleet = fleet::parse(FLEET, "fleet.yaml").expect("valid fleet");
    let vms = fleet::desired_vms(&fleet);
    let secrets = ClusterSecrets::placeholders();
    for vm in &vms {
        let script =
            bootstrap::render(&bootstrap_input(&fleet, vm, &secrets, None, "v1.31.4+k3s1"))
                .expect("renders");
        assert!(
            script.len() < MAX_SETUP_SCRIPT_BYTES,
            "{}: {} bytes",
            vm.name,
            script.len()
        );
        let carries =
            script.contains("/var/lib/rancher/k3s/server/manifests/exedev-k8s-system.yaml");
        assert_eq!(carries, vm.is_first_server(), "{}", vm.name);
        if vm.is_first_server() {
            println!("{}: {} bytes", vm.name, script.len());
        }
    }
}
