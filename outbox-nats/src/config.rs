//! Settings of a [`NatsPublisher`](crate::NatsPublisher).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use outbox_core::{Error, Message, Result};

/// Chooses the subject a message is published to; see [`NatsConfig::with_subject`].
pub type SubjectMapper = Arc<dyn Fn(&Message) -> String + Send + Sync>;

/// How a [`NatsPublisher`](crate::NatsPublisher) publishes to JetStream.
///
/// ```
/// use std::time::Duration;
///
/// let mut config = outbox_nats::NatsConfig::default()
///     .with_subject(|message| format!("events.{}", message.topic));
/// config.ack_timeout = Duration::from_secs(10);
/// config.validate()?;
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct NatsConfig {
    /// How long to wait for JetStream's PubAck (default 5 s). A publish that gets no PubAck
    /// in time is a transient failure: the relay retries it, and the `Nats-Msg-Id` header
    /// lets JetStream drop the second copy if the first one did arrive.
    pub ack_timeout: Duration,
    /// Publishes awaiting their PubAck at once within one
    /// [`publish`](outbox_core::Publisher::publish) call (default 256).
    pub max_in_flight: usize,
    /// Whether "no stream captures this subject" is retried (default `false`: the message
    /// becomes dead at once with an error saying which subject needs a stream). Set it when
    /// streams are created by another process that may start after the relay.
    pub no_stream_is_transient: bool,
    /// The JetStream domain to publish in (default: none, the account's own JetStream).
    pub jetstream_domain: Option<String>,
    /// The subject of each message (default: its topic, unchanged). Set it with
    /// [`with_subject`](Self::with_subject).
    pub subject: Option<SubjectMapper>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            ack_timeout: Duration::from_secs(5),
            max_in_flight: 256,
            no_stream_is_transient: false,
            jetstream_domain: None,
            subject: None,
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("ack_timeout", &self.ack_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("no_stream_is_transient", &self.no_stream_is_transient)
            .field("jetstream_domain", &self.jetstream_domain)
            .field("subject", &self.subject.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

impl NatsConfig {
    /// Publishes each message to the subject `subject(message)` instead of its topic, for
    /// example to add a prefix, or to put the key in the subject so that consumers can
    /// filter on it.
    ///
    /// ```
    /// let config = outbox_nats::NatsConfig::default().with_subject(|message| {
    ///     match &message.key {
    ///         Some(key) => format!("{}.{key}", message.topic),
    ///         None => message.topic.clone(),
    ///     }
    /// });
    /// # let _ = config;
    /// ```
    pub fn with_subject(
        mut self,
        subject: impl Fn(&Message) -> String + Send + Sync + 'static,
    ) -> Self {
        self.subject = Some(Arc::new(subject));
        self
    }

    /// Checks that the settings can work.
    ///
    /// ```
    /// let mut config = outbox_nats::NatsConfig::default();
    /// config.max_in_flight = 0;
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.ack_timeout.is_zero() {
            return Err(Error::invalid_config(
                "ack_timeout is 0, so no PubAck could ever arrive in time; use seconds",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(Error::invalid_config(
                "max_in_flight is 0; use at least the relay's batch size",
            ));
        }
        if let Some(domain) = &self.jetstream_domain {
            let valid = !domain.is_empty()
                && domain.chars().all(|c| {
                    !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>')
                });
            if !valid {
                return Err(Error::invalid_config(format!(
                    "jetstream_domain {domain:?} is not a JetStream domain name (non-empty, without white space, '.', '*' or '>')"
                )));
            }
        }
        Ok(())
    }

    /// The subject `message` is published to.
    pub(crate) fn subject_for<'m>(&self, message: &'m Message) -> Cow<'m, str> {
        match &self.subject {
            Some(subject) => Cow::Owned(subject(message)),
            None => Cow::Borrowed(&message.topic),
        }
    }
}
