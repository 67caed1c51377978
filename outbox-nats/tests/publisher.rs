//! NATS-specific behaviour against the local NATS server: de-duplication, error mapping,
//! limits, connection errors, and a relay end to end.

mod common;

use std::time::Duration;

use common::{NatsHarness, client, nats_url, unique_subject};
use futures::StreamExt;
use outbox_core::{MessageId, PublishOutcome, Publisher};
use outbox_nats::{NatsConfig, NatsPublisher};
use outbox_testkit::{
    assert_acked, assert_delivered_once, claimed as message, relay_mixed_backlog,
    single_failure as failure,
};

/// A second publish of one message id (a retry after a lost PubAck, a relay killed before
/// settling) is Acked, and the stream holds the message once.
#[tokio::test]
async fn duplicate_message_id_is_acked_and_stored_once() {
    let Some(h) = NatsHarness::connect().await else {
        return;
    };
    let first = message(&h.root, Some("k"), "once");
    assert_acked(&h.publisher.publish(std::slice::from_ref(&first)).await);
    let other = message(&h.root, Some("j"), "other");
    assert_acked(&h.publisher.publish(&[first.clone(), other.clone()]).await);
    assert_acked(&h.publisher.publish(std::slice::from_ref(&first)).await);

    let stored = h.stored(2).await;
    let ids: Vec<MessageId> = stored.iter().map(|m| m.message_id).collect();
    assert_eq!(ids, vec![first.message_id, other.message_id]);
}

/// The capabilities tell the relay that JetStream de-duplicates and how large a message
/// the server takes.
#[tokio::test]
async fn capabilities_report_dedup_and_the_server_payload_limit() {
    let Some(client) = client().await else {
        return;
    };
    let max_payload = client.server_info().max_payload;
    let publisher = NatsPublisher::new(client, NatsConfig::default()).expect("publisher");
    let capabilities = publisher.capabilities();
    assert!(capabilities.broker_dedup);
    assert_eq!(capabilities.max_message_bytes, Some(max_payload));
}

/// No stream captures the subject: the message is dead at once by default, with an error
/// that says what to do; retried when the configuration says streams may come later.
#[tokio::test]
async fn subject_without_a_stream_fails_permanently_by_default() {
    let Some(client) = client().await else {
        return;
    };
    let subject = unique_subject("outbox-test-no-stream");
    let publisher = NatsPublisher::new(client.clone(), NatsConfig::default()).expect("publisher");
    let err = failure(&publisher, message(&subject, None, "x")).await;
    assert!(!err.is_transient(), "{}", err.describe());
    let text = err.to_string();
    assert!(text.contains("create a stream"), "{text}");
    assert!(text.contains(&subject), "{text}");

    let mut config = NatsConfig::default();
    config.no_stream_is_transient = true;
    let publisher = NatsPublisher::new(client, config).expect("publisher");
    let err = failure(&publisher, message(&subject, None, "x")).await;
    assert!(err.is_transient(), "{}", err.describe());
    assert!(err.to_string().contains("create a stream"), "{err}");
}

/// A responder that never answers stands in for a JetStream that does not confirm: the
/// publish is a transient failure after the ack timeout, so the relay retries it.
#[tokio::test]
async fn missing_pub_ack_is_a_transient_timeout() {
    let Some(client) = client().await else {
        return;
    };
    let subject = unique_subject("outbox-test-silent");
    // Subscribed on the publisher's own connection, so the server has the subscription
    // before it sees the publish.
    let mut silent = client
        .subscribe(subject.clone())
        .await
        .expect("subscribing");
    let mut config = NatsConfig::default();
    config.ack_timeout = Duration::from_millis(300);
    let publisher = NatsPublisher::new(client, config).expect("publisher");

    let sent = message(&subject, None, "anyone there?");
    let err = failure(&publisher, sent.clone()).await;
    assert!(err.is_transient(), "{}", err.describe());
    assert!(err.to_string().contains("no PubAck"), "{err}");

    let got = tokio::time::timeout(Duration::from_secs(5), silent.next())
        .await
        .expect("the message reached the silent responder")
        .expect("subscription open");
    let id = got
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned());
    assert_eq!(id, Some(sent.message_id.to_string()));
}

/// A message over the stream's max_msg_size is refused by JetStream; retrying cannot
/// help, so it is permanent. The publisher stays usable.
#[tokio::test]
async fn message_over_the_stream_limit_fails_permanently() {
    let Some(h) = NatsHarness::connect_with(
        |_| NatsConfig::default(),
        |stream| stream.max_message_size = 256,
    )
    .await
    else {
        return;
    };
    let err = failure(&h.publisher, message(&h.root, None, vec![7u8; 1024])).await;
    assert!(!err.is_transient(), "{}", err.describe());
    assert!(err.to_string().contains("max_msg_size"), "{err}");

    let small = message(&h.root, None, "small");
    assert_acked(&h.publisher.publish(std::slice::from_ref(&small)).await);
    let stored = h.stored(1).await;
    assert_eq!(
        stored.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![small.message_id]
    );
}

/// A message over the server's max_payload would make NATS close the connection, so it is
/// refused before sending; the connection and the rest of the batch are unharmed.
#[tokio::test]
async fn message_over_max_payload_is_refused_without_sending() {
    let Some(h) = NatsHarness::connect().await else {
        return;
    };
    let limit = h.client.server_info().max_payload;
    let big = message(&h.root, None, vec![0u8; limit]);
    let small = message(&h.root, Some("k"), "small");
    let outcomes = h.publisher.publish(&[big, small.clone()]).await;
    match &outcomes[..] {
        [PublishOutcome::Failed(err), PublishOutcome::Acked] => {
            assert!(!err.is_transient(), "{}", err.describe());
            assert!(err.to_string().contains("max_payload"), "{err}");
        }
        other => panic!("expected [Failed, Acked], got {other:?}"),
    }
    assert_eq!(
        h.client.connection_state(),
        async_nats::connection::State::Connected
    );
    let stored = h.stored(1).await;
    assert_eq!(
        stored.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![small.message_id]
    );
}

/// Unusable subjects and reserved headers fail permanently without reaching NATS.
#[tokio::test]
async fn unusable_subjects_and_headers_fail_permanently() {
    let Some(h) = NatsHarness::connect().await else {
        return;
    };
    let wildcard = message(&format!("{}.*", h.root), None, "x");
    let mut rollup = message(&h.root, None, "x");
    rollup.headers.insert("Nats-Rollup".into(), "all".into());
    let good = message(&h.root, None, "good");
    let outcomes = h.publisher.publish(&[wildcard, rollup, good.clone()]).await;
    match &outcomes[..] {
        [
            PublishOutcome::Failed(wildcard),
            PublishOutcome::Failed(rollup),
            PublishOutcome::Acked,
        ] => {
            assert!(!wildcard.is_transient() && !rollup.is_transient());
            assert!(wildcard.to_string().contains("wildcard"), "{wildcard}");
            assert!(rollup.to_string().contains("reserved"), "{rollup}");
        }
        other => panic!("expected [Failed, Failed, Acked], got {other:?}"),
    }
    let stored = h.stored(1).await;
    assert_eq!(
        stored.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        vec![good.message_id]
    );
}

/// A server that is not there is a clear, transient connect error that names the address
/// and never shows the password.
#[tokio::test]
async fn unreachable_server_is_a_clear_transient_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        listener.local_addr().expect("local address").port()
    };
    let url = format!("nats://app:s3cret@127.0.0.1:{port}");
    let err = NatsPublisher::connect(&url, NatsConfig::default())
        .await
        .expect_err("nothing listens on a port just released");
    assert!(err.is_transient(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("nats://app:***@127.0.0.1:{port}")),
        "{text}"
    );
    let mut chain = format!("{err} {err:?}");
    let mut cause = std::error::Error::source(&err);
    while let Some(c) = cause {
        chain.push_str(&c.to_string());
        cause = c.source();
    }
    assert!(!chain.contains("s3cret"), "{chain}");
}

/// Credentials in the URL stay out of `Debug` output.
#[tokio::test]
async fn debug_output_hides_the_password() {
    let url = nats_url();
    let Some((scheme, rest)) = url.split_once("://") else {
        panic!("OUTBOX_TEST_NATS_URL {url} has no scheme");
    };
    if rest.contains('@') {
        return; // the URL already holds credentials the server checks
    }
    // A server without authentication ignores the credentials.
    let with_password = format!("{scheme}://app:s3cret@{rest}");
    let publisher = match NatsPublisher::connect(&with_password, NatsConfig::default()).await {
        Ok(publisher) => publisher,
        Err(err) => {
            outbox_testkit::services::unavailable("NATS", &with_password, &err);
            return;
        }
    };
    let debug = format!("{publisher:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("app:***@"), "{debug}");
}

/// A bad configuration is refused before connecting.
#[tokio::test]
async fn invalid_configuration_is_refused() {
    let mut config = NatsConfig::default();
    config.ack_timeout = Duration::ZERO;
    let err = NatsPublisher::connect("nats://127.0.0.1:1", config)
        .await
        .expect_err("zero ack timeout");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("ack_timeout"), "{err}");
}

/// End to end: a relay drains an in-memory outbox into JetStream, through a subject
/// mapping; nothing is lost or duplicated and every key keeps its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_every_message_in_key_order() {
    let Some(h) = NatsHarness::connect_with(
        |root| {
            let root = root.to_owned();
            NatsConfig::default().with_subject(move |m| format!("{root}.{}", m.topic))
        },
        |_| {},
    )
    .await
    else {
        return;
    };
    let committed = relay_mixed_backlog(h.publisher.clone(), "orders", 300).await;
    let stored = h.stored(committed.len()).await;
    assert_delivered_once(&committed, &stored);
    let subject = format!("{}.orders", h.root);
    assert!(stored.iter().all(|m| m.topic == subject));
}
