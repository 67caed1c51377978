//! Relay behaviours that need a store in a precise state: driven through a store wrapper.

use std::sync::Arc;
use std::time::Duration;

use outbox_core::{
    Backlog, CancellationToken, Claim, ClaimOptions, DeadLetter, Lease, NewMessage, Relay,
    RelayConfig, Result, SettleReport, Settlement, Store, StoreCapabilities,
};
use outbox_testkit::{InMemoryPublisher, InMemoryStore};
use tokio::sync::{Semaphore, watch};

/// An in-memory store whose claims report that they started and then wait for a permit.
#[derive(Clone)]
struct GatedStore {
    inner: InMemoryStore,
    started: watch::Sender<u64>,
    gate: Arc<Semaphore>,
}

impl Store for GatedStore {
    fn capabilities(&self) -> StoreCapabilities {
        self.inner.capabilities()
    }
    async fn claim(&self, options: &ClaimOptions) -> Result<Claim> {
        self.started.send_modify(|n| *n += 1);
        let _permit = self.gate.acquire().await.expect("gate open");
        self.inner.claim(options).await
    }
    async fn settle(&self, lease: &Lease, settlements: &[Settlement]) -> Result<SettleReport> {
        self.inner.settle(lease, settlements).await
    }
    async fn renew(&self, lease: &Lease, duration: Duration) -> Result<Lease> {
        self.inner.renew(lease, duration).await
    }
    async fn backlog(&self) -> Result<Backlog> {
        self.inner.backlog().await
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.inner.dead_letters(limit).await
    }
    async fn requeue_dead(&self, ids: &[i64]) -> Result<u64> {
        self.inner.requeue_dead(ids).await
    }
    async fn purge_published(&self, older_than: Duration) -> Result<u64> {
        self.inner.purge_published(older_than).await
    }
}

/// Guarantee 7: a shutdown that arrives while a claim is running lets the claim finish
/// and hands its messages straight back: nothing stays leased, all are due at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_claim_releases_what_it_claimed() {
    let inner = InMemoryStore::new();
    let mut tx = inner.begin();
    for n in 0..20 {
        tx.enqueue(NewMessage::new("t", vec![n])).expect("enqueue");
    }
    tx.commit();
    let store = GatedStore {
        inner: inner.clone(),
        started: watch::Sender::new(0),
        gate: Arc::new(Semaphore::new(0)),
    };
    let mut started = store.started.subscribe();
    let relay = Relay::new(
        store.clone(),
        InMemoryPublisher::new(),
        RelayConfig::default(),
    )
    .expect("config");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { relay.run(shutdown).await }
    });
    started
        .wait_for(|n| *n >= 1)
        .await
        .expect("a claim started");
    shutdown.cancel();
    store.gate.add_permits(1);
    let stats = running.await.expect("join").expect("run");
    assert_eq!(stats.published, 0);
    assert_eq!(stats.released, 20, "{stats:?}");
    let backlog = inner.backlog().await.expect("backlog");
    assert_eq!((backlog.pending, backlog.leased), (20, 0));
}

/// A publisher that panics does not take the relay down: the wave counts as a failed
/// attempt, and the messages are retried (then dead) like any other failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_publisher_counts_as_a_failed_attempt() {
    struct Panics;
    impl outbox_core::Publisher for Panics {
        async fn publish(
            &self,
            _batch: &[outbox_core::Message],
        ) -> Vec<outbox_core::PublishOutcome> {
            panic!("publisher bug");
        }
    }
    let store = InMemoryStore::new();
    let mut tx = store.begin();
    tx.enqueue(NewMessage::new("t", b"x".to_vec()))
        .expect("enqueue");
    tx.commit();
    let mut config = RelayConfig::default();
    config.retry.max_attempts = 1;
    let relay = Relay::new(store.clone(), Panics, config).expect("config");
    let stats = relay.drain().await.expect("drain");
    assert_eq!(stats.dead, 1, "{stats:?}");
    let dead = store.dead_letters(1).await.expect("dead letters");
    assert_eq!(dead[0].reason, "the publisher panicked");
}

/// A publisher that says how long it may take to report a message.
struct SlowToReport(Duration);

impl outbox_core::Publisher for SlowToReport {
    fn capabilities(&self) -> outbox_core::PublisherCapabilities {
        let mut capabilities = outbox_core::PublisherCapabilities::default();
        capabilities.max_publish_duration = Some(self.0);
        capabilities
    }
    async fn publish(&self, batch: &[outbox_core::Message]) -> Vec<outbox_core::PublishOutcome> {
        batch
            .iter()
            .map(|_| outbox_core::PublishOutcome::Acked)
            .collect()
    }
}

/// A lease that could run out while the publisher still holds a message is refused when
/// the relay is put together, with an error naming both durations; a longer lease is taken.
#[test]
fn lease_must_outlast_the_publishers_delivery_timeout() {
    let mut config = RelayConfig::default();
    config.lease_duration = Duration::from_secs(10);
    config.shutdown_deadline = Duration::from_secs(5);
    for too_slow in [Duration::from_secs(10), Duration::from_secs(300)] {
        let err = Relay::new(InMemoryStore::new(), SlowToReport(too_slow), config.clone())
            .expect_err("lease not longer than the publisher's timeout");
        assert_eq!(err.kind(), outbox_core::ErrorKind::InvalidConfig);
        let text = err.to_string();
        assert!(text.contains(&format!("{too_slow:?}")), "{text}");
        assert!(text.contains("lease_duration is 10s"), "{text}");
    }
    Relay::new(
        InMemoryStore::new(),
        SlowToReport(Duration::from_secs(9)),
        config,
    )
    .expect("a lease longer than the publisher's timeout");
}
