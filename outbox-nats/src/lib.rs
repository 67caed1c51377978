#![doc = include_str!("../README.md")]

mod config;
mod error;
mod publisher;
mod wire;

pub use config::{NatsConfig, SubjectMapper};
pub use error::ConnectError;
pub use publisher::NatsPublisher;
pub use wire::{KEY_HEADER, MESSAGE_ID_HEADER};

/// The `async-nats` this crate is built against, so that your client and options types match.
pub use async_nats;
