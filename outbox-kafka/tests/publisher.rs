//! Kafka-specific behaviour against the broker under test: keys and partitions, error
//! mapping, limits, configuration checks, and a relay end to end.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{KafkaHarness, reachable, read_records, unique_topic};
use outbox_core::{ErrorKind, Message, PublishOutcome, Publisher, Relay, RelayConfig};
use outbox_kafka::{ConnectError, KafkaConfig, KafkaPublisher};
use outbox_testkit::{
    InMemoryStore, assert_acked, assert_delivered_once, claimed as message, relay_mixed_backlog,
    single_failure as failure,
};

/// A key's records share one partition, whichever batch they came in; keyless records go
/// to any partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_records_share_a_partition() {
    let Some(h) = KafkaHarness::connect_with(4, KafkaConfig::default()).await else {
        return;
    };
    let mut sent = 0;
    for round in 0..3 {
        let batch: Vec<Message> = (0..20)
            .map(|k| message(&h.topic, Some(&format!("key-{k}")), format!("{round}")))
            .collect();
        assert_acked(&h.publisher.publish(&batch).await);
        sent += batch.len();
    }
    let keyless: Vec<Message> = (0..40)
        .map(|n| message(&h.topic, None, format!("{n}")))
        .collect();
    assert_acked(&h.publisher.publish(&keyless).await);
    sent += keyless.len();

    let records = read_records(&h.brokers, &h.topic, sent).await;
    assert_eq!(records.len(), sent);
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for (partition, record) in &records {
        if let Some(key) = &record.key {
            assert_eq!(
                *partition_of.entry(key.clone()).or_insert(*partition),
                *partition,
                "key {key}"
            );
        }
    }
    assert_eq!(partition_of.len(), 20, "every key arrived");
    let used: std::collections::HashSet<i32> = partition_of.values().copied().collect();
    assert!(
        used.len() > 1,
        "20 keys over 4 partitions use more than one: {used:?}"
    );
}

/// The capabilities tell the relay that the producer is idempotent, how large a message
/// may be and how long a publish may take.
#[test]
fn capabilities_report_dedup_the_size_limit_and_the_publish_bound() {
    let mut config = KafkaConfig::default();
    config.max_message_bytes = 500_000;
    config.message_timeout = Duration::from_secs(7);
    config.request_timeout = Duration::from_secs(2);
    let publisher = KafkaPublisher::new("127.0.0.1:9092", config).expect("publisher");
    let capabilities = publisher.capabilities();
    assert!(capabilities.broker_dedup);
    assert_eq!(capabilities.max_message_bytes, Some(500_000));
    assert_eq!(
        capabilities.max_publish_duration,
        Some(Duration::from_secs(9))
    );
}

/// A topic the broker does not have is a permanent failure by default, whose text names
/// the topic and says to create it; with `missing_topic_is_transient` it is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_fails_permanently_and_says_to_create_it() {
    let topic = unique_topic("outbox-test-missing");
    let mut config = KafkaConfig::default();
    config.message_timeout = Duration::from_secs(3);
    config.request_timeout = Duration::from_secs(1);
    let Some(publisher) = reachable(config.clone()).await else {
        return;
    };
    let err = failure(&publisher, message(&topic, None, "x")).await;
    assert!(!err.is_transient(), "{}", err.describe());
    let text = err.to_string();
    assert!(text.contains("create it first"), "{text}");
    assert!(text.contains(&topic), "{text}");

    config.missing_topic_is_transient = true;
    let publisher = KafkaPublisher::new(&common::brokers(), config).expect("publisher");
    let err = failure(&publisher, message(&topic, None, "x")).await;
    assert!(err.is_transient(), "{}", err.describe());
    assert!(err.to_string().contains("create it first"), "{err}");
}

/// A message over `max_message_bytes` is refused by librdkafka before sending: permanent,
/// and the rest of the batch goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_fails_permanently() {
    let mut config = KafkaConfig::default();
    config.max_message_bytes = 1_000;
    let Some(h) = KafkaHarness::connect_with(1, config).await else {
        return;
    };
    let big = message(&h.topic, None, vec![7u8; 4_000]);
    let small = message(&h.topic, Some("k"), "small");
    let outcomes = h.publisher.publish(&[big, small.clone()]).await;
    match &outcomes[..] {
        [PublishOutcome::Failed(err), PublishOutcome::Acked] => {
            assert!(!err.is_transient(), "{}", err.describe());
            assert!(err.to_string().contains("max_message_bytes"), "{err}");
        }
        other => panic!("expected [Failed, Acked], got {other:?}"),
    }
    let stored = h.stored(1).await;
    assert_eq!(
        stored.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![small.message_id]
    );
}

/// A topic Kafka cannot name and a header that would forge the id header fail permanently
/// without reaching the broker; the good message of the batch is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_topics_and_reserved_headers_fail_permanently() {
    let Some(h) = KafkaHarness::connect().await else {
        return;
    };
    let bad_topic = message("orders/placed", None, "x");
    let mut forged = message(&h.topic, None, "x");
    forged
        .headers
        .insert(outbox_kafka::MESSAGE_ID_HEADER.into(), "forged".into());
    let good = message(&h.topic, None, "good");
    let outcomes = h
        .publisher
        .publish(&[bad_topic, forged, good.clone()])
        .await;
    match &outcomes[..] {
        [
            PublishOutcome::Failed(topic),
            PublishOutcome::Failed(header),
            PublishOutcome::Acked,
        ] => {
            assert!(!topic.is_transient() && !header.is_transient());
            assert!(
                topic.to_string().contains("not a Kafka topic name"),
                "{topic}"
            );
            assert!(header.to_string().contains("reserved"), "{header}");
        }
        other => panic!("expected [Failed, Failed, Acked], got {other:?}"),
    }
    let stored = h.stored(1).await;
    assert_eq!(
        stored.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![good.message_id]
    );
}

/// A broker that is not there is a clear, transient connect error naming the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_a_clear_transient_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        listener.local_addr().expect("local address").port()
    };
    let brokers = format!("127.0.0.1:{port}");
    let mut config = KafkaConfig::default();
    config.request_timeout = Duration::from_secs(1);
    let err = KafkaPublisher::connect(&brokers, config)
        .await
        .expect_err("nothing listens on a port just released");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains(&brokers), "{err}");
}

/// Settings the guarantees rest on cannot be overridden, bad values are refused before a
/// producer exists, and passwords stay out of `Debug` output and errors.
#[test]
fn bad_settings_are_refused_and_secrets_stay_hidden() {
    let err = KafkaPublisher::new(
        "127.0.0.1:9092",
        KafkaConfig::default().with_property("enable.idempotence", "false"),
    )
    .expect_err("idempotence is not negotiable");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("enable.idempotence"), "{err}");

    let err = KafkaPublisher::new(
        "127.0.0.1:9092",
        KafkaConfig::default().with_property("no.such.property", "s3cret"),
    )
    .expect_err("librdkafka refuses unknown properties");
    assert!(matches!(err, ConnectError::Property { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");

    let publisher = KafkaPublisher::new(
        "127.0.0.1:9092",
        KafkaConfig::default()
            .with_property("security.protocol", "sasl_plaintext")
            .with_property("sasl.mechanism", "PLAIN")
            .with_property("sasl.username", "relay")
            .with_property("sasl.password", "s3cret"),
    )
    .expect("publisher");
    let debug = format!("{publisher:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("relay"), "{debug}");
}

/// A relay whose lease could run out before the producer's delivery timeout is refused
/// when it is put together, with both durations in the error.
#[test]
fn a_lease_shorter_than_the_delivery_timeout_is_refused() {
    let mut config = KafkaConfig::default();
    config.message_timeout = Duration::from_secs(25);
    config.request_timeout = Duration::from_secs(10);
    let publisher = KafkaPublisher::new("127.0.0.1:9092", config).expect("publisher");
    let err = Relay::new(
        InMemoryStore::new(),
        publisher.clone(),
        RelayConfig::default(),
    )
    .expect_err("35 s of delivery against a 30 s lease");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    let text = err.to_string();
    assert!(text.contains("35s") && text.contains("30s"), "{text}");

    let mut relay_config = RelayConfig::default();
    relay_config.lease_duration = Duration::from_secs(60);
    Relay::new(InMemoryStore::new(), publisher, relay_config).expect("a 60 s lease is longer");
}

/// End to end: a relay drains an in-memory outbox into Kafka through a topic mapping;
/// nothing is lost or duplicated, every key keeps its order, headers arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_every_message_in_key_order() {
    let Some(h) = KafkaHarness::connect_with(3, KafkaConfig::default()).await else {
        return;
    };
    let mapped = h.topic.clone();
    let publisher = KafkaPublisher::new(
        &h.brokers,
        KafkaConfig::default().with_topic(move |_| mapped.clone()),
    )
    .expect("publisher");
    let committed = relay_mixed_backlog(publisher, "orders.placed", 300).await;
    let stored = h.stored(committed.len()).await;
    assert_delivered_once(&committed, &stored);
    assert!(stored.iter().all(|m| m.topic == h.topic));
}
