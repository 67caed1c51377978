//! The spool publisher proven with the same conformance suite as the built-in publishers.

use custom_publisher::{SpoolPublisher, read_spool};
use outbox::testkit::{PublisherHarness, ReceivedMessage};

struct SpoolHarness {
    publisher: SpoolPublisher,
    dir: tempfile::TempDir,
}

impl SpoolHarness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let publisher = SpoolPublisher::new(dir.path()).expect("spool");
        SpoolHarness { publisher, dir }
    }
}

impl PublisherHarness for SpoolHarness {
    type Publisher = SpoolPublisher;

    fn publisher(&self) -> &SpoolPublisher {
        &self.publisher
    }

    fn topic(&self) -> String {
        "orders.placed".into()
    }

    async fn received(&self, _at_least: usize) -> Vec<ReceivedMessage> {
        // Acked means renamed and synced: the files are there, no waiting needed.
        read_spool(self.dir.path())
            .expect("read spool")
            .into_iter()
            .map(|m| ReceivedMessage {
                message_id: m.message_id,
                topic: m.topic,
                key: m.key,
                payload: m.payload,
                headers: m.headers,
            })
            .collect()
    }
}

outbox::testkit::publisher_conformance!(SpoolHarness::new());

/// A topic that would escape the spool directory is a permanent error: the relay makes the
/// message dead with this reason instead of retrying it forever.
#[tokio::test]
async fn topic_that_escapes_the_spool_is_refused_permanently() {
    use outbox::{Message, MessageId, PublishOutcome, Publisher};
    let harness = SpoolHarness::new().await;
    let message = Message {
        id: 1,
        message_id: MessageId::new(),
        topic: "../etc".into(),
        key: None,
        payload: b"x".to_vec(),
        headers: Default::default(),
        attempts: 0,
        created_at: chrono::Utc::now(),
    };
    let outcomes = harness.publisher.publish(&[message]).await;
    let [PublishOutcome::Failed(err)] = outcomes.as_slice() else {
        panic!("expected one failure, got {outcomes:?}");
    };
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("cannot be a spool directory name"),
        "{err}"
    );
    assert!(read_spool(harness.dir.path()).expect("read").is_empty());
}

/// End to end: a relay drains an in-memory outbox into the spool, in key order.
#[tokio::test]
async fn relay_drains_into_the_spool() {
    use outbox::testkit::{Committed, InMemoryStore, check_history};
    use outbox::{NewMessage, Relay, RelayConfig};
    let harness = SpoolHarness::new().await;
    let store = InMemoryStore::new();
    let mut tx = store.begin();
    let mut committed = Vec::new();
    for n in 0..40 {
        let key = format!("k{}", n % 4);
        let message = NewMessage::new("orders.placed", format!("{n}").into_bytes()).with_key(&key);
        tx.enqueue(message.clone()).expect("enqueue");
        committed.push(Committed {
            message_id: message.message_id(),
            key: Some(key),
        });
    }
    tx.commit();
    let relay =
        Relay::new(store, harness.publisher.clone(), RelayConfig::default()).expect("config");
    let stats = relay.drain().await.expect("drain");
    assert_eq!(stats.published, 40);
    let report = check_history(&committed, &harness.received(40).await);
    assert!(report.is_ok() && report.duplicate_count() == 0, "{report}");
}
