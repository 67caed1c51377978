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
//!
//! The orders service itself (table, event, placing orders, relay settings) is the
//! `pg-orders` crate beside this one, shared with `postgres-kafka`.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use outbox::nats::{KEY_HEADER, MESSAGE_ID_HEADER, NatsConfig, NatsPublisher, async_nats};
use outbox::postgres::PostgresStore;
use outbox::{CancellationToken, Relay};
use pg_orders::{BoxResult, OrderPlaced, setting};

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

    async fn store(&self) -> BoxResult<PostgresStore> {
        pg_orders::open_store(&self.database_url, &self.schema).await
    }
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

/// Runs the relay until `shutdown` is cancelled.
async fn relay(settings: &Settings, shutdown: CancellationToken) -> BoxResult {
    let store = settings.store().await?;
    let (client, _) = stream(settings).await?;
    let publisher = NatsPublisher::new(client, NatsConfig::default())?;
    let relay = Relay::new(store, publisher, pg_orders::relay_config()?)?;
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
    let store = settings.store().await?;
    let placed = pg_orders::place(&store, &settings.subject, orders).await?;
    let read_back = async {
        let events = consume(settings, false).await?;
        Ok(events.into_iter().map(|(id, _)| id).collect())
    };
    pg_orders::demo(
        &store,
        &placed,
        |shutdown| async move {
            relay(&Settings::from_env(), shutdown)
                .await
                .map_err(|e| e.to_string())
        },
        read_back,
    )
    .await
}

#[tokio::main]
async fn main() -> BoxResult {
    pg_orders::init_tracing();
    let settings = Settings::from_env();
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| "demo".into());
    match command.as_str() {
        "demo" => demo(&settings, pg_orders::orders_arg(args.next())?).await,
        "place" => {
            let store = settings.store().await?;
            pg_orders::place(
                &store,
                &settings.subject,
                pg_orders::orders_arg(args.next())?,
            )
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
