#![doc = include_str!("../README.md")]

mod config;
mod enqueue;
mod error;
mod listen;
mod row;
mod schema;
mod sql;
mod store;

pub use config::PostgresConfig;
pub use listen::spawn_listener;
pub use store::PostgresStore;

/// The `sqlx` this crate is built against, so that your pool and transaction types match.
pub use sqlx;
