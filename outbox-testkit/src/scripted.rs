//! A publisher whose failures a test scripts through a handle.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use outbox_core::{Message, MessageId, PublishError, PublishOutcome, Publisher};
use tokio::sync::watch;

use crate::memory_publisher::InMemoryPublisher;
use crate::received::ReceivedMessage;

#[derive(Debug, Default)]
struct Script {
    fail_next: u64,
    fail_next_permanently: u64,
    poisoned: HashSet<MessageId>,
    lose_acks_next: u64,
    delay: Duration,
}

/// Scripts the failures of a [`ScriptedPublisher`] while a test runs.
#[derive(Debug, Clone)]
pub struct ScriptHandle {
    script: Arc<Mutex<Script>>,
    broker: InMemoryPublisher,
    calls: watch::Sender<u64>,
}

impl ScriptHandle {
    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `n` messages fail with a transient error and do not reach the broker.
    pub fn fail_next(&self, n: u64) {
        self.script().fail_next += n;
    }

    /// The next `n` messages fail with a permanent error and do not reach the broker.
    pub fn fail_next_permanently(&self, n: u64) {
        self.script().fail_next_permanently += n;
    }

    /// Every attempt to publish `id` fails (transiently) from now on: a poison message.
    pub fn fail_forever(&self, id: MessageId) {
        self.script().poisoned.insert(id);
    }

    /// The next `n` messages reach the broker but their acknowledgement is lost: the
    /// publisher reports a transient failure, so they will be published again.
    pub fn lose_acks_next(&self, n: u64) {
        self.script().lose_acks_next += n;
    }

    /// Every publish call waits this long before answering (a slow broker).
    pub fn set_delay(&self, delay: Duration) {
        self.script().delay = delay;
    }

    /// Publish calls started so far.
    pub fn calls(&self) -> u64 {
        *self.calls.borrow()
    }

    /// Waits until at least `n` publish calls have started.
    pub async fn wait_for_calls(&self, n: u64) {
        let mut calls = self.calls.subscribe();
        // The sender lives in this handle, so the channel cannot close while we wait.
        let _ = calls.wait_for(|c| *c >= n).await;
    }

    /// What reached the broker, in order, duplicates included.
    pub fn received(&self) -> Vec<ReceivedMessage> {
        self.broker.received()
    }
}

/// A [`Publisher`] over an in-memory broker whose failures are scripted through a
/// [`ScriptHandle`], in the manner of `tower-test`'s mock.
///
/// ```
/// use outbox_testkit::ScriptedPublisher;
///
/// let (publisher, handle) = ScriptedPublisher::new();
/// handle.fail_next(3); // the next three messages fail transiently
/// ```
#[derive(Debug, Clone)]
pub struct ScriptedPublisher {
    handle: ScriptHandle,
}

impl ScriptedPublisher {
    /// A publisher that succeeds until told otherwise, and its handle.
    pub fn new() -> (Self, ScriptHandle) {
        let handle = ScriptHandle {
            script: Arc::default(),
            broker: InMemoryPublisher::new(),
            calls: watch::Sender::new(0),
        };
        (
            ScriptedPublisher {
                handle: handle.clone(),
            },
            handle,
        )
    }

    fn decide(&self, message: &Message) -> PublishOutcome {
        let mut script = self.handle.script();
        if script.poisoned.contains(&message.message_id) {
            return PublishOutcome::Failed(PublishError::transient("scripted: poison message"));
        }
        if script.fail_next > 0 {
            script.fail_next -= 1;
            return PublishOutcome::Failed(PublishError::transient("scripted: transient failure"));
        }
        if script.fail_next_permanently > 0 {
            script.fail_next_permanently -= 1;
            return PublishOutcome::Failed(PublishError::permanent("scripted: permanent failure"));
        }
        drop(script);
        self.handle.broker.record(std::slice::from_ref(message));
        let mut script = self.handle.script();
        if script.lose_acks_next > 0 {
            script.lose_acks_next -= 1;
            return PublishOutcome::Failed(PublishError::transient(
                "scripted: acknowledgement lost",
            ));
        }
        PublishOutcome::Acked
    }
}

impl Publisher for ScriptedPublisher {
    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        self.handle.calls.send_modify(|c| *c += 1);
        let delay = self.handle.script().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        batch.iter().map(|message| self.decide(message)).collect()
    }
}
