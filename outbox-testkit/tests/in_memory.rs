//! The in-memory adapters pass the conformance suites they ship.

use std::time::Duration;

use futures::future::BoxFuture;
use outbox_core::{NewMessage, Result};
use outbox_testkit::{
    HeldTransaction, InMemoryPublisher, InMemoryStore, InMemoryTransaction, ManualClock,
    PublisherHarness, ReceivedMessage, StoreHarness,
};

struct MemoryStoreHarness {
    store: InMemoryStore,
    clock: ManualClock,
}

impl MemoryStoreHarness {
    async fn new() -> Self {
        let clock = ManualClock::new();
        MemoryStoreHarness {
            store: InMemoryStore::with_clock(std::sync::Arc::new(clock.clone())),
            clock,
        }
    }

    fn begin_with(&self, messages: Vec<NewMessage>) -> Result<InMemoryTransaction> {
        let mut tx = self.store.begin();
        for message in messages {
            tx.enqueue(message)?;
        }
        Ok(tx)
    }
}

struct Held(InMemoryTransaction);

impl HeldTransaction for Held {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        self.0.commit();
        Box::pin(async { Ok(()) })
    }
}

impl StoreHarness for MemoryStoreHarness {
    type Store = InMemoryStore;

    fn store(&self) -> &InMemoryStore {
        &self.store
    }

    async fn enqueue(&self, messages: Vec<NewMessage>) -> Result<()> {
        self.begin_with(messages)?.commit();
        Ok(())
    }

    async fn enqueue_rolled_back(&self, messages: Vec<NewMessage>) -> Result<()> {
        drop(self.begin_with(messages)?);
        Ok(())
    }

    async fn enqueue_held(&self, message: NewMessage) -> Result<Box<dyn HeldTransaction>> {
        Ok(Box::new(Held(self.begin_with(vec![message])?)))
    }

    async fn advance(&self, duration: Duration) {
        self.clock.advance(duration);
    }
}

mod store {
    use super::*;
    outbox_testkit::store_conformance!(MemoryStoreHarness::new());
}

struct MemoryPublisherHarness {
    publisher: InMemoryPublisher,
}

impl PublisherHarness for MemoryPublisherHarness {
    type Publisher = InMemoryPublisher;

    fn publisher(&self) -> &InMemoryPublisher {
        &self.publisher
    }

    fn topic(&self) -> String {
        "memory.topic".into()
    }

    async fn received(&self, _at_least: usize) -> Vec<ReceivedMessage> {
        self.publisher.received()
    }
}

mod publisher {
    use super::*;
    outbox_testkit::publisher_conformance!(async {
        MemoryPublisherHarness {
            publisher: InMemoryPublisher::new(),
        }
    });
}
