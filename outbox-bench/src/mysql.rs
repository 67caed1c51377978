//! MySQL / MariaDB benchmarks: backlog burn-down, and the cost of a claim (with an empty
//! claim, the price of polling) as the backlog grows.

use std::time::{Duration, Instant};

use outbox::mysql::sqlx::mysql::MySqlPoolOptions;
use outbox::mysql::{MySqlConfig, MySqlStore, sqlx};
use outbox::{
    CancellationToken, ClaimOptions, NewMessage, Relay, RelayConfig, SettleAction, Settlement,
    Store,
};

use crate::args::{Args, keys_label, message, peak_rss_mib, quantile};
use crate::publishers::{Broker, TOPIC};

type BoxResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

const TABLE: &str = "outbox_bench";

fn url() -> String {
    std::env::var("OUTBOX_BENCH_MYSQL_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "mysql://root@127.0.0.1:3306/test".into())
}

async fn pool(connections: u32) -> BoxResult<sqlx::MySqlPool> {
    Ok(MySqlPoolOptions::new()
        .max_connections(connections)
        .connect(&url())
        .await?)
}

/// A fresh, migrated outbox in the bench table.
async fn fresh_store(pool: &sqlx::MySqlPool) -> BoxResult<MySqlStore> {
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {TABLE}, {TABLE}_migrations, {TABLE}_lock"
    ))
    .execute(pool)
    .await?;
    let mut config = MySqlConfig::default();
    config.table = TABLE.into();
    let store = MySqlStore::new(pool.clone(), config)?;
    store.migrate().await?;
    Ok(store)
}

/// Fills the outbox with `count` messages in transactions of 1,000 (not timed); returns
/// the fill rate.
async fn fill(store: &MySqlStore, count: usize, payload: usize, keys: usize) -> BoxResult<f64> {
    let body = vec![b'x'; payload];
    let started = Instant::now();
    for start in (0..count).step_by(1_000) {
        let batch: Vec<NewMessage> = (start..(start + 1_000).min(count))
            .map(|n| message(TOPIC, &body, n, keys))
            .collect();
        store.enqueue_batch(store.pool(), &batch).await?;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    sqlx::raw_sql(&format!("ANALYZE TABLE {TABLE}"))
        .execute(store.pool())
        .await?;
    Ok(rate)
}

fn relay_config(batch: usize) -> RelayConfig {
    let mut config = RelayConfig::default();
    config.batch_size = batch;
    config
}

/// Runs `relays` relays until the backlog is empty; returns the elapsed time.
async fn drain_with(
    store: &MySqlStore,
    broker: &Broker,
    relays: usize,
    batch: usize,
) -> BoxResult<Duration> {
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..relays {
        let relay = Relay::new(store.clone(), broker.clone(), relay_config(batch))?;
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move { relay.run(shutdown).await }));
    }
    // Whether anything is left (one index probe; counting the backlog would walk it).
    let left = format!("SELECT 1 FROM {TABLE} WHERE status = 0 LIMIT 1");
    while sqlx::query(&left)
        .fetch_optional(store.pool())
        .await?
        .is_some()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    for task in tasks {
        task.await??;
    }
    Ok(elapsed)
}

/// `mysql-burndown`: relay throughput draining a pre-filled backlog.
pub(crate) async fn burndown(mut args: Args) -> BoxResult {
    let messages = args.one("--messages", 100_000)?;
    let payload = args.one("--payload", 1024)?;
    let batches = args.list("--batch", &[100, 500])?;
    let key_spreads = args.list("--keys", &[100, 10, 0])?;
    let relay_counts = args.list("--relays", &[1, 2])?;
    let broker = Broker::connect(&args.text("--broker", "nats")).await?;
    args.finish()?;
    let pool = pool(16).await?;
    let version = fresh_store(&pool).await?.server_version().await?;
    println!(
        "{version} -> {}, {messages} messages of {payload} B",
        broker.label()
    );
    println!("| keys | batch | relays | drain s | events/s | fill events/s |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for &keys in &key_spreads {
        for &batch in &batches {
            for &relays in &relay_counts {
                let store = fresh_store(&pool).await?;
                let fill_rate = fill(&store, messages, payload, keys).await?;
                let elapsed = drain_with(&store, &broker, relays, batch).await?;
                println!(
                    "| {} | {batch} | {relays} | {:.2} | {:.0} | {fill_rate:.0} |",
                    keys_label(keys),
                    elapsed.as_secs_f64(),
                    messages as f64 / elapsed.as_secs_f64()
                );
            }
        }
    }
    Ok(())
}

/// `mysql-claim-cost`: claim latency (claim, then release) with a small and a large
/// backlog, the cost of an empty claim (what each poll costs), and relay memory while
/// draining part of the large backlog.
pub(crate) async fn claim_cost(mut args: Args) -> BoxResult {
    let backlogs = args.list("--backlog", &[10_000, 1_000_000])?;
    let batch = args.one("--batch", 500)?;
    let broker = Broker::connect(&args.text("--broker", "memory")).await?;
    args.finish()?;
    let pool = pool(16).await?;
    let store = fresh_store(&pool).await?;
    let mut empty = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        store
            .claim(&ClaimOptions::new(batch, Duration::from_secs(30)))
            .await?;
        empty.push(started.elapsed().as_secs_f64() * 1e3);
    }
    empty.sort_by(f64::total_cmp);
    println!(
        "empty claim (a poll that finds nothing): p50 {:.2} ms, p99 {:.2} ms",
        quantile(&empty, 0.5),
        quantile(&empty, 0.99)
    );
    println!(
        "claim of {batch} (then release), 50 times per backlog of 1 KiB messages over 100 keys; relay memory after draining 200,000"
    );
    println!("| pending rows | claim p50 ms | claim p99 ms | relay peak RSS MiB |");
    println!("| ---: | ---: | ---: | ---: |");
    for &backlog in &backlogs {
        let store = fresh_store(&pool).await?;
        fill(&store, backlog, 1024, 100).await?;
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
        let shutdown = CancellationToken::new();
        let relay = Relay::new(store.clone(), broker.clone(), relay_config(batch))?;
        let running = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { relay.run(shutdown).await }
        });
        let target = backlog.saturating_sub(200_000) as u64;
        while store.backlog().await?.pending > target {
            tokio::time::sleep(Duration::from_millis(100)).await;
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
