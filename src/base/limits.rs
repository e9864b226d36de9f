//! What exe.dev imposes, in one place: the validator, the request builder,
//! the emulator, the setup-script renderer and their messages all read
//! these constants (see `../shared/reference/exedev-api.md` for sources).
//! Naming rules (5–64 characters, the grammar, reserved names) live beside
//! the naming scheme in `crate::base::names`, which takes its lengths from here.

use std::ops::RangeInclusive;
use std::time::Duration;

/// Largest `/exec` request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest setup script exe.dev stores.
pub const MAX_SETUP_SCRIPT_BYTES: usize = 10 * 1024;
/// Largest VM comment.
pub const MAX_COMMENT_BYTES: usize = 200;
/// exe.dev's per-command deadline.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(30);
/// Proxy ports `share port` accepts (exe.dev's latest public code).
pub const SHARE_PORT_RANGE: RangeInclusive<u16> = 3000..=9999;
/// vCPUs a VM may have.
pub const CPU_RANGE: RangeInclusive<u32> = 1..=64;
/// Shortest VM name.
pub const MIN_VM_NAME_LEN: usize = 5;
/// Longest VM name.
pub const MAX_VM_NAME_LEN: usize = 64;
/// Longest tag this tool writes or accepts.
pub const MAX_TAG_LEN: usize = 63;
