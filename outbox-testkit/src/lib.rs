#![doc = include_str!("../README.md")]

mod clock;
pub mod conformance;
mod fixtures;
mod history;
mod macros;
mod memory_publisher;
mod memory_store;
mod received;
mod scripted;
pub mod services;
mod writer;

pub use clock::ManualClock;
pub use conformance::{HeldTransaction, PublisherHarness, StoreHarness};
pub use fixtures::{
    assert_acked, assert_delivered_once, claimed, relay_mixed_backlog, run_detached, single_failure,
};
pub use history::{Committed, HistoryReport, check_history};
pub use memory_publisher::InMemoryPublisher;
pub use memory_store::{InMemoryStore, InMemoryTransaction};
pub use received::ReceivedMessage;
pub use scripted::{ScriptHandle, ScriptedPublisher};
pub use writer::{WriterPublisher, read_json_lines};

/// Runs a future to completion on a fresh multi-threaded Tokio runtime; the conformance
/// macros use it so that a test crate needs no runtime of its own.
///
/// # Panics
/// If the runtime cannot be built (the OS refuses threads), which only happens in tests.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a Tokio runtime for the test")
        .block_on(future)
}
