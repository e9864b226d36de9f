//! The edges: every way out of the process (exe.dev's `/exec`, SSH,
//! the Kubernetes API, channel servers, the filesystem).

pub mod channel;
pub mod client;
pub mod cluster;
pub mod cluster_secrets;
pub mod credentials;
pub mod kubeaccess;
pub mod lease;
pub mod observe;
pub mod probe;
pub mod remote;
pub mod snapshot;
pub mod ssh;
pub mod upgrade;
pub mod workspace;
