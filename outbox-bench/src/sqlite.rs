//! `sqlite`: burn-down of a pre-filled SQLite backlog into the in-memory publisher.
//!
//! For each batch size and key spread it fills a fresh SQLite file with the backlog (not
//! timed), then times a relay draining it and prints a Markdown table row.

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

fn parse_args(args: &mut crate::args::Args) -> Result<Options, String> {
    Ok(Options {
        messages: args.one("--messages", 100_000)?,
        payload: args.one("--payload", 1024)?,
        batches: args.list("--batch", &[100, 500])?,
        keys: args.list("--keys", &[100, 10, 0])?,
        in_flight: args.one("--in-flight", 2)?,
    })
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
            .map(|n| crate::args::message("bench.events", &body, n, keys))
            .collect();
        let tx = conn.transaction()?;
        store.enqueue_batch(&tx, &batch)?;
        tx.commit()?;
        written += chunk;
    }
    Ok(started.elapsed())
}

pub(crate) async fn run(mut args: crate::args::Args) -> Result<(), Box<dyn std::error::Error>> {
    let options = parse_args(&mut args)?;
    args.finish()?;
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
            let keys_label = crate::args::keys_label(keys);
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
