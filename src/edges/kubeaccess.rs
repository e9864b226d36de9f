//! Getting a working Kubernetes client for a fleet without the operator
//! copying files around: a kubeconfig given explicitly, else the one stored
//! beside the fleet file, else k3s's own fetched from the first server over
//! SSH (and stored, mode 0600). The API is reached over Tailscale (the
//! server URL is `https://<first>.<tailnet>:6443`), or, for machines not on
//! the tailnet, through an SSH tunnel to the first server's `127.0.0.1:6443`
//! (k3s's certificate carries `127.0.0.1` as a SAN, so TLS still verifies).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::core::fleet::{self, Fleet};
use crate::edges::cluster::{ClusterError, SafeKubeconfig, yaml_error_without_content};
use crate::edges::cluster_secrets::{self, SecretsError};
use crate::edges::ssh::{self, SshError, SshOptions, Tunnel};

/// Where k3s writes its admin kubeconfig on a server.
pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
/// The API server's address as seen from a server VM itself.
pub const LOCAL_API: &str = "127.0.0.1:6443";
/// Namespace created by `manifests/exedev-k8s-system.yaml`.
pub const SYSTEM_NAMESPACE: &str = "exedev-k8s-system";
/// ConfigMap (in [`SYSTEM_NAMESPACE`]) created by the same manifest.
pub const FLEET_CONFIGMAP: &str = "exedev-k8s-fleet";

/// Why no client could be had, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum KubeAccessError {
    /// Fetching the kubeconfig or opening the tunnel failed.
    #[error("{0}")]
    Ssh(#[from] SshError),
    /// The kubeconfig is malformed or lacks what is needed.
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    /// Storing the kubeconfig failed.
    #[error("{0}")]
    Store(#[from] SecretsError),
    /// A kubeconfig could not be turned into a client.
    #[error("cannot use the kubeconfig from {source_name}: {reason}\n  {hint}")]
    Kubeconfig {
        /// Where it came from (a path, or "the first server").
        source_name: String,
        /// What went wrong.
        reason: String,
        /// What to do.
        hint: String,
    },
    /// Connecting (fetching, tunnelling, first answer) took too long.
    #[error(
        "the Kubernetes API did not answer within {secs} s (is this machine on the tailnet? try --via-ssh-tunnel; --api-timeout sets how long to wait)"
    )]
    Timeout { secs: u64 },
    /// The API server did not answer.
    #[error("cannot reach the Kubernetes API at {url}: {reason}\n  {hint}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// kube's error.
        reason: String,
        /// What to do.
        hint: String,
    },
    /// No server could be reached over SSH: the first one's error, and
    /// the others tried.
    #[error("{first}\n  the other servers ({}) could not be reached either", others.join(", "))]
    NoServer {
        first: Box<KubeAccessError>,
        others: Vec<String>,
    },
    /// The stored kubeconfig's CA is not the one the cluster's servers use
    /// now: it was left from an earlier cluster of the same name.
    #[error(
        "the stored kubeconfig {path} is from another cluster: its certificate authority is not the one {vm} uses now (a cluster of this name was destroyed and created again since it was stored)\n  fetch the current one with `exedev-k8s kubeconfig -f FLEET` (it replaces the file), then run again"
    )]
    StaleKubeconfig {
        /// The stored file.
        path: String,
        /// The server whose CA was compared.
        vm: String,
    },
    /// An API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// kube's error.
        source: kube::Error,
    },
}

/// How the API is reached from this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Route {
    /// Directly over the tailnet when the server's tailnet name resolves
    /// and accepts a connection from here, else through an SSH tunnel
    /// (said once on stderr). Only for the tool's own kubeconfig: a
    /// `--kubeconfig` the user brings names its own server.
    #[default]
    Auto,
    /// Always through an SSH tunnel (`--via-ssh-tunnel`).
    Tunnel,
    /// Never through a tunnel (`--no-ssh-tunnel`).
    Direct,
}

/// How long [`Route::Auto`] tries the server's tailnet name (resolve and
/// connect) before it takes the tunnel.
pub const REACH_CHECK: Duration = Duration::from_secs(4);

/// Whether `host:port` resolves and accepts a TCP connection within
/// [`REACH_CHECK`]: this machine is on the tailnet and the server listens.
async fn reaches(host: &str, port: u16) -> bool {
    matches!(
        tokio::time::timeout(REACH_CHECK, tokio::net::TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}

/// The fleet's first server (`<cluster>-cp1`): the one that holds the
/// admin kubeconfig from the start and that tunnels go to.
pub fn first_server(fleet: &Fleet) -> String {
    crate::base::names::fleet_vm_name(&fleet.name, fleet::CONTROL_PLANE_POOL, 1)
}

/// The API server URL over the tailnet: what a stored kubeconfig points at.
pub fn server_url(fleet: &Fleet) -> String {
    server_url_of(fleet, &first_server(fleet))
}

/// The API server URL of one server over the tailnet. Every server's
/// certificate names every server (`tls-san`), so any of them verifies.
pub fn server_url_of(fleet: &Fleet, server: &str) -> String {
    format!(
        "https://{server}.{}:{}",
        fleet.tailscale.tailnet,
        crate::core::bootstrap::K3S_PORT
    )
}

/// Where the fleet's kubeconfig is stored: `.exedev-k8s/<cluster>/kubeconfig`
/// beside the fleet file, next to the k3s token (same trust level: both are
/// cluster admin).
pub fn kubeconfig_path(fleet_dir: &Path, cluster: &str) -> PathBuf {
    cluster_secrets::state_dir(fleet_dir, cluster).join("kubeconfig")
}

/// Fetches k3s's kubeconfig from server `vm` over SSH and keeps only its
/// CA and client credentials ([`SafeKubeconfig`]): whatever else the file
/// holds (an `exec` plugin planted by root on the VM, file paths, a proxy)
/// is refused, never run. Holds the admin client key: never print it.
pub async fn fetch_safe(vm: &str, ssh: &SshOptions) -> Result<SafeKubeconfig, KubeAccessError> {
    let raw = ssh::run(vm, &["sudo", "-n", "cat", K3S_KUBECONFIG], ssh).await?;
    SafeKubeconfig::parse(&raw, &format!("{K3S_KUBECONFIG} on {vm}")).map_err(|e| {
        KubeAccessError::Kubeconfig {
            source_name: format!("{vm} ({K3S_KUBECONFIG})"),
            reason: e.to_string(),
            hint: format!(
                "k3s writes only certificate data there: the file on {vm} was altered (root on the VM can do that). Nothing was stored or run; inspect the VM, or recreate it"
            ),
        }
    })
}

/// The fleet's servers, first server first.
pub fn servers(fleet: &Fleet) -> Vec<String> {
    (1..=fleet.control_plane.count)
        .map(|i| crate::base::names::fleet_vm_name(&fleet.name, fleet::CONTROL_PLANE_POOL, i))
        .collect()
}

/// The kubeconfig as the YAML to store, from the first server that SSH
/// reaches (each holds the same admin credentials, and every server's name
/// is in every certificate): server [`server_url_of`] that server, every
/// name the fleet's name; with the server it came from. Only a connection
/// failure moves on to the next server: a file that was tampered with
/// stops here.
pub async fn fetch_kubeconfig(
    fleet: &Fleet,
    ssh: &SshOptions,
) -> Result<(String, String), KubeAccessError> {
    let all = servers(fleet);
    let mut unreachable = Vec::new();
    for vm in &all {
        match fetch_safe(vm, ssh).await {
            Ok(safe) => {
                return Ok((
                    safe.to_yaml(&fleet.name, &server_url_of(fleet, vm))?,
                    vm.clone(),
                ));
            }
            Err(e @ KubeAccessError::Ssh(_)) => unreachable.push(e),
            Err(e) => return Err(e),
        }
    }
    let mut errors = unreachable.into_iter();
    Err(match (errors.next(), all.len()) {
        (Some(first), 1) => first,
        (Some(first), _) => KubeAccessError::NoServer {
            first: Box::new(first),
            others: all[1..].to_vec(),
        },
        (None, _) => KubeAccessError::Kubeconfig {
            source_name: format!("fleet {:?}", fleet.name),
            reason: "it has no server".to_string(),
            hint: "a fleet has at least one control-plane server".to_string(),
        },
    })
}

/// A client for the fleet's cluster, checked with one request (the server
/// version), talking to server `via` (a server that a rolling change leaves
/// alone). The kubeconfig is `kubeconfig` if given (used as it is: its
/// credential plugins run, as kubectl would run them), else the stored
/// one, else fetched from `via` over SSH and stored; those two are read
/// through [`SafeKubeconfig`] and always point at the fleet's servers. With
/// `via_tunnel`, the API is reached through an SSH tunnel to `via`, which
/// the caller must keep alive (the returned [`Tunnel`]) as long as it uses
/// the client; [`Route::Auto`] decides on the tunnel itself.
pub async fn kube_client(
    fleet: &Fleet,
    fleet_dir: &Path,
    kubeconfig: Option<&Path>,
    route: Route,
    via: &str,
    ssh: &SshOptions,
) -> Result<(kube::Client, Option<Tunnel>), KubeAccessError> {
    let via_tunnel = match route {
        Route::Tunnel => true,
        Route::Direct => false,
        Route::Auto if kubeconfig.is_some() => false,
        Route::Auto => {
            let host = format!("{via}.{}", fleet.tailscale.tailnet);
            let direct = reaches(&host, crate::core::bootstrap::K3S_PORT).await;
            if !direct {
                static SAID: std::sync::Once = std::sync::Once::new();
                // stderr: stdout may be a JSON document.
                SAID.call_once(|| {
                    eprintln!(
                        "note: {} does not answer from this machine (not on tailnet {}?): reaching the Kubernetes API through an SSH tunnel to {via} (--no-ssh-tunnel forbids it)",
                        crate::base::text::one_line(&host),
                        crate::base::text::one_line(&fleet.tailscale.tailnet)
                    );
                });
            }
            !direct
        }
    };
    let cluster = &fleet.name;
    let stored = kubeconfig_path(fleet_dir, cluster);
    let mut stored_ca = None;
    let (kc, source_name) = match kubeconfig {
        Some(path) => (read_users_kubeconfig(path)?, path.display().to_string()),
        None if stored.exists() => {
            let (kc, ca) = read_stored(fleet, &stored)?;
            stored_ca = Some(ca);
            (kc, stored.display().to_string())
        }
        None => {
            let safe = fetch_safe(via, ssh).await?;
            cluster_secrets::write_private(&stored, &safe.to_yaml(cluster, &server_url(fleet))?)?;
            (
                safe.to_kube(cluster, &server_url(fleet))?,
                stored.display().to_string(),
            )
        }
    };
    // The TLS library seeds its random generator on first use (aws-lc's
    // jitter entropy: tens of ms of CPU), before the first ClientHello:
    // done now on a thread of its own, it overlaps the tunnel's start.
    let seeded = tokio::task::spawn_blocking(seed_tls_random);
    let tunnel = if via_tunnel {
        Some(ssh::tunnel(via, LOCAL_API, ssh).await?)
    } else {
        None
    };
    // Our own kubeconfig names the first server; another `via` is reached
    // by its own name (a user's kubeconfig is used as given).
    let override_url = match (&tunnel, kubeconfig) {
        (Some(t), _) => Some(format!("https://127.0.0.1:{}", t.local_port)),
        (None, None) if via != first_server(fleet) => Some(server_url_of(fleet, via)),
        (None, _) => None,
    };
    let _ = seeded.await;
    let client = client_from_kubeconfig(kc, cluster, override_url.as_deref(), &source_name).await?;
    let url = override_url.unwrap_or_else(|| "the kubeconfig's server".to_string());
    if let Err(e) = client.apiserver_version().await {
        // Our own stored file may be from a cluster that is gone: the
        // server's current CA (over SSH, bounded) tells.
        if let Some(ca) = &stored_ca
            && let Ok(now) = fetch_safe(
                via,
                &SshOptions {
                    retries: 1,
                    deadline: STALE_CHECK,
                    ..ssh.clone()
                },
            )
            .await
            && !same_ca(ca, &now.ca_data)
        {
            return Err(KubeAccessError::StaleKubeconfig {
                path: stored.display().to_string(),
                vm: via.to_string(),
            });
        }
        let hint = if via_tunnel {
            format!(
                "the tunnel to {via} is up but k3s did not answer: check `systemctl status k3s` on it"
            )
        } else {
            format!(
                "check that Tailscale is up on this machine and joined to {} (`tailscale status`), or pass --via-ssh-tunnel to go through SSH; pass --kubeconfig to use another file",
                fleet.tailscale.tailnet
            )
        };
        return Err(KubeAccessError::Unreachable {
            url: format!("{url} ({source_name})"),
            reason: e.to_string(),
            hint,
        });
    }
    Ok((client, tunnel))
}

/// Draws one random byte from the TLS provider the kube client uses, so
/// that its generator is seeded. A failure here is the TLS handshake's to
/// report, so it is ignored.
fn seed_tls_random() {
    let _ = rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut [0u8; 1]);
}

/// How long [`LazyClient`] waits for a first answer by default (`--api-timeout`).
/// An API server that answers 503 (kube's client asks again, backing off,
/// for minutes) or not at all is given up on after it: the operation goes
/// on without the API (plan, status) or refuses what needs it (apply).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for the fleet's API that connects on first use and keeps the
/// connection (and its tunnel): `apply` on a new cluster has no API until
/// the first server's bootstrap is done, so it asks only then, and again
/// later if that failed.
pub struct LazyClient {
    fleet: Fleet,
    fleet_dir: PathBuf,
    kubeconfig: Option<PathBuf>,
    route: Route,
    via: String,
    ssh: SshOptions,
    connect_timeout: Duration,
    cached: tokio::sync::Mutex<Option<(kube::Client, Option<Tunnel>)>>,
}

impl LazyClient {
    /// Nothing is contacted yet; `via` is the server to talk to.
    pub fn new(
        fleet: &Fleet,
        fleet_dir: &Path,
        kubeconfig: Option<&Path>,
        route: Route,
        via: &str,
        ssh: &SshOptions,
    ) -> LazyClient {
        LazyClient {
            fleet: fleet.clone(),
            fleet_dir: fleet_dir.to_path_buf(),
            kubeconfig: kubeconfig.map(Path::to_path_buf),
            route,
            via: via.to_string(),
            ssh: ssh.clone(),
            connect_timeout: CONNECT_TIMEOUT,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// Waits at most `timeout` (instead of [`CONNECT_TIMEOUT`]) for the
    /// first answer: a user who knows the API is down need not wait a
    /// minute to hear it, one on a slow link may wait longer.
    pub fn connect_timeout(self, timeout: Duration) -> LazyClient {
        LazyClient {
            connect_timeout: timeout,
            ..self
        }
    }

    /// Starts out connected (a client the caller already checked).
    pub fn connected(self, client: kube::Client, tunnel: Option<Tunnel>) -> LazyClient {
        LazyClient {
            cached: tokio::sync::Mutex::new(Some((client, tunnel))),
            ..self
        }
    }

    /// The server this client talks to.
    pub fn via(&self) -> &str {
        &self.via
    }

    /// The client, connecting (and fetching the kubeconfig over SSH if none
    /// is at hand) when not connected yet.
    pub async fn get(&self) -> Result<kube::Client, KubeAccessError> {
        let mut cached = self.cached.lock().await;
        if let Some((client, _)) = cached.as_ref() {
            return Ok(client.clone());
        }
        let connect = kube_client(
            &self.fleet,
            &self.fleet_dir,
            self.kubeconfig.as_deref(),
            self.route,
            &self.via,
            &self.ssh,
        );
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok((client, tunnel))) => {
                *cached = Some((client.clone(), tunnel));
                Ok(client)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(KubeAccessError::Timeout {
                secs: self.connect_timeout.as_secs(),
            }),
        }
    }
}

/// A kubeconfig the user brings: theirs, used as it is (relative file
/// paths resolved as kubectl does). Errors never quote it.
fn read_users_kubeconfig(path: &Path) -> Result<Kubeconfig, KubeAccessError> {
    Kubeconfig::read_from(path).map_err(|e| KubeAccessError::Kubeconfig {
        source_name: path.display().to_string(),
        reason: match &e {
            kube::config::KubeconfigError::Parse(y) => yaml_error_without_content(y),
            other => other.to_string(),
        },
        hint: "check the path and the file".to_string(),
    })
}

/// The kubeconfig stored under `.exedev-k8s/<fleet>/`: written by this tool,
/// but a file on disk, so read back through the same [`SafeKubeconfig`] as a
/// fetched one, and pointed at the fleet's server whatever it says.
/// How long the stale-kubeconfig check may take (one SSH read).
const STALE_CHECK: Duration = Duration::from_secs(30);

/// Whether two `certificate-authority-data` values are the same CA
/// (base64 as written: line breaks and spaces do not count).
fn same_ca(a: &str, b: &str) -> bool {
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    squash(a) == squash(b)
}

/// The stored kubeconfig, and its CA data.
fn read_stored(fleet: &Fleet, path: &Path) -> Result<(Kubeconfig, String), KubeAccessError> {
    let fail = |reason: String| {
        KubeAccessError::Kubeconfig {
        source_name: path.display().to_string(),
        reason,
        hint: "exedev-k8s writes only certificate data there: delete the file and run `exedev-k8s kubeconfig -f FLEET` to fetch it again".to_string(),
    }
    };
    let raw = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let cluster = &fleet.name;
    SafeKubeconfig::parse(&raw, &path.display().to_string())
        .and_then(|safe| Ok((safe.to_kube(cluster, &server_url(fleet))?, safe.ca_data)))
        .map_err(|e| fail(e.to_string()))
}

/// Builds a client from a parsed kubeconfig (see [`config_from_kubeconfig`]).
/// Nothing is sent.
pub async fn client_from_kubeconfig(
    kc: Kubeconfig,
    cluster: &str,
    server: Option<&str>,
    source_name: &str,
) -> Result<kube::Client, KubeAccessError> {
    let config = config_from_kubeconfig(kc, cluster, server, source_name).await?;
    kube::Client::try_from(config).map_err(|e| KubeAccessError::Kubeconfig {
        source_name: source_name.to_string(),
        reason: e.to_string(),
        hint: "check the certificate and key data; delete the stored kubeconfig to fetch it again"
            .to_string(),
    })
}

/// The client configuration of a parsed kubeconfig: the context named after
/// the fleet if there is one (a merged `~/.kube/config` may point
/// elsewhere), else `current-context`; with `server`, the cluster URL is
/// replaced (TLS then checks that URL's host: `127.0.0.1` is in k3s's
/// certificate).
pub async fn config_from_kubeconfig(
    kc: Kubeconfig,
    cluster: &str,
    server: Option<&str>,
    source_name: &str,
) -> Result<kube::Config, KubeAccessError> {
    let fail = |reason: String, hint: &str| KubeAccessError::Kubeconfig {
        source_name: source_name.to_string(),
        reason,
        hint: hint.to_string(),
    };
    let context = kc
        .contexts
        .iter()
        .any(|c| c.name == cluster)
        .then(|| cluster.to_string());
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .map_err(|e| {
            fail(
                e.to_string(),
                "it needs a context (named after the fleet, or current-context), its cluster and its user",
            )
        })?;
    if let Some(url) = server {
        config.cluster_url = url
            .parse()
            .map_err(|e| fail(format!("bad server URL {url:?}: {e}"), "this is a bug"))?;
    }
    config.connect_timeout = Some(Duration::from_secs(10));
    Ok(config)
}

/// Which objects of the bundled manifests (`manifests/`) are missing from
/// the cluster, as `Kind namespace/name`: k3s applies them on its own, so
/// this is how the tool learns whether that happened.
pub async fn verify_manifests(client: &kube::Client) -> Result<Vec<String>, KubeAccessError> {
    let api_err = |action: &str| {
        let action = action.to_string();
        move |source| KubeAccessError::Api { action, source }
    };
    let mut missing = Vec::new();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces
        .get_opt(SYSTEM_NAMESPACE)
        .await
        .map_err(api_err("reading namespace exedev-k8s-system"))?
        .is_none()
    {
        missing.push(format!("Namespace {SYSTEM_NAMESPACE}"));
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    if configmaps
        .get_opt(FLEET_CONFIGMAP)
        .await
        .map_err(api_err(
            "reading configmap exedev-k8s-system/exedev-k8s-fleet",
        ))?
        .is_none()
    {
        missing.push(format!("ConfigMap {SYSTEM_NAMESPACE}/{FLEET_CONFIGMAP}"));
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::json;
    use tower_test::mock;

    fn fake(existing: &'static [&'static str]) -> kube::Client {
        let (svc, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let path = req.uri().path().to_string();
                let found = existing.iter().any(|p| *p == path);
                let (code, body) = if found {
                    let name = path.rsplit('/').next().unwrap_or_default();
                    let kind = if path.contains("configmaps") {
                        "ConfigMap"
                    } else {
                        "Namespace"
                    };
                    (
                        200,
                        json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}),
                    )
                } else {
                    (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                 "status": "Failure", "reason": "NotFound", "message": "not found", "code": 404}),
                    )
                };
                let resp = Response::builder()
                    .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string().into_bytes()));
                match resp {
                    Ok(r) => send.send_response(r),
                    Err(e) => panic!("{e}"),
                }
            }
        });
        kube::Client::new(svc, "default")
    }

    const NS: &str = "/api/v1/namespaces/exedev-k8s-system";
    const CM: &str = "/api/v1/namespaces/exedev-k8s-system/configmaps/exedev-k8s-fleet";

    #[tokio::test]
    async fn verify_reports_nothing_when_all_exist() {
        let missing = verify_manifests(&fake(&[NS, CM])).await;
        assert!(matches!(missing.as_deref(), Ok([])), "{missing:?}");
    }

    #[tokio::test]
    async fn verify_names_each_missing_object() {
        match verify_manifests(&fake(&[NS])).await {
            Ok(m) => assert_eq!(m, ["ConfigMap exedev-k8s-system/exedev-k8s-fleet"]),
            Err(e) => panic!("{e}"),
        }
        match verify_manifests(&fake(&[])).await {
            Ok(m) => assert_eq!(
                m,
                [
                    "Namespace exedev-k8s-system",
                    "ConfigMap exedev-k8s-system/exedev-k8s-fleet"
                ]
            ),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_bundled_manifest_defines_what_verify_checks() {
        let m = include_str!("../../manifests/exedev-k8s-system.yaml");
        assert!(m.contains("kind: Namespace"));
        assert!(m.contains("kind: ConfigMap"));
        assert!(m.contains(&format!("name: {SYSTEM_NAMESPACE}")));
        assert!(m.contains(&format!("name: {FLEET_CONFIGMAP}")));
    }

    /// Building a rustls client must not depend on a process-wide crypto
    /// provider having been installed by someone else.
    #[tokio::test]
    async fn a_tls_client_builds_on_its_own() {
        let yaml = "apiVersion: v1\nkind: Config\nclusters:\n- name: demo\n  cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}\nusers:\n- name: demo\n  user: {token: t}\ncontexts:\n- name: demo\n  context: {cluster: demo, user: demo}\ncurrent-context: demo\n";
        let kc = match Kubeconfig::from_yaml(yaml) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = client_from_kubeconfig(kc, "demo", None, "test").await {
            panic!("{e}");
        }
    }

    #[tokio::test]
    async fn tunnel_url_replaces_the_server() {
        let yaml = "apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster: {server: 'https://demo-cp1.t.ts.net:6443', insecure-skip-tls-verify: true}
- name: prod
  cluster: {server: 'https://prod:6443'}
users:
- name: demo
  user: {token: abc}
contexts:
- name: prod
  context: {cluster: prod, user: demo}
- name: demo
  context: {cluster: demo, user: demo}
current-context: prod
";
        let kc = match Kubeconfig::from_yaml(yaml) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        };
        // Picks the fleet's context over current-context.
        let c = match config_from_kubeconfig(kc.clone(), "demo", None, "test").await {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.cluster_url.to_string(), "https://demo-cp1.t.ts.net:6443/");
        let c = match config_from_kubeconfig(
            kc.clone(),
            "demo",
            Some("https://127.0.0.1:40000"),
            "test",
        )
        .await
        {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.cluster_url.to_string(), "https://127.0.0.1:40000/");
        // Without a context of the fleet's name, current-context.
        let c = match config_from_kubeconfig(kc, "other", None, "test").await {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.cluster_url.to_string(), "https://prod:6443/");
    }
}
