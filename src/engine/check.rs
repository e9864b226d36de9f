//! `check`: deploys the connectivity test (`crate::core::check`'s objects) in a
//! namespace of its own, waits for a check pod per Ready node, sends each
//! planned probe through the API server's pod proxy, probes each shared
//! pool through exe.dev's proxy, and always deletes the namespace again
//! ([`Checker::cleanup`], which the CLI calls on Ctrl-C too). Works
//! against exe.dev as against the VM world: it needs only the Kubernetes
//! API (over the tailnet or an SSH tunnel, as every command) and the
//! VMs' HTTPS proxies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::{EngineError, Notes, Session, kube as ekube};
use crate::core::check::{self, CheckNode, Dial, Observed, Report};
use crate::edges::kubeaccess::LazyClient;

/// What `check` is asked.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    /// How long to wait for a check pod on every Ready node.
    pub timeout: Duration,
    /// Probes in flight at once.
    pub concurrency: usize,
    /// Probe the shared pools through exe.dev's proxy.
    pub shares: bool,
    /// The `/exec` endpoint: a non-default one (the emulator) also serves
    /// the VMs' proxies.
    pub endpoint: String,
}

/// How long one probe through the pod proxy may take: netexec's own
/// client gives up after 5 s (`createHTTPClient`), the proxy adds a hop.
const DIAL_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the pods are listed while waiting for them: soon after the
/// DaemonSet is created (on a warm node its pods start within a fraction
/// of a second), then less often, up to every [`POLL`]. The cap was 1 s:
/// once pods took time to start (the VM world's `pod_start_ms`), a 1 s
/// start was seen only at the poll of ~1.26 s (20 + 40 + ... + 640 ms),
/// a third of the wait spent asleep. At 250 ms a start is seen within a
/// quarter second; the cost is a label-selected list of the check's own
/// pods four times a second while they start (seconds: the pod startup
/// SLO allows 5 s).
const FIRST_POLL: Duration = Duration::from_millis(20);
const POLL: Duration = Duration::from_millis(250);

/// A check in progress: the client (and its tunnel) and the namespace it
/// owns, so that the namespace can be deleted whatever happens.
pub struct Checker {
    lazy: LazyClient,
    client: kube::Client,
    ns: String,
    created: std::sync::atomic::AtomicBool,
}

impl Checker {
    /// Connects to the fleet's API (fetching the kubeconfig over SSH when
    /// none is stored, as `status --wait` does). Nothing is created yet.
    pub async fn connect(s: &Session) -> Result<Checker, EngineError> {
        let lazy = ekube::lazy(s, None);
        let client = ekube::now(s, &lazy, true).await.map_err(|why| {
            EngineError::refused(
                format!("cannot reach the cluster's Kubernetes API: {why}"),
                "join the tailnet, or pass --via-ssh-tunnel or --kubeconfig",
            )
        })?;
        let id: u32 = rand::random();
        Ok(Checker {
            lazy,
            client,
            ns: check::namespace(&format!("{:06x}", id & 0xff_ffff)),
            created: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The namespace this check uses.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Deploys, waits, probes, judges. The namespace stays until
    /// [`Checker::cleanup`]. The shared pools are probed through exe.dev's
    /// proxy meanwhile: they do not depend on the check's pods.
    pub async fn run(
        &self,
        s: &Session,
        req: &CheckRequest,
        notes: &Notes,
    ) -> Result<Report, EngineError> {
        let shares = async {
            let any = crate::core::fleet::desired_vms(&s.fleet)
                .iter()
                .any(|d| d.share.is_some());
            if !req.shares || !any {
                return Ok((Vec::new(), 0));
            }
            let sharing = Instant::now();
            let nodes = self.ready_nodes(s).await?;
            let probed = self.probe_shares(s, &nodes, &req.endpoint).await?;
            Ok::<_, EngineError>((probed, ms(sharing.elapsed())))
        };
        let (paths, shares) = tokio::join!(self.run_paths(s, req, notes), shares);
        let (mut o, mut timings, api_known) = paths?;
        (o.shares, timings.shares_ms) = shares?;
        timings.slowest_path_ms = timings.slowest_path();
        let mut report = check::judge(&self.ns, &o);
        report.timings = timings;
        if !api_known {
            report.skipped.push(
                "API from pods: the cluster has no `default/kubernetes` Service with a ClusterIP to dial".to_string(),
            );
        }
        Ok(report)
    }

    /// Deploys, waits for the pods and probes every path between them:
    /// what was observed, the timings, and whether the API's Service was
    /// found.
    async fn run_paths(
        &self,
        s: &Session,
        req: &CheckRequest,
        notes: &Notes,
    ) -> Result<(Observed, check::Timings, bool), EngineError> {
        let started = Instant::now();
        let mut timings = check::Timings::default();
        let (svc_ip, api) = self.deploy(notes).await?;
        let nodes = self.ready_nodes(s).await?;
        timings.deploy_ms = ms(started.elapsed());
        let waited = Instant::now();
        let pods = self.wait_pods(&nodes, req.timeout, notes).await?;
        timings.pods_ms = ms(waited.elapsed());
        let running: BTreeMap<String, (String, String)> = pods
            .iter()
            .filter_map(|(n, p)| p.as_ref().ok().map(|p| (n.name.clone(), p.clone())))
            .collect();
        let running_nodes: Vec<CheckNode> = nodes
            .iter()
            .filter(|n| running.contains_key(&n.name))
            .cloned()
            .collect();
        let api_known = api.is_some();
        let ctx = Ctx {
            client: self.client.clone(),
            ns: self.ns.clone(),
            running,
            svc_ip,
            svc_dns: check::service_dns(&self.ns),
            api,
        };
        let mut o = Observed {
            pods: pods
                .into_iter()
                .map(|(n, p)| (n, p.map(|(name, _)| name)))
                .collect(),
            via: self.lazy.via().to_string(),
            ..Observed::default()
        };
        probe_paths(
            ctx,
            &running_nodes,
            req.concurrency,
            notes,
            &mut o,
            &mut timings,
        )
        .await;
        Ok((o, timings, api_known))
    }

    /// Creates the check's namespace, DaemonSet and Service (marking the
    /// namespace as this check's to delete as soon as it exists) and reads
    /// the API server's Service: the check Service's ClusterIP, and the
    /// API's address and port when the cluster has one, are what the probes
    /// dial. Kept apart from [`Checker::run`] so that the writes to the
    /// cluster sit in one place.
    async fn deploy(&self, notes: &Notes) -> Result<(String, Option<(String, u16)>), EngineError> {
        let (ns_obj, ds, svc) = check::manifests(&self.ns);
        let pp = PostParams::default();
        let bad = |what: &str, e: serde_json::Error| {
            EngineError::refused(
                format!("the check's {what} does not parse as a Kubernetes object: {e}"),
                "this is a bug: please report it",
            )
        };
        let ns_obj: Namespace = serde_json::from_value(ns_obj).map_err(|e| bad("namespace", e))?;
        let ds: DaemonSet = serde_json::from_value(ds).map_err(|e| bad("DaemonSet", e))?;
        let svc: Service = serde_json::from_value(svc).map_err(|e| bad("Service", e))?;
        notes(&format!("creating namespace {}", self.ns));
        Api::<Namespace>::all(self.client.clone())
            .create(&pp, &ns_obj)
            .await
            .map_err(|e| kube_failed("create the check's namespace", e))?;
        self.created
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Api::<DaemonSet>::namespaced(self.client.clone(), &self.ns)
            .create(&pp, &ds)
            .await
            .map_err(|e| kube_failed("create the check's DaemonSet", e))?;
        let svc = Api::<Service>::namespaced(self.client.clone(), &self.ns)
            .create(&pp, &svc)
            .await
            .map_err(|e| kube_failed("create the check's Service", e))?;
        let svc_ip = cluster_ip(&svc).ok_or_else(|| {
            EngineError::refused(
                "the check's Service got no ClusterIP",
                "check the cluster's service CIDR (`kubectl get svc -A`)",
            )
        })?;
        // The API server keeps `default/kubernetes` on every cluster (the
        // VM world too); without it the API-from-a-pod path is said to be
        // unchecked rather than failed.
        let api_svc = Api::<Service>::namespaced(self.client.clone(), "default")
            .get_opt("kubernetes")
            .await
            .map_err(|e| kube_failed("read the `kubernetes` Service", e))?;
        let api_ip = api_svc.as_ref().and_then(cluster_ip);
        let api_port = api_svc
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.first())
            .and_then(|p| u16::try_from(p.port).ok())
            .unwrap_or(443);
        Ok((svc_ip, api_ip.map(|ip| (ip, api_port))))
    }

    /// The Ready nodes, each with its pool read from its name: a check pod
    /// is expected on each, and a node of an unknown name counts under `?`.
    async fn ready_nodes(&self, s: &Session) -> Result<Vec<CheckNode>, EngineError> {
        Ok(crate::edges::cluster::list_nodes(&self.client)
            .await?
            .into_iter()
            .filter(|n| n.ready)
            .map(|n| CheckNode {
                pool: crate::base::names::parse_fleet_vm_name(&s.fleet.name, &n.name)
                    .map_or_else(|| "?".to_string(), |(p, _)| p.to_string()),
                name: n.name,
            })
            .collect())
    }

    /// Waits until every node has a Running check pod with an address, or
    /// `timeout`; a node without one gets why (its pod's phase and the
    /// container's waiting reason).
    #[allow(clippy::type_complexity)]
    async fn wait_pods(
        &self,
        nodes: &[CheckNode],
        timeout: Duration,
        notes: &Notes,
    ) -> Result<Vec<(CheckNode, Result<(String, String), String>)>, EngineError> {
        let api = Api::<Pod>::namespaced(self.client.clone(), &self.ns);
        let lp = ListParams::default().labels(&format!("app={}", check::NAME));
        let deadline = Instant::now() + timeout;
        let mut last = usize::MAX;
        let mut poll = FIRST_POLL;
        loop {
            let pods = api
                .list(&lp)
                .await
                .map_err(|e| kube_failed("list the check's pods", e))?;
            let by_node: BTreeMap<String, &Pod> = pods
                .items
                .iter()
                .filter_map(|p| Some((p.spec.as_ref()?.node_name.clone()?, p)))
                .collect();
            let state: Vec<(CheckNode, Result<(String, String), String>)> = nodes
                .iter()
                .map(|n| (n.clone(), pod_state(by_node.get(&n.name).copied())))
                .collect();
            let ready = state.iter().filter(|(_, p)| p.is_ok()).count();
            if ready != last {
                notes(&format!("  {ready}/{} check pods Running", nodes.len()));
                last = ready;
            }
            if ready == nodes.len() || Instant::now() >= deadline {
                return Ok(state);
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(POLL);
        }
    }

    /// Each Ready node of a pool with a share, through exe.dev's proxy.
    async fn probe_shares(
        &self,
        s: &Session,
        nodes: &[CheckNode],
        endpoint: &str,
    ) -> Result<Vec<(String, u16, crate::edges::probe::ProbeResult)>, EngineError> {
        let shares: BTreeMap<String, crate::core::fleet::ShareSpec> =
            crate::core::fleet::desired_vms(&s.fleet)
                .into_iter()
                .filter_map(|d| Some((d.pool, d.share?)))
                .collect();
        let targets: Vec<(String, u16, crate::edges::probe::ProbeTarget)> = nodes
            .iter()
            .filter_map(|n| {
                let sh = shares.get(&n.pool)?;
                Some((
                    n.pool.clone(),
                    sh.port,
                    super::status::proxy_target(&n.name, sh.public, endpoint),
                ))
            })
            .collect();
        let key = match &s.kube.ssh_key {
            Some(k) => Some(crate::edges::credentials::load_private_key(k)?),
            None => None,
        };
        let only: Vec<_> = targets.iter().map(|(_, _, t)| t.clone()).collect();
        let results = crate::edges::probe::probe_all(&only, key.as_ref(), 8).await;
        Ok(targets
            .into_iter()
            .zip(results)
            .map(|((pool, port, _), r)| (pool, port, r))
            .collect())
    }

    /// Deletes the namespace (and so everything in it) when this check
    /// created it; true when it is gone or going. A namespace is deleted
    /// in the background (`Terminating` while the namespace controller
    /// removes its objects, the pods after their grace period): the check
    /// looks once and does not wait for it, since nothing waits on it. A
    /// check run again at once uses a namespace of its own (a new random
    /// id) and no host port, so a terminating one from the last run does
    /// not stand in its way.
    pub async fn cleanup(&self, notes: &Notes) -> bool {
        if !self.created.load(std::sync::atomic::Ordering::SeqCst) {
            return true;
        }
        let api = Api::<Namespace>::all(self.client.clone());
        match api.delete(&self.ns, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return true,
            Err(e) => {
                notes(&format!(
                    "cannot delete namespace {}: {}",
                    self.ns,
                    crate::base::text::one_line(&e.to_string())
                ));
                return false;
            }
        }
        if !matches!(api.get_opt(&self.ns).await, Ok(None)) {
            notes(&format!(
                "namespace {} is terminating; Kubernetes finishes deleting it in the background",
                self.ns
            ));
        }
        true
    }
}

/// Every probe between the running check pods (pairs, Service, DNS, and
/// the API when `ctx` has its address), in one fan-out of at most
/// `concurrency` at once, recorded sorted into `o` with the probing time
/// and the slowest probe's in `timings`. One place for the fan-out so that
/// [`Checker::run`] reads as its steps.
async fn probe_paths(
    ctx: Ctx,
    running_nodes: &[CheckNode],
    concurrency: usize,
    notes: &Notes,
    o: &mut Observed,
    timings: &mut check::Timings,
) {
    let pairs = check::pairs(running_nodes);
    let mut jobs: Vec<Job> = pairs
        .iter()
        .map(|(f, t)| Job::Pair(f.clone(), t.clone()))
        .collect();
    for n in running_nodes {
        jobs.push(Job::Service(n.name.clone()));
        jobs.push(Job::Dns(n.name.clone()));
        if ctx.api.is_some() {
            jobs.push(Job::Api(n.name.clone()));
        }
    }
    notes(&format!(
        "probing {} paths from {} pods ({} node pairs)",
        jobs.len(),
        ctx.running.len(),
        pairs.len()
    ));
    let ctx = Arc::new(ctx);
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let probing = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for job in jobs {
        let (ctx, limit) = (ctx.clone(), limit.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let one = Instant::now();
            let out = ctx.run(&job).await;
            (job, (out, one.elapsed()))
        });
    }
    while let Some(done) = set.join_next().await {
        let Ok((job, ((first, second), took))) = done else {
            continue;
        };
        timings.slowest_probe_ms = timings.slowest_probe_ms.max(ms(took));
        match job {
            Job::Pair(f, t) => o.pairs.push(((f, t), first, second)),
            Job::Service(f) => o.service.push((f, first)),
            Job::Dns(f) => o.dns.push((f, first)),
            Job::Api(f) => o.api.push((f, first)),
        }
    }
    timings.probes_ms = ms(probing.elapsed());
    o.pairs.sort_by(|a, b| a.0.cmp(&b.0));
    o.service.sort_by(|a, b| a.0.cmp(&b.0));
    o.dns.sort_by(|a, b| a.0.cmp(&b.0));
    o.api.sort_by(|a, b| a.0.cmp(&b.0));
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn kube_failed(what: &str, e: kube::Error) -> EngineError {
    EngineError::refused(
        format!(
            "cannot {what}: {}",
            crate::base::text::one_line(&e.to_string())
        ),
        "the check needs rights to create namespaces, DaemonSets and Services and to use the pods' proxy (the fleet's admin kubeconfig has them)",
    )
}

fn cluster_ip(svc: &Service) -> Option<String> {
    svc.spec
        .as_ref()?
        .cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty() && ip != "None")
}

/// A pod's name and address when it is Running with one, else why not.
fn pod_state(pod: Option<&Pod>) -> Result<(String, String), String> {
    let Some(pod) = pod else {
        return Err("no check pod was scheduled on this node".to_string());
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let phase = status
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let ip = status.and_then(|s| s.pod_ip.clone());
    match (phase.as_str(), ip) {
        ("Running", Some(ip)) if !ip.is_empty() => Ok((name, ip)),
        _ => {
            let waiting = status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                .collect::<Vec<_>>()
                .join(", ");
            Err(if waiting.is_empty() {
                format!("pod {name} is {phase}")
            } else {
                format!("pod {name} is {phase} ({waiting})")
            })
        }
    }
}

/// One probe to run.
enum Job {
    Pair(String, String),
    Service(String),
    Dns(String),
    Api(String),
}

/// What every probe needs.
struct Ctx {
    client: kube::Client,
    ns: String,
    /// Node → (check pod, its address).
    running: BTreeMap<String, (String, String)>,
    svc_ip: String,
    svc_dns: String,
    api: Option<(String, u16)>,
}

impl Ctx {
    /// Runs a job: the dial, and for a pair whose small dial passed, the
    /// large one.
    async fn run(&self, job: &Job) -> (Dial, Option<Dial>) {
        let port = check::NETEXEC_PORT;
        let (from, host, port) = match job {
            Job::Pair(f, t) => {
                let ip = self.running.get(t).map(|(_, ip)| ip.clone());
                (f, ip.unwrap_or_default(), port)
            }
            Job::Service(f) => (f, self.svc_ip.clone(), port),
            Job::Dns(f) => (f, self.svc_dns.clone(), port),
            Job::Api(f) => {
                let (ip, p) = self.api.clone().unwrap_or_default();
                (f, ip, p)
            }
        };
        let Some((pod, _)) = self.running.get(from) else {
            return (
                Dial::NoProxy {
                    error: "no check pod".into(),
                },
                None,
            );
        };
        let small = self.dial(pod, &host, port, check::SMALL_REQUEST).await;
        let large = match job {
            Job::Pair(..) if small.passed() => {
                Some(self.dial(pod, &host, port, &check::large_request()).await)
            }
            _ => None,
        };
        (small, large)
    }

    async fn dial(&self, pod: &str, host: &str, port: u16, request: &str) -> Dial {
        let path = check::dial_path(&self.ns, pod, host, port, request);
        let req = match http::Request::get(&path).body(kube::client::Body::empty()) {
            Ok(r) => r,
            Err(e) => {
                return Dial::NoProxy {
                    error: format!("cannot build the request: {e}"),
                };
            }
        };
        let sent = tokio::time::timeout(DIAL_TIMEOUT, async {
            let resp = self.client.send(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect_bytes().await?;
            Ok::<_, kube::Error>((status, body))
        })
        .await;
        match sent {
            Err(_) => Dial::NoProxy {
                error: format!("no answer through the API server within {DIAL_TIMEOUT:?}"),
            },
            Ok(Err(e)) => Dial::NoProxy {
                error: e.to_string(),
            },
            Ok(Ok((status, body))) => {
                let text = String::from_utf8_lossy(&body);
                // The API server's own failure is a `Status` object;
                // netexec never answers one.
                let api_status = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some("Status"));
                match api_status {
                    Some(v) => {
                        let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
                        check::read_dial(status, message, false)
                    }
                    None => check::read_dial(status, &text, true),
                }
            }
        }
    }
}
