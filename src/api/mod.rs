//! The exe.dev `/exec` contract, pure: the command catalogue and typed
//! builder ([`command`]), the JSON reply shapes ([`types`]), what each status
//! code means and what to advise ([`error`]), and the retry rules
//! ([`retry`]). The HTTP client and the emulator both build on this module;
//! neither re-implements any of it.

pub mod command;
pub mod error;
pub mod retry;
pub mod types;

pub use command::{Command, NewVm};
pub use error::{ApiError, ErrorKind};

/// Largest request body exe.dev accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest setup script exe.dev accepts.
pub const MAX_SETUP_SCRIPT_BYTES: usize = 10 * 1024;
/// Largest VM comment exe.dev accepts.
pub const MAX_COMMENT_BYTES: usize = 200;
/// exe.dev's per-command deadline.
pub const COMMAND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// Proxy ports `share port` accepts (exe.dev's latest public code).
pub const SHARE_PORT_RANGE: std::ops::RangeInclusive<u16> = 3000..=9999;
