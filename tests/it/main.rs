//! The integration tests, one crate (as ripgrep and rust-analyzer do): one
//! module per subject, so the tests link once instead of once per file.
//! Tests drive the real binary (`CARGO_BIN_EXE_exedev-k8s`) against the
//! emulator on 127.0.0.1; `common` holds what they share.
//!
//! Every test here runs in threads of one process: a test must not change
//! process-wide state (environment variables, the working directory).
//! Tests that must set an environment variable for the library live in
//! their own crate (`tests/ssh_env`).

mod common;

mod architecture;
mod bootstrap_order;
mod client;
mod cluster_cli;
mod completions;
mod demo;
mod emulator;
mod emulator_cli;
mod fleet_cli;
mod github_workflow;
mod github_workflow_run;
mod gitops;
mod invalid_fleets;
mod kubeconfig;
mod kubectl;
mod live;
mod manifests;
mod proxy;
mod snapshot_cli;
mod token;
mod world;
mod world_check;
mod world_cli;
mod world_dr;
mod world_lost_server;
mod world_node_password;
mod world_restore;
mod world_rollout;
mod world_traffic;
mod world_unattended;
