//! PostgreSQL -> RabbitMQ: relay throughput draining a pre-filled backlog into a durable
//! queue, every message persistent and confirmed by the broker.

use outbox::postgres::sqlx;
use outbox::rabbitmq::lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use outbox::rabbitmq::lapin::types::FieldTable;
use outbox::rabbitmq::lapin::{Channel, Connection, ConnectionProperties};
use outbox::rabbitmq::{ExchangeKind, RabbitMqConfig, RabbitMqPublisher};

use crate::args::{Args, keys_label};
use crate::postgres::{SCHEMA, drain_with, fill, fresh_store, pool};
use crate::publishers::TOPIC;

type BoxResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The exchange the benchmark publishes to (direct, durable).
const EXCHANGE: &str = "outbox-bench";
/// The durable queue bound to [`EXCHANGE`] for [`TOPIC`]; emptied before each run.
const QUEUE: &str = "outbox-bench";

fn url() -> String {
    std::env::var("OUTBOX_BENCH_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The benchmark's side of the broker: exchange, queue and binding, on a connection of
/// its own; the queue is created empty.
async fn topology() -> BoxResult<(Connection, Channel)> {
    let connection = Connection::connect(&url(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Direct,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    recreate_queue(&channel).await?;
    Ok((connection, channel))
}

/// Deletes and declares the queue (durable, classic): faster than purging 100,000 messages.
async fn recreate_queue(channel: &Channel) -> BoxResult {
    channel
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(QUEUE.into(), durable, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            QUEUE.into(),
            EXCHANGE.into(),
            TOPIC.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Messages in the queue now.
async fn queued(channel: &Channel) -> BoxResult<u32> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare(QUEUE.into(), passive, FieldTable::default())
        .await?;
    Ok(queue.message_count())
}

/// `rmq-burndown`: relay throughput draining a pre-filled PostgreSQL backlog into a durable
/// RabbitMQ queue (persistent messages, publisher confirms).
pub(crate) async fn burndown(mut args: Args) -> BoxResult {
    let messages = args.one("--messages", 100_000)?;
    let payload = args.one("--payload", 1024)?;
    let batches = args.list("--batch", &[100, 500])?;
    let key_spreads = args.list("--keys", &[100, 10, 0])?;
    let relay_counts = args.list("--relays", &[1, 2])?;
    args.finish()?;
    let pool = pool(16).await?;
    let (connection, channel) = topology().await?;
    let mut config = RabbitMqConfig::with_exchange(EXCHANGE);
    config.connection_name = Some("outbox-bench".into());
    let publisher = RabbitMqPublisher::connect(&url(), config).await?;
    println!(
        "PostgreSQL -> RabbitMQ (durable queue, persistent, confirms), {messages} messages of {payload} B"
    );
    println!("| keys | batch | relays | drain s | events/s |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    for &keys in &key_spreads {
        for &batch in &batches {
            for &relays in &relay_counts {
                let store = fresh_store(&pool, false).await?;
                fill(&store, messages, payload, keys).await?;
                sqlx::raw_sql(&format!("VACUUM ANALYZE {SCHEMA}.outbox_messages"))
                    .execute(&pool)
                    .await?;
                recreate_queue(&channel).await?;
                let elapsed = drain_with(&store, &publisher, relays, batch).await?;
                let in_queue = queued(&channel).await?;
                if usize::try_from(in_queue)? < messages {
                    return Err(format!(
                        "the queue holds {in_queue} messages, {messages} were published"
                    )
                    .into());
                }
                println!(
                    "| {} | {batch} | {relays} | {:.2} | {:.0} |",
                    keys_label(keys),
                    elapsed.as_secs_f64(),
                    messages as f64 / elapsed.as_secs_f64()
                );
            }
        }
    }
    channel
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await?;
    publisher.close().await;
    connection.close(200, "OK".into()).await?;
    Ok(())
}
