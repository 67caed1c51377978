//! An orders service on PostgreSQL whose `order.placed` events reach NATS JetStream
//! through the outbox. See README.md for the commands.
//!
//! ```text
//! postgres-nats demo [ORDERS]   place orders, relay them, read them back, print a summary
//! postgres-nats place [ORDERS]  place orders (business row + event in one transaction)
//! postgres-nats relay           run the relay until Ctrl-C / SIGTERM
//! postgres-nats consume         print the events in the stream
//! ```
//! Settings (environment): DATABASE_URL, NATS_URL, OUTBOX_SCHEMA (default `shop`),
//! NATS_STREAM (default `ORDERS`), EVENT_SUBJECT (default `shop.order.placed`),
//! RELAY_BATCH (default 100), RELAY_LEASE_MS (default 30000).

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use outbox::nats::{KEY_HEADER, MESSAGE_ID_HEADER, NatsConfig, NatsPublisher, async_nats};
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
    nats_url: String,
    schema: String,
    stream: String,
    subject: String,
}

impl Settings {
    fn from_env() -> Self {
        let schema = setting("OUTBOX_SCHEMA", "shop");
        Settings {
            database_url: setting("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
            nats_url: setting("NATS_URL", "nats://127.0.0.1:4222"),
            stream: setting("NATS_STREAM", "ORDERS"),
            subject: setting("EVENT_SUBJECT", &format!("{schema}.order.placed")),
            schema,
        }
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

/// The stream that keeps the events (created if missing).
async fn stream(
    settings: &Settings,
) -> BoxResult<(async_nats::Client, async_nats::jetstream::stream::Stream)> {
    let client = async_nats::connect(&settings.nats_url).await?;
    let jetstream = async_nats::jetstream::new(client.clone());
    let stream = jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{}.>", settings.schema)],
            ..Default::default()
        })
        .await?;
    Ok((client, stream))
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
    // The customer is the key: each customer's events stay in order.
    let message = NewMessage::json(&settings.subject, &event)?.with_key(customer);
    store.enqueue(&mut *tx, &message).await?;
    tx.commit().await?;
    Ok(message)
}

async fn place(settings: &Settings, orders: usize) -> BoxResult<Vec<NewMessage>> {
    let store = open_store(settings).await?;
    let mut placed = Vec::with_capacity(orders);
    for n in 0..orders {
        let customer = format!("customer-{}", n % 20);
        placed.push(
            place_order(
                &store,
                settings,
                &customer,
                1_000 + i64::try_from(n)? % 9_000,
            )
            .await?,
        );
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
    let (client, _) = stream(settings).await?;
    let publisher = NatsPublisher::new(client, NatsConfig::default())?;
    let relay = Relay::new(store, publisher, relay_config()?)?;
    let stats = relay.run(shutdown).await?;
    eprintln!("relay stopped: {stats:?}");
    Ok(())
}

/// Reads every event in the stream once (dropping redeliveries by message id).
async fn consume(settings: &Settings, print: bool) -> BoxResult<Vec<(String, OrderPlaced)>> {
    let (_, stream) = stream(settings).await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: settings.subject.clone(),
            ..Default::default()
        })
        .await?;
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(500))
            .messages()
            .await?;
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message?;
            got += 1;
            let headers = message.headers.clone().unwrap_or_default();
            let id = header(&headers, MESSAGE_ID_HEADER);
            let key = header(&headers, KEY_HEADER);
            let event: OrderPlaced = serde_json::from_slice(&message.payload)?;
            message.ack().await?;
            if seen.insert(id.clone()) {
                if print {
                    println!(
                        "{key} order {} total {} (message {id})",
                        event.order_id, event.total_cents
                    );
                }
                events.push((id, event));
            }
        }
        if got == 0 {
            return Ok(events);
        }
    }
}

/// A header's value by name. (async-nats files `Nats-Msg-Id` under a standard name that
/// a plain string lookup misses, so compare names as text.)
fn header(headers: &async_nats::HeaderMap, name: &str) -> String {
    headers
        .iter()
        .find(|(n, _)| AsRef::<str>::as_ref(*n) == name)
        .and_then(|(_, values)| values.last())
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

async fn demo(settings: &Settings, orders: usize) -> BoxResult {
    let placed = place(settings, orders).await?;
    let shutdown = CancellationToken::new();
    let relay_task = tokio::spawn({
        let (settings, shutdown) = (Settings::from_env(), shutdown.clone());
        async move { relay(&settings, shutdown).await.map_err(|e| e.to_string()) }
    });
    let store = open_store(settings).await?;
    while store.backlog().await?.pending > 0 {
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
    let settings = Settings::from_env();
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
