//! Wake-ups: an in-process handle that tells relays "there is new work".

use tokio::sync::watch;

/// Wakes relays right after a commit, so they do not wait for their next poll.
///
/// Cheap to clone; every relay built [`with_notifier`](crate::Relay::with_notifier) on a
/// clone wakes when any clone calls [`notify`](Notifier::notify). Wake-ups are never lost:
/// a notify that comes while a relay is busy makes its next wait return at once.
///
/// ```
/// let notifier = outbox_core::Notifier::new();
/// // ... commit a transaction that enqueued messages, then:
/// notifier.notify();
/// ```
#[derive(Debug, Clone)]
pub struct Notifier {
    sender: watch::Sender<u64>,
}

impl Notifier {
    /// A notifier with no relay listening yet.
    pub fn new() -> Self {
        Notifier {
            sender: watch::Sender::new(0),
        }
    }

    /// Wakes every relay listening on this notifier. Call it after the transaction commits.
    pub fn notify(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}
