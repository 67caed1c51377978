//! PostgreSQL benchmarks: burn-down, claim cost with a large backlog, producer overhead,
//! commit-to-ack latency, and the naive "seed loop" as a baseline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use outbox::postgres::{PostgresConfig, PostgresStore, spawn_listener, sqlx};
use outbox::{
    CancellationToken, ClaimOptions, Message, NewMessage, Notifier, PublishOutcome, Publisher,
    Relay, RelayConfig, SettleAction, Settlement, Store,
};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::args::{Args, keys_label, message, peak_rss_mib, quantile};
use crate::publishers::{Broker, TOPIC};

type BoxResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

pub(crate) const SCHEMA: &str = "outbox_bench";

fn url() -> String {
    std::env::var("OUTBOX_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub(crate) async fn pool(connections: u32) -> BoxResult<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(connections)
        .connect(&url())
        .await?)
}

/// A fresh, migrated outbox in the bench schema, plus an `orders` table for producers.
pub(crate) async fn fresh_store(pool: &PgPool, notify: bool) -> BoxResult<PostgresStore> {
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};
         CREATE TABLE {SCHEMA}.orders (id BIGSERIAL PRIMARY KEY, customer TEXT NOT NULL, total BIGINT NOT NULL);
         CREATE TABLE {SCHEMA}.seed_outbox (id BIGSERIAL PRIMARY KEY, topic TEXT NOT NULL, msg_key TEXT,
           payload BYTEA NOT NULL, processed BOOLEAN NOT NULL DEFAULT false);"
    ))
    .execute(pool)
    .await?;
    let mut config = PostgresConfig::default();
    config.schema = SCHEMA.into();
    config.notify_on_enqueue = notify;
    let store = PostgresStore::new(pool.clone(), config)?;
    store.migrate().await?;
    Ok(store)
}

/// Fills the outbox with `count` messages in transactions of 1,000 (not timed).
pub(crate) async fn fill(
    store: &PostgresStore,
    count: usize,
    payload: usize,
    keys: usize,
) -> BoxResult {
    let body = vec![b'x'; payload];
    for start in (0..count).step_by(1_000) {
        let batch: Vec<NewMessage> = (start..(start + 1_000).min(count))
            .map(|n| message(TOPIC, &body, n, keys))
            .collect();
        store.enqueue_batch(store.pool(), &batch).await?;
    }
    Ok(())
}

pub(crate) fn relay_config(batch: usize) -> RelayConfig {
    let mut config = RelayConfig::default();
    config.batch_size = batch;
    config
}

/// Runs `relays` relays until the backlog is empty; returns the elapsed time. A message
/// that went dead fails the run: it left the backlog without reaching the broker.
pub(crate) async fn drain_with<P: Publisher + Clone>(
    store: &PostgresStore,
    publisher: &P,
    relays: usize,
    batch: usize,
) -> BoxResult<Duration> {
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..relays {
        let relay = Relay::new(store.clone(), publisher.clone(), relay_config(batch))?;
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move { relay.run(shutdown).await }));
    }
    while store.backlog().await?.pending > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    for task in tasks {
        let stats = task.await??;
        if stats.dead > 0 {
            return Err(format!("{} messages went dead: {stats:?}", stats.dead).into());
        }
    }
    Ok(elapsed)
}

/// `pg-burndown` (`--broker nats` by default) and `kafka-burndown` (`--broker kafka`):
/// relay throughput draining a pre-filled backlog.
pub(crate) async fn burndown(mut args: Args, default_broker: &str) -> BoxResult {
    let messages = args.one("--messages", 100_000)?;
    let payload = args.one("--payload", 1024)?;
    let batches = args.list("--batch", &[100, 500])?;
    let key_spreads = args.list("--keys", &[100, 10, 0])?;
    let relay_counts = args.list("--relays", &[1, 2])?;
    let broker = Broker::connect(&args.text("--broker", default_broker)).await?;
    args.finish()?;
    let pool = pool(16).await?;
    println!(
        "PostgreSQL -> {}, {messages} messages of {payload} B, load average before: {}",
        broker.label(),
        load_average()
    );
    println!("| keys | batch | relays | drain s | events/s | load average (1 min) |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for &keys in &key_spreads {
        for &batch in &batches {
            for &relays in &relay_counts {
                let store = fresh_store(&pool, false).await?;
                fill(&store, messages, payload, keys).await?;
                sqlx::raw_sql(&format!("VACUUM ANALYZE {SCHEMA}.outbox_messages"))
                    .execute(&pool)
                    .await?;
                let elapsed = drain_with(&store, &broker, relays, batch).await?;
                println!(
                    "| {} | {batch} | {relays} | {:.2} | {:.0} | {} |",
                    keys_label(keys),
                    elapsed.as_secs_f64(),
                    messages as f64 / elapsed.as_secs_f64(),
                    load_average()
                );
            }
        }
    }
    Ok(())
}

/// `pg-claim-cost`: claim latency with a small and a large backlog, and relay memory while
/// draining part of the large one.
pub(crate) async fn claim_cost(mut args: Args) -> BoxResult {
    let backlogs = args.list("--backlog", &[10_000, 1_000_000])?;
    let batch = args.one("--batch", 500)?;
    let broker = Broker::connect(&args.text("--broker", "memory")).await?;
    args.finish()?;
    let pool = pool(16).await?;
    println!(
        "claim of {batch} (then release), 50 times per backlog; relay memory after draining 200,000"
    );
    println!("| pending rows | claim p50 ms | claim p99 ms | relay peak RSS MiB |");
    println!("| ---: | ---: | ---: | ---: |");
    for &backlog in &backlogs {
        let store = fresh_store(&pool, false).await?;
        // Filled in SQL: 1 KiB payloads over 100 keys, far faster than through the client.
        sqlx::query(&format!(
            "INSERT INTO {SCHEMA}.outbox_messages (message_id, topic, msg_key, payload, headers, available_at)
             SELECT gen_random_uuid(), '{TOPIC}', 'key-' || (n % 100), convert_to(repeat('x', 1024), 'UTF8'), '{{}}', now()
             FROM generate_series(1, $1::bigint) AS n"
        ))
        .bind(i64::try_from(backlog)?)
        .execute(&pool)
        .await?;
        sqlx::raw_sql(&format!("VACUUM ANALYZE {SCHEMA}.outbox_messages"))
            .execute(&pool)
            .await?;
        let mut times = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            let claim = store
                .claim(&ClaimOptions::new(batch, Duration::from_secs(30)))
                .await?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            let release: Vec<Settlement> = claim
                .messages
                .iter()
                .map(|m| Settlement {
                    id: m.id,
                    action: SettleAction::Release,
                })
                .collect();
            store.settle(&claim.lease, &release).await?;
        }
        times.sort_by(f64::total_cmp);
        // Relay memory: drain part of the backlog (the relay holds batch x in-flight messages).
        let shutdown = CancellationToken::new();
        let relay = Relay::new(store.clone(), broker.clone(), relay_config(batch))?;
        let running = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { relay.run(shutdown).await }
        });
        let target = backlog.saturating_sub(200_000) as u64;
        while store.backlog().await?.pending > target {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        running.await??;
        println!(
            "| {backlog} | {:.2} | {:.2} | {:.1} |",
            quantile(&times, 0.5),
            quantile(&times, 0.99),
            peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// One producer transaction: a business row, and the order's event unless `outbox` is off.
async fn place_order(pool: &PgPool, store: &PostgresStore, n: usize, outbox: bool) -> BoxResult {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "INSERT INTO {SCHEMA}.orders (customer, total) VALUES ($1, $2)"
    ))
    .bind(format!("customer-{}", n % 1_000))
    .bind(i64::try_from(n % 10_000)?)
    .execute(&mut *tx)
    .await?;
    if outbox {
        let event =
            NewMessage::new(TOPIC, vec![b'x'; 256]).with_key(format!("customer-{}", n % 1_000));
        store.enqueue(&mut *tx, &event).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// `pg-producers`: business transactions/s at N clients without the outbox, with it, and
/// with it plus NOTIFY; each outbox variant with a relay draining at the same time.
pub(crate) async fn producers(mut args: Args) -> BoxResult {
    let clients = args.one("--clients", 16)?;
    let seconds = args.one("--seconds", 10)?;
    let broker = Broker::connect(&args.text("--broker", "memory")).await?;
    args.finish()?;
    let clients_u32 = u32::try_from(clients)?;
    let pool = pool(clients_u32 + 4).await?;
    println!(
        "{clients} clients, {seconds} s per variant; each transaction inserts one order row (+ one 256 B event)"
    );
    println!("| variant | transactions/s | vs. no outbox |");
    println!("| --- | ---: | ---: |");
    let mut baseline = None;
    // (label, enqueue, relay running, NOTIFY)
    for (label, outbox, relay, notify) in [
        ("no outbox (baseline)", false, false, false),
        ("enqueue in the transaction, no relay", true, false, false),
        (
            "enqueue in the transaction, relay polling",
            true,
            true,
            false,
        ),
        ("enqueue + NOTIFY, relay listening", true, true, true),
    ] {
        let store = fresh_store(&pool, notify).await?;
        let shutdown = CancellationToken::new();
        let notifier = Notifier::new();
        let listener = notify.then(|| spawn_listener(&store, notifier.clone()));
        let relay_task = relay.then(|| {
            let relay = Relay::new(store.clone(), broker.clone(), relay_config(500))
                .map(|r| r.with_notifier(notifier.clone()));
            let shutdown = shutdown.clone();
            tokio::spawn(async move { relay?.run(shutdown).await })
        });
        let deadline = Instant::now() + Duration::from_secs(u64::try_from(seconds)?);
        let started = Instant::now();
        let mut workers = Vec::new();
        for client in 0..clients {
            let (pool, store) = (pool.clone(), store.clone());
            workers.push(tokio::spawn(async move {
                let mut done = 0usize;
                while Instant::now() < deadline {
                    place_order(&pool, &store, client * 1_000_000 + done, outbox)
                        .await
                        .map_err(|e| e.to_string())?;
                    done += 1;
                }
                Ok::<_, String>(done)
            }));
        }
        let mut total = 0;
        for worker in workers {
            total += worker.await??;
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        shutdown.cancel();
        if let Some(task) = relay_task {
            task.await??;
        }
        if let Some(listener) = listener {
            listener.abort();
        }
        let base = *baseline.get_or_insert(rate);
        println!(
            "| {label} | {rate:.0} | {:+.1}% |",
            (rate / base - 1.0) * 100.0
        );
    }
    Ok(())
}

/// Publishes through `inner` and records, per message id, when the broker acknowledged.
#[derive(Clone)]
struct AckClock {
    inner: Broker,
    acked: Arc<std::sync::Mutex<Vec<(outbox::MessageId, Instant)>>>,
}

impl Publisher for AckClock {
    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        let outcomes = self.inner.publish(batch).await;
        let now = Instant::now();
        let mut acked = self
            .acked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (message, outcome) in batch.iter().zip(&outcomes) {
            if outcome.is_acked() {
                acked.push((message.message_id, now));
            }
        }
        outcomes
    }
}

/// `pg-latency`: commit -> broker ack latency at a steady offered rate, for each wake-up.
pub(crate) async fn latency(mut args: Args) -> BoxResult {
    let rate = args.one("--rate", 1_000)?;
    let seconds = args.one("--seconds", 10)?;
    let broker = Broker::connect(&args.text("--broker", "nats")).await?;
    args.finish()?;
    let pool = pool(24).await?;
    println!(
        "{rate} events/s offered for {seconds} s, one event per transaction, to {}",
        broker.label()
    );
    println!("| wake-up | p50 ms | p99 ms | max ms |");
    println!("| --- | ---: | ---: | ---: |");
    for (label, in_process, notify) in [
        ("in-process Notifier", true, false),
        ("NOTIFY + listener", false, true),
        ("polling only", false, false),
    ] {
        let store = fresh_store(&pool, notify).await?;
        let notifier = Notifier::new();
        let listener = notify.then(|| spawn_listener(&store, notifier.clone()));
        let publisher = AckClock {
            inner: broker.clone(),
            acked: Arc::default(),
        };
        let relay = Relay::new(store.clone(), publisher.clone(), relay_config(100))?
            .with_notifier(notifier.clone());
        let shutdown = CancellationToken::new();
        let running = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { relay.run(shutdown).await }
        });
        let committed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let total = rate * seconds;
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let start = Instant::now();
        let mut producers = Vec::new();
        for n in 0..total {
            // Open-loop: each transaction starts at its scheduled time, whatever the others do.
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                start + interval * u32::try_from(n)?,
            ))
            .await;
            let (store, committed, notifier) = (store.clone(), committed.clone(), notifier.clone());
            producers.push(tokio::spawn(async move {
                let event =
                    NewMessage::new(TOPIC, vec![b'x'; 1024]).with_key(format!("key-{}", n % 100));
                let mut tx = store.pool().begin().await.map_err(|e| e.to_string())?;
                store
                    .enqueue(&mut *tx, &event)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())?;
                let at = Instant::now();
                if in_process {
                    notifier.notify();
                }
                committed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push((event.message_id(), at));
                Ok::<_, String>(())
            }));
        }
        for producer in producers {
            producer.await??;
        }
        while store.backlog().await?.pending > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.cancel();
        running.await??;
        if let Some(listener) = listener {
            listener.abort();
        }
        let acked: std::collections::HashMap<_, _> = publisher
            .acked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        let mut latencies: Vec<f64> = committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|(id, at)| {
                acked
                    .get(id)
                    .map(|ack| ack.saturating_duration_since(*at).as_secs_f64() * 1e3)
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        println!(
            "| {label} | {:.2} | {:.2} | {:.2} |",
            quantile(&latencies, 0.5),
            quantile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// `pg-seed-loop`: the naive outbox loop as a baseline: select all unprocessed rows, publish
/// each, mark each processed, commit.
pub(crate) async fn seed_loop(mut args: Args) -> BoxResult {
    let messages = args.one("--messages", 100_000)?;
    let payload = args.one("--payload", 1024)?;
    let broker = Broker::connect(&args.text("--broker", "nats")).await?;
    args.finish()?;
    let pool = pool(4).await?;
    let store = fresh_store(&pool, false).await?;
    sqlx::query(&format!(
        "INSERT INTO {SCHEMA}.seed_outbox (topic, msg_key, payload)
         SELECT '{TOPIC}', 'key-' || (n % 100), convert_to(repeat('x', $2::int), 'UTF8') FROM generate_series(1, $1::bigint) AS n"
    ))
    .bind(i64::try_from(messages)?)
    .bind(i32::try_from(payload)?)
    .execute(&pool)
    .await?;
    drop(store);
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let rows: Vec<(i64, String, Option<String>, Vec<u8>)> =
        sqlx::query_as(&format!("SELECT id, topic, msg_key, payload FROM {SCHEMA}.seed_outbox WHERE NOT processed ORDER BY id"))
            .fetch_all(&mut *tx)
            .await?;
    for (id, topic, key, payload) in rows {
        let message = Message {
            id,
            message_id: outbox::MessageId::new(),
            topic,
            key,
            payload,
            headers: Default::default(),
            attempts: 0,
            created_at: chrono_now(),
        };
        let outcome = broker.publish(std::slice::from_ref(&message)).await;
        if !outcome.iter().all(PublishOutcome::is_acked) {
            return Err("seed loop: publish failed".into());
        }
        sqlx::query(&format!(
            "UPDATE {SCHEMA}.seed_outbox SET processed = true WHERE id = $1"
        ))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let elapsed = started.elapsed();
    println!(
        "seed loop, PostgreSQL -> {}, {messages} messages of {payload} B",
        broker.label()
    );
    println!("| loop | drain s | events/s |");
    println!("| --- | ---: | ---: |");
    println!(
        "| seed loop | {:.2} | {:.0} |",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// The 1-minute load average (Linux), since the machine's two cores are shared.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}
