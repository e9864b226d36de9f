//! The pure core: the fleet, the API's catalogue, the plan, the
//! bootstrap scripts, the status join. No I/O.

pub mod api;
pub mod bootstrap;
pub mod check;
pub mod fleet;
pub mod plan;
pub mod restore;
pub mod rollout;
pub mod snapshot;
pub mod status;
pub mod tailnet_check;
pub mod token;
