//! exedev-k8s: a declarative k3s fleet on exe.dev VMs.
//!
//! The code map (each module's one job, what it may depend on, which are
//! pure) is ARCHITECTURE.md's, checked against the code by
//! `tests/it/architecture.rs`; it is kept there only.

pub mod api;
pub mod apply;
pub mod bootstrap;
pub mod channel;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod cluster_secrets;
pub mod credentials;
pub mod emulator;
pub mod engine;
pub mod fleet;
pub mod hint;
pub mod k3s_flags;
pub mod kubeaccess;
pub mod lease;
pub mod limits;
pub mod names;
pub mod node_labels;
pub mod observe;
pub mod plan;
pub mod probe;
pub mod release;
pub mod remote;
pub mod restore;
pub mod rollout;
pub mod secret;
pub mod shellwords;
pub mod sizes;
pub mod snapshot;
pub mod ssh;
pub mod status;
pub mod tailnet_check;
pub mod text;
pub mod token;
pub mod ui;
pub mod upgrade;
pub mod workspace;
pub mod world;
pub mod yaml_guard;
