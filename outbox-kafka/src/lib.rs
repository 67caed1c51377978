#![doc = include_str!("../README.md")]

mod config;
mod error;
mod publisher;
mod wire;

pub use config::{KafkaConfig, TopicMapper};
pub use error::ConnectError;
pub use publisher::KafkaPublisher;
pub use wire::MESSAGE_ID_HEADER;

/// The `rdkafka` this crate is built against, so that your client and producer types match.
pub use rdkafka;
