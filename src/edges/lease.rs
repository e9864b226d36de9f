//! One writer per fleet: `apply` holds a `coordination.k8s.io/v1` Lease
//! in the cluster (`kube-system/exedev-k8s-<fleet>`) from before it plans
//! until it is done, the way controllers elect a leader: creating it is
//! atomic (a second create is 409 AlreadyExists), taking it over is an
//! update at the `resourceVersion` read (a racing update is 409 Conflict),
//! and it expires unless its holder renews it. A second apply waits for it
//! (`--lock-timeout`) or refuses, naming the holder (`id user@host pid N`,
//! since when) and how to break a lease whose holder is gone
//! (`--force-unlock ID`). Before the cluster exists there is no Lease to
//! take: creating the VMs is the guard (exe.dev refuses a taken name).
//!
//! The holder's identity and times are written as the Lease's
//! `holderIdentity`, `acquireTime` and `renewTime`; nothing secret.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// The namespace every k3s cluster has from its start.
pub const NAMESPACE: &str = "kube-system";

/// How long a lease holds without renewal: a run that died frees its
/// fleet this long after its last renewal.
pub const DURATION: Duration = Duration::from_secs(60);

/// How often the holder renews (a third of [`DURATION`], as client-go's
/// leader election renews well within the lease).
pub const RENEW_EVERY: Duration = Duration::from_secs(20);

/// The most giving a lease up may take.
const RELEASE_WITHIN: Duration = Duration::from_secs(10);

/// How often a waiting apply looks again.
const POLL: Duration = Duration::from_secs(2);

/// The Lease of fleet `cluster`.
pub fn lease_name(cluster: &str) -> String {
    format!("exedev-k8s-{cluster}")
}

/// What taking the lease needs.
#[derive(Clone)]
pub struct LockRequest {
    /// How long to wait for another holder to finish (`--lock-timeout`).
    pub wait: Duration,
    /// Break the lease held under this ID first (`--force-unlock ID`).
    pub force_unlock: Option<String>,
    /// Where "waiting for ..." and "took over ..." go.
    pub note: Arc<dyn Fn(&str) + Send + Sync>,
}

impl std::fmt::Debug for LockRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockRequest")
            .field("wait", &self.wait)
            .field("force_unlock", &self.force_unlock)
            .finish_non_exhaustive()
    }
}

/// Who holds a lease, as its `holderIdentity` says: `ID user@host pid N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// A random ID per run: what `--force-unlock` names.
    pub id: String,
    /// `user@host pid N`.
    pub who: String,
}

impl Holder {
    /// This process: a fresh ID, the user, the host, the pid.
    pub fn me() -> Holder {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let id: u32 = rand_id();
        Holder {
            id: format!("{id:08x}"),
            who: format!(
                "{}@{} pid {}",
                clean(&user),
                clean(&hostname()),
                std::process::id()
            ),
        }
    }

    /// The `holderIdentity` written.
    pub fn identity(&self) -> String {
        format!("{} {}", self.id, self.who)
    }

    /// Reads a `holderIdentity` back (another tool's, or an empty one, has
    /// no ID: `None`).
    pub fn parse(identity: &str) -> Option<Holder> {
        let (id, who) = identity.trim().split_once(' ')?;
        (id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| Holder {
            id: id.to_string(),
            who: who.to_string(),
        })
    }
}

/// Characters safe in a holder identity (it is shown to other users).
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

fn rand_id() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

/// Why the lease was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another run holds it, and kept it for as long as we could wait.
    #[error(
        "fleet {fleet:?} is being changed by another run: lease {NAMESPACE}/{name} is held by {who} (ID {id}) since {since}; waited {waited}s"
    )]
    Held {
        fleet: String,
        name: String,
        who: String,
        id: String,
        since: String,
        waited: u64,
    },
    /// `--force-unlock` named another ID than the holder's.
    #[error(
        "--force-unlock {given}: lease {NAMESPACE}/{name} is held under ID {held} ({who}), not {given}; nothing was broken"
    )]
    WrongId {
        given: String,
        name: String,
        held: String,
        who: String,
    },
    /// The API refused or failed.
    #[error("cannot take lease {NAMESPACE}/{name}: {reason}")]
    Api { name: String, reason: String },
}

impl crate::base::hint::Hint for LeaseError {
    fn hint(&self) -> Option<String> {
        Some(match self {
            LeaseError::Held { id, .. } => format!(
                "wait for that run to finish (or pass a longer --lock-timeout); if it is gone, its lease expires {}s after its last renewal, or break it now with --force-unlock {id}",
                DURATION.as_secs()
            ),
            LeaseError::WrongId { held, .. } => format!(
                "make sure that run is gone, then pass --force-unlock {held}"
            ),
            LeaseError::Api { .. } => {
                "check that the Kubernetes API answers (`exedev-k8s status`); the lease needs create/update on leases in kube-system".into()
            }
        })
    }
}

/// A lease held: renewed in the background until [`LeaseGuard::release`]
/// (or, if this process dies, expired [`DURATION`] later).
pub struct LeaseGuard {
    api: Api<Lease>,
    name: String,
    holder: Holder,
    renew: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

impl LeaseGuard {
    /// Our ID (what another run's `--force-unlock` would name).
    pub fn id(&self) -> &str {
        &self.holder.id
    }

    /// Whether another run took the lease over (a renewal found it held
    /// by someone else).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Gives the lease up: its holder is cleared (at the version read, so a
    /// lease someone else took over is left alone).
    /// Bounded by [`RELEASE_WITHIN`]: a cluster just destroyed does not
    /// answer, and the lease then simply goes with it (or expires).
    pub async fn release(self) {
        self.renew.abort();
        let give_up = async {
            if let Ok(l) = self.api.get(&self.name).await
                && held_by(&l).as_ref() == Some(&self.holder)
            {
                let mut v = serde_json::to_value(&l).unwrap_or_default();
                v["spec"]["holderIdentity"] = json!("");
                if let Ok(l) = serde_json::from_value::<Lease>(v) {
                    let _ = self
                        .api
                        .replace(&self.name, &PostParams::default(), &l)
                        .await;
                }
            }
        };
        let _ = tokio::time::timeout(RELEASE_WITHIN, give_up).await;
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

fn held_by(l: &Lease) -> Option<Holder> {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .and_then(Holder::parse)
}

/// When the lease's holder renewed it last, and for how long.
fn expired(l: &Lease, now: SystemTime) -> bool {
    let v = serde_json::to_value(l).unwrap_or_default();
    let Some(renewed) = v["spec"]["renewTime"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
    else {
        return true;
    };
    let secs = v["spec"]["leaseDurationSeconds"]
        .as_u64()
        .unwrap_or(DURATION.as_secs());
    renewed + Duration::from_secs(secs) < now
}

fn since(l: &Lease) -> String {
    let v = serde_json::to_value(l).unwrap_or_default();
    // Shown to the second: microseconds say nothing to a person.
    v["spec"]["acquireTime"]
        .as_str()
        .map(|t| match t.split_once('.') {
            Some((secs, _)) => format!("{}Z", crate::base::text::one_line(secs)),
            None => crate::base::text::one_line(t).into_owned(),
        })
        .unwrap_or_else(|| "an unknown time".into())
}

/// The Lease naming `holder`, acquired and renewed now, at `version` (an
/// update) or none (a create).
fn lease(name: &str, holder: &Holder, version: Option<&str>, transitions: i64) -> Lease {
    let now = now_rfc3339();
    let mut v = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "holderIdentity": holder.identity(),
            "leaseDurationSeconds": DURATION.as_secs(),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }
    });
    if let Some(rv) = version {
        v["metadata"]["resourceVersion"] = json!(rv);
    }
    serde_json::from_value(v).unwrap_or_default()
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn api_error(name: &str, e: &kube::Error) -> LeaseError {
    LeaseError::Api {
        name: name.to_string(),
        reason: match e {
            kube::Error::Api(s) => format!(
                "HTTP {} {}",
                s.code,
                crate::base::text::one_line(&s.message)
            ),
            other => crate::base::text::one_line(&other.to_string()).into_owned(),
        },
    }
}

/// Takes fleet `cluster`'s lease for `me`: creates it, or takes it over
/// when it is free (released or expired) or when `req.force_unlock` names
/// its holder; otherwise waits up to `req.wait`, then refuses naming the
/// holder. Returns the guard and whether it had to wait (the caller then
/// reads what the other run changed before planning).
pub async fn acquire(
    client: &kube::Client,
    cluster: &str,
    me: Holder,
    req: &LockRequest,
) -> Result<(LeaseGuard, bool), LeaseError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let name = lease_name(cluster);
    let start = tokio::time::Instant::now();
    let mut waited = false;
    let mut said = false;
    loop {
        let current = match api.get_opt(&name).await {
            Ok(c) => c,
            // While waiting, the holder may be restarting the very server
            // this client goes through (a k3s upgrade): a connection that
            // fails then is retried until the wait runs out. An answer
            // from the API (403, 404…) is final.
            Err(e) if waited && !matches!(e, kube::Error::Api(_)) && start.elapsed() < req.wait => {
                tokio::time::sleep(POLL.min(req.wait.saturating_sub(start.elapsed()))).await;
                continue;
            }
            Err(e) => return Err(api_error(&name, &e)),
        };
        let taken = match &current {
            None => {
                api.create(&PostParams::default(), &lease(&name, &me, None, 0))
                    .await
            }
            Some(l) => match verdict(l, req, cluster, &name, start.elapsed()) {
                Verdict::Refuse(e) => return Err(e),
                Verdict::Take => take_over(&api, &name, &me, l).await,
                Verdict::Wait(h) => {
                    if !said {
                        (req.note)(&format!(
                            "waiting for lease {NAMESPACE}/{name}: fleet {cluster:?} is being changed by {} (ID {}) since {} (up to {}s, --lock-timeout)",
                            h.who,
                            h.id,
                            since(l),
                            req.wait.as_secs()
                        ));
                        said = true;
                    }
                    waited = true;
                    tokio::time::sleep(POLL.min(req.wait.saturating_sub(start.elapsed()))).await;
                    continue;
                }
            },
        };
        match taken {
            Ok(_) => break,
            // Someone else created or took it between our read and write:
            // read again (and wait for them).
            Err(e) if code(&e) == Some(409) => continue,
            Err(e) => return Err(api_error(&name, &e)),
        }
    }
    let lost = Arc::new(AtomicBool::new(false));
    let renew = tokio::spawn(renew(api.clone(), name.clone(), me.clone(), lost.clone()));
    Ok((
        LeaseGuard {
            api,
            name,
            holder: me,
            renew,
            lost,
        },
        waited,
    ))
}

/// What to do about a lease someone holds or held.
enum Verdict {
    /// It is free (released or expired) or `--force-unlock` names its
    /// holder: take it over (said through `req.note`).
    Take,
    /// Its holder is still at work: wait for it.
    Wait(Holder),
    /// The wait ran out, or `--force-unlock` names another holder.
    Refuse(LeaseError),
}

/// Whether lease `l` may be taken now, after waiting `elapsed`.
fn verdict(
    l: &Lease,
    req: &LockRequest,
    cluster: &str,
    name: &str,
    elapsed: std::time::Duration,
) -> Verdict {
    let holder = held_by(l);
    let free = holder.is_none() || expired(l, SystemTime::now());
    let forced = match (&req.force_unlock, &holder) {
        (Some(given), Some(h)) if *given == h.id => true,
        (Some(given), Some(h)) if !free => {
            return Verdict::Refuse(LeaseError::WrongId {
                given: given.clone(),
                name: name.to_string(),
                held: h.id.clone(),
                who: h.who.clone(),
            });
        }
        _ => false,
    };
    if !(free || forced) {
        let h = holder.unwrap_or_else(|| Holder {
            id: "?".into(),
            who: "?".into(),
        });
        if elapsed >= req.wait {
            return Verdict::Refuse(LeaseError::Held {
                fleet: cluster.to_string(),
                name: name.to_string(),
                who: h.who,
                id: h.id,
                since: since(l),
                waited: elapsed.as_secs(),
            });
        }
        return Verdict::Wait(h);
    }
    if let (true, Some(h)) = (forced, &holder) {
        (req.note)(&format!(
            "breaking lease {NAMESPACE}/{name} of {} (ID {}) as --force-unlock asked",
            h.who, h.id
        ));
    } else if let Some(h) = &holder {
        (req.note)(&format!(
            "taking over lease {NAMESPACE}/{name}: its holder {} (ID {}) stopped renewing it",
            h.who, h.id
        ));
    }
    Verdict::Take
}

/// Replaces lease `l` with one naming `me`, at the version read (a 409
/// when someone else wrote it since), one transition more.
async fn take_over(
    api: &Api<Lease>,
    name: &str,
    me: &Holder,
    l: &Lease,
) -> Result<Lease, kube::Error> {
    let transitions = serde_json::to_value(l).unwrap_or_default()["spec"]["leaseTransitions"]
        .as_i64()
        .unwrap_or(0);
    let next = lease(
        name,
        me,
        l.metadata.resource_version.as_deref(),
        transitions + 1,
    );
    api.replace(name, &PostParams::default(), &next).await
}

/// Renews the lease every [`RENEW_EVERY`] at the version read; stops (and
/// sets `lost`) when someone else holds it.
async fn renew(api: Api<Lease>, name: String, me: Holder, lost: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let Ok(l) = api.get(&name).await else {
            continue;
        };
        if held_by(&l).as_ref() != Some(&me) {
            lost.store(true, Ordering::Relaxed);
            return;
        }
        let mut v = serde_json::to_value(&l).unwrap_or_default();
        v["spec"]["renewTime"] = json!(now_rfc3339());
        if let Ok(l) = serde_json::from_value::<Lease>(v) {
            // A conflict is someone else's write: the next look tells.
            let _ = api.replace(&name, &PostParams::default(), &l).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_identities_read_back() {
        let me = Holder::me();
        assert_eq!(me.id.len(), 8);
        assert!(me.who.contains(" pid "), "{}", me.who);
        assert_eq!(Holder::parse(&me.identity()), Some(me));
        assert_eq!(Holder::parse(""), None);
        assert_eq!(Holder::parse("kube-controller-manager_abc"), None);
        assert_eq!(Holder::parse("zzzzzzzz someone"), None);
    }

    #[test]
    fn a_lease_expires_after_its_duration_without_renewal() {
        let me = Holder::me();
        let l = lease("exedev-k8s-demo", &me, None, 0);
        let now = SystemTime::now();
        assert!(!expired(&l, now));
        assert!(!expired(&l, now + DURATION - Duration::from_secs(2)));
        assert!(expired(&l, now + DURATION + Duration::from_secs(2)));
        // No renewal time at all: nobody keeps it.
        assert!(expired(&Lease::default(), now));
    }
}
