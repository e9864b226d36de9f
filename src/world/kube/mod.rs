//! A Kubernetes API per cluster: the objects ([`store`], shapes in
//! [`objects`]), the certificates ([`pki`]), and the TLS listeners that
//! serve them ([`server`]).

pub mod objects;
mod pki;
mod server;
mod store;

pub use objects::{Resource, rfc3339};
pub use pki::Pki;
pub use server::{ApiListener, start};
pub use store::{ApiError, ApiStore, merge_patch, selector_matches};
