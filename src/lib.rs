//! exedev-k8s: a declarative k3s fleet on exe.dev VMs.
//!
//! See ARCHITECTURE.md for the code map. The pure core (`shellwords`,
//! `names`, `sizes`, `token`, `api`, `fleet`, `bootstrap`, `plan`) does no I/O;
//! the edges (`client`, `emulator`, `apply`, `cli`) do.

pub mod api;
pub mod client;
pub mod emulator;
pub mod names;
pub mod secret;
pub mod shellwords;
pub mod sizes;
pub mod token;
