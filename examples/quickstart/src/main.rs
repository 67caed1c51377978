//! Quickstart: orders and their `order.placed` events through a SQLite outbox.
//!
//! Each order is inserted together with its event in ONE transaction; a relay publishes
//! committed events as JSON lines on stdout. One order fails and rolls back: its event is
//! never published. At the end the published lines are checked against what committed.
//!
//! Run: `cargo run -p quickstart` (add `-- 1000` for another number of orders).

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use outbox::sqlite::{SqliteStore, rusqlite};
use outbox::testkit::{Committed, WriterPublisher, check_history, read_json_lines};
use outbox::{CancellationToken, NewMessage, Notifier, Relay, RelayConfig, Store};
use serde::Serialize;

#[derive(Serialize)]
struct OrderPlaced {
    order_id: i64,
    customer: String,
    total_cents: i64,
}

/// Places one order: the business row and its event commit together, or not at all.
fn place_order(
    conn: &mut rusqlite::Connection,
    store: &SqliteStore,
    order_id: i64,
    customer: &str,
) -> Result<Committed, Box<dyn std::error::Error + Send + Sync>> {
    let total_cents = 1_000 + order_id * 7 % 5_000;
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO orders (id, customer, total_cents) VALUES (?1, ?2, ?3)",
        rusqlite::params![order_id, customer, total_cents],
    )?;
    let event = OrderPlaced {
        order_id,
        customer: customer.to_owned(),
        total_cents,
    };
    // The key keeps each customer's events in order.
    let message = NewMessage::json("order.placed", &event)?.with_key(customer);
    store.enqueue(&tx, &message)?;
    tx.commit()?;
    Ok(Committed {
        message_id: message.message_id(),
        key: Some(customer.to_owned()),
    })
}

/// stdout for the reader, plus a copy for the final check.
#[derive(Clone, Default)]
struct Tee(Arc<Mutex<Vec<u8>>>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        std::io::stdout().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let orders: i64 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("the number of orders must be a whole number, got {n:?}"))?,
        None => 300,
    };
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("shop.db");

    // The outbox table is created by the store's own migrations.
    let store = SqliteStore::open(&db).await?;
    let notifier = Notifier::new();
    let broker = Tee::default();
    let relay = Relay::new(
        store.clone(),
        WriterPublisher::new(broker.clone()),
        RelayConfig::default(),
    )?
    .with_notifier(notifier.clone());
    let shutdown = CancellationToken::new();
    let relay = Arc::new(relay);
    let running = tokio::spawn({
        let (relay, shutdown) = (relay.clone(), shutdown.clone());
        async move { relay.run(shutdown).await }
    });

    // Producers: plain blocking rusqlite, off the async executor.
    let producer_store = store.clone();
    let producer_notifier = notifier.clone();
    let (committed, rolled_back) = tokio::task::spawn_blocking(move || {
        let mut conn = rusqlite::Connection::open(&db)?;
        SqliteStore::prepare_connection(&conn, std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total_cents INTEGER NOT NULL)",
        )?;
        let mut committed = Vec::new();
        for order_id in 1..=orders {
            let customer = format!("customer-{}", order_id % 17);
            committed.push(place_order(&mut conn, &producer_store, order_id, &customer)?);
            producer_notifier.notify();
        }
        // Order 1 again: the INSERT violates the primary key, the transaction rolls back,
        // and its event is never published.
        let rolled_back = place_order(&mut conn, &producer_store, 1, "customer-1").is_err();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((committed, rolled_back))
    })
    .await??;

    // Stop the relay, then drain whatever is still due.
    shutdown.cancel();
    let run = running.await??;
    let drained = relay.drain().await?;
    let left = store.backlog().await?.pending;

    let written = broker
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let received = read_json_lines(written.as_slice())?;
    let report = check_history(&committed, &received);
    println!(
        "summary: enqueued={} published={} lost={} duplicates={} out_of_order={} rolled_back_order_published={} still_pending={}",
        committed.len(),
        run.published + drained.published,
        report.lost.len(),
        report.duplicate_count(),
        report.order_violations.len(),
        !rolled_back || !report.unexpected.is_empty(),
        left,
    );
    if !report.is_ok() || !rolled_back || left > 0 {
        return Err(format!("the outbox lost or misordered messages: {report}").into());
    }
    Ok(())
}
