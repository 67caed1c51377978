//! Small helpers for a publisher's own tests: a claimed message, outcome checks, and
//! cleanup from `Drop`.

use std::future::Future;

use outbox_core::{Message, MessageId, PublishError, PublishOutcome, Publisher};

/// A message as a relay hands it to a publisher: a fresh message id, row id 1, no headers,
/// no failed attempts.
///
/// ```
/// let message = outbox_testkit::claimed("orders", Some("order-42"), "{}");
/// assert_eq!(message.key.as_deref(), Some("order-42"));
/// assert_eq!(message.payload, b"{}");
/// ```
pub fn claimed(topic: &str, key: Option<&str>, payload: impl Into<Vec<u8>>) -> Message {
    Message {
        id: 1,
        message_id: MessageId::new(),
        topic: topic.to_owned(),
        key: key.map(str::to_owned),
        payload: payload.into(),
        headers: Default::default(),
        attempts: 0,
        created_at: chrono::Utc::now(),
    }
}

/// Panics, with the failure's text and its position, unless every outcome is
/// [`PublishOutcome::Acked`].
///
/// ```
/// use outbox_core::PublishOutcome;
///
/// outbox_testkit::assert_acked(&[PublishOutcome::Acked, PublishOutcome::Acked]);
/// ```
///
/// # Panics
/// On the first failed outcome.
pub fn assert_acked(outcomes: &[PublishOutcome]) {
    for (i, outcome) in outcomes.iter().enumerate() {
        if let PublishOutcome::Failed(err) = outcome {
            panic!("message {i} failed: {}", err.describe());
        }
    }
}

/// Publishes `message` alone and returns why it failed.
///
/// ```
/// # outbox_testkit::block_on(async {
/// let (publisher, handle) = outbox_testkit::ScriptedPublisher::new();
/// handle.fail_next_permanently(1);
/// let err = outbox_testkit::single_failure(&publisher, outbox_testkit::claimed("t", None, "x")).await;
/// assert!(!err.is_transient());
/// # });
/// ```
///
/// # Panics
/// If the publisher acknowledged the message or returned other than one outcome.
pub async fn single_failure<P: Publisher>(publisher: &P, message: Message) -> PublishError {
    let mut outcomes = publisher.publish(&[message]).await;
    assert_eq!(outcomes.len(), 1, "one outcome per message");
    match outcomes.remove(0) {
        PublishOutcome::Failed(err) => err,
        PublishOutcome::Acked => panic!("expected a failure, got Acked"),
    }
}

/// Runs `cleanup` to its end on a thread of its own, with a runtime of its own, and waits
/// for it: for a test harness's `Drop`, which cannot await and may run on a busy
/// single-threaded runtime. A cleanup that cannot get a runtime is skipped.
///
/// ```
/// struct Harness;
///
/// impl Drop for Harness {
///     fn drop(&mut self) {
///         outbox_testkit::run_detached(async { /* delete the test's topic */ });
///     }
/// }
/// drop(Harness);
/// ```
pub fn run_detached<F>(cleanup: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(cleanup);
        }
    })
    .join();
}

/// Relays a backlog of `count` messages for `topic` through `publisher`, end to end: a
/// fresh [`InMemoryStore`](crate::InMemoryStore) holds them (seven keys, every tenth
/// message without a key, each with the header `content-type: text/plain`), a
/// [`Relay`](outbox_core::Relay) drains it in batches of 50. Returns what was committed,
/// for [`assert_delivered_once`] against what the broker then holds.
///
/// ```
/// # outbox_testkit::block_on(async {
/// let publisher = outbox_testkit::InMemoryPublisher::new();
/// let committed = outbox_testkit::relay_mixed_backlog(publisher.clone(), "orders", 100).await;
/// outbox_testkit::assert_delivered_once(&committed, &publisher.received());
/// # });
/// ```
///
/// # Panics
/// If the relay does not publish every message.
pub async fn relay_mixed_backlog<P: Publisher>(
    publisher: P,
    topic: &str,
    count: usize,
) -> Vec<crate::Committed> {
    let store = crate::InMemoryStore::new();
    let committed = store
        .commit_all((0..count).map(|n| {
            let message = outbox_core::NewMessage::new(topic, format!("{n}").into_bytes())
                .with_header("content-type", "text/plain");
            match n % 10 {
                9 => message,
                _ => message.with_key(format!("customer-{}", n % 7)),
            }
        }))
        .expect("valid messages");
    let mut config = outbox_core::RelayConfig::default();
    config.batch_size = 50;
    let relay = outbox_core::Relay::new(store, publisher, config).expect("relay settings");
    let stats = relay.drain().await.expect("drain");
    assert_eq!(stats.published, count as u64, "{stats:?}");
    committed
}

/// Asserts that the broker holds every committed message exactly once, each key in
/// commit order, with the `content-type` header [`relay_mixed_backlog`] gave them.
///
/// # Panics
/// With the history report, when a message is missing, duplicated, unexpected or out of
/// order.
pub fn assert_delivered_once(committed: &[crate::Committed], received: &[crate::ReceivedMessage]) {
    let report = crate::check_history(committed, received);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.duplicate_count(), 0, "{report}");
    assert_eq!(received.len(), committed.len(), "{report}");
    let plain = |m: &&crate::ReceivedMessage| {
        m.headers.get("content-type").map(String::as_str) == Some("text/plain")
    };
    assert_eq!(
        received.iter().filter(plain).count(),
        received.len(),
        "headers carried"
    );
}
