//! Settings of a [`RabbitMqPublisher`](crate::RabbitMqPublisher).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lapin::ExchangeKind;
use outbox_core::{Error, Message, Result};

/// Where a message goes: an exchange and a routing key.
///
/// ```
/// let route = outbox_rabbitmq::Route::new("orders", "order.placed");
/// assert_eq!(route.exchange, "orders");
/// assert_eq!(route.routing_key, "order.placed");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The exchange to publish to; `""` is the default exchange, which routes to the queue
    /// named by the routing key.
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
}

impl Route {
    /// A route to `exchange` with `routing_key`.
    ///
    /// ```
    /// // The default exchange delivers straight to the queue named "audit".
    /// let route = outbox_rabbitmq::Route::new("", "audit");
    /// # let _ = route;
    /// ```
    pub fn new(exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        Route {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
        }
    }
}

/// Chooses the [`Route`] of each message; see [`RabbitMqConfig::with_route`].
pub type RouteMapper = Arc<dyn Fn(&Message) -> Route + Send + Sync>;

/// How a [`RabbitMqPublisher`](crate::RabbitMqPublisher) publishes to RabbitMQ.
///
/// By default every message goes to [`exchange`](Self::exchange) with its topic as the
/// routing key; [`with_route`](Self::with_route) picks the exchange and routing key per
/// message instead.
///
/// ```
/// use std::time::Duration;
/// use outbox_rabbitmq::{ExchangeKind, RabbitMqConfig};
///
/// let mut config = RabbitMqConfig::with_exchange("orders");
/// config.declare_exchange = Some(ExchangeKind::Topic);
/// config.confirm_timeout = Duration::from_secs(10);
/// config.validate()?;
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct RabbitMqConfig {
    /// The exchange messages go to, with their topic as the routing key (default `""`, the
    /// default exchange: the topic names the queue). Ignored by a [`with_route`](Self::with_route)
    /// mapping, except for [`declare_exchange`](Self::declare_exchange).
    pub exchange: String,
    /// Declares [`exchange`](Self::exchange) as a durable exchange of this kind on every
    /// (re)connection (default `None`: the exchange must exist). Declaring is idempotent;
    /// if the exchange exists with another kind or durability, RabbitMQ refuses and
    /// connecting fails with a permanent error.
    pub declare_exchange: Option<ExchangeKind>,
    /// The route of each message (default: [`exchange`](Self::exchange) and the topic). Set
    /// it with [`with_route`](Self::with_route).
    pub route: Option<RouteMapper>,
    /// How long a publish waits for its publisher confirm, sending included (default 30 s).
    /// A message without a confirm in time is a transient failure: the relay retries it.
    pub confirm_timeout: Duration,
    /// Publishes awaiting their confirms at once within one
    /// [`publish`](outbox_core::Publisher::publish) call (default 512). Each call uses a
    /// channel of its own, so the relay's in-flight batches multiply this.
    pub max_in_flight: usize,
    /// How long a publish waits for the connection to be (re-)established while the broker
    /// is unreachable, or for the broker to lift a block (a memory or disk alarm), before
    /// its messages fail as transient (default 30 s). Waiting instead of failing at once
    /// keeps a broker restart from using up the messages' retry attempts;
    /// `Duration::ZERO` fails at once.
    pub reconnect_wait: Duration,
    /// The first delay between connection attempts (default 100 ms); it doubles after
    /// each failed attempt up to [`reconnect_delay_max`](Self::reconnect_delay_max), with
    /// jitter, and starts over after a successful connection.
    pub reconnect_delay_min: Duration,
    /// The longest delay between connection attempts (default 5 s).
    pub reconnect_delay_max: Duration,
    /// How long one connection attempt (TCP, TLS, AMQP handshake and exchange declaration)
    /// may take (default 10 s).
    pub connect_timeout: Duration,
    /// The connection name RabbitMQ shows (`rabbitmqctl list_connections client_properties`,
    /// the management UI) (default `"outbox-rabbitmq"`).
    pub connection_name: Option<String>,
    /// Whether a message that cannot be routed is retried (default `false`: it becomes dead
    /// at once, with the broker's reason). Covers a message returned as unroutable (no queue
    /// is bound for its routing key, `NO_ROUTE`) and an exchange that does not exist
    /// (`NOT_FOUND`). Set it when queues or exchanges are created by another process that
    /// may start after the relay.
    pub unroutable_is_transient: bool,
    /// The largest message, in bytes, sent to the broker (default 16 MiB, RabbitMQ 4's
    /// default `max_message_size`; RabbitMQ 3.x allows 128 MiB). The relay makes larger
    /// messages dead without sending them; the broker would close the channel instead.
    /// `None` sends everything.
    pub max_message_bytes: Option<usize>,
}

impl Default for RabbitMqConfig {
    fn default() -> Self {
        RabbitMqConfig {
            exchange: String::new(),
            declare_exchange: None,
            route: None,
            confirm_timeout: Duration::from_secs(30),
            max_in_flight: 512,
            reconnect_wait: Duration::from_secs(30),
            reconnect_delay_min: Duration::from_millis(100),
            reconnect_delay_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            connection_name: Some("outbox-rabbitmq".to_owned()),
            unroutable_is_transient: false,
            max_message_bytes: Some(16 * 1024 * 1024),
        }
    }
}

impl fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqConfig")
            .field("exchange", &self.exchange)
            .field("declare_exchange", &self.declare_exchange)
            .field("route", &self.route.as_ref().map(|_| "<fn>"))
            .field("confirm_timeout", &self.confirm_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("reconnect_wait", &self.reconnect_wait)
            .field("reconnect_delay_min", &self.reconnect_delay_min)
            .field("reconnect_delay_max", &self.reconnect_delay_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("connection_name", &self.connection_name)
            .field("unroutable_is_transient", &self.unroutable_is_transient)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

impl RabbitMqConfig {
    /// Default settings publishing to `exchange`, with each message's topic as the routing
    /// key.
    ///
    /// ```
    /// let config = outbox_rabbitmq::RabbitMqConfig::with_exchange("events");
    /// assert_eq!(config.exchange, "events");
    /// ```
    pub fn with_exchange(exchange: impl Into<String>) -> Self {
        RabbitMqConfig {
            exchange: exchange.into(),
            ..Self::default()
        }
    }

    /// Publishes each message along `route(message)` instead of
    /// [`exchange`](Self::exchange) and its topic: for example an exchange per topic
    /// prefix, or the key in the routing key.
    ///
    /// ```
    /// use outbox_rabbitmq::{RabbitMqConfig, Route};
    ///
    /// // "orders.placed" goes to exchange "orders" with routing key "placed".
    /// let config = RabbitMqConfig::default().with_route(|message| {
    ///     match message.topic.split_once('.') {
    ///         Some((exchange, rest)) => Route::new(exchange, rest),
    ///         None => Route::new("events", message.topic.clone()),
    ///     }
    /// });
    /// # let _ = config;
    /// ```
    pub fn with_route(mut self, route: impl Fn(&Message) -> Route + Send + Sync + 'static) -> Self {
        self.route = Some(Arc::new(route));
        self
    }

    /// Checks that the settings can work.
    ///
    /// ```
    /// let mut config = outbox_rabbitmq::RabbitMqConfig::default();
    /// config.max_in_flight = 0;
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.confirm_timeout.is_zero() {
            return Err(Error::invalid_config(
                "confirm_timeout is 0, so no publisher confirm could ever arrive in time; use seconds",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(Error::invalid_config(
                "max_in_flight is 0; use at least the relay's batch size",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::invalid_config(
                "connect_timeout is 0, so no connection could ever be made; use seconds",
            ));
        }
        if self.reconnect_delay_min.is_zero() || self.reconnect_delay_max < self.reconnect_delay_min
        {
            return Err(Error::invalid_config(
                "reconnect delays must satisfy 0 < reconnect_delay_min <= reconnect_delay_max; \
                 a zero delay would retry a down broker in a busy loop",
            ));
        }
        if self.exchange.len() > MAX_NAME_BYTES {
            return Err(Error::invalid_config(format!(
                "exchange {:?} is longer than AMQP's {MAX_NAME_BYTES} bytes",
                self.exchange
            )));
        }
        if self.declare_exchange.is_some() && self.exchange.is_empty() {
            return Err(Error::invalid_config(
                "declare_exchange is set but exchange is \"\" (the default exchange, which \
                 cannot be declared); name the exchange to declare",
            ));
        }
        if self
            .connection_name
            .as_ref()
            .is_some_and(|name| name.len() > MAX_NAME_BYTES)
        {
            return Err(Error::invalid_config(format!(
                "connection_name is longer than {MAX_NAME_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// The route of `message`.
    pub(crate) fn route_for(&self, message: &Message) -> Route {
        match &self.route {
            Some(route) => route(message),
            None => Route::new(self.exchange.clone(), message.topic.clone()),
        }
    }
}

/// AMQP short strings (exchange names, routing keys, header names) hold at most 255 bytes.
pub(crate) const MAX_NAME_BYTES: usize = 255;
