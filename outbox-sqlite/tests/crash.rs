//! Crash tests with real processes on a real SQLite file (guarantees 2 and 3):
//!
//! 1. a relay child process publishing to an append-only JSON-lines file (the "broker") is
//!    SIGKILLed at random moments, at least 10 times, then a clean relay drains: nothing is
//!    lost and every key stays in order;
//! 2. two relay processes share one file: nothing lost, keys in order, nothing twice.
//!
//! This binary has its own `main` (harness = false): run with `OUTBOX_CRASH_CHILD_DB` set,
//! it is the relay child instead.

use std::fs::OpenOptions;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use outbox_core::{
    CancellationToken, Message, NewMessage, PublishOutcome, Publisher, Relay, RelayConfig, Store,
};
use outbox_sqlite::SqliteStore;
use outbox_testkit::{Committed, HistoryReport, WriterPublisher, check_history, read_json_lines};

const CHILD_DB: &str = "OUTBOX_CRASH_CHILD_DB";
const CHILD_OUT: &str = "OUTBOX_CRASH_CHILD_OUT";
const CHILD_DELAY_MS: &str = "OUTBOX_CRASH_CHILD_DELAY_MS";
/// How many relay processes must each hold a batch before any of them publishes.
const CHILD_PEERS: &str = "OUTBOX_CRASH_CHILD_PEERS";
const PID_HEADER: &str = "x-relay-pid";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(db) = std::env::var(CHILD_DB) {
        runtime.block_on(run_child(PathBuf::from(db)));
        return;
    }
    runtime.block_on(relay_killed_again_and_again_loses_nothing());
    println!("test relay_killed_again_and_again_loses_nothing ... ok");
    runtime.block_on(two_relay_processes_share_one_file());
    println!("test two_relay_processes_share_one_file ... ok");
}

/// A slow broker: waits before each publish call, and tags messages with the relay's pid.
struct ChildPublisher {
    writer: WriterPublisher<std::fs::File>,
    delay: Duration,
    barrier: Option<Barrier>,
}

/// Holds the first publish of every relay process until `peers` of them hold a batch, so
/// a test of several relays really has them all publishing, however the OS schedules them.
struct Barrier {
    out: String,
    peers: usize,
    passed: std::sync::atomic::AtomicBool,
}

impl Barrier {
    async fn wait(&self) {
        use std::sync::atomic::Ordering;
        if self.passed.load(Ordering::Acquire) {
            return;
        }
        let mark = format!("{}.publishing.{}", self.out, std::process::id());
        std::fs::write(mark, b"").expect("barrier file");
        let dir = Path::new(&self.out)
            .parent()
            .expect("output dir")
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        while count_files(&dir, ".publishing.") < self.peers && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.passed.store(true, Ordering::Release);
    }
}

fn count_files(dir: &Path, containing: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("list temp dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().contains(containing))
        })
        .count()
}

impl Publisher for ChildPublisher {
    async fn publish(&self, batch: &[Message]) -> Vec<PublishOutcome> {
        if let Some(barrier) = &self.barrier {
            barrier.wait().await;
        }
        tokio::time::sleep(self.delay).await;
        let pid = std::process::id().to_string();
        let tagged: Vec<Message> = batch
            .iter()
            .cloned()
            .map(|mut m| {
                m.headers.insert(PID_HEADER.into(), pid.clone());
                m
            })
            .collect();
        self.writer.publish(&tagged).await
    }
}

fn relay_config() -> RelayConfig {
    let mut config = RelayConfig::default();
    config.batch_size = 10;
    config.lease_duration = Duration::from_secs(1);
    config.shutdown_deadline = Duration::from_millis(500);
    config.poll_interval_max = Duration::from_millis(20);
    config
}

async fn run_child(db: PathBuf) {
    let out = std::env::var(CHILD_OUT).expect("child needs an output file");
    let delay: u64 = std::env::var(CHILD_DELAY_MS)
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)
        .expect("output file");
    let store = SqliteStore::open(&db).await.expect("open store");
    let peers: usize = std::env::var(CHILD_PEERS)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let publisher = ChildPublisher {
        writer: WriterPublisher::new(file),
        delay: Duration::from_millis(delay),
        barrier: (peers > 1).then(|| Barrier {
            out: out.clone(),
            peers,
            passed: false.into(),
        }),
    };
    let relay = Relay::new(store, publisher, relay_config()).expect("config");
    relay.run(CancellationToken::new()).await.expect("relay");
}

fn spawn_child(db: &Path, out: &Path, delay_ms: u64, peers: usize) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .env(CHILD_DB, db)
        .env(CHILD_OUT, out)
        .env(CHILD_DELAY_MS, delay_ms.to_string())
        .env(CHILD_PEERS, peers.to_string())
        .spawn()
        .expect("spawn relay child")
}

/// Enqueues `count` messages over `keys` keys, in transactions of 50; returns them in
/// commit order.
async fn seed(db: &Path, count: usize, keys: usize) -> Vec<Committed> {
    let store = SqliteStore::open(db).await.expect("open store");
    let mut conn = rusqlite::Connection::open(db).expect("connection");
    let mut committed = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(50) {
        let tx = conn.transaction().expect("begin");
        for n in chunk {
            let key = format!("key-{}", n % keys);
            let message = NewMessage::new("crash.test", format!("{n}").into_bytes()).with_key(&key);
            store.enqueue(&tx, &message).expect("enqueue");
            committed.push(Committed {
                message_id: message.message_id(),
                key: Some(key),
            });
        }
        tx.commit().expect("commit");
    }
    committed
}

fn line_count(out: &Path) -> usize {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(out) {
        let _ = file.read_to_string(&mut text);
    }
    text.matches('\n').count()
}

/// Drops a torn last line (a write cut by the kill, never acknowledged), as a broker
/// discards an incomplete record, so the next child appends whole lines.
fn drop_torn_line(out: &Path) {
    let Ok(mut file) = OpenOptions::new().read(true).write(true).open(out) else {
        return;
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read output");
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if keep < bytes.len() {
        file.set_len(keep as u64).expect("truncate torn line");
        file.seek(SeekFrom::End(0)).expect("seek");
    }
}

fn history(
    out: &Path,
    committed: &[Committed],
) -> (HistoryReport, Vec<outbox_testkit::ReceivedMessage>) {
    let file = std::fs::File::open(out).expect("output file");
    let received = read_json_lines(BufReader::new(file)).expect("read output");
    (check_history(committed, &received), received)
}

/// Waits (polling the file, since the child is another process) until it has more lines.
fn wait_for_lines(out: &Path, more_than: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if line_count(out) > more_than {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

async fn relay_killed_again_and_again_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, out) = (dir.path().join("app.db"), dir.path().join("broker.jsonl"));
    let committed = seed(&db, 2_000, 20).await;

    let mut kills = 0;
    while kills < 12 {
        drop_torn_line(&out);
        let before = line_count(&out);
        let mut child = spawn_child(&db, &out, 5, 1);
        let publishing = wait_for_lines(&out, before, Duration::from_secs(20));
        // Kill at a random moment while it publishes: mid-write, mid-settle, mid-claim.
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..40)));
        child.kill().expect("SIGKILL the relay");
        child.wait().expect("reap the relay");
        assert!(publishing, "relay child published nothing within 20 s");
        kills += 1;
    }
    let published_before_clean_run = line_count(&out);
    assert!(
        published_before_clean_run < 2_000,
        "the kills came before the backlog drained"
    );

    // A clean relay drains the rest, once the killed children's leases have expired.
    drop_torn_line(&out);
    let store = SqliteStore::open(&db).await.expect("open store");
    let file = OpenOptions::new()
        .append(true)
        .open(&out)
        .expect("output file");
    let relay =
        Relay::new(store.clone(), WriterPublisher::new(file), relay_config()).expect("config");
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.backlog().await.expect("backlog").pending > 0 {
        assert!(Instant::now() < deadline, "backlog did not drain");
        relay.drain().await.expect("drain");
        // What is left is under a dead child's lease: let the lease run out.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (report, _) = history(&out, &committed);
    println!("crash test: {kills} SIGKILLs, {report}");
    assert!(report.lost.is_empty(), "lost: {:?}", report.lost);
    assert!(
        report.order_violations.is_empty(),
        "order: {:?}",
        report.order_violations
    );
    assert!(report.unexpected.is_empty());
}

async fn two_relay_processes_share_one_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (db, out) = (dir.path().join("app.db"), dir.path().join("broker.jsonl"));
    let store = SqliteStore::open(&db).await.expect("open store");
    // Each relay's first publish waits until both hold a batch, so both take part however
    // the machine schedules them. A relay holds at most 2 batches of 10, so at most 20 of
    // the 50 keys: the other can always claim.
    let mut children = [spawn_child(&db, &out, 1, 2), spawn_child(&db, &out, 1, 2)];
    let committed = seed(&db, 1_000, 50).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.backlog().await.expect("backlog").pending > 0 {
        assert!(
            Instant::now() < deadline,
            "two relays did not drain 1,000 messages in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for child in &mut children {
        child.kill().expect("stop relay");
        child.wait().expect("reap relay");
    }

    let (report, received) = history(&out, &committed);
    println!("two relays: {report}");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        report.duplicate_count(),
        0,
        "no kill before the drain, so nothing twice"
    );
    let pids: std::collections::HashSet<&String> = received
        .iter()
        .filter_map(|r| r.headers.get(PID_HEADER))
        .collect();
    assert_eq!(pids.len(), 2, "both relay processes published");
}
