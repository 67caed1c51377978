//! The publisher's connection: made lazily again after it is lost, with backoff, and a pool
//! of idle confirm-mode channels on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, ConnectionStatus};
use outbox_core::PublishError;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tracing::{debug, info, warn};

use crate::config::RabbitMqConfig;
use crate::error::{ConnectError, unavailable};

/// How often a blocked connection is looked at again: lapin has no notification for it
/// besides its event stream, and a tenth of a second costs nothing while waiting.
const BLOCKED_POLL: Duration = Duration::from_millis(100);

/// Idle channels kept for reuse; more are closed when handed back.
const MAX_IDLE_CHANNELS: usize = 32;

type SharedError = Arc<dyn std::error::Error + Send + Sync>;

/// Why no channel could be had; turned into one [`PublishError`] per message.
#[derive(Clone)]
pub(crate) struct LinkError {
    text: String,
    source: Option<SharedError>,
}

impl LinkError {
    pub(crate) fn publish_error(&self) -> PublishError {
        let error = PublishError::transient(self.text.clone());
        match &self.source {
            Some(source) => error.with_source(source.clone()),
            None => error,
        }
    }
}

struct State {
    connection: Option<Connection>,
    /// Upper bound of the next wait between connection attempts.
    delay: Duration,
    /// No connection attempt before this.
    retry_at: Option<Instant>,
    last_error: Option<SharedError>,
}

/// The connection to the broker, shared by every clone of a publisher.
pub(crate) struct Link {
    uri: AMQPUri,
    /// The URL without its password, for logs and errors.
    pub(crate) url: String,
    properties: ConnectionProperties,
    config: RabbitMqConfig,
    state: tokio::sync::Mutex<State>,
    idle: Mutex<Vec<Channel>>,
    status: Mutex<Option<ConnectionStatus>>,
    closed: AtomicBool,
}

impl Link {
    /// Connects for the first time; errors are returned, not retried.
    pub(crate) async fn connect(
        uri: AMQPUri,
        url: String,
        mut properties: ConnectionProperties,
        config: RabbitMqConfig,
    ) -> Result<Self, ConnectError> {
        if let Some(name) = &config.connection_name {
            properties = properties.with_connection_name(name.as_str().into());
        }
        let link = Link {
            uri,
            url,
            properties,
            state: tokio::sync::Mutex::new(State {
                connection: None,
                delay: config.reconnect_delay_min,
                retry_at: None,
                last_error: None,
            }),
            config,
            idle: Mutex::new(Vec::new()),
            status: Mutex::new(None),
            closed: AtomicBool::new(false),
        };
        let (connection, channel) = link.open().await?;
        link.connected(&mut *link.state.lock().await, connection);
        link.give_back(channel);
        info!(url = %link.url, "connected to RabbitMQ");
        Ok(link)
    }

    /// A confirm-mode channel for one publish call: an idle one, a new one, or one on a new
    /// connection. While the broker is unreachable, or blocks publishing, waits (retrying
    /// with backoff) until `deadline`.
    pub(crate) async fn channel(&self, deadline: Instant) -> Result<Channel, LinkError> {
        let channel = self.any_channel(deadline).await?;
        // A broker under a memory or disk alarm stops reading publishing connections:
        // wait for the alarm to clear as for a reconnection, rather than send messages
        // that would only time out.
        while self.is_blocked() {
            let now = Instant::now();
            if now >= deadline {
                self.give_back(channel);
                return Err(LinkError {
                    text: format!(
                        "RabbitMQ at {} blocks publishing (a memory or disk alarm) and did not \
                         lift the block within {:?}",
                        self.url, self.config.reconnect_wait
                    ),
                    source: None,
                });
            }
            tokio::time::sleep(BLOCKED_POLL.min(deadline - now)).await;
        }
        Ok(channel)
    }

    async fn any_channel(&self, deadline: Instant) -> Result<Channel, LinkError> {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return Err(LinkError {
                    text: "the RabbitMQ publisher was closed".to_owned(),
                    source: None,
                });
            }
            if let Some(channel) = self.idle_channel() {
                return Ok(channel);
            }
            let Ok(mut state) = timeout_at(deadline, self.state.lock()).await else {
                return Err(self.unavailable(None));
            };
            // Another call may have reconnected or handed a channel back meanwhile.
            if let Some(channel) = self.idle_channel() {
                return Ok(channel);
            }
            if state
                .connection
                .as_ref()
                .is_some_and(|connection| !connection.status().connected())
            {
                warn!(url = %self.url, "the connection to RabbitMQ was lost; reconnecting");
                self.disconnected(&mut state);
            }
            if let Some(connection) = &state.connection {
                match timeout(self.config.connect_timeout, open_channel(connection)).await {
                    Ok(Ok(channel)) => return Ok(channel),
                    // The connection broke meanwhile: the next round reconnects.
                    Ok(Err(_)) if !connection.status().connected() => continue,
                    Ok(Err(err)) => {
                        return Err(LinkError {
                            text: format!("could not open a channel on RabbitMQ at {}", self.url),
                            source: Some(Arc::new(err)),
                        });
                    }
                    Err(_) => {
                        return Err(LinkError {
                            text: format!(
                                "opening a channel on RabbitMQ at {} took over {:?}",
                                self.url, self.config.connect_timeout
                            ),
                            source: None,
                        });
                    }
                }
            }
            if state.retry_at.is_none_or(|at| at <= Instant::now()) {
                match self.open().await {
                    Ok((connection, channel)) => {
                        self.connected(&mut state, connection);
                        info!(url = %self.url, "reconnected to RabbitMQ");
                        return Ok(channel);
                    }
                    Err(err) => self.attempt_failed(&mut state, err),
                }
            }
            let retry_at = state
                .retry_at
                .unwrap_or_else(|| Instant::now() + state.delay);
            let last_error = state.last_error.clone();
            drop(state);
            if Instant::now() >= deadline {
                return Err(self.unavailable(last_error));
            }
            sleep_until(retry_at.min(deadline)).await;
        }
    }

    /// Takes back a channel after a publish call that went well.
    pub(crate) fn give_back(&self, channel: Channel) {
        if self.closed.load(Ordering::Acquire) || !channel.status().connected() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_CHANNELS {
            idle.push(channel);
        }
    }

    /// Whether the broker blocks the connection (a resource alarm).
    pub(crate) fn is_blocked(&self) -> bool {
        lock(&self.status)
            .as_ref()
            .is_some_and(|status| status.connected() && status.blocked())
    }

    /// Whether the connection is up right now.
    pub(crate) fn is_connected(&self) -> bool {
        lock(&self.status)
            .as_ref()
            .is_some_and(ConnectionStatus::connected)
    }

    /// Closes the idle channels and the connection; later publishes fail.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut state = self.state.lock().await;
        let idle: Vec<Channel> = std::mem::take(&mut *lock(&self.idle));
        for channel in idle {
            if channel.status().connected() {
                // Closed here rather than on drop, where the close would race the
                // connection's.
                let _ = channel.close(200, "OK".into()).await;
            }
        }
        let connection = state.connection.take();
        self.disconnected(&mut state);
        let Some(connection) = connection.filter(|c| c.status().connected()) else {
            return;
        };
        if let Err(err) = connection.close(200, "OK".into()).await {
            debug!(error = %err, "closing the RabbitMQ connection failed");
        }
    }

    fn idle_channel(&self) -> Option<Channel> {
        let mut idle = lock(&self.idle);
        while let Some(channel) = idle.pop() {
            if channel.status().connected() {
                return Some(channel);
            }
        }
        None
    }

    fn connected(&self, state: &mut State, connection: Connection) {
        *lock(&self.status) = Some(connection.status().clone());
        lock(&self.idle).clear();
        state.connection = Some(connection);
        state.delay = self.config.reconnect_delay_min;
        state.retry_at = None;
        state.last_error = None;
    }

    fn disconnected(&self, state: &mut State) {
        state.connection = None;
        *lock(&self.status) = None;
        lock(&self.idle).clear();
    }

    fn attempt_failed(&self, state: &mut State, err: ConnectError) {
        // Full jitter on the upper half, so that many relays do not reconnect in step.
        let wait = state.delay.mul_f64(0.5 + fastrand::f64() * 0.5);
        warn!(
            url = %self.url,
            error = %report(&err),
            retry_in = ?wait,
            "could not connect to RabbitMQ"
        );
        state.retry_at = Some(Instant::now() + wait);
        state.delay = (state.delay * 2).min(self.config.reconnect_delay_max);
        state.last_error = Some(Arc::new(err));
    }

    fn unavailable(&self, last_error: Option<SharedError>) -> LinkError {
        LinkError {
            text: unavailable(&self.url, self.config.reconnect_wait),
            source: last_error,
        }
    }

    /// One connection attempt: connect, declare the exchange if configured, open a channel.
    async fn open(&self) -> Result<(Connection, Channel), ConnectError> {
        let attempt = async {
            let connect_error = |source| ConnectError::Connect {
                url: self.url.clone(),
                source,
            };
            let connection = Connection::connect_uri(self.uri.clone(), self.properties.clone())
                .await
                .map_err(connect_error)?;
            let channel = open_channel(&connection).await.map_err(connect_error)?;
            if let Some(kind) = &self.config.declare_exchange {
                let options = ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                };
                channel
                    .exchange_declare(
                        self.config.exchange.as_str().into(),
                        kind.clone(),
                        options,
                        FieldTable::default(),
                    )
                    .await
                    .map_err(connect_error)?;
            }
            Ok((connection, channel))
        };
        timeout(self.config.connect_timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::TimedOut {
                    url: self.url.clone(),
                    timeout: self.config.connect_timeout,
                })
            })
    }
}

async fn open_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `err` followed by its causes.
fn report(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(source) = cause {
        text.push_str(": ");
        text.push_str(&source.to_string());
        cause = source.source();
    }
    text
}
