//! The Kafka [`Publisher`].

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use futures::future::join_all;
use outbox_core::{
    Message, PublishError, PublishOutcome, Publisher, PublisherCapabilities, Result, redact_url,
};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tracing::{Instrument, debug, debug_span, error, warn};

use crate::config::KafkaConfig;
use crate::error::{self, ConnectError};
use crate::wire;

/// Publishes outbox messages to Kafka with an idempotent producer (`acks=all`).
///
/// Each message goes to the topic named by its own topic (or by
/// [`KafkaConfig::with_topic`]), with its key as the record key (so a key's messages share a
/// partition and keep their order), its headers as record headers and its message id in the
/// [`outbox-message-id`](crate::MESSAGE_ID_HEADER) header. It counts as published once
/// librdkafka's delivery report says the broker stored it with `acks=all`.
///
/// A batch is handed to librdkafka at once and its delivery reports awaited together.
/// librdkafka holds at most [`KafkaConfig::max_queued_messages`]; beyond it a message fails
/// transiently at once, so a broker outage grows the outbox table, not the heap. Should the
/// idempotent producer hit a fatal error (a sequence desynchronisation with the broker), the
/// publisher builds a new producer and the failed messages are retried on it.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use outbox_kafka::{KafkaConfig, KafkaPublisher};
///
/// let publisher = KafkaPublisher::connect("127.0.0.1:9092", KafkaConfig::default()).await?;
/// # let _ = publisher;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct KafkaPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    client_config: ClientConfig,
    config: KafkaConfig,
    /// The bootstrap servers, credentials removed.
    brokers: String,
    producer: RwLock<Generation>,
}

/// The current producer; `number` counts the rebuilds.
#[derive(Clone)]
struct Generation {
    producer: FutureProducer,
    number: u64,
}

impl fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("brokers", &self.inner.brokers)
            .field("producer_generation", &self.current().number)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// A publisher for the brokers `brokers` (`host:port`, comma-separated). Creates the
    /// producer without waiting for a broker: the first publish connects. Use
    /// [`connect`](Self::connect) to find out at start-up whether a broker answers.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), outbox_kafka::ConnectError> {
    /// use std::time::Duration;
    /// use outbox_kafka::{KafkaConfig, KafkaPublisher};
    ///
    /// let mut config = KafkaConfig::default();
    /// config.message_timeout = Duration::from_secs(20);
    /// let publisher = KafkaPublisher::new("kafka-1:9092,kafka-2:9092", config)?;
    /// # let _ = publisher;
    /// # Ok(()) }
    /// ```
    pub fn new(brokers: &str, config: KafkaConfig) -> Result<Self, ConnectError> {
        config.validate()?;
        let redacted = redact_url(brokers);
        let client_config = config.client_config(brokers);
        let producer = build(&client_config, &redacted)?;
        Ok(KafkaPublisher {
            inner: Arc::new(Inner {
                client_config,
                config,
                brokers: redacted,
                producer: RwLock::new(Generation {
                    producer,
                    number: 0,
                }),
            }),
        })
    }

    /// Like [`new`](Self::new), then waits up to
    /// [`KafkaConfig::request_timeout`] for a broker to answer a metadata request.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), outbox_kafka::ConnectError> {
    /// use outbox_kafka::{KafkaConfig, KafkaPublisher};
    ///
    /// let config = KafkaConfig::default().with_property("security.protocol", "ssl");
    /// let publisher = KafkaPublisher::connect("kafka.internal:9093", config).await?;
    /// # let _ = publisher;
    /// # Ok(()) }
    /// ```
    pub async fn connect(brokers: &str, config: KafkaConfig) -> Result<Self, ConnectError> {
        let publisher = Self::new(brokers, config)?;
        let producer = publisher.current().producer;
        let timeout = publisher.inner.config.request_timeout;
        // librdkafka's metadata call blocks its thread.
        let answered = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|metadata| metadata.brokers().len())
        })
        .await;
        match answered {
            Ok(Ok(brokers)) => {
                debug!(brokers = %publisher.inner.brokers, known = brokers, "connected to Kafka");
                Ok(publisher)
            }
            Ok(Err(source)) => Err(ConnectError::Unreachable {
                brokers: publisher.inner.brokers.clone(),
                source,
            }),
            Err(join) => Err(ConnectError::Unreachable {
                brokers: publisher.inner.brokers.clone(),
                source: KafkaError::ClientCreation(format!(
                    "the metadata request did not finish: {join}"
                )),
            }),
        }
    }

    /// Creates `topic` with `partitions` partitions, each on `replication` brokers, unless
    /// it exists; `true` when it was created. For brokers that do not create topics on first
    /// use (and clusters where that is switched off, as it should be): call it at start-up
    /// for each topic the outbox publishes to, or create the topics with your deployment.
    /// Uses the publisher's brokers and properties (TLS, SASL).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), outbox_kafka::ConnectError> {
    /// use outbox_kafka::{KafkaConfig, KafkaPublisher};
    ///
    /// let publisher = KafkaPublisher::connect("127.0.0.1:9092", KafkaConfig::default()).await?;
    /// publisher.ensure_topic("orders.placed", 6, 3).await?;
    /// # Ok(()) }
    /// ```
    pub async fn ensure_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication: i32,
    ) -> Result<bool, ConnectError> {
        let failed = |source| ConnectError::CreateTopic {
            topic: topic.to_owned(),
            source,
        };
        let admin: AdminClient<DefaultClientContext> = self
            .inner
            .client_config
            .create()
            .map_err(|err| ConnectError::creating(&self.inner.brokers, err))?;
        let timeout = Some(self.inner.config.message_timeout);
        let results = admin
            .create_topics(
                &[NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(replication),
                )],
                &AdminOptions::new()
                    .request_timeout(timeout)
                    .operation_timeout(timeout),
            )
            .await
            .map_err(failed)?;
        match results.into_iter().next() {
            Some(Ok(_)) => {
                debug!(topic, partitions, replication, "created Kafka topic");
                Ok(true)
            }
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
            Some(Err((_, code))) => Err(failed(KafkaError::AdminOp(code))),
            None => Err(failed(KafkaError::AdminOpCreation(
                "the broker answered nothing for the topic".to_owned(),
            ))),
        }
    }

    /// The settings.
    ///
    /// ```no_run
    /// # fn demo(publisher: &outbox_kafka::KafkaPublisher) {
    /// let timeout = publisher.config().message_timeout;
    /// # let _ = timeout;
    /// # }
    /// ```
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// The librdkafka producer in use now, for metrics (`in_flight_count`) or your own
    /// records. It is replaced after a fatal error, so do not keep it.
    ///
    /// ```no_run
    /// # fn demo(publisher: &outbox_kafka::KafkaPublisher) {
    /// use outbox_kafka::rdkafka::producer::Producer;
    ///
    /// let queued = publisher.producer().in_flight_count();
    /// # let _ = queued;
    /// # }
    /// ```
    pub fn producer(&self) -> FutureProducer {
        self.current().producer
    }

    /// How many times the producer was rebuilt after a fatal error.
    ///
    /// ```no_run
    /// # fn demo(publisher: &outbox_kafka::KafkaPublisher) {
    /// if publisher.rebuilds() > 0 {
    ///     eprintln!("the producer was rebuilt; see the logs for the fatal errors");
    /// }
    /// # }
    /// ```
    pub fn rebuilds(&self) -> u64 {
        self.current().number
    }

    fn current(&self) -> Generation {
        self.inner
            .producer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces generation `broken` by a new producer, unless another call already did.
    fn rebuild(&self, broken: u64, reason: &str) {
        let mut current = self
            .inner
            .producer
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current.number != broken {
            return;
        }
        match build(&self.inner.client_config, &self.inner.brokers) {
            Ok(producer) => {
                warn!(
                    generation = broken + 1,
                    reason, "the Kafka producer hit a fatal error; rebuilt it"
                );
                let old = std::mem::replace(
                    &mut *current,
                    Generation {
                        producer,
                        number: broken + 1,
                    },
                );
                // Dropping a producer purges it and joins its thread: keep that off the
                // async workers.
                drop(current);
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn_blocking(move || drop(old));
                }
            }
            Err(err) => {
                error!(error = %err, "could not rebuild the Kafka producer after a fatal error; will try again")
            }
        }
    }

    /// Hands `message` to librdkafka: a delivery future, or the reason it was refused.
    fn enqueue(
        &self,
        producer: &FutureProducer,
        message: &Message,
    ) -> Result<DeliveryFuture, PublishError> {
        let topic = self.inner.config.topic_for(message);
        error::check_topic(&topic, &message.topic)?;
        let headers = wire::headers(message)?;
        let mut record = FutureRecord::to(&topic)
            .payload(message.payload.as_slice())
            .headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_str());
        }
        producer.send_result(record).map_err(|(err, _)| {
            error::publish_failed(err, &topic, &message.topic, &self.inner.config)
        })
    }

    /// Waits for the delivery report of a message librdkafka took.
    async fn delivered(sent: Result<DeliveryFuture, PublishError>) -> Report {
        let delivery = match sent {
            Ok(delivery) => delivery,
            Err(err) => return Report::Refused(err),
        };
        match delivery.await {
            Ok(Ok(_delivery)) => Report::Delivered,
            Ok(Err((err, _record))) => Report::Failed(err),
            Err(_canceled) => Report::Canceled,
        }
    }

    /// The outcome of `message` from its report; `fatal` says the producer hit a fatal
    /// error, which makes every failure of the batch transient (the rebuilt producer
    /// retries them).
    fn outcome(&self, message: &Message, report: Report, fatal: Option<&str>) -> PublishOutcome {
        let err = match report {
            Report::Delivered => return PublishOutcome::Acked,
            Report::Refused(err) => err,
            Report::Failed(err) => {
                let topic = self.inner.config.topic_for(message);
                match fatal {
                    Some(reason) => PublishError::transient(format!(
                        "the message for topic {topic:?} was not delivered: the idempotent producer \
                         hit a fatal error ({reason}) and was rebuilt; the retry goes to the new producer"
                    ))
                    .with_source(err),
                    None => error::publish_failed(err, &topic, &message.topic, &self.inner.config),
                }
            }
            // The producer went away with the message still queued: it may or may not be
            // at the broker.
            Report::Canceled => PublishError::transient(
                "the Kafka producer was closed before the delivery report arrived",
            ),
        };
        debug!(
            message_id = %message.message_id,
            transient = err.is_transient(),
            error = %err.describe(),
            "publish failed"
        );
        PublishOutcome::Failed(err)
    }
}

/// What became of one message.
enum Report {
    /// The broker stored it (`acks=all`).
    Delivered,
    /// librdkafka refused it before queueing, or the publisher did.
    Refused(PublishError),
    /// Its delivery report carried an error.
    Failed(KafkaError),
    /// The producer was dropped before reporting.
    Canceled,
}

fn build(client_config: &ClientConfig, brokers: &str) -> Result<FutureProducer, ConnectError> {
    client_config
        .create()
        .map_err(|err| ConnectError::creating(brokers, err))
}

impl Publisher for KafkaPublisher {
    /// The idempotent producer drops librdkafka's own retries within a producer session;
    /// the size limit is [`KafkaConfig::max_message_bytes`]; a publish call ends within
    /// [`KafkaConfig::max_publish_duration`].
    fn capabilities(&self) -> PublisherCapabilities {
        let mut capabilities = PublisherCapabilities::default();
        capabilities.broker_dedup = true;
        capabilities.max_message_bytes = Some(self.inner.config.max_message_bytes);
        capabilities.max_publish_duration = Some(self.inner.config.max_publish_duration());
        capabilities
    }

    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        if batch.is_empty() {
            return Vec::new();
        }
        let span = debug_span!("outbox.kafka.publish", messages = batch.len());
        async {
            let generation = self.current();
            if let Some((code, reason)) = generation.producer.client().fatal_error() {
                self.rebuild(generation.number, &format!("{code:?}: {reason}"));
                return self.publish_on(&self.current(), batch).await;
            }
            self.publish_on(&generation, batch).await
        }
        .instrument(span)
        .await
    }
}

impl KafkaPublisher {
    /// Enqueues the whole batch (the relay never puts two messages of one key in a call, so
    /// they may all be in flight together), then awaits the delivery reports in order.
    async fn publish_on(&self, generation: &Generation, batch: &[Message]) -> Vec<PublishOutcome> {
        let sent: Vec<_> = batch
            .iter()
            .map(|message| self.enqueue(&generation.producer, message))
            .collect();
        let reports = join_all(sent.into_iter().map(Self::delivered)).await;
        // librdkafka fails the messages of a fatal error with the broker's error code (an
        // out-of-order sequence, say) or with `Fatal`; the client knows which it was.
        let failed = reports.iter().any(|r| matches!(r, Report::Failed(_)));
        let fatal = if failed {
            generation
                .producer
                .client()
                .fatal_error()
                .map(|(code, reason)| format!("{code:?}: {reason}"))
                .or_else(|| {
                    reports
                        .iter()
                        .any(|r| matches!(r, Report::Failed(err) if error::is_fatal(err)))
                        .then(|| "Fatal".to_owned())
                })
        } else {
            None
        };
        if let Some(reason) = &fatal {
            self.rebuild(generation.number, reason);
        }
        batch
            .iter()
            .zip(reports)
            .map(|(message, report)| self.outcome(message, report, fatal.as_deref()))
            .collect()
    }
}
