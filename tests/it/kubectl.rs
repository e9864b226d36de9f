//! The real kubectl against the world's Kubernetes API, as a user runs it
//! on a real cluster: apply (validated; server-side too), `get -o wide`
//! and `get all`, `rollout status`, `logs`, `describe node`, `scale`, and
//! the controllers and scheduler behind them (a DaemonSet on every node,
//! cordon and taints respected).
//!
//! kubectl comes from `KUBECTL` or `PATH`; without one the test fails
//! (install kubectl; on Debian the `kubernetes-client` package, which
//! `.ci/run` installs). Run it with each kubectl you care about
//! (`KUBECTL=/path/to/kubectl-1.20 cargo test --test it kubectl::`): the
//! checks that differ by version say so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::Harness;
use crate::common::world::fleet_harness;
use crate::world_cli::{up, write_fleet};

/// The kubectl to run: `KUBECTL`, else `kubectl` on `PATH`.
fn kubectl_binary() -> PathBuf {
    if let Some(k) = std::env::var_os("KUBECTL") {
        return PathBuf::from(k);
    }
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|k| k.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no kubectl on PATH and KUBECTL not set: install kubectl (Debian: kubernetes-client; .ci/run installs it)"
        )
    })
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    /// The client's minor version (20 for Debian bookworm's).
    minor: u32,
}

impl Kubectl {
    fn new(h: &Harness) -> Self {
        let yaml = h.rt.block_on(async {
            reqwest::get(format!("{}/_emulator/kubeconfig/demo-cp1", h.emu.base_url))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        let kubeconfig = h.dir.path().join("admin.kubeconfig");
        std::fs::write(&kubeconfig, yaml).unwrap();
        let bin = kubectl_binary();
        let out = Command::new(&bin)
            .args(["version", "--client", "-o", "json"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let minor = v["clientVersion"]["minor"]
            .as_str()
            .and_then(|m| m.trim_end_matches('+').parse().ok())
            .unwrap();
        Kubectl {
            bin,
            kubeconfig,
            minor,
        }
    }

    /// Runs kubectl; (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--request-timeout", "30s"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs kubectl, which must succeed: its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(
            ok,
            "kubectl 1.{} {args:?} failed:\n{out}\n{err}",
            self.minor
        );
        out
    }

    /// The nodes of the pods that `selector` selects, sorted.
    fn pod_nodes(&self, selector: &str) -> Vec<String> {
        let out = self.ok(&[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
        ]);
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const WORKLOADS: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: netexec
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=8080"]
        ports:
        - containerPort: 8080
        resources:
          requests: {cpu: 100m, memory: 64Mi}
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: registry.k8s.io/pause:3.10
"#;

const TYPO: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: typo
spec:
  replica: 1
  selector:
    matchLabels: {app: typo}
  template:
    metadata:
      labels: {app: typo}
    spec:
      containers:
      - name: c
        image: registry.k8s.io/pause:3.10
"#;

/// `kubeconfig --via-ssh-tunnel` prints two lines for a machine off the
/// tailnet: the ssh forward (this tool's ssh program, here the world's
/// stand-in) and the kubectl command. Both run as printed, but for the
/// local port (tests run side by side: a free one instead of 6443) and
/// kubectl's path; kubectl then lists every node.
fn the_tunnel_hint_works_as_printed(h: &Harness, nodes: &[&str]) {
    let out = crate::common::ok(h.run(&[
        "kubeconfig",
        "-f",
        "fleet.yaml",
        "--out",
        "my kube.config",
        "--via-ssh-tunnel",
    ]));
    let line = |start: &str| {
        out.lines()
            .map(str::trim)
            .find(|l| l.starts_with(start) || l.contains(&format!("/{start}")))
            .unwrap_or_else(|| panic!("no `{start}` line in:\n{out}"))
            .to_string()
    };
    let (forward, kubectl) = (line("ssh"), line("kubectl "));
    assert!(forward.contains(" -N -L 6443:127.0.0.1:6443 "), "{forward}");
    assert!(
        kubectl.contains("--kubeconfig 'my kube.config' --context demo"),
        "{kubectl}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let forward = forward.replace(" 6443:", &format!(" {port}:"));
    let kubectl = kubectl
        .replacen("kubectl", &kubectl_binary().display().to_string(), 1)
        .replace("127.0.0.1:6443", &format!("127.0.0.1:{port}"));
    let mut tunnel = Command::new("sh")
        .args(["-c", &format!("exec {forward}")])
        .current_dir(h.dir.path())
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let got = Command::new("sh")
            .args(["-c", &kubectl])
            .current_dir(h.dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&got.stdout).to_string();
        if got.status.success() || Instant::now() > deadline {
            break format!("{text}{}", String::from_utf8_lossy(&got.stderr));
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    for node in nodes {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(node) && l.contains(" Ready ")),
            "{node} not listed Ready by `{kubectl}`:\n{listed}"
        );
    }
}

#[test]
fn kubectl_applies_rolls_out_reads_and_schedules_as_on_a_real_cluster() {
    let h = fleet_harness(|_| {});
    write_fleet(&h, 2);
    let nodes = ["demo-cp1", "demo-web1", "demo-web2"];
    up(&h, &nodes);
    the_tunnel_hint_works_as_printed(&h, &nodes);
    let k = Kubectl::new(&h);
    let dir = h.dir.path();
    let workloads = write(dir, "workloads.yaml", WORKLOADS);

    // Discovery, OpenAPI and validation: apply works without
    // --validate=false, client-side and server-side.
    let out = k.ok(&["apply", "-f", &workloads]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(out.contains("daemonset.apps/agent created"), "{out}");
    let out = k.ok(&["apply", "--server-side", "-f", &workloads]);
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    // An unknown field: kubectl 1.25+ has the server validate strictly
    // (refused); older ones get the server's default, a warning.
    let typo = write(dir, "typo.yaml", TYPO);
    let (ok, out, err) = k.run(&["apply", "-f", &typo]);
    assert!(
        err.contains("unknown field \"spec.replica\""),
        "{out}\n{err}"
    );
    assert_eq!(ok, k.minor < 25, "1.{}: {out}\n{err}", k.minor);

    let out = k.ok(&["rollout", "status", "deploy/web", "--timeout=30s"]);
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let out = k.ok(&["rollout", "status", "ds/agent", "--timeout=30s"]);
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    // One daemon pod on every node.
    assert_eq!(k.pod_nodes("app=agent"), nodes);

    // Short names, categories and the wide columns of the real printers.
    let out = k.ok(&["get", "deploy,rs,po", "-o", "wide"]);
    for col in [
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ] {
        assert!(out.contains(col), "{col}: {out}");
    }
    assert!(out.contains("app=web,pod-template-hash="), "{out}");
    assert!(out.contains("agnhost:2.53"), "{out}");
    let out = k.ok(&["get", "all"]);
    for row in [
        "deployment.apps/web",
        "replicaset.apps/web-",
        "daemonset.apps/agent",
        "pod/web-",
    ] {
        assert!(out.contains(row), "{row}: {out}");
    }
    let out = k.ok(&["get", "no", "-o", "wide"]);
    for col in [
        "INTERNAL-IP",
        "OS-IMAGE",
        "KERNEL-VERSION",
        "CONTAINER-RUNTIME",
        "containerd://",
    ] {
        assert!(out.contains(col), "{col}: {out}");
    }

    // Logs: agnhost netexec's start line.
    let out = k.ok(&["logs", "deploy/web"]);
    assert!(out.contains("Started HTTP server on port 8080"), "{out}");

    // describe node: its kubelet's Lease, no error.
    let (ok, out, err) = k.run(&["describe", "node", "demo-web1"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("HolderIdentity:  demo-web1"), "{out}");
    assert!(
        !out.contains("Failed to get lease") && err.is_empty(),
        "{out}\n{err}"
    );

    // Cordon: new pods avoid the node; the DaemonSet's pod stays.
    let before = k.pod_nodes("app=web");
    let on_web1 = before.iter().filter(|n| *n == "demo-web1").count();
    k.ok(&["cordon", "demo-web1"]);
    let out = k.ok(&["scale", "deploy/web", "--replicas=6"]);
    assert!(out.contains("scaled"), "{out}");
    k.ok(&["rollout", "status", "deploy/web", "--timeout=30s"]);
    let after = k.pod_nodes("app=web");
    assert_eq!(after.len(), 6, "{after:?}");
    assert_eq!(
        after.iter().filter(|n| *n == "demo-web1").count(),
        on_web1,
        "{after:?}"
    );
    assert!(k.pod_nodes("app=agent").contains(&"demo-web1".to_string()));
    k.ok(&["uncordon", "demo-web1"]);

    // A NoSchedule taint: new pods avoid the node, running ones stay
    // (the daemon pod too, now misscheduled).
    k.ok(&["taint", "node", "demo-web2", "dedicated=db:NoSchedule"]);
    let on_web2 = k
        .pod_nodes("app=web")
        .iter()
        .filter(|n| *n == "demo-web2")
        .count();
    k.ok(&["scale", "deploy/web", "--replicas=9"]);
    k.ok(&["rollout", "status", "deploy/web", "--timeout=30s"]);
    let after = k.pod_nodes("app=web");
    assert_eq!(after.len(), 9, "{after:?}");
    assert_eq!(
        after.iter().filter(|n| *n == "demo-web2").count(),
        on_web2,
        "{after:?}"
    );
    assert_eq!(k.pod_nodes("app=agent"), nodes);
    // A NoExecute taint evicts what does not tolerate it; the ReplicaSet
    // makes the pods again elsewhere.
    k.ok(&["taint", "node", "demo-web2", "dedicated=db:NoExecute"]);
    k.wait_for("pods to leave demo-web2", |k| {
        let web = k.pod_nodes("app=web");
        k.pod_nodes("app=agent") == ["demo-cp1", "demo-web1"]
            && web.len() == 9
            && !web.contains(&"demo-web2".to_string())
    });
    k.ok(&["rollout", "status", "deploy/web", "--timeout=30s"]);

    // A new template rolls out as a new ReplicaSet.
    k.ok(&[
        "set",
        "image",
        "deploy/web",
        "netexec=registry.k8s.io/e2e-test-images/agnhost:2.52",
    ]);
    let out = k.ok(&["rollout", "status", "deploy/web", "--timeout=30s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let out = k.ok(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.replicas}",
    ]);
    let mut counts: Vec<&str> = out.split_whitespace().collect();
    counts.sort_unstable();
    assert_eq!(counts, ["0", "9"], "{out}");

    // Deleting the Deployment takes its ReplicaSets and pods.
    k.ok(&["delete", "deploy", "web"]);
    k.wait_for("the pods to go", |k| k.pod_nodes("app=web").is_empty());
}
