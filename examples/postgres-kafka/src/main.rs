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

use std::collections::HashSet;
use std::time::Duration;

use outbox::kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use outbox::kafka::rdkafka::error::KafkaError;
use outbox::kafka::rdkafka::message::{Headers, Message as _};
use outbox::kafka::rdkafka::{ClientConfig, Offset, TopicPartitionList};
use outbox::kafka::{KafkaConfig, KafkaPublisher, MESSAGE_ID_HEADER};
use outbox::postgres::{PostgresConfig, PostgresStore, sqlx};
use outbox::{CancellationToken, NewMessage, Relay, RelayConfig, Store};
use serde::{Deserialize, Serialize};

type BoxResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn setting(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

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
}

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: i64,
    customer: String,
    total_cents: i64,
}

/// The store, migrated, and the service's own table.
async fn open_store(settings: &Settings) -> BoxResult<PostgresStore> {
    let mut config = PostgresConfig::default();
    config.schema = settings.schema.clone();
    let store = PostgresStore::connect(&settings.database_url, config).await?;
    store.migrate().await?;
    sqlx::raw_sql(&format!(
        "CREATE TABLE IF NOT EXISTS {}.orders (
           id BIGSERIAL PRIMARY KEY, customer TEXT NOT NULL, total_cents BIGINT NOT NULL)",
        settings.schema
    ))
    .execute(store.pool())
    .await?;
    Ok(store)
}

/// One order: the row and its event commit together, or neither does.
async fn place_order(
    store: &PostgresStore,
    settings: &Settings,
    customer: &str,
    total_cents: i64,
) -> BoxResult<NewMessage> {
    let mut tx = store.pool().begin().await?;
    let order_id: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO {}.orders (customer, total_cents) VALUES ($1, $2) RETURNING id",
        settings.schema
    ))
    .bind(customer)
    .bind(total_cents)
    .fetch_one(&mut *tx)
    .await?;
    let event = OrderPlaced {
        order_id,
        customer: customer.to_owned(),
        total_cents,
    };
    // The customer is the key: each customer's events go to one partition, in order.
    let message = NewMessage::json(&settings.topic, &event)?.with_key(customer);
    store.enqueue(&mut *tx, &message).await?;
    tx.commit().await?;
    Ok(message)
}

async fn place(settings: &Settings, orders: usize) -> BoxResult<Vec<NewMessage>> {
    let store = open_store(settings).await?;
    let mut placed = Vec::with_capacity(orders);
    for n in 0..orders {
        let customer = format!("customer-{}", n % 20);
        let total = 1_000 + i64::try_from(n)? % 9_000;
        placed.push(place_order(&store, settings, &customer, total).await?);
    }
    println!("placed {orders} orders");
    Ok(placed)
}

fn relay_config() -> BoxResult<RelayConfig> {
    let mut config = RelayConfig::default();
    config.batch_size = setting("RELAY_BATCH", "100").parse()?;
    config.lease_duration = Duration::from_millis(setting("RELAY_LEASE_MS", "30000").parse()?);
    config.shutdown_deadline = config.shutdown_deadline.min(config.lease_duration / 2);
    Ok(config)
}

/// Runs the relay until `shutdown` is cancelled.
async fn relay(settings: &Settings, shutdown: CancellationToken) -> BoxResult {
    let store = open_store(settings).await?;
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
    let relay = Relay::new(store, publisher, relay_config()?)?;
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

/// Reads the topic from the beginning to its current end, partition by partition.
fn read_all(brokers: &str, topic: &str, print: bool) -> BoxResult<Vec<(String, OrderPlaced)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "postgres-kafka-example")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
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
        match consumer.poll(Duration::from_secs(10)) {
            None => return Err(format!("no answer from Kafka at {brokers} for 10 s").into()),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(err)) => return Err(err.into()),
            Some(Ok(record)) => {
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
                let event: OrderPlaced =
                    serde_json::from_slice(record.payload().unwrap_or_default())?;
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
        }
    }
    Ok(events)
}

async fn demo(settings: &Settings, orders: usize) -> BoxResult {
    let placed = place(settings, orders).await?;
    let shutdown = CancellationToken::new();
    let relay_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let settings = Settings::from_env().map_err(|e| e.to_string())?;
            relay(&settings, shutdown).await.map_err(|e| e.to_string())
        }
    });
    let store = open_store(settings).await?;
    while store.backlog().await?.pending > 0 {
        if relay_task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    relay_task.await??;
    let events = consume(settings, false).await?;
    let wanted: HashSet<String> = placed.iter().map(|m| m.message_id().to_string()).collect();
    let arrived = events.iter().filter(|(id, _)| wanted.contains(id)).count();
    println!(
        "summary: placed={} published={} lost={}",
        placed.len(),
        arrived,
        placed.len() - arrived
    );
    if arrived != placed.len() {
        return Err("some events did not arrive".into());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> BoxResult {
    tracing_subscriber::fmt()
        .with_env_filter(setting("RUST_LOG", "warn"))
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings::from_env()?;
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| "demo".into());
    let orders = |arg: Option<String>| -> BoxResult<usize> {
        Ok(arg
            .map(|a| a.parse())
            .transpose()
            .map_err(|_| "ORDERS must be a whole number")?
            .unwrap_or(200))
    };
    match command.as_str() {
        "demo" => demo(&settings, orders(args.next())?).await,
        "place" => place(&settings, orders(args.next())?).await.map(drop),
        "relay" => {
            let shutdown = CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
                }
                on_signal.cancel();
            });
            relay(&settings, shutdown).await
        }
        "consume" => consume(&settings, true)
            .await
            .map(|events| println!("{} events", events.len())),
        other => {
            Err(format!("unknown command {other:?}: use demo, place, relay or consume").into())
        }
    }
}
