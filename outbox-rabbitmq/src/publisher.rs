//! The RabbitMQ [`Publisher`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use futures::{FutureExt, StreamExt, stream};
use lapin::options::BasicPublishOptions;
use lapin::uri::AMQPUri;
use lapin::{Confirmation, ConnectionProperties, ErrorKind};
use outbox_core::{
    Message, PublishError, PublishOutcome, Publisher, PublisherCapabilities, redact_url,
};
use tokio::time::{Instant, timeout_at};
use tracing::{Instrument, debug, debug_span};

use crate::config::{RabbitMqConfig, Route};
use crate::error::{self, ConnectError};
use crate::link::Link;
use crate::wire::{self, Prepared};

/// Publishes outbox messages to RabbitMQ.
///
/// Each message goes to the exchange and routing key of its [`Route`] (by default
/// [`RabbitMqConfig::exchange`] and its topic), persistent (delivery mode 2) and
/// `mandatory`, with its message id in the `message_id` property, its headers as AMQP
/// headers, a `content-type` header also as the `content_type` property, and its key in
/// [`outbox-key`](crate::KEY_HEADER). It counts as published only once the broker's
/// publisher confirm (`basic.ack`) arrived; a nack, a return (no queue took it) or a lost
/// connection is a failure.
///
/// A batch is sent at once on a confirm-mode channel of its own, and its confirms are
/// awaited together, at most [`RabbitMqConfig::max_in_flight`] at a time. When the
/// connection is lost, the publisher connects again by itself, with backoff; messages
/// whose confirms did not arrive are reported as transient failures, so the relay sends
/// them again. The clones of a publisher share its connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use outbox_rabbitmq::{RabbitMqConfig, RabbitMqPublisher};
///
/// let publisher = RabbitMqPublisher::connect(
///     "amqp://guest:guest@127.0.0.1:5672/%2f",
///     RabbitMqConfig::with_exchange("orders"),
/// )
/// .await?;
/// # let _ = publisher;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RabbitMqPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    link: Link,
    config: RabbitMqConfig,
}

impl fmt::Debug for RabbitMqPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqPublisher")
            .field("url", &self.inner.link.url)
            .field("connected", &self.inner.link.is_connected())
            .field("blocked", &self.inner.link.is_blocked())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// How one message fared on its channel.
enum Sent {
    Confirmed,
    Failed(PublishError),
    /// The channel closed under it, maybe because of another message of the call.
    ChannelLost(lapin::Error),
}

impl RabbitMqPublisher {
    /// Connects to the broker at `url` (`amqp://user:password@host:5672/vhost`, or
    /// `amqps://` for TLS; the password never appears in errors, logs or `Debug` output),
    /// and declares the exchange if [`RabbitMqConfig::declare_exchange`] says so.
    ///
    /// Fails if the first connection cannot be made; after that, a lost connection is made
    /// again by the publisher itself.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), outbox_rabbitmq::ConnectError> {
    /// use outbox_rabbitmq::{ExchangeKind, RabbitMqConfig, RabbitMqPublisher};
    ///
    /// let mut config = RabbitMqConfig::with_exchange("orders");
    /// config.declare_exchange = Some(ExchangeKind::Topic);
    /// let publisher = RabbitMqPublisher::connect("amqp://guest:guest@127.0.0.1:5672/%2f", config).await?;
    /// # let _ = publisher;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str, config: RabbitMqConfig) -> Result<Self, ConnectError> {
        Self::connect_with_properties(url, ConnectionProperties::default(), config).await
    }

    /// Connects with lapin's own connection properties: client properties, an
    /// authentication provider, a locale. Do not enable lapin's automatic recovery: the
    /// publisher reconnects by itself, and reports what was in flight as failed.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), outbox_rabbitmq::ConnectError> {
    /// use outbox_rabbitmq::{RabbitMqConfig, RabbitMqPublisher, lapin::ConnectionProperties};
    ///
    /// let properties = ConnectionProperties::default()
    ///     .with_client_property("service".into(), "orders".into());
    /// let publisher = RabbitMqPublisher::connect_with_properties(
    ///     "amqps://relay:secret@rabbit.internal:5671/shop",
    ///     properties,
    ///     RabbitMqConfig::with_exchange("orders"),
    /// )
    /// .await?;
    /// # let _ = publisher;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_properties(
        url: &str,
        properties: ConnectionProperties,
        config: RabbitMqConfig,
    ) -> Result<Self, ConnectError> {
        config.validate()?;
        let redacted = redact_url(url);
        let uri: AMQPUri = url.parse().map_err(|reason: String| {
            // The parser may quote the URL it refused: never with its password.
            ConnectError::InvalidUrl {
                reason: reason.replace(url, &redacted),
                url: redacted.clone(),
            }
        })?;
        let link = Link::connect(uri, redacted, properties, config.clone()).await?;
        Ok(RabbitMqPublisher {
            inner: Arc::new(Inner { link, config }),
        })
    }

    /// The settings.
    ///
    /// ```no_run
    /// # fn demo(publisher: &outbox_rabbitmq::RabbitMqPublisher) {
    /// let exchange = &publisher.config().exchange;
    /// # let _ = exchange;
    /// # }
    /// ```
    pub fn config(&self) -> &RabbitMqConfig {
        &self.inner.config
    }

    /// Whether the connection to the broker is up right now (it is made again by the next
    /// publish when it is not).
    ///
    /// ```no_run
    /// # fn demo(publisher: &outbox_rabbitmq::RabbitMqPublisher) {
    /// if !publisher.is_connected() {
    ///     eprintln!("RabbitMQ is unreachable; the relay keeps retrying");
    /// }
    /// # }
    /// ```
    pub fn is_connected(&self) -> bool {
        self.inner.link.is_connected()
    }

    /// Whether the broker blocks the connection right now because of a memory or disk
    /// alarm; publishes wait for the block to lift, up to
    /// [`RabbitMqConfig::reconnect_wait`].
    ///
    /// ```no_run
    /// # fn demo(publisher: &outbox_rabbitmq::RabbitMqPublisher) {
    /// if publisher.is_blocked() {
    ///     eprintln!("RabbitMQ raised a resource alarm; publishing waits");
    /// }
    /// # }
    /// ```
    pub fn is_blocked(&self) -> bool {
        self.inner.link.is_blocked()
    }

    /// Closes the connection, for every clone of this publisher; publishing afterwards
    /// fails (transiently). Call it after the relay has stopped.
    ///
    /// ```no_run
    /// # async fn demo(publisher: outbox_rabbitmq::RabbitMqPublisher) {
    /// publisher.close().await;
    /// # }
    /// ```
    pub async fn close(&self) {
        self.inner.link.close().await;
    }

    async fn publish_batch(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        let config = &self.inner.config;
        let routes: Vec<Route> = batch.iter().map(|m| config.route_for(m)).collect();
        let mut results: Vec<Option<Result<(), PublishError>>> =
            batch.iter().map(|_| None).collect();
        let mut sendable = Vec::with_capacity(batch.len());
        for (index, message) in batch.iter().enumerate() {
            match wire::prepare(message, routes[index].clone()) {
                Ok(prepared) => sendable.push((index, prepared)),
                Err(err) => results[index] = Some(Err(err)),
            }
        }

        let mut suspects = Vec::new();
        let mut broker_closed_channel = false;
        for (index, sent) in self.send(&sendable, &routes, batch, false).await {
            results[index] = Some(match sent {
                Sent::Confirmed => Ok(()),
                Sent::Failed(err) => Err(err),
                Sent::ChannelLost(err) => {
                    broker_closed_channel |= error::channel_closed_by_broker(&err).is_some();
                    suspects.push((index, err));
                    continue;
                }
            });
        }
        if broker_closed_channel && suspects.len() > 1 {
            // The broker closed the channel because of one publish (an unknown exchange, a
            // refused permission...), failing every unconfirmed one: send them one by one
            // to learn which, so that only that message is failed for good.
            debug!(
                messages = suspects.len(),
                "the broker closed the channel; publishing its unconfirmed messages one by one"
            );
            let prepared: HashMap<usize, &Prepared<'_>> =
                sendable.iter().map(|(index, p)| (*index, p)).collect();
            let routes = &routes;
            let singles: Vec<_> = suspects
                .iter()
                .map(|(index, _)| {
                    let single = [(*index, (*prepared[index]).clone())];
                    async move { self.send(&single, routes, batch, true).await }
                })
                .collect();
            let resent: Vec<Vec<(usize, Sent)>> = stream::iter(singles)
                .buffered(ISOLATION_CONCURRENCY)
                .collect()
                .await;
            for (index, sent) in resent.into_iter().flatten() {
                results[index] = Some(match sent {
                    Sent::Confirmed => Ok(()),
                    Sent::Failed(err) => Err(err),
                    Sent::ChannelLost(err) => Err(error::publish_failed(
                        &err,
                        &routes[index],
                        true,
                        config.unroutable_is_transient,
                    )),
                });
            }
        } else {
            let isolated = suspects.len() == 1;
            for (index, err) in suspects {
                results[index] = Some(Err(error::publish_failed(
                    &err,
                    &routes[index],
                    isolated,
                    config.unroutable_is_transient,
                )));
            }
        }

        batch
            .iter()
            .zip(results)
            .map(|(message, result)| match result {
                Some(Ok(())) => PublishOutcome::Acked,
                Some(Err(err)) => {
                    debug!(
                        message_id = %message.message_id,
                        transient = err.is_transient(),
                        error = %err.describe(),
                        "publish failed"
                    );
                    PublishOutcome::Failed(err)
                }
                None => PublishOutcome::Failed(PublishError::transient(
                    "the publisher lost track of this message; it is retried",
                )),
            })
            .collect()
    }

    /// Publishes `messages` on one channel and awaits their confirms.
    async fn send(
        &self,
        messages: &[(usize, Prepared<'_>)],
        routes: &[Route],
        batch: &[Message],
        isolated: bool,
    ) -> Vec<(usize, Sent)> {
        if messages.is_empty() {
            return Vec::new();
        }
        let config = &self.inner.config;
        let deadline = Instant::now() + config.reconnect_wait;
        let channel = match self.inner.link.channel(deadline).await {
            Ok(channel) => channel,
            Err(err) => {
                return messages
                    .iter()
                    .map(|(index, _)| (*index, Sent::Failed(err.publish_error())))
                    .collect();
            }
        };
        // Every publish is started (its frames queued, in order) before any confirm is
        // awaited; `buffered` bounds how many are in flight and keeps the batch order.
        let publishes: Vec<_> = messages
            .iter()
            .map(|(index, prepared)| {
                let channel = &channel;
                async move {
                    let wait = Patience::new(&self.inner.link, config);
                    let options = BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    };
                    let send = std::pin::pin!(channel.basic_publish(
                        prepared.exchange.clone(),
                        prepared.routing_key.clone(),
                        options,
                        prepared.payload,
                        prepared.properties.clone(),
                    ));
                    let attempt = match wait.run(send).await {
                        None => Attempt::NotSent,
                        Some(Err(err)) => Attempt::Done(Box::new(Err(err))),
                        Some(Ok(mut confirm)) => match wait.run(&mut confirm).await {
                            Some(confirmed) => Attempt::Done(Box::new(confirmed)),
                            None => Attempt::Late(confirm),
                        },
                    };
                    (*index, attempt)
                }
            })
            .collect();
        let attempts: Vec<(usize, Attempt)> = stream::iter(publishes)
            .buffered(config.max_in_flight)
            .collect()
            .await;

        // A return (no queue took the message) arrives before its confirm, but lapin hands
        // it out with whichever confirm of the channel resolves next. The channel is this
        // call's alone, so every return is one of this call's messages: they are matched
        // by the message_id property once all confirms are in, late ones included.
        let mut returns = Returns::default();
        let mut healthy = true;
        let mut returns_may_be_lost = false;
        let mut outcomes = Vec::with_capacity(attempts.len());
        for (index, attempt) in attempts {
            let route = &routes[index];
            let confirmed = match attempt {
                Attempt::Done(confirmed) => Some(*confirmed),
                // A confirm that came after its deadline still counts, and may carry
                // another message's return.
                Attempt::Late(confirm) => {
                    healthy = false;
                    confirm.now_or_never()
                }
                Attempt::NotSent => {
                    healthy = false;
                    returns_may_be_lost = true;
                    None
                }
            };
            let sent = match confirmed {
                None => Sent::Failed(error::confirm_timed_out(route, config.confirm_timeout)),
                Some(Ok(confirmation)) => {
                    let acked = confirmation.is_ack();
                    let requested = !matches!(confirmation, Confirmation::NotRequested);
                    if let Some(returned) = confirmation.take_message() {
                        returns.add(returned);
                    }
                    match (requested, acked) {
                        (true, true) => Sent::Confirmed,
                        (true, false) => Sent::Failed(error::nacked(route)),
                        (false, _) => {
                            healthy = false;
                            Sent::Failed(error::not_confirmed(route))
                        }
                    }
                }
                Some(Err(err)) => {
                    healthy = false;
                    let channel_level = matches!(
                        err.kind(),
                        ErrorKind::InvalidChannelState(..) | ErrorKind::InvalidChannel(_)
                    ) || error::channel_closed_by_broker(&err).is_some();
                    if channel_level && !isolated {
                        Sent::ChannelLost(err)
                    } else {
                        Sent::Failed(error::publish_failed(
                            &err,
                            route,
                            isolated,
                            config.unroutable_is_transient,
                        ))
                    }
                }
            };
            outcomes.push((index, sent));
        }
        if returns_may_be_lost {
            // A publish abandoned half-sent left lapin a confirm this call no longer holds,
            // which may receive another message's return: trust no ack of this channel.
            for (_, sent) in &mut outcomes {
                if matches!(sent, Sent::Confirmed) {
                    *sent = Sent::Failed(error::untrusted_ack(config.confirm_timeout));
                }
            }
        }
        for (index, sent) in &mut outcomes {
            if matches!(sent, Sent::ChannelLost(_)) {
                continue;
            }
            if let Some(failure) = returns.take(&batch[*index], &routes[*index], config) {
                *sent = Sent::Failed(failure);
            }
        }
        if healthy {
            self.inner.link.give_back(channel);
        }
        outcomes
    }
}

/// How long one publish may take: [`RabbitMqConfig::confirm_timeout`], extended while the
/// broker blocks the connection (a resource alarm), up to
/// [`RabbitMqConfig::reconnect_wait`] more.
struct Patience<'a> {
    link: &'a Link,
    deadline: Instant,
    limit: Instant,
}

impl<'a> Patience<'a> {
    fn new(link: &'a Link, config: &RabbitMqConfig) -> Self {
        let deadline = Instant::now() + config.confirm_timeout;
        Patience {
            link,
            deadline,
            limit: deadline + config.reconnect_wait,
        }
    }

    /// The output of `future`, or `None` if it did not come in time.
    async fn run<F: Future + Unpin>(&self, mut future: F) -> Option<F::Output> {
        let mut deadline = self.deadline;
        loop {
            match timeout_at(deadline, &mut future).await {
                Ok(output) => return Some(output),
                Err(_) if self.link.is_blocked() && Instant::now() < self.limit => {
                    deadline = (Instant::now() + BLOCKED_RECHECK).min(self.limit);
                }
                Err(_) => return None,
            }
        }
    }
}

/// While the broker blocks the connection, how often a waiting publish looks again whether
/// the block is still on.
const BLOCKED_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// One publish on the channel: its confirm, or why there is none.
enum Attempt {
    Done(Box<Result<Confirmation, lapin::Error>>),
    /// Sent, but not confirmed in time; kept, so that a late confirm can still be read.
    Late(lapin::PublisherConfirm),
    /// Not even handed to the connection in time.
    NotSent,
}

/// Single publishes at once while finding which message made the broker close a channel.
const ISOLATION_CONCURRENCY: usize = 8;

/// The messages the broker returned as unroutable, by message id.
#[derive(Default)]
struct Returns {
    by_id: HashMap<String, (u16, String)>,
    /// Returns without a message id: matched by route, conservatively.
    anonymous: Vec<(Route, u16, String)>,
}

impl Returns {
    fn add(&mut self, returned: lapin::message::BasicReturnMessage) {
        let reply = (returned.reply_code, returned.reply_text.to_string());
        match returned.delivery.properties.message_id() {
            Some(id) => {
                self.by_id.insert(id.to_string(), reply);
            }
            None => self.anonymous.push((
                Route::new(
                    returned.delivery.exchange.as_str(),
                    returned.delivery.routing_key.as_str(),
                ),
                reply.0,
                reply.1,
            )),
        }
    }

    /// The failure of `message` if the broker returned it.
    fn take(
        &mut self,
        message: &Message,
        route: &Route,
        config: &RabbitMqConfig,
    ) -> Option<PublishError> {
        if self.by_id.is_empty() && self.anonymous.is_empty() {
            return None;
        }
        if let Some((code, text)) = self.by_id.remove(&message.message_id.to_string()) {
            return Some(error::returned(
                code,
                &text,
                route,
                config.unroutable_is_transient,
            ));
        }
        // A return this publisher cannot attribute: never count a message on that route as
        // published, retry it instead.
        self.anonymous
            .iter()
            .find(|(returned, _, _)| returned == route)
            .map(|(_, code, text)| error::returned(*code, text, route, true))
    }
}

impl Publisher for RabbitMqPublisher {
    /// RabbitMQ does not de-duplicate; the size limit is
    /// [`RabbitMqConfig::max_message_bytes`].
    fn capabilities(&self) -> PublisherCapabilities {
        let mut capabilities = PublisherCapabilities::default();
        capabilities.max_message_bytes = self.inner.config.max_message_bytes;
        capabilities
    }

    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        if batch.is_empty() {
            return Vec::new();
        }
        let span = debug_span!("outbox.rabbitmq.publish", messages = batch.len());
        self.publish_batch(batch).instrument(span).await
    }
}
