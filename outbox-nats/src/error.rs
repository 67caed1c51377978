//! async-nats errors mapped onto outbox errors: what is retried, what makes a message dead.

use async_nats::jetstream::context::{PublishError as NatsPublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{ConnectError as NatsConnectError, ConnectErrorKind};
use outbox_core::PublishError;

use crate::config::NatsConfig;

/// Why a [`NatsPublisher`](crate::NatsPublisher) could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The [`NatsConfig`] is unusable.
    #[error(transparent)]
    Config(#[from] outbox_core::Error),
    /// The server could not be reached, or refused the connection.
    #[error("could not connect to NATS at {url}")]
    Connect {
        /// The server's URL, password removed.
        url: String,
        /// The client's error.
        source: NatsConnectError,
    },
}

impl ConnectError {
    /// Whether trying again later may succeed: the server was unreachable or slow, as
    /// opposed to a bad URL, refused credentials or a TLS mismatch.
    ///
    /// ```no_run
    /// # async fn demo() {
    /// use outbox_nats::{NatsConfig, NatsPublisher};
    ///
    /// match NatsPublisher::connect("nats://127.0.0.1:4222", NatsConfig::default()).await {
    ///     Ok(publisher) => { /* run the relay */ }
    ///     Err(err) if err.is_transient() => { /* wait, then connect again */ }
    ///     Err(err) => panic!("fix the configuration: {err}"),
    /// }
    /// # }
    /// ```
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Config(_) => false,
            ConnectError::Connect { source, .. } => matches!(
                source.kind(),
                ConnectErrorKind::Io
                    | ConnectErrorKind::TimedOut
                    | ConnectErrorKind::Dns
                    | ConnectErrorKind::MaxReconnects
            ),
        }
    }
}

/// Maps a failed JetStream publish (sending it, or awaiting its PubAck).
pub(crate) fn publish_failed(
    err: NatsPublishError,
    subject: &str,
    config: &NatsConfig,
) -> PublishError {
    match err.kind() {
        PublishErrorKind::StreamNotFound => {
            let text = format!(
                "no JetStream stream captures subject {subject:?} (the publish got no responders): \
                 create a stream whose subjects cover it (e.g. `nats stream add --subjects '{subject}'`), \
                 or map the topic to a subject that a stream covers"
            );
            if config.no_stream_is_transient {
                PublishError::transient(text)
            } else {
                PublishError::permanent(text)
            }
        }
        PublishErrorKind::TimedOut => PublishError::transient(format!(
            "no PubAck for subject {subject:?} within {:?}; JetStream may or may not hold the \
             message, so it is retried (its Nats-Msg-Id lets JetStream drop a second copy)",
            config.ack_timeout
        )),
        PublishErrorKind::BrokenPipe => PublishError::transient(format!(
            "the NATS connection closed before the PubAck for subject {subject:?} arrived"
        )),
        // Only publishes with `Nats-Expected-*` headers get these, and this publisher
        // refuses such headers; should one arrive anyway, retrying cannot fix it.
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            PublishError::permanent(format!(
                "JetStream refused the message for subject {subject:?}: an expected-last check failed"
            ))
        }
        PublishErrorKind::Other => other_failure(&err, subject),
    }
    .with_source(err)
}

/// A JetStream API error in the PubAck, or a local failure (client closed, bad response).
fn other_failure(err: &NatsPublishError, subject: &str) -> PublishError {
    let api_error =
        std::error::Error::source(err).and_then(|source| source.downcast_ref::<jetstream::Error>());
    let Some(api_error) = api_error else {
        // The client is closed or the response was unreadable: the message may or may not
        // be stored, and a retry is safe thanks to Nats-Msg-Id.
        return PublishError::transient(format!("publishing to subject {subject:?} failed"));
    };
    api_failure(api_error, subject)
}

/// JetStream's answer to a publish was an API error.
fn api_failure(api_error: &jetstream::Error, subject: &str) -> PublishError {
    let refused = |transient: bool, why: &str| {
        let text = format!("JetStream refused the message for subject {subject:?}: {why}");
        if transient {
            PublishError::transient(text)
        } else {
            PublishError::permanent(text)
        }
    };
    match api_error.error_code() {
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => refused(
            false,
            "it is larger than the stream's max_msg_size; send a reference to large data instead, or raise the limit",
        ),
        ErrorCode::STREAM_STORE_FAILED
        | ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::MEMORY_RESOURCES_EXCEEDED
        | ErrorCode::INSUFFICIENT_RESOURCES
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED => refused(
            true,
            "the stream or account is full (limits with discard=new, or out of storage); retried until consumers or limits make room",
        ),
        ErrorCode::CLUSTER_NOT_AVAILABLE
        | ErrorCode::CLUSTER_NO_PEERS
        | ErrorCode::CLUSTER_NOT_LEADER
        | ErrorCode::CLUSTER_NOT_ACTIVE
        | ErrorCode::CLUSTER_INCOMPLETE
        | ErrorCode::JETSTREAM_NOT_ENABLED => refused(true, "JetStream is not available right now"),
        // Otherwise the status code says whose fault it is: 4xx the request's, 5xx the server's.
        _ if (400..500).contains(&api_error.code()) => {
            refused(false, "JetStream rejects this request as it stands")
        }
        _ => refused(true, "a server-side JetStream error"),
    }
}

/// The message with its headers is larger than the server's max_payload: NATS would close
/// the connection on it, so it is never sent.
pub(crate) fn too_large(size: usize, limit: usize, subject: &str) -> PublishError {
    PublishError::permanent(format!(
        "the message for subject {subject:?} is {size} bytes with its headers, over the NATS \
         server's max_payload of {limit} bytes; send a reference to large data instead, or \
         raise max_payload"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, err_code: u64) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": code,
            "err_code": err_code,
            "description": "from the server",
        }))
        .expect("a JetStream API error")
    }

    #[test]
    fn api_errors_are_mapped_by_their_error_code_then_status() {
        let cases = [
            (400, 10054, false, "max_msg_size"), // message exceeds the stream's maximum
            (503, 10077, true, "full"),          // stream store failed: maximum messages
            (500, 10047, true, "full"),          // storage resources exceeded
            (503, 10008, true, "not available"), // cluster not available
            (400, 10003, false, "rejects"),      // bad request
            (500, 99999, true, "server-side"),   // unknown server error
        ];
        for (code, err_code, transient, text) in cases {
            let err = api_failure(&api_error(code, err_code), "orders");
            assert_eq!(err.is_transient(), transient, "{err_code}: {err}");
            assert!(err.to_string().contains(text), "{err_code}: {err}");
        }
    }
}
