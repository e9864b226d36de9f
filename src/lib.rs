//! exedev-k8s: a declarative k3s fleet on exe.dev VMs.
//!
//! The code map (each module's one job, what it may depend on, which are
//! pure) is ARCHITECTURE.md's, checked against the code by
//! `tests/it/architecture.rs`; it is kept there only.

pub mod apply;
pub mod base;
pub mod cli;
pub mod core;
pub mod edges;
pub mod emulator;
pub mod engine;
pub mod ui;
pub mod world;
