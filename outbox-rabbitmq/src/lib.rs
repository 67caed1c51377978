#![doc = include_str!("../README.md")]

mod config;
mod error;
mod link;
mod publisher;
mod wire;

pub use config::{RabbitMqConfig, Route, RouteMapper};
pub use error::ConnectError;
pub use publisher::RabbitMqPublisher;
pub use wire::KEY_HEADER;

/// The kind of exchange to declare, for [`RabbitMqConfig::declare_exchange`].
pub use lapin::ExchangeKind;

/// The `lapin` this crate is built against, so that your connection properties match.
pub use lapin;
