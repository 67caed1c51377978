//! Faults a single real broker cannot give, on librdkafka's built-in mock cluster: a broker
//! that is down, request errors, a fatal idempotent-producer error, a broker restart in the
//! middle of a relay run. These need no Kafka server.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{read_records, read_topic};
use outbox_core::{
    CancellationToken, Message, MessageId, NewMessage, PublishError, PublishOutcome, Publisher,
    PublisherCapabilities, Relay, RelayConfig, RetryPolicy, Store,
};
use outbox_kafka::rdkafka::mocking::MockCluster;
use outbox_kafka::rdkafka::producer::{DefaultProducerContext, Producer};
use outbox_kafka::rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use outbox_kafka::{KafkaConfig, KafkaPublisher};
use outbox_testkit::{InMemoryStore, assert_acked, check_history, claimed};
use tokio::sync::watch;

const TOPIC: &str = "orders";

/// A one-broker mock cluster with the topic `orders` (`partitions` partitions).
fn cluster(partitions: i32) -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(1).expect("a mock cluster");
    mock.create_topic(TOPIC, partitions, 1)
        .expect("creating the topic");
    mock
}

/// Short timeouts, so that a broker that is down fails a publish within seconds.
fn quick_config() -> KafkaConfig {
    let mut config = KafkaConfig::default();
    config.message_timeout = Duration::from_secs(2);
    config.request_timeout = Duration::from_secs(1);
    config
}

fn message(n: usize, key: Option<&str>) -> Message {
    Message {
        id: i64::try_from(n).expect("small"),
        ..claimed(TOPIC, key, format!("m{n}"))
    }
}

fn failures(outcomes: Vec<PublishOutcome>) -> Vec<PublishError> {
    outcomes
        .into_iter()
        .map(|outcome| match outcome {
            PublishOutcome::Failed(err) => err,
            PublishOutcome::Acked => panic!("a message was Acked"),
        })
        .collect()
}

fn ids(messages: &[Message]) -> Vec<MessageId> {
    messages.iter().map(|m| m.message_id).collect()
}

/// While the only broker is down, nothing is Acked: every message fails transiently once
/// `message_timeout` ran out. Once it is back, the same messages are delivered, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_fails_transiently_and_nothing_is_acked() {
    let mock = cluster(1);
    mock.broker_down(1).expect("broker down");
    let publisher =
        KafkaPublisher::new(&mock.bootstrap_servers(), quick_config()).expect("publisher");
    let batch: Vec<Message> = (0..20)
        .map(|n| message(n, Some(&format!("k{n}"))))
        .collect();

    for err in failures(publisher.publish(&batch).await) {
        assert!(err.is_transient(), "{}", err.describe());
    }

    mock.broker_up(1).expect("broker up");
    assert_acked(&publisher.publish(&batch).await);
    let stored = read_topic(&mock.bootstrap_servers(), TOPIC, batch.len()).await;
    assert_eq!(
        stored.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        ids(&batch),
        "each message once, none from the failed attempt"
    );
}

/// Retriable produce errors (leader moving, too few replicas, a dropped connection) are
/// retried by librdkafka itself; the idempotent producer keeps them from duplicating or
/// reordering anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_request_errors_neither_duplicate_nor_reorder() {
    let mock = cluster(1);
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ],
    );
    let publisher =
        KafkaPublisher::new(&mock.bootstrap_servers(), KafkaConfig::default()).expect("publisher");
    let mut sent = Vec::new();
    for n in 0..10 {
        let m = message(n, Some("k"));
        assert_acked(&publisher.publish(std::slice::from_ref(&m)).await);
        sent.push(m);
    }
    let stored = read_topic(&mock.bootstrap_servers(), TOPIC, sent.len()).await;
    assert_eq!(
        stored.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        ids(&sent)
    );
    assert_eq!(publisher.rebuilds(), 0);
}

/// A produce refused for good (the principal may not write the topic) is a permanent
/// failure with the broker's reason, and nothing is stored. (librdkafka then refuses the
/// topic until its next metadata refresh, so later messages are refused alike.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorisation_errors_are_permanent() {
    let mock = cluster(1);
    let publisher =
        KafkaPublisher::new(&mock.bootstrap_servers(), quick_config()).expect("publisher");
    // A first delivery, so that the producer has its id and metadata before the error.
    let first = message(0, None);
    assert_acked(&publisher.publish(std::slice::from_ref(&first)).await);
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    let err = failures(publisher.publish(&[message(1, None)]).await).remove(0);
    assert!(!err.is_transient(), "{}", err.describe());
    assert!(err.to_string().contains("may not write"), "{err}");
    assert_eq!(publisher.rebuilds(), 0);

    let stored = read_topic(&mock.bootstrap_servers(), TOPIC, 1).await;
    assert_eq!(
        stored.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![first.message_id],
        "the refused message is not stored"
    );
}

/// A head-of-line "out of order sequence" answer desynchronises the idempotent producer,
/// a fatal error in librdkafka: the messages fail transiently, the publisher builds a new
/// producer, and the retry goes through on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_idempotence_error_rebuilds_the_producer() {
    let mock = cluster(1);
    let publisher =
        KafkaPublisher::new(&mock.bootstrap_servers(), quick_config()).expect("publisher");
    assert_acked(&publisher.publish(&[message(0, Some("k"))]).await);
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let failed = message(1, Some("k"));
    let err = failures(publisher.publish(std::slice::from_ref(&failed)).await).remove(0);
    assert!(err.is_transient(), "{}", err.describe());
    assert!(err.to_string().contains("rebuilt"), "{err}");
    assert_eq!(publisher.rebuilds(), 1);
    assert!(
        publisher.producer().client().fatal_error().is_none(),
        "the new producer is healthy"
    );

    assert_acked(&publisher.publish(std::slice::from_ref(&failed)).await);
    assert_eq!(publisher.rebuilds(), 1);
    let stored = read_topic(&mock.bootstrap_servers(), TOPIC, 2).await;
    assert!(stored.iter().any(|m| m.message_id == failed.message_id));
}

/// While the broker is down, librdkafka holds at most `max_queued_messages`: the rest of a
/// batch fails at once ("queue full", transient) instead of piling up in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_queue_is_bounded_while_the_broker_is_down() {
    let mock = cluster(1);
    mock.broker_down(1).expect("broker down");
    let mut config = quick_config();
    config.max_queued_messages = 50;
    let publisher = KafkaPublisher::new(&mock.bootstrap_servers(), config).expect("publisher");
    let batch: Vec<Message> = (0..200).map(|n| message(n, None)).collect();
    let errors = failures(publisher.publish(&batch).await);
    assert!(errors.iter().all(PublishError::is_transient));
    let queue_full = errors
        .iter()
        .filter(|e| e.to_string().contains("max_queued_messages"))
        .count();
    let timed_out = errors
        .iter()
        .filter(|e| e.to_string().contains("no delivery report"))
        .count();
    assert_eq!(
        (queue_full, timed_out),
        (150, 50),
        "50 queued, 150 refused at once"
    );
}

/// Publishes through the Kafka publisher, remembers every message it reported Acked, and
/// tells a watcher how many publishes failed.
#[derive(Clone)]
struct Recording {
    inner: KafkaPublisher,
    acked: Arc<Mutex<Vec<MessageId>>>,
    failures: watch::Sender<u64>,
}

impl Publisher for Recording {
    fn capabilities(&self) -> PublisherCapabilities {
        self.inner.capabilities()
    }

    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        let outcomes = self.inner.publish(batch).await;
        let mut acked = self.acked.lock().unwrap_or_else(PoisonError::into_inner);
        for (message, outcome) in batch.iter().zip(&outcomes) {
            match outcome {
                PublishOutcome::Acked => acked.push(message.message_id),
                PublishOutcome::Failed(_) => self.failures.send_modify(|n| *n += 1),
            }
        }
        outcomes
    }
}

/// The broker restarts while a relay drains 2,000 messages over 20 keys: nothing is lost,
/// every key stays in order, nothing counts as published without the broker holding it,
/// and the relay finishes by itself once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_during_a_relay_run_loses_nothing() {
    const COUNT: usize = 2_000;
    let mock = cluster(4);
    let brokers = mock.bootstrap_servers();
    let store = InMemoryStore::new();
    let committed = store
        .commit_all((0..COUNT).map(|n| {
            NewMessage::new(TOPIC, format!("{n}").into_bytes())
                .with_key(format!("customer-{}", n % 20))
        }))
        .expect("enqueue");

    let (failures, mut failed) = watch::channel(0);
    let publisher = Recording {
        inner: KafkaPublisher::new(&brokers, quick_config()).expect("publisher"),
        acked: Arc::default(),
        failures,
    };
    let mut config = RelayConfig::default();
    config.batch_size = 100;
    config.retry = RetryPolicy {
        max_attempts: 1_000,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
    };
    let relay = Relay::new(store.clone(), publisher.clone(), config).expect("relay config");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { relay.run(shutdown).await }
    });

    // Down once some messages are through, up again once publishes have failed meanwhile.
    wait_until(&store, |pending| pending < COUNT as u64 - 200).await;
    mock.broker_down(1).expect("broker down");
    failed.wait_for(|n| *n > 0).await.expect("the relay runs");
    let acked_while_down = publisher
        .acked
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len();
    mock.broker_up(1).expect("broker up");
    wait_until(&store, |pending| pending == 0).await;
    shutdown.cancel();
    let stats = running.await.expect("join").expect("relay run");

    assert!(
        stats.retried > 0,
        "the restart failed some publishes: {stats:?}"
    );
    assert_eq!(stats.dead, 0, "{stats:?}");
    assert!(acked_while_down < COUNT, "the broker went down mid-run");
    let records = read_records(&brokers, TOPIC, COUNT).await;
    let received: Vec<_> = records.iter().map(|(_, r)| r.clone()).collect();
    let report = check_history(&committed, &received);
    assert!(report.is_ok(), "{report}");
    let at_broker: HashSet<MessageId> = received.iter().map(|r| r.message_id).collect();
    let acked = publisher
        .acked
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let acked_unstored = acked.iter().filter(|id| !at_broker.contains(id)).count();
    assert_eq!(acked_unstored, 0, "Acked without the broker holding it");
    assert_eq!(
        acked.iter().collect::<HashSet<_>>().len(),
        COUNT,
        "every message Acked"
    );
    // A key's records share a partition.
    let mut partition_of = std::collections::HashMap::new();
    for (partition, record) in &records {
        let key = record.key.clone().expect("keyed");
        assert_eq!(*partition_of.entry(key).or_insert(*partition), *partition);
    }
    println!("broker restart during a relay run: {report} stats={stats:?}");
}

/// Waits until the store's pending count satisfies `done`, for at most a minute.
async fn wait_until(store: &InMemoryStore, done: impl Fn(u64) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pending = store.backlog().await.expect("backlog").pending;
        if done(pending) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay made no progress for a minute ({pending} pending)"
        );
        // Polling the store's state; the relay runs meanwhile.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
