//! Benchmark tool for outbox. Figures and the commands that produced them are in
//! BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p outbox-bench -- sqlite       [--messages N] [--payload B] [--batch 100,500] [--keys 100,10,0] [--in-flight 2]
//! cargo run --release -p outbox-bench -- pg-burndown  [--broker nats|kafka|memory] [--messages N] [--batch 100,500] [--keys 100,10,0] [--relays 1,2]
//! cargo run --release -p outbox-bench -- kafka-burndown [--messages N] [--batch 100,500] [--keys 100,10,0] [--relays 1,2]
//! cargo run --release -p outbox-bench -- pg-claim-cost [--backlog 10000,1000000] [--batch 500]
//! cargo run --release -p outbox-bench -- pg-producers [--clients 16] [--seconds 10]
//! cargo run --release -p outbox-bench -- pg-latency   [--broker nats|memory] [--rate 1000] [--seconds 10]
//! cargo run --release -p outbox-bench -- pg-seed-loop [--broker nats|memory] [--messages N]
//! cargo run --release -p outbox-bench -- mysql-burndown [--broker nats|memory] [--messages N] [--batch 100,500] [--keys 100,10,0] [--relays 1,2]
//! cargo run --release -p outbox-bench -- mysql-claim-cost [--backlog 10000,1000000] [--batch 500]
//! cargo run --release -p outbox-bench -- rmq-burndown [--messages N] [--batch 100,500] [--keys 100,10,0] [--relays 1,2]
//! ```
//! Servers: `OUTBOX_BENCH_POSTGRES_URL` (default postgres://postgres@127.0.0.1:5432/test),
//! `OUTBOX_BENCH_MYSQL_URL` (default mysql://root@127.0.0.1:3306/test),
//! `OUTBOX_BENCH_NATS_URL` (default nats://127.0.0.1:4222), `OUTBOX_BENCH_RABBITMQ_URL`
//! (default amqp://guest:guest@127.0.0.1:5672/%2f), `OUTBOX_BENCH_KAFKA_BROKERS`
//! (default 127.0.0.1:9092), `OUTBOX_BENCH_KAFKA_LINGER_MS` (the publisher's `linger`,
//! default `KafkaConfig`'s).

mod args;
mod mysql;
mod postgres;
mod publishers;
mod rabbitmq;
mod sqlite;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut raw = std::env::args().skip(1);
    let name = raw.next().unwrap_or_else(|| "sqlite".into());
    let args = args::Args::parse(raw)?;
    match name.as_str() {
        "sqlite" => sqlite::run(args).await,
        "pg-burndown" => postgres::burndown(args, "nats").await,
        "kafka-burndown" => postgres::burndown(args, "kafka").await,
        "pg-claim-cost" => postgres::claim_cost(args).await,
        "pg-producers" => postgres::producers(args).await,
        "pg-latency" => postgres::latency(args).await,
        "pg-seed-loop" => postgres::seed_loop(args).await,
        "mysql-burndown" => mysql::burndown(args).await,
        "mysql-claim-cost" => mysql::claim_cost(args).await,
        "rmq-burndown" => rabbitmq::burndown(args).await,
        other => Err(format!("unknown benchmark {other:?}; see outbox-bench/src/main.rs").into()),
    }
}
