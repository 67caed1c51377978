//! The conformance suites every adapter runs, the in-memory ones included.
//!
//! Each behaviour is a plain `pub async fn` over a small harness trait, so a failing test
//! names the behaviour; [`store_conformance!`](crate::store_conformance) and
//! [`publisher_conformance!`](crate::publisher_conformance) expand to one `#[test]` per
//! behaviour.

pub mod publisher;
pub mod store;

pub use publisher::PublisherHarness;
pub use store::{HeldTransaction, StoreHarness};
