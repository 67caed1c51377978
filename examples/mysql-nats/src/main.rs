//! An orders service on MySQL / MariaDB whose `order.placed` events reach NATS JetStream
//! through the outbox. See README.md for the commands.
//!
//! ```text
//! mysql-nats demo [ORDERS]   place orders with a relay running, read them back, print a summary
//! mysql-nats place [ORDERS]  place orders (business row + event in one transaction)
//! mysql-nats relay           run the relay until Ctrl-C / SIGTERM
//! mysql-nats consume         print the events in the stream
//! ```
//! Settings (environment): DATABASE_URL, NATS_URL, OUTBOX_TABLE (default `order_events`),
//! ORDERS_TABLE (default `orders`), NATS_STREAM (default `MYSQL_ORDERS`), EVENT_SUBJECT
//! (default `mysql-shop.order.placed`), RELAY_BATCH (default 100), RELAY_LEASE_MS
//! (default 30000), RELAY_POLL_MAX_MS (default 1000).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use outbox::mysql::{MySqlConfig, MySqlStore, sqlx};
use outbox::nats::{KEY_HEADER, MESSAGE_ID_HEADER, NatsConfig, NatsPublisher, async_nats};
use outbox::{CancellationToken, NewMessage, Notifier, Relay, RelayConfig, Store};
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
    outbox_table: String,
    orders_table: String,
    stream: String,
    subject: String,
}

impl Settings {
    fn from_env() -> Self {
        Settings {
            database_url: setting("DATABASE_URL", "mysql://root@127.0.0.1:3306/test"),
            nats_url: setting("NATS_URL", "nats://127.0.0.1:4222"),
            outbox_table: setting("OUTBOX_TABLE", "order_events"),
            orders_table: setting("ORDERS_TABLE", "orders"),
            stream: setting("NATS_STREAM", "MYSQL_ORDERS"),
            subject: setting("EVENT_SUBJECT", "mysql-shop.order.placed"),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: u64,
    customer: String,
    total_cents: i64,
}

/// The store, migrated, and the service's own table.
async fn open_store(settings: &Settings) -> BoxResult<MySqlStore> {
    let mut config = MySqlConfig::default();
    config.table = settings.outbox_table.clone();
    let store = MySqlStore::connect(&settings.database_url, config).await?;
    store.migrate().await?;
    outbox::validate_identifier("orders table", &settings.orders_table)?;
    let create = format!(
        "CREATE TABLE IF NOT EXISTS `{}` (
           id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
           customer VARCHAR(100) NOT NULL,
           total_cents BIGINT NOT NULL
         ) ENGINE = InnoDB",
        settings.orders_table
    );
    sqlx::raw_sql(&create).execute(store.pool()).await?;
    Ok(store)
}

/// The stream that keeps the events (created if missing), on the subject's first token.
async fn stream(
    settings: &Settings,
) -> BoxResult<(async_nats::Client, async_nats::jetstream::stream::Stream)> {
    let client = async_nats::connect(&settings.nats_url).await?;
    let jetstream = async_nats::jetstream::new(client.clone());
    let root = settings
        .subject
        .split('.')
        .next()
        .unwrap_or(&settings.subject);
    let stream = jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{root}.>")],
            ..Default::default()
        })
        .await?;
    Ok((client, stream))
}

/// One order: the row and its event commit together, or neither does.
async fn place_order(
    store: &MySqlStore,
    settings: &Settings,
    customer: &str,
    total_cents: i64,
) -> BoxResult<NewMessage> {
    let mut tx = store.pool().begin().await?;
    let insert = format!(
        "INSERT INTO `{}` (customer, total_cents) VALUES (?, ?)",
        settings.orders_table
    );
    let order_id = sqlx::query(&insert)
        .bind(customer)
        .bind(total_cents)
        .execute(&mut *tx)
        .await?
        .last_insert_id();
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

/// Places `orders` orders; wakes `notifier` (if any) after each commit.
async fn place(
    store: &MySqlStore,
    settings: &Settings,
    orders: usize,
    notifier: Option<&Notifier>,
) -> BoxResult<Vec<NewMessage>> {
    let mut placed = Vec::with_capacity(orders);
    for n in 0..orders {
        let customer = format!("customer-{}", n % 20);
        let total = 1_000 + i64::try_from(n)? % 9_000;
        placed.push(place_order(store, settings, &customer, total).await?);
        if let Some(notifier) = notifier {
            notifier.notify();
        }
    }
    println!("placed {orders} orders");
    Ok(placed)
}

fn relay_config() -> BoxResult<RelayConfig> {
    let mut config = RelayConfig::default();
    config.batch_size = setting("RELAY_BATCH", "100").parse()?;
    config.lease_duration = Duration::from_millis(setting("RELAY_LEASE_MS", "30000").parse()?);
    config.shutdown_deadline = config.shutdown_deadline.min(config.lease_duration / 2);
    // No LISTEN/NOTIFY in MySQL: producers in other processes are seen at the next poll.
    config.poll_interval_max = Duration::from_millis(setting("RELAY_POLL_MAX_MS", "1000").parse()?);
    Ok(config)
}

/// Runs the relay until `shutdown` is cancelled, woken early by `notifier`.
async fn relay(
    store: MySqlStore,
    settings: &Settings,
    notifier: Notifier,
    shutdown: CancellationToken,
) -> BoxResult {
    let (client, _) = stream(settings).await?;
    let publisher = NatsPublisher::new(client, NatsConfig::default())?;
    let relay = Relay::new(store, publisher, relay_config()?)?.with_notifier(notifier);
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

/// Places orders while a relay runs in the same process (woken by the in-process
/// notifier after each commit), waits until everything is published, then reads the
/// stream back and checks that every event arrived.
async fn demo(settings: &Settings, orders: usize) -> BoxResult {
    let store = open_store(settings).await?;
    let notifier = Notifier::new();
    let shutdown = CancellationToken::new();
    let relay_task = tokio::spawn({
        let (store, notifier, shutdown) = (store.clone(), notifier.clone(), shutdown.clone());
        async move {
            relay(store, &Settings::from_env(), notifier, shutdown)
                .await
                .map_err(|e| e.to_string())
        }
    });
    let started = Instant::now();
    let placed = place(&store, settings, orders, Some(&notifier)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.backlog().await?.pending > 0 {
        if Instant::now() > deadline {
            return Err("the relay did not publish everything within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    relay_task.await??;
    let events = consume(settings, false).await?;
    let wanted: HashSet<String> = placed.iter().map(|m| m.message_id().to_string()).collect();
    let arrived = events.iter().filter(|(id, _)| wanted.contains(id)).count();
    println!(
        "summary: placed={} published={} lost={} in {:.2} s",
        placed.len(),
        arrived,
        placed.len() - arrived,
        elapsed.as_secs_f64()
    );
    if arrived != placed.len() {
        return Err("some events did not arrive".into());
    }
    Ok(())
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = async {
                match term.as_mut() {
                    Some(term) => { term.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
        shutdown.cancel();
    });
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
        "place" => {
            let store = open_store(&settings).await?;
            place(&store, &settings, orders(args.next())?, None)
                .await
                .map(drop)
        }
        "relay" => {
            let store = open_store(&settings).await?;
            let shutdown = CancellationToken::new();
            cancel_on_signal(shutdown.clone());
            relay(store, &settings, Notifier::new(), shutdown).await
        }
        "consume" => consume(&settings, true)
            .await
            .map(|events| println!("{} events", events.len())),
        other => {
            Err(format!("unknown command {other:?}: use demo, place, relay or consume").into())
        }
    }
}
