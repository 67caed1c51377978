//! An orders service on PostgreSQL and RabbitMQ.
//!
//! Each order row and its `order.placed` event are written in ONE sqlx transaction; a relay
//! publishes committed events to the topic exchange `shop`; a consumer reads them from its
//! queue, drops redeliveries by message id and prints them. One order fails and rolls back:
//! its event is never published. At the end a summary is printed, and the program fails if
//! an event was lost, came out of order for its customer, or came from a rolled-back order.
//!
//! Run: `cargo run -p postgres-rabbitmq` (add `-- 1000` for another number of orders). See
//! the README for the services and settings.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use outbox::postgres::{PostgresConfig, PostgresStore, sqlx};
use outbox::rabbitmq::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use outbox::rabbitmq::lapin::types::FieldTable;
use outbox::rabbitmq::lapin::{Channel, Connection, ConnectionProperties};
use outbox::rabbitmq::{ExchangeKind, KEY_HEADER, RabbitMqConfig, RabbitMqPublisher};
use outbox::{CancellationToken, MessageId, NewMessage, Notifier, Relay, RelayConfig, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The example's own schema: its business table and its outbox table live there.
const SCHEMA: &str = "orders_example";
/// The topic exchange events are published to; declared by the publisher.
const EXCHANGE: &str = "shop";
/// The consumer's queue, bound to every `order.*` event.
const QUEUE: &str = "orders-example.order-events";
/// The topic of the events: the routing key on [`EXCHANGE`].
const TOPIC: &str = "order.placed";

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: i64,
    customer: String,
    total_cents: i64,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Places one order: the business row and its event commit together, or not at all.
async fn place_order(
    pool: &sqlx::PgPool,
    store: &PostgresStore,
    order_id: i64,
    customer: &str,
) -> Result<MessageId, BoxError> {
    let total_cents = 1_000 + order_id * 7 % 5_000;
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "INSERT INTO {SCHEMA}.orders (id, customer, total_cents) VALUES ($1, $2, $3)"
    ))
    .bind(order_id)
    .bind(customer)
    .bind(total_cents)
    .execute(&mut *tx)
    .await?;
    let event = OrderPlaced {
        order_id,
        customer: customer.to_owned(),
        total_cents,
    };
    // The key keeps each customer's events in order.
    let message = NewMessage::json(TOPIC, &event)?.with_key(customer);
    store.enqueue(&mut *tx, &message).await?;
    tx.commit().await?;
    Ok(message.message_id())
}

/// The consumer's side of the broker: the exchange, its queue (emptied of earlier runs'
/// events) and the binding.
async fn consumer_channel(amqp_url: &str) -> Result<(Connection, Channel), BoxError> {
    let connection = Connection::connect(
        amqp_url,
        ConnectionProperties::default().with_connection_name("orders-example-consumer".into()),
    )
    .await?;
    let channel = connection.create_channel().await?;
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(QUEUE.into(), durable_queue, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            QUEUE.into(),
            EXCHANGE.into(),
            "order.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_purge(QUEUE.into(), QueuePurgeOptions::default())
        .await?;
    channel.basic_qos(200, BasicQosOptions::default()).await?;
    Ok((connection, channel))
}

/// What the consumer saw.
#[derive(Debug, Default)]
struct Consumed {
    events: usize,
    redeliveries: usize,
    out_of_order: usize,
    unexpected: usize,
    lost: usize,
}

/// Reads the queue, printing each event once, until every id sent on `expected` was seen
/// (or `patience` passes without a new event).
async fn consume(
    channel: Channel,
    expected: oneshot::Receiver<HashSet<MessageId>>,
    patience: Duration,
) -> Result<Consumed, BoxError> {
    let mut deliveries = channel
        .basic_consume(
            QUEUE.into(),
            "orders-example".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut expected = std::pin::pin!(expected);
    let mut wanted: Option<HashSet<MessageId>> = None;
    let mut seen = HashSet::new();
    let mut last_order: HashMap<String, i64> = HashMap::new();
    let mut consumed = Consumed::default();
    loop {
        if wanted
            .as_ref()
            .is_some_and(|wanted| wanted.iter().all(|id| seen.contains(id)))
        {
            break;
        }
        let delivery = tokio::select! {
            ids = &mut expected, if wanted.is_none() => {
                wanted = Some(ids?);
                continue;
            }
            next = tokio::time::timeout(patience, deliveries.next()) => match next {
                Ok(Some(delivery)) => delivery?,
                Ok(None) => return Err("the broker cancelled the consumer".into()),
                Err(_) if wanted.is_some() => break,
                Err(_) => continue,
            },
        };
        let message_id: MessageId = delivery
            .properties
            .message_id()
            .as_ref()
            .ok_or("an event without a message_id")?
            .as_str()
            .parse()?;
        // At-least-once: a lost confirm or a killed relay can deliver an event twice.
        if seen.insert(message_id) {
            let event: OrderPlaced = serde_json::from_slice(&delivery.data)?;
            let key = delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|headers| headers.inner().get(KEY_HEADER))
                .and_then(|value| value.as_long_string())
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
            println!(
                "consumed {} order={} customer={} total={}.{:02} key={} message_id={message_id}",
                delivery.routing_key,
                event.order_id,
                event.customer,
                event.total_cents / 100,
                event.total_cents % 100,
                key.as_deref().unwrap_or("-"),
            );
            consumed.events += 1;
            let previous = last_order.insert(event.customer.clone(), event.order_id);
            if previous.is_some_and(|previous| previous > event.order_id) {
                consumed.out_of_order += 1;
            }
        } else {
            consumed.redeliveries += 1;
        }
        delivery.ack(BasicAckOptions::default()).await?;
    }
    drop(deliveries);
    channel.close(200, "OK".into()).await?;
    let wanted = wanted.unwrap_or_default();
    consumed.unexpected = seen.difference(&wanted).count();
    consumed.lost = wanted.difference(&seen).count();
    Ok(consumed)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let orders: i64 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("the number of orders must be a whole number, got {n:?}"))?,
        None => 100,
    };
    let database_url = env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test");
    let amqp_url = env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");

    // The database: a fresh schema with the business table; the store's migrations add
    // the outbox table next to it.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&database_url)
        .await
        .map_err(|err| format!("PostgreSQL at {}: {err}", outbox::redact_url(&database_url)))?;
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};
         CREATE TABLE {SCHEMA}.orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL, total_cents BIGINT NOT NULL);"
    ))
    .execute(&pool)
    .await?;
    let mut store_config = PostgresConfig::default();
    store_config.schema = SCHEMA.into();
    let store = PostgresStore::new(pool.clone(), store_config)?;
    store.migrate().await?;

    // The broker: the consumer's queue first, so that no event finds nobody bound.
    let (consumer_connection, consumer) = consumer_channel(&amqp_url).await?;
    let (expected_tx, expected_rx) = oneshot::channel();
    let consuming = tokio::spawn(consume(consumer, expected_rx, Duration::from_secs(30)));

    // The relay: events go to the topic exchange `shop`, their topic as routing key.
    let mut publisher_config = RabbitMqConfig::with_exchange(EXCHANGE);
    publisher_config.declare_exchange = Some(ExchangeKind::Topic);
    publisher_config.connection_name = Some("orders-example-relay".into());
    let publisher = RabbitMqPublisher::connect(&amqp_url, publisher_config).await?;
    let notifier = Notifier::new();
    let relay = Relay::new(store.clone(), publisher.clone(), RelayConfig::default())?
        .with_notifier(notifier.clone());
    let shutdown = CancellationToken::new();
    let relaying = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { relay.run(shutdown).await }
    });

    // The service: orders from 17 customers, each order and its event in one transaction.
    let mut committed = HashSet::new();
    for order_id in 1..=orders {
        let customer = format!("customer-{}", order_id % 17);
        committed.insert(place_order(&pool, &store, order_id, &customer).await?);
        notifier.notify();
    }
    // Order 1 again: the INSERT violates the primary key, the transaction rolls back, and
    // its event is never published.
    let rolled_back = place_order(&pool, &store, 1, "customer-1").await.is_err();
    let placed = committed.len();
    expected_tx
        .send(committed)
        .map_err(|_| "the consumer stopped early")?;

    let consumed = consuming.await??;
    shutdown.cancel();
    let relayed = relaying.await??;
    publisher.close().await;
    consumer_connection.close(200, "OK".into()).await?;
    let pending = store.backlog().await?.pending;

    println!(
        "summary: orders={placed} published={} consumed={} redeliveries_dropped={} lost={} out_of_order={} rolled_back_order_rolled_back={rolled_back} unexpected={} still_pending={pending}",
        relayed.published,
        consumed.events,
        consumed.redeliveries,
        consumed.lost,
        consumed.out_of_order,
        consumed.unexpected,
    );
    if consumed.lost > 0 || consumed.out_of_order > 0 || consumed.unexpected > 0 || !rolled_back {
        return Err("events were lost, out of order, or published from a rolled-back order".into());
    }
    Ok(())
}
