//! exedev-k8s: a declarative k3s fleet on exe.dev VMs.
//!
//! See ARCHITECTURE.md for the code map. The pure core (`shellwords`,
//! `names`, `sizes`, `secret`, `text`, `yaml_guard`, `token`, `api`, `fleet`,
//! `bootstrap`, `plan`)
//! does no I/O; the edges (`client`, `emulator`, `observe`, `apply`,
//! `cluster_secrets`, `cluster`, `ssh`, `kubeaccess`, `credentials`, `probe`,
//! `ui`, `cli`, and the emulator's VM `world`) do.

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
pub mod limits;
pub mod names;
pub mod node_labels;
pub mod observe;
pub mod plan;
pub mod probe;
pub mod release;
pub mod remote;
pub mod rollout;
pub mod secret;
pub mod shellwords;
pub mod sizes;
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
