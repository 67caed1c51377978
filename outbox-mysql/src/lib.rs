#![doc = include_str!("../README.md")]

mod claim;
mod config;
mod enqueue;
mod error;
mod row;
mod schema;
mod sql;
mod store;
mod version;

pub use config::MySqlConfig;
pub use store::MySqlStore;
pub use version::{ServerFlavor, ServerVersion};

/// The `sqlx` this crate is built against, so that your pool and transaction types match.
pub use sqlx;
