//! LISTEN/NOTIFY wake-ups that survive lost connections.

use std::time::Duration;

use outbox_core::Notifier;
use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::PostgresStore;

/// Listens on the store's channel (see [`PostgresConfig::channel`](crate::PostgresConfig::channel))
/// and calls `notifier.notify()` for every notification, so relays built with that notifier
/// wake as soon as another process commits an enqueue (with
/// [`notify_on_enqueue`](crate::PostgresConfig::notify_on_enqueue) on).
///
/// When the connection is lost it reconnects with backoff and notifies once at once,
/// so nothing waits for a full poll interval. Abort the returned task to stop listening.
pub fn spawn_listener(store: &PostgresStore, notifier: Notifier) -> JoinHandle<()> {
    let pool = store.pool().clone();
    let channel = store.config().channel();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(err) = listener.listen(&channel).await {
                        warn!(error = %err, "LISTEN failed; retrying");
                    } else {
                        debug!(%channel, "listening for enqueues");
                        backoff = Duration::from_millis(100);
                        // Whatever was committed while we were not listening is due now.
                        notifier.notify();
                        // `try_recv` ends with `Ok(None)` when the connection is lost.
                        while let Ok(Some(_)) = listener.try_recv().await {
                            notifier.notify();
                        }
                        warn!("LISTEN connection lost; reconnecting");
                    }
                }
                Err(err) => warn!(error = %err, retry_in = ?backoff, "cannot connect to LISTEN"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}
