//! A publisher written outside the outbox crates: it "publishes" each message as one file
//! in a spool directory (`<dir>/<topic>/<sequence>-<message id>.json`), the way maildir
//! hands mail to another process. Written as a user would write their own adapter, and
//! proven with `outbox_testkit::publisher_conformance!` in `tests/`.
//!
//! ```no_run
//! # async fn demo() -> outbox::Result<()> {
//! use outbox::{Relay, RelayConfig};
//! use custom_publisher::SpoolPublisher;
//!
//! # let store = outbox::testkit::InMemoryStore::new();
//! let publisher = SpoolPublisher::new("/var/spool/events").map_err(|e| outbox::Error::invalid_config(e.to_string()))?;
//! let relay = Relay::new(store, publisher, RelayConfig::default())?;
//! relay.drain().await?;
//! # Ok(()) }
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use outbox::{Headers, Message, MessageId, PublishError, PublishOutcome, Publisher};
use serde::{Deserialize, Serialize};

/// One spooled message, as written to its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpooledMessage {
    /// The outbox message id (consumers drop files whose id they have seen).
    pub message_id: MessageId,
    /// The topic, which is also the sub-directory.
    pub topic: String,
    /// The ordering key.
    pub key: Option<String>,
    /// The headers.
    pub headers: Headers,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

/// Publishes into a spool directory; a message is acknowledged once its file is renamed
/// into place and synced to disk.
#[derive(Debug, Clone)]
pub struct SpoolPublisher {
    dir: Arc<PathBuf>,
    sequence: Arc<AtomicU64>,
}

impl SpoolPublisher {
    /// A publisher writing under `dir` (created if missing).
    pub fn new(dir: impl AsRef<Path>) -> std::io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        // Continue after the files already there, so file names keep publish order.
        let next = read_spool(&dir)?.len() as u64;
        Ok(SpoolPublisher {
            dir: Arc::new(dir),
            sequence: Arc::new(AtomicU64::new(next)),
        })
    }

    fn write_one(&self, message: &Message) -> Result<(), PublishError> {
        // The topic becomes a directory name: refuse anything that could leave the spool.
        if message.topic.contains(['/', '\\']) || message.topic.starts_with('.') {
            return Err(PublishError::permanent(format!(
                "topic {:?} cannot be a spool directory name (no '/', '\\' or leading '.')",
                message.topic
            )));
        }
        let transient = |what: &str, err: std::io::Error| {
            PublishError::transient(format!("spool: {what}")).with_source(err)
        };
        let topic_dir = self.dir.join(&message.topic);
        fs::create_dir_all(&topic_dir).map_err(|e| transient("creating the topic directory", e))?;
        let sequence = self.sequence.fetch_add(1, Ordering::SeqCst);
        let name = format!("{sequence:020}-{}.json", message.message_id);
        let spooled = SpooledMessage {
            message_id: message.message_id,
            topic: message.topic.clone(),
            key: message.key.clone(),
            headers: message.headers.clone(),
            payload: message.payload.clone(),
        };
        let body = serde_json::to_vec(&spooled)
            .map_err(|e| PublishError::permanent("spool: serialising").with_source(e))?;
        // Write aside, sync, then rename: a reader never sees a half-written file.
        let temporary = topic_dir.join(format!(".tmp-{name}"));
        let mut file = File::create(&temporary).map_err(|e| transient("creating the file", e))?;
        file.write_all(&body).map_err(|e| transient("writing", e))?;
        file.sync_all().map_err(|e| transient("syncing", e))?;
        fs::rename(&temporary, topic_dir.join(&name)).map_err(|e| transient("renaming", e))?;
        File::open(&topic_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| transient("syncing the directory", e))
    }
}

impl Publisher for SpoolPublisher {
    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        let this = self.clone();
        let batch = batch.to_vec();
        let count = batch.len();
        // File I/O blocks: keep it off the async executor.
        let outcomes = tokio::task::spawn_blocking(move || {
            batch
                .iter()
                .map(|message| match this.write_one(message) {
                    Ok(()) => PublishOutcome::Acked,
                    Err(err) => PublishOutcome::Failed(err),
                })
                .collect::<Vec<_>>()
        })
        .await;
        outcomes.unwrap_or_else(|join| {
            (0..count)
                .map(|_| {
                    PublishOutcome::Failed(
                        PublishError::transient("spool writer task failed")
                            .with_source(join.to_string()),
                    )
                })
                .collect()
        })
    }
}

/// Reads every spooled message under `dir`, in publish order (the consumer side).
pub fn read_spool(dir: &Path) -> std::io::Result<Vec<SpooledMessage>> {
    let mut files = Vec::new();
    for topic in fs::read_dir(dir)? {
        let topic = topic?;
        if !topic.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(topic.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && name.ends_with(".json") {
                files.push((name, entry.path()));
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|(_, path)| {
            let bytes = fs::read(&path)?;
            serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })
        .collect()
}
