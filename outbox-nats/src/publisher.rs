//! The JetStream [`Publisher`].

use std::fmt;

use async_nats::jetstream::{self, context::Publish, publish::PublishAck};
use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use futures::{StreamExt, stream};
use outbox_core::{
    Message, PublishError, PublishOutcome, Publisher, PublisherCapabilities, Result, redact_url,
};
use tracing::{Instrument, debug, debug_span};

use crate::config::NatsConfig;
use crate::error::{self, ConnectError};
use crate::wire;

/// Publishes outbox messages to NATS JetStream.
///
/// Each message goes to the subject named by its topic (or by
/// [`NatsConfig::with_subject`]), with its headers as NATS headers, its message id in
/// `Nats-Msg-Id` (JetStream drops a second copy within the stream's duplicate window) and
/// its key in [`Outbox-Key`](crate::KEY_HEADER). It counts as published once JetStream's
/// PubAck arrives; a PubAck marked duplicate counts too, since the stream holds the message.
///
/// A batch is sent at once and its PubAcks awaited together, at most
/// [`NatsConfig::max_in_flight`] at a time. A stream must capture every subject published to;
/// the publisher does not create streams.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use outbox_nats::{NatsConfig, NatsPublisher};
///
/// let publisher = NatsPublisher::connect("nats://127.0.0.1:4222", NatsConfig::default()).await?;
/// # let _ = publisher;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsPublisher {
    client: Client,
    jetstream: jetstream::Context,
    config: NatsConfig,
    /// Where [`connect`](Self::connect) connected, password removed.
    url: Option<String>,
}

impl fmt::Debug for NatsPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsPublisher")
            .field("url", &self.url)
            .field("connection", &self.client.connection_state())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl NatsPublisher {
    /// Connects to the NATS server at `url` (credentials may be in the URL, as in
    /// `nats://user:password@host:4222`; they never appear in errors or `Debug` output).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), outbox_nats::ConnectError> {
    /// use std::time::Duration;
    /// use outbox_nats::{NatsConfig, NatsPublisher};
    ///
    /// let mut config = NatsConfig::default();
    /// config.ack_timeout = Duration::from_secs(10);
    /// let publisher = NatsPublisher::connect("nats://127.0.0.1:4222", config).await?;
    /// # let _ = publisher;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str, config: NatsConfig) -> Result<Self, ConnectError> {
        Self::connect_with_options(url, ConnectOptions::new(), config).await
    }

    /// Connects with the client's own options: TLS, credentials files, NKeys, reconnect
    /// behaviour, and so on.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), outbox_nats::ConnectError> {
    /// use outbox_nats::{NatsConfig, NatsPublisher, async_nats::ConnectOptions};
    ///
    /// let options = ConnectOptions::new().name("orders-relay").require_tls(true);
    /// let publisher =
    ///     NatsPublisher::connect_with_options("tls://nats.internal:4222", options, NatsConfig::default())
    ///         .await?;
    /// # let _ = publisher;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_options(
        url: &str,
        options: ConnectOptions,
        config: NatsConfig,
    ) -> Result<Self, ConnectError> {
        config.validate()?;
        let redacted = redact_url(url);
        let client = options
            .connect(url)
            .await
            .map_err(|source| ConnectError::Connect {
                url: redacted.clone(),
                source,
            })?;
        debug!(url = %redacted, "connected to NATS");
        let mut publisher = Self::new(client, config)?;
        publisher.url = Some(redacted);
        Ok(publisher)
    }

    /// A publisher on a client you connected yourself (shared with the rest of your
    /// application, say).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use outbox_nats::{NatsConfig, NatsPublisher};
    ///
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let publisher = NatsPublisher::new(client, NatsConfig::default())?;
    /// # let _ = publisher;
    /// # Ok(()) }
    /// ```
    pub fn new(client: Client, config: NatsConfig) -> Result<Self> {
        config.validate()?;
        let mut jetstream = match &config.jetstream_domain {
            Some(domain) => jetstream::with_domain(client.clone(), domain),
            None => jetstream::new(client.clone()),
        };
        // The JetStream context's timeout bounds both handing the publish to the
        // connection and waiting for its PubAck.
        jetstream.set_timeout(config.ack_timeout);
        Ok(NatsPublisher {
            client,
            jetstream,
            config,
            url: None,
        })
    }

    /// The NATS client, for flushing or closing it, or for your own use.
    ///
    /// ```no_run
    /// # async fn demo(publisher: outbox_nats::NatsPublisher) {
    /// let state = publisher.client().connection_state();
    /// # let _ = state;
    /// # }
    /// ```
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The settings.
    ///
    /// ```no_run
    /// # fn demo(publisher: &outbox_nats::NatsPublisher) {
    /// let timeout = publisher.config().ack_timeout;
    /// # let _ = timeout;
    /// # }
    /// ```
    pub fn config(&self) -> &NatsConfig {
        &self.config
    }

    /// The largest message the server takes, headers included (0 before the first
    /// connection is made).
    fn max_payload(&self) -> Option<usize> {
        Some(self.client.server_info().max_payload).filter(|&limit| limit > 0)
    }

    async fn publish_one(&self, message: &Message, max_payload: Option<usize>) -> PublishOutcome {
        match self.send(message, max_payload).await {
            Ok(ack) => {
                if ack.duplicate {
                    debug!(
                        message_id = %message.message_id,
                        stream = %ack.stream,
                        sequence = ack.sequence,
                        "JetStream already held this message id; counted as published"
                    );
                }
                PublishOutcome::Acked
            }
            Err(err) => {
                debug!(
                    message_id = %message.message_id,
                    transient = err.is_transient(),
                    error = %err.describe(),
                    "publish failed"
                );
                PublishOutcome::Failed(err)
            }
        }
    }

    async fn send(
        &self,
        message: &Message,
        max_payload: Option<usize>,
    ) -> Result<PublishAck, PublishError> {
        let subject = self.config.subject_for(message);
        wire::check_subject(&subject, &message.topic)?;
        let headers = wire::headers(message)?;
        if let Some(limit) = max_payload {
            let size = message.payload.len() + wire::encoded_len(&headers);
            if size > limit {
                return Err(error::too_large(size, limit, &subject));
            }
        }
        let publish = Publish::build()
            .payload(Bytes::copy_from_slice(&message.payload))
            .headers(headers);
        let pending_ack = self
            .jetstream
            .send_publish(subject.to_string(), publish)
            .await
            .map_err(|err| error::publish_failed(err, &subject, &self.config))?;
        pending_ack
            .await
            .map_err(|err| error::publish_failed(err, &subject, &self.config))
    }
}

impl Publisher for NatsPublisher {
    /// JetStream de-duplicates by `Nats-Msg-Id`; the size limit is the server's
    /// `max_payload`.
    fn capabilities(&self) -> PublisherCapabilities {
        let mut capabilities = PublisherCapabilities::default();
        capabilities.broker_dedup = true;
        capabilities.max_message_bytes = self.max_payload();
        capabilities
    }

    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        if batch.is_empty() {
            return Vec::new();
        }
        let max_payload = self.max_payload();
        let span = debug_span!("outbox.nats.publish", messages = batch.len());
        // The relay never puts two messages of one key in a call, so all may be in flight
        // together; `buffered` keeps the outcomes in batch order.
        // (Collected first: a closure inside the stream would trip the `Send` check.)
        let publishes: Vec<_> = batch
            .iter()
            .map(|message| self.publish_one(message, max_payload))
            .collect();
        stream::iter(publishes)
            .buffered(self.config.max_in_flight)
            .collect()
            .instrument(span)
            .await
    }
}
