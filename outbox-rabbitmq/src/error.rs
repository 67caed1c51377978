//! lapin errors and broker answers mapped onto outbox errors: what is retried, what makes a
//! message dead.
//!
//! The mapping goes by lapin's [`ErrorKind`] and by the AMQP reply code the broker gave
//! (`NO_ROUTE` 312, `NOT_FOUND` 404, ...), never by the text of a message.

use std::time::Duration;

use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::{Error as LapinError, ErrorKind};
use outbox_core::PublishError;

use crate::config::Route;

/// Why a [`RabbitMqPublisher`](crate::RabbitMqPublisher) could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The [`RabbitMqConfig`](crate::RabbitMqConfig) is unusable.
    #[error(transparent)]
    Config(#[from] outbox_core::Error),
    /// The URL is not an AMQP URL.
    #[error("{url} is not a usable AMQP URL: {reason}")]
    InvalidUrl {
        /// The URL, password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The broker could not be reached, refused the connection, or refused to declare the
    /// exchange.
    #[error("could not connect to RabbitMQ at {url}")]
    Connect {
        /// The broker's URL, password removed.
        url: String,
        /// The client's error.
        source: LapinError,
    },
    /// Connecting took longer than [`connect_timeout`](crate::RabbitMqConfig::connect_timeout).
    #[error("could not connect to RabbitMQ at {url} within {timeout:?}")]
    TimedOut {
        /// The broker's URL, password removed.
        url: String,
        /// The configured timeout.
        timeout: Duration,
    },
}

impl ConnectError {
    /// Whether trying again later may succeed: the broker was unreachable, slow or
    /// restarting, as opposed to a bad URL, refused credentials, an unknown virtual host or
    /// an exchange declared with other settings.
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use outbox_rabbitmq::{RabbitMqConfig, RabbitMqPublisher};
    ///
    /// let url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    /// match RabbitMqPublisher::connect(url, RabbitMqConfig::default()).await {
    ///     Ok(publisher) => { /* run the relay */ }
    ///     Err(err) if err.is_transient() => { /* wait, then connect again */ }
    ///     Err(err) => panic!("fix the configuration: {err}"),
    /// }
    /// # }
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Config(_) | ConnectError::InvalidUrl { .. } => false,
            ConnectError::TimedOut { .. } => true,
            ConnectError::Connect { source, .. } => connection_failure_is_transient(source),
        }
    }
}

/// Whether a failure to connect (or to declare the exchange) may go away by itself.
pub(crate) fn connection_failure_is_transient(err: &LapinError) -> bool {
    match err.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            // Refused credentials, unknown or forbidden virtual host: fix the configuration.
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
            | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED | AMQPHardError::INVALIDPATH) => false,
            // The exchange exists with another type or durability.
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => false,
            _ => true,
        },
        ErrorKind::InvalidProtocolVersion(_)
        | ErrorKind::AuthProviderError(_)
        | ErrorKind::NoDefaultRuntime
        | ErrorKind::ParsingError(_) => false,
        _ => true,
    }
}

/// `exchange "x" with routing key "k"`, for error texts.
pub(crate) fn describe_route(route: &Route) -> String {
    if route.exchange.is_empty() {
        format!(
            "the default exchange with routing key {:?}",
            route.routing_key
        )
    } else {
        format!(
            "exchange {:?} with routing key {:?}",
            route.exchange, route.routing_key
        )
    }
}

/// The broker returned the message (`mandatory`): no queue took it.
pub(crate) fn returned(
    reply_code: u16,
    reply_text: &str,
    route: &Route,
    unroutable_is_transient: bool,
) -> PublishError {
    let text = format!(
        "RabbitMQ returned the message sent to {}: {reply_text} ({reply_code}); bind a queue \
         for this routing key, or map the topic to a route that has one",
        describe_route(route)
    );
    // 312 NO_ROUTE is "nobody is bound"; anything else (313 NO_CONSUMERS for `immediate`,
    // which this publisher does not set) is nothing the message itself can fix.
    let no_route = AMQPSoftError::from_id(reply_code) == Some(AMQPSoftError::NOROUTE);
    if no_route && !unroutable_is_transient {
        PublishError::permanent(text)
    } else {
        PublishError::transient(text)
    }
}

/// The broker nacked the message: a queue could not take it (an internal error, a queue
/// over its length limit with `reject-publish`).
pub(crate) fn nacked(route: &Route) -> PublishError {
    PublishError::transient(format!(
        "RabbitMQ nacked the message sent to {} (a queue refused it or failed to store it)",
        describe_route(route)
    ))
}

/// No confirm within the configured time.
pub(crate) fn confirm_timed_out(route: &Route, timeout: Duration) -> PublishError {
    PublishError::transient(format!(
        "no publisher confirm for the message sent to {} within {timeout:?}; RabbitMQ may or \
         may not hold it, so it is retried (consumers can drop the copy by message_id)",
        describe_route(route)
    ))
}

/// A message was acked on a channel where a publish was abandoned half-sent.
pub(crate) fn untrusted_ack(timeout: Duration) -> PublishError {
    PublishError::transient(format!(
        "another publish on the channel could not be sent within {timeout:?}, so a return \
         for this message could have been missed; it is sent again (consumers can drop the \
         copy by message_id)"
    ))
}

/// Confirm mode was off on the channel; cannot happen with this publisher's channels.
pub(crate) fn not_confirmed(route: &Route) -> PublishError {
    PublishError::transient(format!(
        "the channel did not confirm the message sent to {}; it is retried",
        describe_route(route)
    ))
}

/// The broker closed the channel because of a publish: the reply code when it was a
/// channel-level (soft) error, which a single publish can cause.
pub(crate) fn channel_closed_by_broker(err: &LapinError) -> Option<&AMQPError> {
    match err.kind() {
        ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), AMQPErrorKind::Soft(_)) => {
            Some(amqp)
        }
        _ => None,
    }
}

/// A publish (sending it, or awaiting its confirm) failed with a client or broker error.
///
/// `isolated` says whether this message was alone on its channel, so that a channel the
/// broker closed was closed because of it.
pub(crate) fn publish_failed(
    err: &LapinError,
    route: &Route,
    isolated: bool,
    unroutable_is_transient: bool,
) -> PublishError {
    let to = describe_route(route);
    let ErrorKind::ProtocolError(amqp) = err.kind() else {
        return client_failure(err, &to).with_source(err.clone());
    };
    // The broker's reply (code and text) is the cause; lapin's wrapper adds nothing to it.
    let error = match amqp.kind() {
        AMQPErrorKind::Soft(soft) if isolated => match soft {
            AMQPSoftError::NOTFOUND => {
                let text = format!(
                    "RabbitMQ refused the message sent to {to} (declare the exchange, or set \
                     declare_exchange, or map the topic to an existing exchange)"
                );
                if unroutable_is_transient {
                    PublishError::transient(text)
                } else {
                    PublishError::permanent(text)
                }
            }
            AMQPSoftError::ACCESSREFUSED
            | AMQPSoftError::PRECONDITIONFAILED
            | AMQPSoftError::CONTENTTOOLARGE => {
                PublishError::permanent(format!("RabbitMQ refused the message sent to {to}"))
            }
            AMQPSoftError::NOROUTE | AMQPSoftError::NOCONSUMERS | AMQPSoftError::RESOURCELOCKED => {
                PublishError::transient(format!("RabbitMQ refused the message sent to {to}"))
            }
        },
        AMQPErrorKind::Soft(_) => PublishError::transient(format!(
            "RabbitMQ closed the channel before confirming the message sent to {to}, because \
             of this message or another one on the channel"
        )),
        // Connection-level: the connection is gone, whatever the message.
        AMQPErrorKind::Hard(_) => PublishError::transient(format!(
            "RabbitMQ closed the connection before confirming the message sent to {to}"
        )),
    };
    error.with_source(amqp.clone())
}

/// A failure on the client's side of the connection.
fn client_failure(err: &LapinError, to: &str) -> PublishError {
    match err.kind() {
        ErrorKind::IOError(_) | ErrorKind::MissingHeartbeatError => {
            PublishError::transient(format!(
                "the connection to RabbitMQ broke before the message sent to {to} was confirmed"
            ))
        }
        ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannel(_) => PublishError::transient(format!(
            "the channel or connection closed before the message sent to {to} was confirmed"
        )),
        // The frame could not be encoded: the same message fails the same way every time.
        ErrorKind::SerialisationError(_) => PublishError::permanent(format!(
            "the message sent to {to} cannot be encoded as AMQP frames"
        )),
        _ => PublishError::transient(format!("publishing the message sent to {to} failed")),
    }
}

/// No connection could be made within `reconnect_wait`.
pub(crate) fn unavailable(url: &str, waited: Duration) -> String {
    format!(
        "RabbitMQ at {url} is unreachable (waited {waited:?} for a connection; reconnecting \
         with backoff)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol_error(kind: impl Into<AMQPErrorKind>, text: &str) -> LapinError {
        ErrorKind::ProtocolError(AMQPError::new(kind.into(), text.into())).into()
    }

    fn route() -> Route {
        Route::new("orders", "placed")
    }

    #[test]
    fn returns_are_permanent_unless_configured_transient() {
        let err = returned(312, "NO_ROUTE", &route(), false);
        assert!(!err.is_transient());
        assert!(err.to_string().contains("NO_ROUTE (312)"), "{err}");
        assert!(err.to_string().contains("exchange \"orders\""), "{err}");
        assert!(returned(312, "NO_ROUTE", &route(), true).is_transient());
        assert!(returned(313, "NO_CONSUMERS", &route(), false).is_transient());
    }

    #[test]
    fn channel_errors_are_mapped_by_reply_code_when_the_message_was_alone() {
        let cases = [
            (AMQPSoftError::NOTFOUND, false, "declare_exchange"),
            (AMQPSoftError::ACCESSREFUSED, false, "refused"),
            (AMQPSoftError::PRECONDITIONFAILED, false, "refused"),
            (AMQPSoftError::RESOURCELOCKED, true, "refused"),
        ];
        for (kind, transient, text) in cases {
            let err = publish_failed(
                &protocol_error(kind.clone(), "REASON"),
                &route(),
                true,
                false,
            );
            assert_eq!(err.is_transient(), transient, "{kind:?}: {err}");
            assert!(err.to_string().contains(text), "{kind:?}: {err}");
            assert!(err.describe().contains("REASON"), "{kind:?}: {err}");
        }
        let not_found = protocol_error(AMQPSoftError::NOTFOUND, "NOT_FOUND - no exchange");
        assert!(publish_failed(&not_found, &route(), true, true).is_transient());
        // With other messages on the channel, nobody knows whose fault it was.
        assert!(publish_failed(&not_found, &route(), false, false).is_transient());
        assert!(channel_closed_by_broker(&not_found).is_some());
    }

    #[test]
    fn connection_losses_are_transient() {
        let forced = protocol_error(AMQPHardError::CONNECTIONFORCED, "CONNECTION_FORCED");
        assert!(publish_failed(&forced, &route(), true, false).is_transient());
        assert!(channel_closed_by_broker(&forced).is_none());
        let io: LapinError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        let err = publish_failed(&io, &route(), true, false);
        assert!(err.is_transient());
        assert!(err.describe().contains("broke"), "{}", err.describe());
        let heartbeat: LapinError = ErrorKind::MissingHeartbeatError.into();
        assert!(publish_failed(&heartbeat, &route(), true, false).is_transient());
    }

    #[test]
    fn connect_failures_are_transient_unless_the_configuration_is_wrong() {
        let refused: LapinError =
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(connection_failure_is_transient(&refused));
        assert!(connection_failure_is_transient(&protocol_error(
            AMQPHardError::CONNECTIONFORCED,
            "shutdown"
        )));
        assert!(!connection_failure_is_transient(&protocol_error(
            AMQPSoftError::ACCESSREFUSED,
            "login refused"
        )));
        assert!(!connection_failure_is_transient(&protocol_error(
            AMQPHardError::NOTALLOWED,
            "vhost not found"
        )));
        assert!(!connection_failure_is_transient(&protocol_error(
            AMQPSoftError::PRECONDITIONFAILED,
            "inequivalent arg 'type'"
        )));
    }
}
