//! Times are stored and compared in UTC whatever the session `time_zone` is: a pool whose
//! sessions run at +05:00 (and one at -08:00) sees the same lease, retry and not-before
//! times as the database's UTC clock.

mod common;

use std::time::Duration;

use chrono::Utc;
use outbox_core::{ClaimOptions, NewMessage, SettleAction, Settlement, Store};
use outbox_mysql::MySqlStore;
use outbox_mysql::sqlx::{self, Executor};

/// A store whose pool's sessions use `zone` (set after sqlx's own `+00:00`).
async fn store_in_zone(zone: &'static str) -> Option<(MySqlStore, common::DropTables)> {
    let options = common::pool_options().after_connect(move |conn, _| {
        Box::pin(async move {
            conn.execute(format!("SET time_zone = '{zone}'").as_str())
                .await?;
            Ok(())
        })
    });
    let pool = common::pool_with(options).await?;
    let session: String = sqlx::query_scalar("SELECT CAST(@@session.time_zone AS CHAR)")
        .fetch_one(&pool)
        .await
        .expect("session time zone");
    assert_eq!(session, zone);
    Some(common::store_on(pool, |_| {}).await)
}

fn close_to_now(at: chrono::DateTime<Utc>, expected_offset: chrono::Duration, what: &str) {
    let off = at - (Utc::now() + expected_offset);
    assert!(
        off.num_seconds().abs() < 30,
        "{what} is {at}, {off} away from where it should be: read in the session's zone?"
    );
}

async fn times_are_utc(zone: &'static str) {
    let Some((store, _cleanup)) = store_in_zone(zone).await else {
        return;
    };
    let soon = Utc::now() + chrono::Duration::milliseconds(1_500);
    let later = Utc::now() + chrono::Duration::hours(3);
    let (now_msg, soon_msg, later_msg) = (
        NewMessage::new("tz", b"now".to_vec()),
        NewMessage::new("tz", b"soon".to_vec()).with_not_before(soon),
        // Three hours: within the zone offsets, so a zone mix-up would make it due.
        NewMessage::new("tz", b"later".to_vec()).with_not_before(later),
    );
    store
        .enqueue_batch(
            store.pool(),
            &[now_msg.clone(), soon_msg.clone(), later_msg],
        )
        .await
        .expect("enqueue");

    let backlog = store.backlog().await.expect("backlog");
    close_to_now(
        backlog.oldest_pending_at.expect("oldest"),
        chrono::Duration::zero(),
        "oldest_pending_at",
    );
    let lease = Duration::from_secs(600);
    let first = store
        .claim(&ClaimOptions::new(10, lease))
        .await
        .expect("claim");
    assert_eq!(first.messages.len(), 1, "only the message due now");
    assert_eq!(first.messages[0].message_id, now_msg.message_id());
    close_to_now(
        first.messages[0].created_at,
        chrono::Duration::zero(),
        "created_at",
    );
    close_to_now(
        first.lease.expires_at,
        chrono::Duration::seconds(600),
        "lease expiry",
    );
    let renewed = store
        .renew(&first.lease, Duration::from_secs(1_200))
        .await
        .expect("renew");
    close_to_now(
        renewed.expires_at,
        chrono::Duration::seconds(1_200),
        "renewed expiry",
    );
    assert_eq!(store.backlog().await.expect("backlog").leased, 1);

    // A retry in one second is due in about one second, not hours away.
    let retry = Settlement {
        id: first.messages[0].id,
        action: SettleAction::Retry {
            delay: Duration::from_secs(1),
            error: "e".into(),
        },
    };
    store
        .settle(&renewed, &[retry])
        .await
        .expect("settle a retry");
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let second = store
        .claim(&ClaimOptions::new(10, lease))
        .await
        .expect("claim");
    let mut got: Vec<_> = second.messages.iter().map(|m| m.message_id).collect();
    got.sort();
    let mut want = vec![now_msg.message_id(), soon_msg.message_id()];
    want.sort();
    assert_eq!(
        got, want,
        "the retry and the not-before message are due, the later one not"
    );
}

#[test]
fn times_are_utc_in_a_session_at_plus_five() {
    outbox_testkit::block_on(times_are_utc("+05:00"));
}

#[test]
fn times_are_utc_in_a_session_at_minus_eight() {
    outbox_testkit::block_on(times_are_utc("-08:00"));
}
