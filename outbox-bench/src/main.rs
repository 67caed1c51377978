//! Benchmark tool: burn-down of a pre-filled outbox backlog through a relay.
//!
//! ```text
//! cargo run --release -p outbox-bench -- [--messages N] [--payload BYTES] [--batch 100,500]
//!                                        [--keys 0,100] [--in-flight 2]
//! ```
//!
//! For each batch size and key spread it fills a fresh SQLite file with the backlog (not
//! timed), then times a relay draining it into the in-memory publisher and prints a
//! Markdown table row: events/s, and the run's other figures.

use std::time::{Duration, Instant};

use outbox::sqlite::{SqliteStore, rusqlite};
use outbox::testkit::InMemoryPublisher;
use outbox::{NewMessage, Relay, RelayConfig, Store};

#[derive(Debug)]
struct Options {
    messages: usize,
    payload: usize,
    batches: Vec<usize>,
    keys: Vec<usize>,
    in_flight: usize,
}

fn list(value: &str, flag: &str) -> Result<Vec<usize>, String> {
    value
        .split(',')
        .map(|v| {
            v.trim().parse().map_err(|_| {
                format!("{flag} takes whole numbers separated by commas, got {value:?}")
            })
        })
        .collect()
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        messages: 100_000,
        payload: 1024,
        batches: vec![100, 500],
        keys: vec![0, 100],
        in_flight: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let one = |v: &str| list(v, &flag).map(|l| l[0]);
        match flag.as_str() {
            "--messages" => options.messages = one(&value)?,
            "--payload" => options.payload = one(&value)?,
            "--batch" => options.batches = list(&value, &flag)?,
            "--keys" => options.keys = list(&value, &flag)?,
            "--in-flight" => options.in_flight = one(&value)?,
            _ => {
                return Err(format!(
                    "unknown option {flag}; see the doc comment of outbox-bench/src/main.rs"
                ));
            }
        }
    }
    Ok(options)
}

/// Fills the outbox with `count` messages in transactions of 1,000; keys 0 means unkeyed.
fn fill(
    db: &std::path::Path,
    store: &SqliteStore,
    count: usize,
    payload: usize,
    keys: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(db)?;
    let body = vec![b'x'; payload];
    let mut written = 0;
    while written < count {
        let chunk = (count - written).min(1_000);
        let batch: Vec<NewMessage> = (written..written + chunk)
            .map(|n| {
                let message = NewMessage::new("bench.events", body.clone());
                if keys == 0 {
                    message
                } else {
                    message.with_key(format!("key-{}", n % keys))
                }
            })
            .collect();
        let tx = conn.transaction()?;
        store.enqueue_batch(&tx, &batch)?;
        tx.commit()?;
        written += chunk;
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse_args()?;
    println!(
        "SQLite -> in-memory publisher, {} messages of {} B, {} batches in flight",
        options.messages, options.payload, options.in_flight
    );
    println!("| keys | batch | drain s | events/s | fill events/s |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for &keys in &options.keys {
        for &batch in &options.batches {
            let dir = tempfile::tempdir()?;
            let db = dir.path().join("bench.db");
            let store = SqliteStore::open(&db).await?;
            let fill_time = fill(&db, &store, options.messages, options.payload, keys)?;

            let mut config = RelayConfig::default();
            config.batch_size = batch;
            config.max_in_flight_batches = options.in_flight;
            let publisher = InMemoryPublisher::new();
            let relay = Relay::new(store.clone(), publisher.clone(), config)?;
            let started = Instant::now();
            let stats = relay.drain().await?;
            let elapsed = started.elapsed();

            let left = store.backlog().await?.pending;
            if stats.published != options.messages as u64
                || left != 0
                || publisher.received().len() != options.messages
            {
                return Err(format!("drain incomplete: {stats:?}, {left} left").into());
            }
            let keys_label = if keys == 0 {
                "none".to_owned()
            } else {
                keys.to_string()
            };
            println!(
                "| {keys_label} | {batch} | {:.2} | {:.0} | {:.0} |",
                elapsed.as_secs_f64(),
                options.messages as f64 / elapsed.as_secs_f64(),
                options.messages as f64 / fill_time.as_secs_f64(),
            );
        }
    }
    Ok(())
}
