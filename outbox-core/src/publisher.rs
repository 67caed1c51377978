//! The [`Publisher`] trait: hands claimed messages to a broker.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::BoxError;
use crate::message::Message;

/// The result of publishing one message.
#[derive(Debug)]
pub enum PublishOutcome {
    /// The broker acknowledged the message (it is durable there).
    Acked,
    /// The broker did not take it; see [`PublishError::is_transient`].
    Failed(PublishError),
}

impl PublishOutcome {
    /// Whether the broker acknowledged the message.
    pub fn is_acked(&self) -> bool {
        matches!(self, PublishOutcome::Acked)
    }
}

/// Why a message was not published.
///
/// Transient errors (timeouts, lost connections, a full queue) are retried with backoff;
/// permanent ones (unknown destination, message too large, not authorised) make the message
/// dead at once, keeping this error's text as the reason.
#[derive(Debug)]
pub struct PublishError {
    transient: bool,
    message: String,
    source: Option<BoxError>,
}

impl PublishError {
    /// A failure that may go away by itself: the message is retried.
    pub fn transient(message: impl Into<String>) -> Self {
        PublishError {
            transient: true,
            message: message.into(),
            source: None,
        }
    }

    /// A failure that retrying cannot fix: the message becomes dead.
    pub fn permanent(message: impl Into<String>) -> Self {
        PublishError {
            transient: false,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the client library's error as the cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The description, followed by the causes, as stored with the message.
    pub fn describe(&self) -> String {
        let mut text = self.message.clone();
        let mut cause = self
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static));
        while let Some(err) = cause {
            text.push_str(": ");
            text.push_str(&err.to_string());
            cause = err.source();
        }
        text
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// What a publisher can do beyond the contract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublisherCapabilities {
    /// The broker drops a second message with the same message id (NATS JetStream, Kafka
    /// idempotent producer within a session).
    pub broker_dedup: bool,
    /// Largest message the broker takes; the relay makes larger ones dead without sending.
    pub max_message_bytes: Option<usize>,
    /// Longest a [`Publisher::publish`] call may take to report a message (the broker
    /// client's own delivery timeout, retries included). [`Relay::new`](crate::Relay::new)
    /// refuses a lease that is not longer (see [`RelayConfig::check_publisher`](crate::RelayConfig::check_publisher)):
    /// otherwise the lease could run out while the message is still in flight, and a
    /// second relay would publish it meanwhile.
    pub max_publish_duration: Option<Duration>,
}

/// Publishes messages to a broker.
///
/// # Contract
///
/// - [`publish`](Publisher::publish) returns exactly one outcome per message, in the same
///   order as the batch.
/// - [`PublishOutcome::Acked`] only after the broker acknowledged the message (a delivery
///   report, a publisher confirm, a PubAck): the relay deletes the row on that word.
/// - The message id goes to the broker (a header or property) so that consumers can drop
///   duplicates.
/// - The relay never puts two messages with the same key in one call, so a publisher may
///   send a batch concurrently.
/// - Errors that retrying cannot fix are [`PublishError::permanent`]; everything else
///   (including "I don't know whether the broker got it") is [`PublishError::transient`].
pub trait Publisher: Send + Sync + 'static {
    /// What this publisher can do.
    fn capabilities(&self) -> PublisherCapabilities {
        PublisherCapabilities::default()
    }

    /// Publishes `batch` and reports one outcome per message.
    ///
    /// # Behavior
    /// Returns when every message is either acknowledged or failed. Must not panic on broker
    /// errors; it reports them as outcomes.
    fn publish(&self, batch: &[Message]) -> impl Future<Output = Vec<PublishOutcome>> + Send;
}

/// The object-safe twin of [`Publisher`], for a broker chosen at run time. Every
/// [`Publisher`] is one; `Box<dyn DynPublisher>` and `Arc<dyn DynPublisher>` are
/// [`Publisher`]s again.
#[allow(missing_docs)]
pub trait DynPublisher: Send + Sync + 'static {
    fn capabilities(&self) -> PublisherCapabilities;
    fn publish<'a>(&'a self, batch: &'a [Message]) -> BoxFuture<'a, Vec<PublishOutcome>>;
}

impl<P: Publisher> DynPublisher for P {
    fn capabilities(&self) -> PublisherCapabilities {
        Publisher::capabilities(self)
    }
    fn publish<'a>(&'a self, batch: &'a [Message]) -> BoxFuture<'a, Vec<PublishOutcome>> {
        Box::pin(Publisher::publish(self, batch))
    }
}

impl Publisher for Box<dyn DynPublisher> {
    fn capabilities(&self) -> PublisherCapabilities {
        DynPublisher::capabilities(&**self)
    }
    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        DynPublisher::publish(&**self, batch).await
    }
}

impl Publisher for Arc<dyn DynPublisher> {
    fn capabilities(&self) -> PublisherCapabilities {
        DynPublisher::capabilities(&**self)
    }
    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        DynPublisher::publish(&**self, batch).await
    }
}

impl<P: Publisher> Publisher for Arc<P> {
    fn capabilities(&self) -> PublisherCapabilities {
        P::capabilities(self)
    }
    fn publish(&self, batch: &[Message]) -> impl Future<Output = Vec<PublishOutcome>> + Send {
        P::publish(self, batch)
    }
}
