//! An orders service on PostgreSQL whose `order.placed` events reach Kafka through the
//! outbox. See README.md for the commands.
//!
//! ```text
//! postgres-kafka demo [ORDERS]   place orders, relay them, read them back, print a summary
//! postgres-kafka place [ORDERS]  place orders (business row + event in one transaction)
//! postgres-kafka relay           run the relay until Ctrl-C / SIGTERM
//! postgres-kafka consume         print the events in the topic
//! ```
//! Settings (environment): DATABASE_URL, KAFKA_BROKERS, OUTBOX_SCHEMA (default
//! `shop_kafka`), KAFKA_TOPIC (default `<schema>.order.placed`), KAFKA_PARTITIONS (default
//! 3), KAFKA_MESSAGE_TIMEOUT_MS (default 10000), RELAY_BATCH (default 100), RELAY_LEASE_MS
//! (default 30000; must be longer than the message timeout plus the request timeout).
//!
//! The orders service itself (table, event, placing orders, relay settings) is the
//! `pg-orders` crate beside this one, shared with `postgres-nats`.

use std::collections::HashSet;
use std::time::Duration;

use outbox::kafka::rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use outbox::kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use outbox::kafka::rdkafka::message::{Headers, Message as _};
use outbox::kafka::rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use outbox::kafka::{KafkaConfig, KafkaPublisher, MESSAGE_ID_HEADER};
use outbox::postgres::PostgresStore;
use outbox::{CancellationToken, Relay};
use pg_orders::{BoxResult, OrderPlaced, setting};

struct Settings {
    database_url: String,
    brokers: String,
    schema: String,
    topic: String,
    partitions: i32,
}

impl Settings {
    fn from_env() -> BoxResult<Self> {
        let schema = setting("OUTBOX_SCHEMA", "shop_kafka");
        Ok(Settings {
            database_url: setting("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
            brokers: setting("KAFKA_BROKERS", "127.0.0.1:9092"),
            topic: setting("KAFKA_TOPIC", &format!("{schema}.order.placed")),
            partitions: setting("KAFKA_PARTITIONS", "3")
                .parse()
                .map_err(|_| "KAFKA_PARTITIONS must be a whole number")?,
            schema,
        })
    }

    async fn store(&self) -> BoxResult<PostgresStore> {
        pg_orders::open_store(&self.database_url, &self.schema).await
    }
}

/// Runs the relay until `shutdown` is cancelled.
async fn relay(settings: &Settings, shutdown: CancellationToken) -> BoxResult {
    let store = settings.store().await?;
    let mut config = KafkaConfig::default();
    config.message_timeout =
        Duration::from_millis(setting("KAFKA_MESSAGE_TIMEOUT_MS", "10000").parse()?);
    config.request_timeout = config.request_timeout.min(config.message_timeout / 2);
    let publisher = KafkaPublisher::connect(&settings.brokers, config).await?;
    // Kafka brokers (tansu among them) may not create topics on first use.
    publisher
        .ensure_topic(&settings.topic, settings.partitions, 1)
        .await?;
    // Refused here if the lease is not longer than the publisher's delivery timeout.
    let relay = Relay::new(store, publisher, pg_orders::relay_config()?)?;
    let stats = relay.run(shutdown).await?;
    eprintln!("relay stopped: {stats:?}");
    Ok(())
}

/// Reads every event in the topic once (dropping redeliveries by message id).
async fn consume(settings: &Settings, print: bool) -> BoxResult<Vec<(String, OrderPlaced)>> {
    let (brokers, topic) = (settings.brokers.clone(), settings.topic.clone());
    let events = tokio::task::spawn_blocking(move || read_all(&brokers, &topic, print)).await??;
    Ok(events)
}

/// The reader's librdkafka context: "end of partition" is how it knows it is done, not an
/// error to log.
struct EndIsNoError;

impl ClientContext for EndIsNoError {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(%error, reason, "librdkafka error");
        }
    }
}

impl ConsumerContext for EndIsNoError {}

/// Reads the topic from the beginning to its end, partition by partition.
fn read_all(brokers: &str, topic: &str, print: bool) -> BoxResult<Vec<(String, OrderPlaced)>> {
    let consumer: BaseConsumer<EndIsNoError> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "postgres-kafka-example")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(EndIsNoError)?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut assignment = TopicPartitionList::new();
    let mut partitions = 0;
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
        partitions += 1;
    }
    consumer.assign(&assignment)?;
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    let mut at_end = HashSet::new();
    while at_end.len() < partitions {
        let record = match consumer.poll(timeout) {
            None => return Err(format!("no answer from Kafka at {brokers} for 10 s").into()),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
                continue;
            }
            Some(record) => record?,
        };
        at_end.remove(&record.partition());
        let id = record
            .headers()
            .and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == MESSAGE_ID_HEADER)
                    .and_then(|h| h.value)
            })
            .map(|value| String::from_utf8_lossy(value).into_owned())
            .unwrap_or_default();
        let key = String::from_utf8_lossy(record.key().unwrap_or_default()).into_owned();
        let event: OrderPlaced = serde_json::from_slice(record.payload().unwrap_or_default())?;
        if seen.insert(id.clone()) {
            if print {
                println!(
                    "{key} order {} total {} (message {id}, partition {})",
                    event.order_id,
                    event.total_cents,
                    record.partition()
                );
            }
            events.push((id, event));
        }
    }
    Ok(events)
}

async fn demo(settings: &Settings, orders: usize) -> BoxResult {
    let store = settings.store().await?;
    let placed = pg_orders::place(&store, &settings.topic, orders).await?;
    let read_back = async {
        let events = consume(settings, false).await?;
        Ok(events.into_iter().map(|(id, _)| id).collect())
    };
    pg_orders::demo(
        &store,
        &placed,
        |shutdown| async move {
            let settings = Settings::from_env().map_err(|e| e.to_string())?;
            relay(&settings, shutdown).await.map_err(|e| e.to_string())
        },
        read_back,
    )
    .await
}

#[tokio::main]
async fn main() -> BoxResult {
    pg_orders::init_tracing();
    let settings = Settings::from_env()?;
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| "demo".into());
    match command.as_str() {
        "demo" => demo(&settings, pg_orders::orders_arg(args.next())?).await,
        "place" => {
            let store = settings.store().await?;
            pg_orders::place(&store, &settings.topic, pg_orders::orders_arg(args.next())?)
                .await
                .map(drop)
        }
        "relay" => relay(&settings, pg_orders::cancel_on_signal()).await,
        "consume" => consume(&settings, true)
            .await
            .map(|events| println!("{} events", events.len())),
        other => {
            Err(format!("unknown command {other:?}: use demo, place, relay or consume").into())
        }
    }
}
