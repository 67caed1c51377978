//! The brokers a benchmark can publish to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use outbox::kafka::{KafkaConfig, KafkaPublisher};
use outbox::nats::{NatsConfig, NatsPublisher, async_nats};
use outbox::{Message, PublishOutcome, Publisher, PublisherCapabilities};

/// Acknowledges everything and only counts: no broker, no memory growth.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counting(pub(crate) Arc<AtomicU64>);

impl Publisher for Counting {
    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        batch.iter().map(|_| PublishOutcome::Acked).collect()
    }
}

/// `--broker memory`, `--broker nats` or `--broker kafka`.
#[derive(Debug, Clone)]
pub(crate) enum Broker {
    Memory(Counting),
    Nats(Box<NatsPublisher>),
    Kafka(KafkaPublisher),
}

pub(crate) const NATS_STREAM: &str = "OUTBOX_BENCH";
pub(crate) const TOPIC: &str = "bench.events";

impl Broker {
    /// Connects to the broker named by `--broker`; for NATS, (re)creates an empty stream
    /// on `bench.>` with file storage.
    pub(crate) async fn connect(name: &str) -> Result<Self, Box<dyn std::error::Error>> {
        match name {
            "memory" => Ok(Broker::Memory(Counting::default())),
            "nats" => {
                let url = std::env::var("OUTBOX_BENCH_NATS_URL")
                    .unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
                let client = async_nats::connect(&url).await?;
                let jetstream = async_nats::jetstream::new(client.clone());
                let _ = jetstream.delete_stream(NATS_STREAM).await;
                jetstream
                    .create_stream(async_nats::jetstream::stream::Config {
                        name: NATS_STREAM.into(),
                        subjects: vec!["bench.>".into()],
                        ..Default::default()
                    })
                    .await?;
                let publisher = NatsPublisher::new(client, NatsConfig::default())?;
                Ok(Broker::Nats(Box::new(publisher)))
            }
            "kafka" => {
                let brokers = std::env::var("OUTBOX_BENCH_KAFKA_BROKERS")
                    .unwrap_or_else(|_| "127.0.0.1:9092".into());
                let mut config = KafkaConfig::default();
                if let Ok(linger) = std::env::var("OUTBOX_BENCH_KAFKA_LINGER_MS") {
                    config.linger = std::time::Duration::from_millis(linger.parse()?);
                }
                let publisher = KafkaPublisher::connect(&brokers, config).await?;
                // Six partitions, so that keyed backlogs can spread.
                publisher.ensure_topic(TOPIC, 6, 1).await?;
                Ok(Broker::Kafka(publisher))
            }
            other => Err(format!("--broker is memory, nats or kafka, got {other:?}").into()),
        }
    }

    pub(crate) fn label(&self) -> &'static str {
        match self {
            Broker::Memory(_) => "memory",
            Broker::Nats(_) => "NATS JetStream",
            Broker::Kafka(_) => "Kafka",
        }
    }
}

impl Publisher for Broker {
    fn capabilities(&self) -> PublisherCapabilities {
        match self {
            Broker::Memory(p) => p.capabilities(),
            Broker::Nats(p) => p.capabilities(),
            Broker::Kafka(p) => p.capabilities(),
        }
    }

    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        match self {
            Broker::Memory(p) => p.publish(batch).await,
            Broker::Nats(p) => p.publish(batch).await,
            Broker::Kafka(p) => p.publish(batch).await,
        }
    }
}
