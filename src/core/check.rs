//! `exedev-k8s check`, the pure part: what the connectivity test deploys,
//! which paths it probes (bounded as the cluster grows), what each answer
//! means, the likely cause of each failure, and the report. The edge
//! (`engine::check`) creates the objects, sends the requests through the
//! API server's pod proxy and hands the answers back here.
//!
//! The probe is Kubernetes' own test image, agnhost `netexec`
//! (kubernetes/kubernetes `test/images/agnhost/netexec/netexec.go`
//! @04791b49): `/dial?host=&port=&request=&protocol=http&tries=1` makes
//! the pod itself open a connection to `host:port` and `GET /<request>`,
//! and answers `{"responses": [...]}` or `{"errors": [...]}` (with 200
//! either way: `dialHandler` prints the JSON with `fmt.Fprint`), or 400
//! when `host` does not resolve (`net.ResolveTCPAddr` runs in the pod,
//! through its resolver: CoreDNS). `dialHTTP` returns the body whatever
//! the status, so a Go HTTPS server's plain-text refusal ("Client sent an
//! HTTP request to an HTTPS server.", Go's `net/http/server.go`) is an
//! answer: it proves the API's Service address reached the API server.
//! netexec has no endpoint that speaks TLS to the API, so that is all a
//! pod can prove about the API without credentials; said in the report.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::edges::probe::ProbeResult;

/// The agnhost image, pinned (the tag Kubernetes' e2e manifests and docs
/// used in 2025: `registry.k8s.io/e2e-test-images/agnhost:2.53`).
pub const AGNHOST_IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";
/// netexec's HTTP port (its `--http-port` default).
pub const NETEXEC_PORT: u16 = 8080;
/// The check's namespaces: this prefix and a short random id, so two runs
/// never share one and a leftover is recognisable.
pub const NAMESPACE_PREFIX: &str = "exedev-k8s-check-";
/// The name of the DaemonSet, its pods' `app` label and the Service.
pub const NAME: &str = "netexec";
/// Up to this many nodes every ordered pair is probed (20 pairs at 5).
pub const ALL_PAIRS_UP_TO: usize = 5;
/// The size of the "large" request: above any tailnet MTU (Tailscale's
/// 1280), so it fills whole segments, while the small one fits in one.
pub const LARGE_REQUEST: usize = 2000;
/// The flannel VXLAN flow, as messages name it.
pub const VXLAN: &str = "8472/udp";

/// The check's namespace for a run id.
pub fn namespace(id: &str) -> String {
    format!("{NAMESPACE_PREFIX}{id}")
}

/// The objects the check creates in its namespace, as JSON the API
/// accepts: the namespace, a DaemonSet of netexec tolerating every taint
/// (`operator: Exists` with no key matches all: Kubernetes' toleration
/// rule, so servers with `CriticalAddonsOnly` or `NoSchedule` taints and
/// cordoned nodes are covered) and a ClusterIP Service in front of it.
pub fn manifests(ns: &str) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let labels =
        serde_json::json!({ "app": NAME, "app.kubernetes.io/managed-by": "exedev-k8s-check" });
    let namespace = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": ns, "labels": { "app.kubernetes.io/managed-by": "exedev-k8s-check" } }
    });
    let daemonset = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": { "name": NAME, "namespace": ns, "labels": labels },
        "spec": {
            "selector": { "matchLabels": { "app": NAME } },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "tolerations": [ { "operator": "Exists" } ],
                    "terminationGracePeriodSeconds": 1,
                    "containers": [ {
                        "name": NAME,
                        "image": AGNHOST_IMAGE,
                        "args": [ "netexec", format!("--http-port={NETEXEC_PORT}") ],
                        "ports": [ { "name": "http", "containerPort": NETEXEC_PORT, "protocol": "TCP" } ],
                        "resources": { "requests": { "cpu": "10m", "memory": "16Mi" } }
                    } ]
                }
            }
        }
    });
    let service = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": NAME, "namespace": ns, "labels": labels },
        "spec": {
            "type": "ClusterIP",
            "selector": { "app": NAME },
            "ports": [ { "name": "http", "port": NETEXEC_PORT, "targetPort": NETEXEC_PORT, "protocol": "TCP" } ]
        }
    });
    (namespace, daemonset, service)
}

/// The Service's DNS name, as CoreDNS serves it (cluster domain
/// `cluster.local`, k3s's default `--cluster-domain`).
pub fn service_dns(ns: &str) -> String {
    format!("{NAME}.{ns}.svc.cluster.local")
}

/// A node as the check sees it: its pool (from the fleet's naming scheme;
/// nodes the fleet does not name share the pool `?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckNode {
    pub name: String,
    pub pool: String,
}

/// Which ordered node pairs are probed pod to pod: every pair up to
/// [`ALL_PAIRS_UP_TO`] nodes; beyond, each node (in pool, name order) to
/// its next neighbour and to the node half-way round the ring (so every
/// node sends and receives twice and the two partners are far apart),
/// plus, for each ordered pool pair (a pool with itself included, when it
/// has two nodes) no probe covers yet, one probe between them. At most
/// `2n + p²` pairs for `n` nodes in `p` pools.
pub fn pairs(nodes: &[CheckNode]) -> Vec<(String, String)> {
    let mut sorted: Vec<&CheckNode> = nodes.iter().collect();
    sorted.sort_by(|a, b| (&a.pool, &a.name).cmp(&(&b.pool, &b.name)));
    sorted.dedup_by(|a, b| a.name == b.name);
    let n = sorted.len();
    let mut out: Vec<(usize, usize)> = Vec::new();
    if n <= ALL_PAIRS_UP_TO {
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    out.push((i, j));
                }
            }
        }
    } else {
        let offsets: BTreeSet<usize> = [1, n / 2].into_iter().collect();
        for i in 0..n {
            for o in &offsets {
                out.push((i, (i + o) % n));
            }
        }
        let covered: BTreeSet<(&str, &str)> = out
            .iter()
            .map(|&(i, j)| (sorted[i].pool.as_str(), sorted[j].pool.as_str()))
            .collect();
        let pools: Vec<&str> = sorted
            .iter()
            .map(|c| c.pool.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for a in &pools {
            for b in &pools {
                if covered.contains(&(*a, *b)) {
                    continue;
                }
                let from = sorted.iter().position(|c| c.pool == *a);
                let to = sorted
                    .iter()
                    .enumerate()
                    .find(|(j, c)| c.pool == *b && Some(*j) != from)
                    .map(|(j, _)| j);
                if let (Some(i), Some(j)) = (from, to) {
                    out.push((i, j));
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out.into_iter()
        .map(|(i, j)| (sorted[i].name.clone(), sorted[j].name.clone()))
        .collect()
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved
/// characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The API path that has pod `pod` (in `ns`) dial `host:port` and `GET
/// /<request>`, through the API server's pod proxy (`pods/NAME:PORT/proxy`).
pub fn dial_path(ns: &str, pod: &str, host: &str, port: u16, request: &str) -> String {
    format!(
        "/api/v1/namespaces/{}/pods/{}:{NETEXEC_PORT}/proxy/dial?host={}&port={port}&request={}&protocol=http&tries=1",
        encode(ns),
        encode(pod),
        encode(host),
        encode(request)
    )
}

/// netexec's request for its hostname (the pod's name).
pub const SMALL_REQUEST: &str = "hostname";

/// netexec's request that echoes [`LARGE_REQUEST`] bytes back: both the
/// request and the answer span several full-sized packets.
pub fn large_request() -> String {
    format!("echo?msg={}", "x".repeat(LARGE_REQUEST))
}

/// What one `/dial` through the pod proxy came back with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Dial {
    /// The pod got an answer (the body of the dialled server's reply).
    Answered { response: String },
    /// The pod tried and failed (netexec's error: a timeout, refused...).
    Failed { error: String },
    /// netexec refused the parameters: with a name for `host`, it did not
    /// resolve (the pod's DNS).
    Unresolved { error: String },
    /// The API server's proxy did not reach the pod (its status and text):
    /// the path from the API server's node to that pod failed.
    NoProxy { error: String },
}

impl Dial {
    pub fn passed(&self) -> bool {
        matches!(self, Dial::Answered { .. })
    }

    fn detail(&self) -> String {
        match self {
            Dial::Answered { response } => {
                format!(
                    "answered {:?}",
                    crate::base::text::one_line(&clip(response))
                )
            }
            Dial::Failed { error } | Dial::Unresolved { error } | Dial::NoProxy { error } => {
                crate::base::text::one_line(&clip(error)).into_owned()
            }
        }
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 160;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}...")
    }
}

/// Reads what the pod proxy returned for a `/dial`: the API server's own
/// status when it could not reach the pod (`proxied` false: the edge
/// knows, from the API's `Status` object in the body), else netexec's.
pub fn read_dial(status: u16, body: &str, proxied: bool) -> Dial {
    if !proxied {
        return Dial::NoProxy {
            error: format!("the API server's proxy answered {status}: {}", body.trim()),
        };
    }
    if status == 400 {
        return Dial::Unresolved {
            error: body.trim().to_string(),
        };
    }
    #[derive(serde::Deserialize)]
    struct Out {
        #[serde(default)]
        responses: Vec<String>,
        #[serde(default)]
        errors: Vec<String>,
    }
    match serde_json::from_str::<Out>(body) {
        Ok(o) if !o.responses.is_empty() && o.errors.is_empty() => Dial::Answered {
            response: o.responses.join("\n"),
        },
        Ok(o) if !o.errors.is_empty() => Dial::Failed {
            error: o.errors.join("; "),
        },
        Ok(_) => Dial::Failed {
            error: format!("netexec answered {status} with neither responses nor errors"),
        },
        Err(_) => Dial::Failed {
            error: format!("netexec answered {status}: {}", body.trim()),
        },
    }
}

/// A path the check proves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "path", rename_all = "snake_case")]
pub enum Path {
    /// The node's check pod is Running with an address.
    Pod { node: String },
    /// A pod on `from` to the pod on `to`, by pod IP.
    PodToPod { from: String, to: String },
    /// A pod on `from` to the Service's ClusterIP.
    Service { from: String },
    /// A pod on `from` to the Service by its DNS name.
    Dns { from: String },
    /// A pod on `from` to the API server's Service (`kubernetes.default`).
    Api { from: String },
    /// A VM's shared port through exe.dev's HTTPS proxy.
    Share { vm: String, pool: String, port: u16 },
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Pod { node } => write!(f, "{node}: check pod"),
            Path::PodToPod { from, to } => write!(f, "{from} -> {to}: pod to pod"),
            Path::Service { from } => write!(f, "{from}: pod to Service"),
            Path::Dns { from } => write!(f, "{from}: DNS (CoreDNS)"),
            Path::Api { from } => write!(f, "{from}: API from a pod"),
            Path::Share { vm, pool, port } => {
                write!(f, "{vm}: pool {pool}'s port {port} through exe.dev's proxy")
            }
        }
    }
}

/// The likely cause of a failure, with its advice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// Flannel's VXLAN between the two nodes does not pass the tailnet.
    Vxlan { from: String, to: String },
    /// Small requests pass, large ones do not.
    Mtu,
    /// The Service's name does not resolve while its address answers.
    CoreDns,
    /// The ClusterIP does not answer while pods do.
    ServiceProxy,
    /// Pods do not reach the API's Service.
    ApiFromPod,
    /// No check pod runs on the node.
    NoPod,
    /// Nothing answers on the shared port.
    NothingOnPort { port: u16 },
    /// exe.dev's proxy refused or failed otherwise.
    Proxy,
}

impl Cause {
    /// One line: the likely cause and what to do.
    pub fn advice(&self) -> String {
        match self {
            Cause::Vxlan { from, to } => format!(
                "likely {VXLAN} (flannel VXLAN) from {from} to {to} blocked by the tailnet policy: its `acls` must accept the fleet's nodes on {} (`exedev-k8s status` prints the entry)",
                crate::core::tailnet_check::ENTRY_PORTS
            ),
            Cause::Mtu => format!(
                "small requests pass, {LARGE_REQUEST}-byte ones do not: an MTU problem (flannel's VXLAN MTU must be tailscale0's minus 50; check `ip link show flannel.1` against `ip link show tailscale0` on both nodes)"
            ),
            Cause::CoreDns => "the Service answers by address but its name does not resolve: CoreDNS (`kubectl -n kube-system get pods -l k8s-app=kube-dns`, its logs)".to_string(),
            Cause::ServiceProxy => "pods answer by address but not through the Service's ClusterIP: kube-proxy's rules on the sending node (`journalctl -u k3s` / `k3s-agent` there)".to_string(),
            Cause::ApiFromPod => "pods cannot reach the API server's Service (`kubernetes.default`): the path from this node to the servers' 6443 or kube-proxy's rules".to_string(),
            Cause::NoPod => "the node runs no check pod (not Ready, image pull, or no room): `kubectl describe node` and the namespace's events".to_string(),
            Cause::NothingOnPort { port } => format!(
                "nothing answers on port {port} on this VM: run a workload with hostPort {port} on the pool's nodes (the HA example's `manifests:`)"
            ),
            Cause::Proxy => "exe.dev's proxy did not pass the request: `exedev-k8s status` shows the share".to_string(),
        }
    }
}

/// One path that failed, with what was seen and the likely cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    #[serde(flatten)]
    pub path: Path,
    pub seen: String,
    pub cause: Cause,
    pub advice: String,
}

/// What the edge observed, per path, for [`judge`].
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every Ready node the check expected a pod on, and that pod's name
    /// (`None`: none Running with an address, and why).
    pub pods: Vec<(CheckNode, Result<String, String>)>,
    /// Pod to pod: the small dial and, when it passed, the large one.
    pub pairs: Vec<((String, String), Dial, Option<Dial>)>,
    pub service: Vec<(String, Dial)>,
    pub dns: Vec<(String, Dial)>,
    pub api: Vec<(String, Dial)>,
    /// The shares probed: (pool, port, the probe).
    pub shares: Vec<(String, u16, ProbeResult)>,
    /// The server whose API the check went through: the pod proxy's
    /// requests leave from there.
    pub via: String,
}

/// Counts per kind of path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub probed: usize,
    pub passed: usize,
}

/// The check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub namespace: String,
    pub nodes: usize,
    pub pods: Tally,
    pub pod_to_pod: Tally,
    pub service: Tally,
    pub dns: Tally,
    pub api: Tally,
    pub shares: Tally,
    /// Shares not probed, and why (private ones without `--ssh-key`).
    pub skipped: Vec<String>,
    pub failures: Vec<Failure>,
    /// What the check cannot prove.
    pub limits: Vec<String>,
    /// Whether the namespace was deleted (set by the edge).
    pub cleaned_up: bool,
    pub passed: bool,
    /// How long each phase took (set by the edge; zero from [`judge`]).
    pub timings: Timings,
}

/// Where a check's time goes, in milliseconds: creating the objects,
/// waiting for the pods, all probes (bounded concurrency), the slowest
/// single probe (a pair's small and large dial together), the shares
/// (probed through exe.dev's proxy while the rest runs), and the check's
/// slowest path ([`Timings::slowest_path`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Timings {
    pub deploy_ms: u64,
    pub pods_ms: u64,
    pub probes_ms: u64,
    pub slowest_probe_ms: u64,
    pub shares_ms: u64,
    pub slowest_path_ms: u64,
}

impl Timings {
    /// The time a correct check cannot avoid, if every probe ran at once:
    /// deploying, a pod Running on every node, then the slowest single
    /// probe; the shares alongside (they need none of the check's
    /// objects). Not in it: connecting to the API, the probes waiting
    /// for their turn (`--concurrency`), deleting the namespace
    /// (`benches/world.rs` compares the wall time against it).
    pub fn slowest_path(&self) -> u64 {
        (self.deploy_ms + self.pods_ms + self.slowest_probe_ms).max(self.shares_ms)
    }
}

/// How the pod-to-pod pairs were chosen, for the report and the docs.
pub fn pairs_rule() -> String {
    format!(
        "every ordered node pair up to {ALL_PAIRS_UP_TO} nodes; beyond, each node to its ring neighbour and the node half-way round, plus one probe per uncovered pool pair"
    )
}

/// Joins what was observed into the report, classifying each failure.
pub fn judge(ns: &str, o: &Observed) -> Report {
    let mut failures = Vec::new();
    let tally_pods = judge_pods(o, &mut failures);
    let pair_tally = judge_pairs(o, &mut failures);
    let (service, svc_ok) = judge_service(o, &mut failures);
    let dns = judge_dns(o, &svc_ok, &mut failures);
    let api = judge_api(o, &mut failures);
    let (shares, skipped) = judge_shares(o, &mut failures);
    // One NoProxy failure per unreachable pod, not one per path from it.
    let mut seen_paths = BTreeSet::new();
    failures.retain(|f| seen_paths.insert((f.path.clone(), f.cause.clone())));
    failures.sort_by(|a, b| a.path.cmp(&b.path));
    let passed = failures.is_empty();
    Report {
        namespace: ns.to_string(),
        nodes: o.pods.len(),
        pods: tally_pods,
        pod_to_pod: pair_tally,
        service,
        dns,
        api,
        shares,
        skipped,
        failures,
        limits: vec![
            "API from a pod: proves a connection to the `kubernetes.default` Service reaches an HTTPS server (netexec speaks plain HTTP; the server's refusal is the answer), not authentication".to_string(),
            format!("pod to pod: {}", pairs_rule()),
        ],
        cleaned_up: false,
        passed,
        timings: Timings::default(),
    }
}

/// The check pods: a node without a Running one is a failure of its own
/// ([`Cause::NoPod`]), since no path from or to it could be probed.
fn judge_pods(o: &Observed, failures: &mut Vec<Failure>) -> Tally {
    let mut tally = Tally::default();
    for (node, pod) in &o.pods {
        tally.probed += 1;
        match pod {
            Ok(_) => tally.passed += 1,
            Err(why) => failures.push(failure(
                Path::Pod {
                    node: node.name.clone(),
                },
                why.clone(),
                Cause::NoPod,
            )),
        }
    }
    tally
}

/// Pod to pod: a failed small dial is the overlay between the two nodes
/// (VXLAN), a small dial that passed with a large one that failed is the
/// MTU, and a source the proxy could not reach is that pod, not the pair.
fn judge_pairs(o: &Observed, failures: &mut Vec<Failure>) -> Tally {
    // A source whose pod the proxy could not reach says nothing about its
    // partners: the failure is the API server's node to it.
    let mut tally = Tally::default();
    for ((from, to), small, large) in &o.pairs {
        tally.probed += 1;
        let path = Path::PodToPod {
            from: from.clone(),
            to: to.clone(),
        };
        match (small, large) {
            (Dial::Answered { .. }, Some(Dial::Answered { .. }) | None) => tally.passed += 1,
            (Dial::Answered { .. }, Some(l)) => {
                failures.push(failure(path, l.detail(), Cause::Mtu));
            }
            (Dial::NoProxy { .. }, _) => failures.push(no_proxy(&o.via, from, small)),
            (d, _) => failures.push(failure(
                path,
                d.detail(),
                Cause::Vxlan {
                    from: from.clone(),
                    to: to.clone(),
                },
            )),
        }
    }
    tally
}

/// Pod to the check's Service (kube-proxy's rules), and the nodes whose
/// pods reached it: [`judge_dns`] needs them to tell a DNS failure from a
/// Service one.
fn judge_service<'o>(o: &'o Observed, failures: &mut Vec<Failure>) -> (Tally, BTreeSet<&'o str>) {
    let mut tally = Tally::default();
    let svc_ok: BTreeSet<&str> = o
        .service
        .iter()
        .filter(|(_, d)| d.passed())
        .map(|(f, _)| f.as_str())
        .collect();
    for (from, d) in &o.service {
        tally.probed += 1;
        match d {
            Dial::Answered { .. } => tally.passed += 1,
            Dial::NoProxy { .. } => failures.push(no_proxy(&o.via, from, d)),
            _ => failures.push(failure(
                Path::Service { from: from.clone() },
                d.detail(),
                Cause::ServiceProxy,
            )),
        }
    }
    (tally, svc_ok)
}

/// Pod to the Service by name (CoreDNS); an unreachable pod is already
/// said by [`judge_service`], and so is a name that resolved to a Service
/// that did not answer.
fn judge_dns(o: &Observed, svc_ok: &BTreeSet<&str>, failures: &mut Vec<Failure>) -> Tally {
    let mut tally = Tally::default();
    for (from, d) in &o.dns {
        tally.probed += 1;
        match d {
            Dial::Answered { .. } => tally.passed += 1,
            Dial::NoProxy { .. } => {}
            // A name that resolves to an address that does not answer is
            // the Service's problem (said above), not DNS's.
            Dial::Failed { .. } if !svc_ok.contains(from.as_str()) => {}
            _ => failures.push(failure(
                Path::Dns { from: from.clone() },
                d.detail(),
                Cause::CoreDns,
            )),
        }
    }
    tally
}

/// Pod to the API server's Service; an unreachable pod is already said by
/// [`judge_service`].
fn judge_api(o: &Observed, failures: &mut Vec<Failure>) -> Tally {
    let mut tally = Tally::default();
    for (from, d) in &o.api {
        tally.probed += 1;
        match d {
            Dial::Answered { .. } => tally.passed += 1,
            Dial::NoProxy { .. } => {}
            _ => failures.push(failure(
                Path::Api { from: from.clone() },
                d.detail(),
                Cause::ApiFromPod,
            )),
        }
    }
    tally
}

/// The shares through exe.dev's proxy: a gateway error or no answer means
/// nothing listens on the port, another status is the proxy's; a private
/// share probed without a key is skipped, and said so.
fn judge_shares(o: &Observed, failures: &mut Vec<Failure>) -> (Tally, Vec<String>) {
    let mut tally = Tally::default();
    let mut skipped = Vec::new();
    for (pool, port, p) in &o.shares {
        let path = Path::Share {
            vm: p.vm.clone(),
            pool: pool.clone(),
            port: *port,
        };
        if p.private_unprobed {
            skipped.push(format!(
                "{path}: private, not probed (pass --ssh-key to probe behind the login page)"
            ));
            continue;
        }
        tally.probed += 1;
        let seen = p
            .error
            .clone()
            .unwrap_or_else(|| format!("HTTP {}", p.status.unwrap_or(0)));
        match p.status {
            Some(s) if p.error.is_none() && (200..400).contains(&s) => tally.passed += 1,
            Some(502..=504) | None => {
                failures.push(failure(path, seen, Cause::NothingOnPort { port: *port }))
            }
            _ => failures.push(failure(path, seen, Cause::Proxy)),
        }
    }
    (tally, skipped)
}

fn failure(path: Path, seen: String, cause: Cause) -> Failure {
    Failure {
        advice: cause.advice(),
        path,
        seen,
        cause,
    }
}

/// The API server's proxy could not reach the pod on `node`: the path
/// from the server the check went through (`via`) to that node.
fn no_proxy(via: &str, node: &str, d: &Dial) -> Failure {
    failure(
        Path::PodToPod {
            from: via.to_string(),
            to: node.to_string(),
        },
        d.detail(),
        Cause::Vxlan {
            from: via.to_string(),
            to: node.to_string(),
        },
    )
}

/// The report for a terminal (text from the cluster escaped).
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "check in namespace {}: {} nodes\n",
        crate::base::text::one_line(&r.namespace),
        r.nodes
    );
    let line = |out: &mut String, what: &str, t: &Tally| {
        if t.probed > 0 {
            out.push_str(&format!(
                "  {what:<16} {:>3}/{:<3} passed\n",
                t.passed, t.probed
            ));
        }
    };
    line(&mut out, "check pods", &r.pods);
    line(&mut out, "pod to pod", &r.pod_to_pod);
    line(&mut out, "pod to Service", &r.service);
    line(&mut out, "DNS (CoreDNS)", &r.dns);
    line(&mut out, "API from pods", &r.api);
    line(&mut out, "shared ports", &r.shares);
    for s in &r.skipped {
        out.push_str(&format!("  skipped: {}\n", crate::base::text::one_line(s)));
    }
    for f in &r.failures {
        out.push_str(&format!(
            "FAILED {}\n  seen: {}\n  {}\n",
            crate::base::text::one_line(&f.path.to_string()),
            crate::base::text::one_line(&f.seen),
            f.advice
        ));
    }
    for l in &r.limits {
        out.push_str(&format!("  note: {l}\n"));
    }
    if r.cleaned_up {
        out.push_str("namespace deleted\n");
    } else {
        out.push_str(&format!(
            "namespace NOT deleted: `kubectl delete namespace {}`\n",
            crate::base::text::one_line(&r.namespace)
        ));
    }
    out.push_str(if r.passed {
        "All paths passed.\n"
    } else {
        "Some paths failed.\n"
    });
    out
}

#[cfg(test)]
mod tests;
