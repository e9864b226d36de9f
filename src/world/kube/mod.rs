//! A Kubernetes API per cluster: the objects and controllers ([`store`],
//! shapes in [`objects`]), the certificates ([`pki`]), the TLS listeners
//! that serve them ([`server`]) with what kubectl reads besides objects:
//! discovery and OpenAPI ([`discovery`]), strict field validation
//! ([`fields`]), Tables ([`tables`]), pod logs ([`logs`]).

mod discovery;
mod fields;
mod logs;
pub mod objects;
mod pki;
mod server;
mod store;
mod tables;

pub use objects::{Resource, rfc3339};
pub use pki::Pki;
pub use server::{ApiListener, start};
pub use store::{ApiError, ApiStore, merge_patch, selector_matches};
