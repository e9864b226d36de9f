//! Live end-to-end tests against the real exe.dev and a real tailnet. They
//! create and delete real VMs, so they never run by default:
//!
//!   EXE_DEV_SSH_KEY=~/.ssh/exe_dev_api TS_AUTHKEY=tskey-auth-... \
//!   TS_TAILNET=tail1234.ts.net [TS_API_KEY=tskey-api-...] \
//!     cargo test --test it live:: -- --ignored --nocapture --test-threads 1
//!
//! - `minimal_fleet_on_real_exe_dev`: one server; apply, kubeconfig, Ready,
//!   status, destroy.
//! - `ha_cluster_forms_over_the_tailnet`: three servers and one agent;
//!   asserts three etcd members whose peer addresses are tailnet addresses,
//!   every Node Ready, and pod-to-pod traffic across nodes (a pod on the
//!   agent reaches a Service whose pod runs on a server).
//!
//! (EXE_DEV_API_KEY may replace EXE_DEV_SSH_KEY, but SSH must work either
//! way: the tool reads bootstrap state and the kubeconfig over it.) Use a
//! tagged, pre-authorized, reusable auth key. This machine must be on the
//! tailnet, or set EXEDEV_K8S_LIVE_TUNNEL=1 to reach the API through an SSH
//! tunnel. Cleanup runs even when an assertion fails: `destroy` (which logs
//! every VM's Tailscale device out before `rm`), then, with TS_API_KEY, a
//! sweep of any device of the test cluster still in the tailnet through
//! Tailscale's API.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_exedev-k8s"))
}

fn run(dir: &std::path::Path, args: &[&str]) {
    let status = bin()
        .args(args)
        .current_dir(dir)
        .status()
        .expect("run exedev-k8s");
    assert!(status.success(), "exedev-k8s {args:?} failed");
}

#[test]
#[ignore = "creates real exe.dev VMs: needs EXE_DEV_API_KEY or EXE_DEV_SSH_KEY, and TS_AUTHKEY"]
fn minimal_fleet_on_real_exe_dev() {
    let creds = std::env::var_os("EXE_DEV_API_KEY").is_some()
        || std::env::var_os("EXE_DEV_SSH_KEY").is_some();
    assert!(
        creds && std::env::var_os("TS_AUTHKEY").is_some(),
        "set EXE_DEV_API_KEY or EXE_DEV_SSH_KEY, and TS_AUTHKEY, to run the live test"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let suffix: u32 = rand::random::<u32>() % 100_000;
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/minimal.yaml"
    ))
    .expect("example");
    let mut fleet = src.replace("name: demo", &format!("name: live{suffix}"));
    if let Ok(tailnet) = std::env::var("TS_TAILNET") {
        fleet = fleet.replace("tail1234.ts.net", &tailnet);
    }
    std::fs::write(dir.path().join("fleet.yaml"), fleet).expect("write fleet");
    let d = dir.path();
    run(d, &["validate", "-f", "fleet.yaml"]);
    run(d, &["plan", "-f", "fleet.yaml"]);
    let applied = bin()
        .args(["apply", "-f", "fleet.yaml", "--yes"])
        .current_dir(d)
        .status();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(applied.as_ref().is_ok_and(|s| s.success()), "apply failed");
        let mut kc = vec!["kubeconfig", "-f", "fleet.yaml"];
        if std::env::var_os("EXEDEV_K8S_LIVE_TUNNEL").is_some() {
            kc.push("--via-ssh-tunnel");
        }
        run(d, &kc);
        run(
            d,
            &["status", "-f", "fleet.yaml", "--wait", "--timeout", "15m"],
        );
        run(d, &["plan", "-f", "fleet.yaml", "--detailed-exitcode"]);
    }));
    // Always clean up.
    run(
        d,
        &["destroy", "-f", "fleet.yaml", "--yes", "--purge-secrets"],
    );
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn live_env() -> (String, String) {
    let creds = std::env::var_os("EXE_DEV_API_KEY").is_some()
        || std::env::var_os("EXE_DEV_SSH_KEY").is_some();
    let key = std::env::var("TS_AUTHKEY").ok();
    let tailnet = std::env::var("TS_TAILNET").ok();
    match (creds, key, tailnet) {
        (true, Some(k), Some(t)) => (k, t),
        _ => panic!(
            "set EXE_DEV_API_KEY or EXE_DEV_SSH_KEY, TS_AUTHKEY and TS_TAILNET (the MagicDNS suffix) to run the live tests"
        ),
    }
}

/// Output of `sudo <command...>` on `vm`, through the same ssh options the
/// tool uses.
fn on_vm(vm: &str, command: &str) -> String {
    let key = std::env::var_os("EXE_DEV_SSH_KEY").map(std::path::PathBuf::from);
    let opts = exedev_k8s::edges::ssh::SshOptions::new(key);
    std::fs::create_dir_all(&opts.control_dir).expect("ssh control dir");
    let out = Command::new("ssh")
        .args(exedev_k8s::edges::ssh::ssh_args(vm, &opts))
        .arg("--")
        .arg(command)
        .output()
        .expect("run ssh");
    assert!(
        out.status.success(),
        "`{command}` on {vm} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// In 100.64.0.0/10, Tailscale's address range.
fn is_tailnet_ip(ip: &str) -> bool {
    match ip.parse::<std::net::Ipv4Addr>() {
        Ok(a) => a.octets()[0] == 100 && (64..128).contains(&a.octets()[1]),
        Err(_) => false,
    }
}

/// Deletes every device of the tailnet whose name starts with `prefix`,
/// through Tailscale's API (`GET /api/v2/tailnet/-/devices`, `DELETE
/// /api/v2/device/{id}`). Best effort: reports and carries on.
fn sweep_tailnet_devices(prefix: &str) {
    let Ok(api_key) = std::env::var("TS_API_KEY") else {
        eprintln!("TS_API_KEY not set: not sweeping tailnet devices named {prefix}*");
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::new();
        let list = http
            .get("https://api.tailscale.com/api/v2/tailnet/-/devices")
            .bearer_auth(&api_key)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        let body: serde_json::Value = match list {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(e) => {
                eprintln!("cannot list tailnet devices: {e}");
                return;
            }
        };
        for d in body["devices"].as_array().into_iter().flatten() {
            let host = d["hostname"].as_str().unwrap_or_default();
            let id = d["id"].as_str().unwrap_or_default();
            if host.starts_with(prefix) && !id.is_empty() {
                let r = http
                    .delete(format!("https://api.tailscale.com/api/v2/device/{id}"))
                    .bearer_auth(&api_key)
                    .send()
                    .await;
                eprintln!("removed tailnet device {host}: {:?}", r.map(|r| r.status()));
            }
        }
    });
}

const HA_FLEET: &str = "apiVersion: exedev-k8s/v1
kind: Fleet
metadata:
  name: NAME
k3s:
  channel: stable
network:
  tailscale:
    tailnet: TAILNET
    authKey: {env: TS_AUTHKEY}
controlPlane:
  count: 3
pools:
  - name: work
    count: 1
    labels: {node-role.kubernetes.io/worker: \"true\"}
";

/// A Service on a server and a client pod on the agent: traffic crosses
/// nodes through flannel's VXLAN over tailscale0.
const CROSS_NODE: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      nodeName: SERVER
      containers:
        - name: echo
          image: nginx:alpine
          ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: echo}
  ports: [{port: 80, targetPort: 80}]
";

#[test]
#[ignore = "creates four real exe.dev VMs: needs EXE_DEV_SSH_KEY (or EXE_DEV_API_KEY), TS_AUTHKEY and TS_TAILNET"]
fn ha_cluster_forms_over_the_tailnet() {
    let (_, tailnet) = live_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cluster = format!("liveha{}", rand::random::<u32>() % 100_000);
    let fleet = HA_FLEET
        .replace("NAME", &cluster)
        .replace("TAILNET", &tailnet);
    std::fs::write(d.join("fleet.yaml"), fleet).expect("write fleet");
    let tunnel = std::env::var_os("EXEDEV_K8S_LIVE_TUNNEL").is_some();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut apply = vec![
            "apply",
            "-f",
            "fleet.yaml",
            "--yes",
            "--wait",
            "--timeout",
            "30m",
        ];
        if tunnel {
            apply.push("--via-ssh-tunnel");
        }
        run(d, &apply);
        let servers: Vec<String> = (1..=3)
            .map(|i| {
                exedev_k8s::base::names::fleet_vm_name(
                    &cluster,
                    exedev_k8s::core::fleet::CONTROL_PLANE_POOL,
                    i,
                )
            })
            .collect();
        let agent = exedev_k8s::base::names::fleet_vm_name(&cluster, "work", 1);

        // Three etcd members, each peering over its tailnet address. (etcd's
        // JSON gateway with the client certificate k3s keeps under
        // /var/lib/rancher/k3s/server/tls/etcd/: k3s internals, fine for a
        // live check, not relied on by the tool.)
        let tls = "/var/lib/rancher/k3s/server/tls/etcd";
        let members = on_vm(
            &servers[0],
            &format!(
                "sudo curl -s --cacert {tls}/server-ca.crt --cert {tls}/client.crt --key {tls}/client.key -X POST -d '{{}}' https://127.0.0.1:2379/v3/cluster/member/list"
            ),
        );
        let v: serde_json::Value = serde_json::from_str(&members).expect("member list JSON");
        let peers: Vec<String> = v["members"]
            .as_array()
            .expect("members")
            .iter()
            .flat_map(|m| m["peerURLs"].as_array().cloned().unwrap_or_default())
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect();
        assert_eq!(peers.len(), 3, "{members}");
        for p in &peers {
            let host = p
                .trim_start_matches("https://")
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or_default();
            assert!(
                is_tailnet_ip(host),
                "etcd peer {p} is not a tailnet address"
            );
        }

        // Every Node Ready, with the role label applied through the API.
        let nodes = on_vm(&servers[0], "sudo k3s kubectl get nodes -o json");
        let v: serde_json::Value = serde_json::from_str(&nodes).expect("nodes JSON");
        let items = v["items"].as_array().expect("items");
        assert_eq!(items.len(), 4, "{nodes}");
        for n in items {
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            assert!(ready, "{} not Ready", n["metadata"]["name"]);
            let ip = n["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str())
                .unwrap_or_default();
            assert!(
                is_tailnet_ip(ip),
                "node InternalIP {ip} is not a tailnet address"
            );
        }
        let agent_node = items
            .iter()
            .find(|n| n["metadata"]["name"] == agent.as_str())
            .expect("agent node");
        assert_eq!(
            agent_node["metadata"]["labels"]["node-role.kubernetes.io/worker"],
            "true"
        );

        // Pod to pod across nodes: a Service whose pod runs on a server,
        // reached from a pod on the agent.
        let manifest = CROSS_NODE.replace("SERVER", &servers[1]);
        on_vm(
            &servers[0],
            &format!(
                "printf '%s' {} | sudo k3s kubectl apply -f - && sudo k3s kubectl rollout status deployment/echo --timeout=300s",
                exedev_k8s::base::shellwords::single_quote(&manifest)
            ),
        );
        let overrides = format!(r#"{{"spec":{{"nodeName":"{agent}"}}}}"#);
        let got = on_vm(
            &servers[0],
            &format!(
                "sudo k3s kubectl run probe --rm -i --restart=Never --image=busybox:1.36 --overrides={} --command -- sh -c 'for i in 1 2 3 4 5 6; do wget -qO- http://echo.default.svc.cluster.local && exit 0; sleep 10; done; exit 1'",
                exedev_k8s::base::shellwords::single_quote(&overrides)
            ),
        );
        assert!(got.contains("Welcome to nginx"), "{got}");

        run(d, &["status", "-f", "fleet.yaml", "--no-probe"]);
    }));
    // Always clean up: VMs (their devices logged out first), then any
    // device left in the tailnet.
    let destroyed = bin()
        .args(["destroy", "-f", "fleet.yaml", "--yes", "--purge-secrets"])
        .current_dir(d)
        .status();
    sweep_tailnet_devices(&format!("{cluster}-"));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(destroyed.is_ok_and(|s| s.success()), "destroy failed");
}
