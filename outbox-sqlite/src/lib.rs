#![doc = include_str!("../README.md")]

mod claim;
mod config;
mod enqueue;
mod error;
mod row;
mod schema;
mod sql;
mod store;

pub use config::SqliteConfig;
pub use store::SqliteStore;

/// The `rusqlite` this crate is built against, so that your transaction types match.
pub use rusqlite;
