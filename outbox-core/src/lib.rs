#![doc = include_str!("../README.md")]

mod clock;
mod error;
mod identifier;
mod message;
pub mod metrics;
mod notify;
mod publisher;
mod redact;
mod relay;
mod retry;
pub mod state;
mod store;

pub use clock::{Clock, FullJitter, Jitter, NoJitter, SystemClock, add_duration};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use identifier::validate_identifier;
pub use message::{
    CONTENT_TYPE_HEADER, Headers, Message, MessageId, MessageLimits, NewMessage, ValidationError,
};
pub use notify::Notifier;
pub use publisher::{DynPublisher, PublishError, PublishOutcome, Publisher, PublisherCapabilities};
pub use redact::redact_url;
pub use relay::{Relay, RelayConfig, RelayStats};
pub use retry::RetryPolicy;
pub use store::{
    Backlog, Claim, ClaimOptions, DeadLetter, DynStore, Lease, LeaseToken, SettleAction,
    SettleReport, Settlement, Store, StoreCapabilities,
};

/// Re-exported so that users name one cancellation type with [`Relay::run`].
pub use tokio_util::sync::CancellationToken;
