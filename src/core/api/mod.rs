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

pub use crate::base::limits::{
    COMMAND_DEADLINE, MAX_BODY_BYTES, MAX_COMMENT_BYTES, MAX_SETUP_SCRIPT_BYTES, SHARE_PORT_RANGE,
};
