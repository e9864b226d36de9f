//! Pure leaves: rules and formats that depend on nothing or on other
//! leaves (names, sizes, releases, k3s's flags, shell words, text).

pub mod hint;
pub mod k3s_flags;
pub mod limits;
pub mod names;
pub mod node_labels;
pub mod release;
pub mod secret;
pub mod shellwords;
pub mod sizes;
pub mod text;
pub mod yaml_guard;
