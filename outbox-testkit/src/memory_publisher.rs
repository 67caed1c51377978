//! A publisher that keeps what it got in memory.

use std::sync::{Arc, Mutex, PoisonError};

use outbox_core::{Message, PublishOutcome, Publisher};

use crate::received::ReceivedMessage;

/// A [`Publisher`] that acknowledges everything and records it, in order. Clones share the
/// record, so keep one as the "consumer" and give the other to the relay.
///
/// ```
/// # tokio_test_block(async {
/// use outbox_core::Publisher;
/// use outbox_testkit::InMemoryPublisher;
///
/// let publisher = InMemoryPublisher::new();
/// let consumer = publisher.clone();
/// // ... a relay publishes through `publisher` ...
/// assert!(consumer.received().is_empty());
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) { outbox_testkit::block_on(f) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct InMemoryPublisher {
    received: Arc<Mutex<Vec<ReceivedMessage>>>,
}

impl InMemoryPublisher {
    /// An empty publisher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything published so far, in publish order (duplicates included).
    pub fn received(&self) -> Vec<ReceivedMessage> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records messages as received, as if a broker took them.
    pub(crate) fn record(&self, batch: &[Message]) {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(batch.iter().map(ReceivedMessage::from));
    }
}

impl Publisher for InMemoryPublisher {
    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        self.record(batch);
        batch.iter().map(|_| PublishOutcome::Acked).collect()
    }
}
