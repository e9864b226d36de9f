//! Why one VM's change failed ([`StepError`]), each failure naming the VM,
//! what went wrong and what to do.

use std::time::Duration;

use crate::core::api::ApiError;

use super::ops::HookError;

/// The plan named a VM the fleet no longer has (the fleet file changed
/// since the plan): said the same by apply's steps and the engine's node
/// operations.
#[derive(Debug, thiserror::Error)]
#[error("{vm} is not in the fleet any more")]
pub struct NotInFleet {
    pub vm: String,
}

impl crate::base::hint::Hint for NotInFleet {
    fn hint(&self) -> Option<String> {
        Some("re-run plan".into())
    }
}

/// Why one VM's change failed. Reported with its hint
/// ([`crate::base::hint::describe`]).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Script(#[from] crate::core::bootstrap::BootstrapError),
    #[error("{vm}: could not take the node out of the cluster, so its VM was left alone: {source}")]
    NodeRemoval { vm: String, source: HookError },
    #[error("{vm} did not become a Ready node: {source}")]
    NotReady { vm: String, source: HookError },
    #[error(transparent)]
    NotInFleet(#[from] NotInFleet),
    #[error(
        "`new --name={vm}` failed twice with an unknown outcome and the VM is not listed: {source}"
    )]
    UnknownOutcome { vm: String, source: ApiError },
    #[error(
        "{vm} exists but is not owned by fleet {cluster:?} (it lacks the ownership tag or the spec comment): refusing to touch it"
    )]
    NotOwned { vm: String, cluster: String },
    #[error("{vm} was not running after {after:?}")]
    NotRunning { vm: String, after: Duration },
    #[error("{vm}: could not drain the node, so nothing on it was changed: {source}")]
    NotDrained { vm: String, source: HookError },
    #[error("{vm}: in-place k3s changes need SSH to the VM")]
    NeedsSsh { vm: String },
    #[error("{source}")]
    Change { vm: String, source: HookError },
    #[error("{source}; {vm} is left cordoned")]
    LeftCordoned { vm: String, source: Box<StepError> },
    #[error("{vm} is Ready again but still cordoned: {source}")]
    StillCordoned { vm: String, source: HookError },
    #[error("{vm}: labels and taints not set through the API: {source}")]
    NotLabelled { vm: String, source: HookError },
    #[error(
        "{vm} is lost, and its node (a server's: its etcd member) can only be removed through the Kubernetes API, which this run does not use: nothing was changed for it"
    )]
    LostNeedsApi { vm: String },
    #[error(
        "{vm}: its node (a server's: its dead etcd member) was not removed, so no new VM was created: {source}"
    )]
    MemberNotRemoved { vm: String, source: HookError },
    #[error("{vm} is lost, and nothing was changed for it: {source}")]
    NameHeld { vm: String, source: HookError },
}

impl crate::base::hint::Hint for StepError {
    fn hint(&self) -> Option<String> {
        let resume = |vm: &str| {
            format!(
                "re-run apply: it resumes here (nodes already changed are not changed again); or `kubectl uncordon {vm}` to put it back as it is"
            )
        };
        match self {
            StepError::Api(e) => e.hint(),
            StepError::Script(_) => None,
            StepError::NodeRemoval { source, .. }
            | StepError::NotReady { source, .. }
            | StepError::NameHeld { source, .. }
            | StepError::Change { source, .. } => source.hint(),
            StepError::NotInFleet(e) => e.hint(),
            StepError::UnknownOutcome { .. } => Some("re-run apply to converge".into()),
            StepError::NotOwned { vm, .. } => Some(format!(
                "rename or remove {vm} by hand if it is not needed; the fleet never adopts a VM it cannot prove it owns"
            )),
            StepError::NotRunning { vm, .. } => Some(format!(
                "check it with `exedev-k8s exec -- ls {vm}` and re-run apply"
            )),
            StepError::NotDrained { vm, source } => Some(format!(
                "{vm} may be left cordoned. Re-run apply once it can be drained: it resumes here (nodes already changed are not changed again); or `kubectl uncordon {vm}` to put it back as it is{}",
                source.hint().map(|h| format!(" ({h})")).unwrap_or_default()
            )),
            StepError::NeedsSsh { .. } => Some("pass --ssh-key (the key exe.dev knows)".into()),
            StepError::LeftCordoned { vm, source } => Some(match source.hint() {
                Some(h) => format!("{h}; then {}", resume(vm)),
                None => format!("fix the cause, then {}", resume(vm)),
            }),
            StepError::StillCordoned { vm, .. } => Some(format!("run `kubectl uncordon {vm}`")),
            StepError::NotLabelled { .. } => Some(
                "re-run apply (or `exedev-k8s status --wait`) once the Kubernetes API is reachable"
                    .into(),
            ),
            StepError::LostNeedsApi { .. } => Some(
                "make the Kubernetes API reachable (--via-ssh-tunnel, --kubeconfig) and re-run apply"
                    .into(),
            ),
            StepError::MemberNotRemoved { source, .. } => Some(match source.hint() {
                Some(h) => format!("{h}; then re-run apply"),
                None => "re-run apply: it deletes the node again and waits for it to go".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::hint::{Hint, describe};

    #[derive(Debug, thiserror::Error)]
    #[error("the API refused")]
    struct Refused(#[source] std::io::Error);

    impl Hint for Refused {
        fn hint(&self) -> Option<String> {
            Some("try --via-ssh-tunnel".into())
        }
    }

    /// A hook's error keeps its source chain and its hint through the
    /// step that failed, so the user sees what went wrong and what to do.
    #[test]
    fn a_hooks_error_keeps_its_chain_and_hint_through_the_step() {
        let e = StepError::NotReady {
            vm: "prod-cp2".into(),
            source: HookError::hinted(Refused(std::io::Error::other("connection reset"))),
        };
        let shown = describe(&e);
        assert!(
            shown.starts_with("prod-cp2 did not become a Ready node: the API refused"),
            "{shown}"
        );
        assert!(shown.ends_with("hint: try --via-ssh-tunnel"), "{shown}");
        let mut chain = Vec::new();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            chain.push(c.to_string());
            cause = c.source();
        }
        assert_eq!(chain, ["the API refused", "connection reset"]);
    }

    /// Every step failure the user can act on says what to do.
    #[test]
    fn step_failures_say_what_to_do() {
        let cases = [
            StepError::NotInFleet(NotInFleet { vm: "a-cp1".into() }),
            StepError::NotOwned {
                vm: "a-cp1".into(),
                cluster: "a".into(),
            },
            StepError::NotRunning {
                vm: "a-cp1".into(),
                after: Duration::from_secs(60),
            },
            StepError::LostNeedsApi { vm: "a-cp1".into() },
        ];
        for e in cases {
            assert!(e.to_string().contains("a-cp1"), "{e}");
            assert!(e.hint().is_some(), "{e} has no hint");
        }
    }
}
