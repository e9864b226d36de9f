//! Why an operation stopped: one type for the engine, wrapping what each
//! layer reports (keeping it as the source) and adding what only the
//! engine knows (a refused precondition, a stale saved plan).

use std::path::PathBuf;

use crate::base::hint::Hint;
use crate::core::api::ApiError;
use crate::core::fleet::FleetErrors;
use crate::core::plan::PlanError;
use crate::core::plan::file::PlanFileError;
use crate::core::token::TokenError;
use crate::edges::cluster::ClusterError;
use crate::edges::cluster_secrets::SecretsError;
use crate::edges::kubeaccess::KubeAccessError;

/// Why an operation stopped. Nothing was changed unless the variant says so
/// ([`EngineError::Incomplete`]).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// There is no fleet file at the path given (or, without `-f`, no
    /// `fleet.yaml` in the working directory).
    #[error("{} does not exist{}", path.display(), if path.is_relative() { " (relative to the working directory)" } else { "" })]
    FleetMissing { path: PathBuf },
    /// The fleet file does not parse or validate.
    #[error("{path} is not a valid fleet:\n{errors}")]
    Fleet { path: PathBuf, errors: FleetErrors },
    /// An exe.dev call failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The plan cannot be made (a name collision, an unknown target, quorum).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A saved plan cannot be read or written.
    #[error(transparent)]
    PlanFile(#[from] PlanFileError),
    /// A saved plan no longer matches the fleet or exe.dev.
    #[error("{source}. Nothing was changed")]
    Stale {
        source: PlanFileError,
        fleet: PathBuf,
        planfile: Option<PathBuf>,
    },
    /// Secrets could not be resolved or stored.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// Secrets the plan's new VMs need cannot be read (all of them, located).
    #[error(
        "{} secret(s) needed to create this plan's VMs cannot be read (values are never shown):\n\n{errors}",
        errors.errors().len()
    )]
    MissingSecrets { errors: FleetErrors },
    /// A setup script cannot be rendered (e.g. over exe.dev's 10 KiB).
    #[error(transparent)]
    Script(#[from] crate::core::bootstrap::BootstrapError),
    /// The Kubernetes API refused or failed a call.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The Kubernetes API cannot be reached or its kubeconfig used.
    #[error(transparent)]
    KubeAccess(#[from] KubeAccessError),
    /// A key or token cannot be used.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The plan must not be carried out (etcd quorum, a downgrade, a
    /// skipped minor, version skew): it has been shown; nothing was saved
    /// or changed. Each refusal says what to do instead.
    #[error(
        "the plan is refused, nothing was done:\n  ✗ {}",
        refusals.iter().map(|r| crate::base::text::one_line(r).into_owned()).collect::<Vec<_>>().join("\n  ✗ ")
    )]
    PlanRefused { refusals: Vec<String> },
    /// A precondition of the operation does not hold; nothing was changed.
    #[error("{message}")]
    Refused { message: String, hint: String },
    /// A restore stopped at a step: the steps before it were done (some
    /// servers may be stopped); the message names the step.
    #[error("{message}")]
    RestoreStopped { message: String, hint: String },
    /// Some changes failed or were skipped; the others were made.
    #[error("{failed} change(s) failed and {skipped} were skipped")]
    Incomplete {
        failed: usize,
        skipped: usize,
        verb: &'static str,
    },
}

impl EngineError {
    /// A refused precondition.
    pub fn refused(message: impl Into<String>, hint: impl Into<String>) -> EngineError {
        EngineError::Refused {
            message: message.into(),
            hint: hint.into(),
        }
    }
}

impl Hint for EngineError {
    fn hint(&self) -> Option<String> {
        match self {
            EngineError::Api(e) => e.hint(),
            EngineError::Refused { hint, .. } | EngineError::RestoreStopped { hint, .. } => {
                Some(hint.clone())
            }
            EngineError::PlanRefused { .. } => Some(
                "do what each refusal says instead (the fleet file, or the cluster first), then plan again".into(),
            ),
            EngineError::Stale {
                fleet, planfile, ..
            } => {
                let out = planfile
                    .as_ref()
                    .map_or_else(|| "plan.json".into(), |p| p.display().to_string());
                Some(format!(
                    "make a fresh plan, review it, and apply that one:\n  exedev-k8s plan -f {} --out {out}\n  exedev-k8s apply {out}\nIn the example GitHub workflow: run the workflow by hand on main (Actions → Run workflow); it plans again and its apply waits for approval of that plan",
                    fleet.display()
                ))
            }
            EngineError::FleetMissing { .. } => Some(
                "name the fleet file with -f FLEET; without -f, exedev-k8s reads fleet.yaml in the working directory".into(),
            ),
            EngineError::MissingSecrets { .. } => Some(
                "set them where this runs. A job that lacks them on purpose (a pull-request plan) names them in --skip-secret-check; apply always checks them all".into(),
            ),
            EngineError::Incomplete { verb, .. } => Some(format!(
                "re-run {verb} to converge (it re-reads exe.dev first)"
            )),
            _ => None,
        }
    }
}
