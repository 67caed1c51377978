//! Crash test on the real servers: 5,000 messages over 50 keys flow from PostgreSQL to
//! Kafka while relay processes (this example's `relay` command) are SIGKILLed at random
//! moments, at least 10 times, with two relays at once for part of it. The topic is then
//! read back: nothing lost, every key in order; duplicates (a relay killed between the
//! delivery report and the settle) are printed.

use std::collections::{BTreeMap, HashSet};
use std::process::Child;
use std::time::Duration;

use outbox::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use outbox::kafka::rdkafka::error::KafkaError;
use outbox::kafka::rdkafka::message::{Headers, Message as _};
use outbox::kafka::rdkafka::{ClientConfig, Offset, TopicPartitionList};
use outbox::kafka::{KafkaConfig, KafkaPublisher, MESSAGE_ID_HEADER};
use outbox::postgres::PostgresStore;
use outbox::testkit::services::{unavailable, url_from_env};
use outbox::testkit::{ReceivedMessage, check_history};

const MESSAGES: usize = 5_000;
const KEYS: usize = 50;
const KILLS: usize = 10;
const PARTITIONS: i32 = 3;

struct Setup {
    store: PostgresStore,
    brokers: String,
    topic: String,
    env: Vec<(&'static str, String)>,
}

async fn setup() -> Option<Setup> {
    let (store, db_url) = pg_orders::crash_store().await?;
    let schema = store.config().schema.clone();
    let brokers = url_from_env("OUTBOX_TEST_KAFKA_BROKERS", "127.0.0.1:9092");
    let topic = format!("{schema}.events");
    let publisher = match KafkaPublisher::connect(&brokers, KafkaConfig::default()).await {
        Ok(publisher) => publisher,
        Err(err) => {
            unavailable("Kafka", &brokers, &err);
            return None;
        }
    };
    publisher
        .ensure_topic(&topic, PARTITIONS, 1)
        .await
        .expect("creating the test's topic");
    let env = vec![
        ("DATABASE_URL", db_url),
        ("KAFKA_BROKERS", brokers.clone()),
        ("OUTBOX_SCHEMA", schema),
        ("KAFKA_TOPIC", topic.clone()),
        ("KAFKA_MESSAGE_TIMEOUT_MS", "1000".into()),
        ("RELAY_BATCH", "100".into()),
        ("RELAY_LEASE_MS", "2000".into()),
    ];
    Some(Setup {
        store,
        brokers,
        topic,
        env,
    })
}

fn spawn_relay(env: &[(&'static str, String)]) -> Child {
    pg_orders::spawn_relay(env!("CARGO_BIN_EXE_postgres-kafka"), env)
}

fn consumer(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("crash-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("a consumer")
}

/// Records in the topic: the sum of its partitions' high watermarks.
fn stored(consumer: &BaseConsumer, topic: &str) -> u64 {
    (0..PARTITIONS)
        .map(|partition| {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(5))
                .expect("watermarks");
            u64::try_from(high).expect("a watermark is not negative")
        })
        .sum()
}

/// Every record of the topic, partition by partition in offset order.
fn read_back(consumer: &BaseConsumer, topic: &str) -> Vec<ReceivedMessage> {
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&assignment).expect("assign");
    let mut by_partition: BTreeMap<i32, Vec<ReceivedMessage>> = BTreeMap::new();
    let mut at_end = HashSet::new();
    while at_end.len() < PARTITIONS as usize {
        match consumer.poll(Duration::from_secs(10)) {
            None => panic!("no answer from Kafka for 10 s while reading back"),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(err)) => panic!("reading back: {err}"),
            Some(Ok(record)) => {
                at_end.remove(&record.partition());
                let id = record
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == MESSAGE_ID_HEADER))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .expect("the message id header");
                by_partition
                    .entry(record.partition())
                    .or_default()
                    .push(ReceivedMessage {
                        message_id: id.parse().expect("a message id"),
                        topic: record.topic().to_owned(),
                        key: record
                            .key()
                            .map(|k| String::from_utf8_lossy(k).into_owned()),
                        payload: record.payload().unwrap_or_default().to_vec(),
                        headers: Default::default(),
                    });
            }
        }
    }
    by_partition.into_values().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_killed_ten_times_lose_nothing() {
    let Some(Setup {
        store,
        brokers,
        topic,
        env,
    }) = setup().await
    else {
        return;
    };
    let committed = pg_orders::seed(&store, &topic, MESSAGES, KEYS).await;
    let watcher = consumer(&brokers);
    let stored = || {
        let count = stored(&watcher, &topic);
        async move { count }
    };
    let kills = pg_orders::kill_relays(|| spawn_relay(&env), KILLS, stored).await;
    let before_clean = stored().await;
    assert!(
        before_clean < MESSAGES as u64,
        "the kills came before the backlog drained"
    );

    // A clean relay finishes the job (after the killed relays' leases expire).
    let mut clean = spawn_relay(&env);
    pg_orders::wait_for_empty_backlog(&store).await;
    clean.kill().expect("stop the clean relay");
    clean.wait().expect("reap");

    let received = tokio::task::spawn_blocking({
        let (brokers, topic) = (brokers.clone(), topic.clone());
        move || read_back(&consumer(&brokers), &topic)
    })
    .await
    .expect("read back");
    let report = check_history(&committed, &received);
    pg_orders::assert_survived("Kafka", kills, before_clean, &report);
    // Tidy up only after a pass, so a failure leaves the evidence behind.
    pg_orders::drop_schema(&store).await;
}
