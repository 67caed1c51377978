//! A test's own topic on the Kafka broker under test (or on a librdkafka mock cluster),
//! and reading it back.

#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use outbox_kafka::rdkafka::admin::{AdminClient, AdminOptions};
use outbox_kafka::rdkafka::client::DefaultClientContext;
use outbox_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use outbox_kafka::rdkafka::error::KafkaError;
use outbox_kafka::rdkafka::message::{Headers, Message as _};
use outbox_kafka::rdkafka::{ClientConfig, Offset, TopicPartitionList};
use outbox_kafka::{KafkaConfig, KafkaPublisher, MESSAGE_ID_HEADER};
use outbox_testkit::services::{unavailable, url_from_env};
use outbox_testkit::{PublisherHarness, ReceivedMessage, run_detached};

/// The Kafka brokers under test.
pub fn brokers() -> String {
    url_from_env("OUTBOX_TEST_KAFKA_BROKERS", "127.0.0.1:9092")
}

/// A topic name unique to the calling test.
pub fn unique_topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A publisher on the brokers under test with the settings `config`, once a broker
/// answered; `None` (after a `skipped:` line, or a panic when services are required) when
/// none does.
pub async fn reachable(config: KafkaConfig) -> Option<KafkaPublisher> {
    let brokers = brokers();
    match KafkaPublisher::connect(&brokers, config).await {
        Ok(publisher) => Some(publisher),
        Err(err) => {
            unavailable("Kafka", &brokers, &err);
            None
        }
    }
}

/// A publisher and its own topic on the brokers under test; the topic is deleted on drop.
pub struct KafkaHarness {
    pub publisher: KafkaPublisher,
    pub brokers: String,
    pub topic: String,
}

impl KafkaHarness {
    /// A harness with one partition and the default publisher settings.
    pub async fn connect() -> Option<Self> {
        Self::connect_with(1, KafkaConfig::default()).await
    }

    /// A harness with `partitions` partitions and the publisher settings `config`.
    pub async fn connect_with(partitions: i32, config: KafkaConfig) -> Option<Self> {
        let publisher = reachable(config).await?;
        let topic = unique_topic("outbox-test");
        let created = publisher
            .ensure_topic(&topic, partitions, 1)
            .await
            .expect("creating the test's topic");
        assert!(created, "a fresh topic name");
        Some(KafkaHarness {
            publisher,
            brokers: brokers(),
            topic,
        })
    }

    /// Everything the topic holds; see [`read_topic`].
    pub async fn stored(&self, at_least: usize) -> Vec<ReceivedMessage> {
        read_topic(&self.brokers, &self.topic, at_least).await
    }
}

impl PublisherHarness for KafkaHarness {
    type Publisher = KafkaPublisher;

    fn publisher(&self) -> &KafkaPublisher {
        &self.publisher
    }

    fn topic(&self) -> String {
        self.topic.clone()
    }

    async fn received(&self, at_least: usize) -> Vec<ReceivedMessage> {
        self.stored(at_least).await
    }
}

impl Drop for KafkaHarness {
    fn drop(&mut self) {
        let (brokers, topic) = (self.brokers.clone(), self.topic.clone());
        run_detached(async move {
            let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create();
            if let Ok(admin) = admin {
                let _ = admin
                    .delete_topics(&[topic.as_str()], &AdminOptions::new())
                    .await;
            }
        });
    }
}

/// A record after its partition: `(partition, received)`.
pub type Record = (i32, ReceivedMessage);

/// Everything `topic` holds, partition by partition in offset order, read once at least
/// `at_least` records are there and every partition was read to its end, or once five
/// seconds have passed.
pub async fn read_topic(brokers: &str, topic: &str, at_least: usize) -> Vec<ReceivedMessage> {
    read_records(brokers, topic, at_least)
        .await
        .into_iter()
        .map(|(_, record)| record)
        .collect()
}

/// Like [`read_topic`], keeping each record's partition.
pub async fn read_records(brokers: &str, topic: &str, at_least: usize) -> Vec<Record> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || read_blocking(&brokers, &topic, at_least))
        .await
        .expect("the reader finished")
}

fn read_blocking(brokers: &str, topic: &str, at_least: usize) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique_topic("outbox-test-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("a consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("the topic's metadata");
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    for &partition in &partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("assigning a partition");
    }
    consumer.assign(&assignment).expect("assign");

    let mut by_partition: BTreeMap<i32, Vec<ReceivedMessage>> = BTreeMap::new();
    let mut at_end: HashSet<i32> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let total: usize = by_partition.values().map(Vec::len).sum();
        if (total >= at_least && at_end.len() == partitions.len()) || Instant::now() >= deadline {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(err)) => panic!("reading topic {topic}: {err}"),
            Some(Ok(record)) => {
                at_end.remove(&record.partition());
                by_partition
                    .entry(record.partition())
                    .or_default()
                    .push(to_received(&record));
            }
        }
    }
    by_partition
        .into_iter()
        .flat_map(|(partition, records)| records.into_iter().map(move |r| (partition, r)))
        .collect()
}

/// A record as the testkit compares it: the id from its header, the key, the other headers.
fn to_received(record: &impl outbox_kafka::rdkafka::message::Message) -> ReceivedMessage {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    if let Some(record_headers) = record.headers() {
        for header in record_headers.iter() {
            let value = String::from_utf8(header.value.unwrap_or_default().to_vec())
                .expect("header values are text");
            headers.insert(header.key.to_owned(), value);
        }
    }
    let message_id = headers
        .remove(MESSAGE_ID_HEADER)
        .expect("every record carries the message id header")
        .parse()
        .expect("the message id header holds a message id");
    let key = record
        .key()
        .map(|k| String::from_utf8(k.to_vec()).expect("keys are text"));
    ReceivedMessage {
        message_id,
        topic: record.topic().to_owned(),
        key,
        payload: record.payload().unwrap_or_default().to_vec(),
        headers,
    }
}
