//! The store's SQL, built from the validated table name.
//!
//! MySQL has no arrays to bind, so statements over many rows take `IN (?, ?, ...)` lists
//! or `UNION ALL` of one part per key. Their length is rounded up to a power of two (the
//! last value repeated), so that a connection prepares a handful of statement shapes
//! instead of one per batch size.
//!
//! All times are `DATETIME(6)` in UTC: the SQL uses `UTC_TIMESTAMP(6)`, never `NOW()`,
//! and binds naive UTC values, so the session `time_zone` changes nothing.

use std::fmt::Write as _;

/// Starts the store's own transactions. READ COMMITTED, whatever the session default:
/// under REPEATABLE READ the claim's plain reads would see the snapshot of its first read
/// (missing what other relays settled since), and its range scans would take next-key
/// locks that make producers' inserts wait for the claim.
pub(crate) const BEGIN_READ_COMMITTED: &str =
    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION";

/// The columns [`crate::row::read_message`] expects, in order.
pub(crate) const MESSAGE_COLUMNS: &str =
    "id, message_id, topic, msg_key, payload, headers, attempts, created_at";

/// `waits` of a head known to be its key's oldest unsettled message (and of unkeyed
/// messages).
pub(crate) const HEAD: i8 = 0;
/// `waits` of a message waiting behind its key.
pub(crate) const WAITING: i8 = 1;
/// `waits` of a head not yet known to be its key's oldest unsettled message: the first
/// message of a key in an enqueue call, a retried or a requeued one. A claim checks.
pub(crate) const TENTATIVE: i8 = 2;

/// Rows a purge deletes per statement, so that no statement holds locks for long.
pub(crate) const PURGE_CHUNK: u64 = 10_000;

/// How many values a list of `n` is padded to.
pub(crate) fn padded(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

/// `?, ?, ...` for a padded list of `n` values.
fn marks(n: usize) -> String {
    let mut s = String::with_capacity(padded(n) * 3);
    for i in 0..padded(n) {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

/// `CASE id WHEN ? THEN ? ... END` for a padded list of `n` pairs.
fn case_by_id(n: usize) -> String {
    let mut s = String::from("CASE id");
    for _ in 0..padded(n) {
        s.push_str(" WHEN ? THEN ?");
    }
    s.push_str(" END");
    s
}

/// `(part 0) UNION ALL (part 1) ...` for a padded list of `n` keys; `part(i)` is one
/// SELECT that returns `i` first. (MariaDB plans every part on every execution, so keep
/// `n` small.)
fn per_key(n: usize, part: impl Fn(usize) -> String) -> String {
    let mut s = String::new();
    for i in 0..padded(n) {
        if i > 0 {
            s.push_str(" UNION ALL ");
        }
        let _ = write!(s, "({})", part(i));
    }
    s
}

/// Every statement the store runs on one table.
#[derive(Debug)]
pub(crate) struct Sql {
    /// The quoted table name.
    t: String,
    /// When a waiting message is first looked at again, in microseconds.
    recheck: i64,
    pub(crate) claim_lock: String,
    pub(crate) heads: String,
    pub(crate) mark_unreadable: String,
    pub(crate) now: &'static str,
    pub(crate) renew: String,
    pub(crate) backlog: String,
    pub(crate) dead_letters: String,
    pub(crate) purge: String,
    pub(crate) unverify_later_heads: String,
}

impl Sql {
    pub(crate) fn new(table: &str, recheck: i64) -> Self {
        let t = format!("`{table}`");
        let cols = MESSAGE_COLUMNS;
        Sql {
            // Claims on one table are serialised by this row lock, held until the claim
            // transaction ends, so each claim sees the leases of the one before and a key's
            // run is never split between two relays. Requeues take it too. A row lock rather
            // than GET_LOCK: it ends with the transaction, also when a cancelled claim's
            // connection goes back to the pool.
            claim_lock: format!("SELECT name FROM `{table}_lock` WHERE name = 'claim' FOR UPDATE"),
            // Due heads of keys and unkeyed messages, oldest first, locked; rows other
            // transactions hold are skipped. A key's later messages wait with a later
            // available_at (when to look at them again), outside this range: the walk over
            // the `due` index stops at the LIMIT and never wades through blocked messages,
            // whatever the backlog.
            heads: format!(
                "SELECT {cols}, waits, key_hash, UTC_TIMESTAMP(6) FROM {t} FORCE INDEX (due)
                 WHERE status = 0 AND available_at <= UTC_TIMESTAMP(6)
                   AND (lease_until IS NULL OR lease_until <= UTC_TIMESTAMP(6))
                 ORDER BY available_at, id
                 LIMIT ?
                 FOR UPDATE SKIP LOCKED"
            ),
            mark_unreadable: format!(
                "UPDATE {t} SET status = 2, attempts = attempts + 1, last_error = ?,
                   settled_at = UTC_TIMESTAMP(6), lease_token = NULL, lease_until = NULL
                 WHERE id = ?"
            ),
            now: "SELECT UTC_TIMESTAMP(6)",
            renew: format!("UPDATE {t} SET lease_until = ? WHERE lease_token = ? AND status = 0"),
            // Each count walks an index, never the table. The oldest pending message is the
            // lowest pending id: the primary key walk passes only dead and kept published
            // rows below it (ids are handed out in enqueue order).
            backlog: format!(
                "SELECT
                   (SELECT COUNT(*) FROM {t} WHERE status = 0),
                   (SELECT COUNT(*) FROM {t} FORCE INDEX (lease) WHERE lease_token IS NOT NULL
                      AND lease_until > UTC_TIMESTAMP(6)),
                   (SELECT COUNT(*) FROM {t} WHERE status = 2),
                   (SELECT created_at FROM {t} FORCE INDEX (PRIMARY) WHERE status = 0
                      ORDER BY id LIMIT 1)"
            ),
            dead_letters: format!(
                "SELECT {cols}, last_error FROM {t} WHERE status = 2 ORDER BY id LIMIT ?"
            ),
            // Walks the published rows in the `due` index (status first).
            purge: format!(
                "DELETE FROM {t}
                 WHERE status = 1 AND settled_at <= UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND
                 LIMIT {PURGE_CHUNK}"
            ),
            // A requeued message is older than its key's verified heads: they are checked
            // again by the next claim (binds key_hash and the requeued id).
            unverify_later_heads: format!(
                "UPDATE {t} SET waits = {TENTATIVE}
                 WHERE key_hash = ? AND status = 0 AND id > ? AND waits = {HEAD}"
            ),
            t,
            recheck,
        }
    }

    /// Inserts `rows` messages; each row binds message_id, topic, key_hash, msg_key,
    /// payload, headers, not_before, its `waits` state (twice), and not_before again. A
    /// head or unkeyed message is due at its not-before time, or at once, by the database
    /// clock; a waiting message is only looked at again after the recheck interval.
    pub(crate) fn insert(&self, rows: usize) -> String {
        let mut s = format!(
            "INSERT INTO {} (message_id, topic, key_hash, msg_key, payload, headers, created_at, not_before, waits, available_at) VALUES ",
            self.t
        );
        for i in 0..rows {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(
                s,
                "(?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6), ?, ?, \
                 IF(? = {WAITING}, UTC_TIMESTAMP(6) + INTERVAL {} MICROSECOND, \
                    GREATEST(UTC_TIMESTAMP(6), COALESCE(?, UTC_TIMESTAMP(6)))))",
                self.recheck
            );
        }
        s
    }

    /// The oldest unsettled row of each of `keys` key hashes (binds them), as one row of
    /// `keys` (padded) columns, NULL for a key with none. Each column is a `MIN` over an
    /// index prefix, which the server reads with one index dive whatever its statistics
    /// say (a `GROUP BY` over an `IN` list would be cheaper only when they are fresh).
    pub(crate) fn oldest(&self, keys: usize) -> String {
        let mut s = String::from("SELECT ");
        for i in 0..padded(keys) {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(
                s,
                "(SELECT MIN(id) FROM {} WHERE key_hash = ? AND status = 0)",
                self.t
            );
        }
        s
    }

    /// Which of the given key hashes have a row under an unexpired lease: a walk over the
    /// `lease` index entries of leased rows only (only unsettled rows hold a token).
    pub(crate) fn held_keys(&self, keys: usize) -> String {
        format!(
            "SELECT DISTINCT key_hash FROM {} FORCE INDEX (lease)
             WHERE lease_token IS NOT NULL AND lease_until > UTC_TIMESTAMP(6)
               AND key_hash IN ({})",
            self.t,
            marks(keys)
        )
    }

    /// For each of `heads` heads (binds key_hash, the head's id, limit): the unsettled rows
    /// of its key behind it, in id order, as `(index, id, waits, ripe, held)`: whether the
    /// row waits behind its key (rather than being another head), whether its not-before time has come, and whether it is
    /// under an unexpired lease. A plain read.
    pub(crate) fn runs(&self, heads: usize) -> String {
        per_key(heads, |i| {
            format!(
                "SELECT {i}, id, waits = {WAITING},
                   COALESCE(not_before <= UTC_TIMESTAMP(6), 1),
                   COALESCE(lease_until > UTC_TIMESTAMP(6), 0)
                 FROM {} WHERE key_hash = ? AND status = 0 AND id > ?
                 ORDER BY id LIMIT ?",
                self.t
            )
        })
    }

    /// Leases rows still unsettled (binds token, until, then the ids).
    pub(crate) fn lease(&self, ids: usize) -> String {
        format!(
            "UPDATE {} SET lease_token = ?, lease_until = ? WHERE id IN ({}) AND status = 0",
            self.t,
            marks(ids)
        )
    }

    /// The messages with the given ids under a lease (binds the ids, then the token).
    pub(crate) fn fetch(&self, ids: usize) -> String {
        format!(
            "SELECT {MESSAGE_COLUMNS} FROM {} WHERE id IN ({}) AND lease_token = ?",
            self.t,
            marks(ids)
        )
    }

    /// Any one of the given message ids that is already stored.
    pub(crate) fn known_ids(&self, ids: usize) -> String {
        format!(
            "SELECT 1 FROM {} WHERE message_id IN ({}) LIMIT 1",
            self.t,
            marks(ids)
        )
    }

    fn held(ids: usize) -> String {
        format!("id IN ({}) AND lease_token = ? AND status = 0", marks(ids))
    }

    /// Locks the rows still held under a lease and reads their key hashes and the
    /// database clock (binds the ids, then the token).
    pub(crate) fn held_rows(&self, ids: usize) -> String {
        format!(
            "SELECT id, key_hash, UTC_TIMESTAMP(6) FROM {} WHERE {} FOR UPDATE",
            self.t,
            Self::held(ids)
        )
    }

    /// Deletes published rows still held (binds the ids, then the token).
    pub(crate) fn publish_delete(&self, ids: usize) -> String {
        format!("DELETE FROM {} WHERE {}", self.t, Self::held(ids))
    }

    /// Marks published rows still held (binds the ids, then the token).
    pub(crate) fn publish_keep(&self, ids: usize) -> String {
        format!(
            "UPDATE {} SET status = 1, settled_at = UTC_TIMESTAMP(6), lease_token = NULL, lease_until = NULL
             WHERE {}",
            self.t,
            Self::held(ids)
        )
    }

    /// Makes rows still held due again (binds the ids, then the token).
    pub(crate) fn release(&self, ids: usize) -> String {
        format!(
            "UPDATE {} SET lease_token = NULL, lease_until = NULL WHERE {}",
            self.t,
            Self::held(ids)
        )
    }

    /// Marks rows still held dead (binds (id, reason) pairs, the ids, then the token).
    pub(crate) fn dead(&self, ids: usize) -> String {
        format!(
            "UPDATE {} SET status = 2, attempts = attempts + 1, last_error = {},
               settled_at = UTC_TIMESTAMP(6), lease_token = NULL, lease_until = NULL
             WHERE {}",
            self.t,
            case_by_id(ids),
            Self::held(ids)
        )
    }

    /// Schedules retries of rows still held (binds (id, error) pairs, (id, due time)
    /// pairs, the ids, then the token). A retried message is its key's oldest unsettled
    /// one (the relay stops a run at its first failure), so it stays or becomes the
    /// key's head, due at its retry time.
    pub(crate) fn retry(&self, ids: usize) -> String {
        format!(
            "UPDATE {} SET attempts = attempts + 1, last_error = {}, available_at = {},
               waits = {TENTATIVE}, lease_token = NULL, lease_until = NULL
             WHERE {}",
            self.t,
            case_by_id(ids),
            case_by_id(ids),
            Self::held(ids)
        )
    }

    /// Makes rows known to be their key's oldest unsettled message verified heads; a
    /// waiting one becomes due at its not-before time or at once, a tentative one keeps
    /// its due time (a retry's, say). Binds the database's now twice, then the ids.
    /// (MySQL assigns left to right: `available_at` reads `waits` before it changes.)
    pub(crate) fn promote(&self, ids: usize) -> String {
        format!(
            "UPDATE {} SET
               available_at = IF(waits = {WAITING}, GREATEST(?, COALESCE(not_before, ?)), available_at),
               waits = {HEAD}
             WHERE id IN ({}) AND status = 0 AND waits <> {HEAD}",
            self.t,
            marks(ids)
        )
    }

    /// Makes due rows that are not their key's oldest unsettled message wait, to be looked
    /// at again after the recheck interval or after as long as they have existed, whichever
    /// is longer (binds the database's now twice, then the ids).
    pub(crate) fn demote(&self, ids: usize) -> String {
        format!(
            "UPDATE {} SET waits = {WAITING},
               available_at = ? + INTERVAL GREATEST({}, TIMESTAMPDIFF(MICROSECOND, created_at, ?)) MICROSECOND
             WHERE id IN ({}) AND status = 0",
            self.t,
            self.recheck,
            marks(ids)
        )
    }

    /// Share-locks the rows among the given ids that are still unsettled and returns
    /// them: the rows that rows about to be made to wait will wait behind. A settle that
    /// removes one of them waits for the claim to commit (and then sees the waiting row
    /// to promote), or the claim waits for the settle (and then sees the row gone).
    pub(crate) fn lock_unsettled(&self, ids: usize) -> String {
        format!(
            "SELECT id FROM {} WHERE id IN ({}) AND status = 0 LOCK IN SHARE MODE",
            self.t,
            marks(ids)
        )
    }

    /// Locks the dead rows among the given ids and reads their key hashes.
    pub(crate) fn dead_rows(&self, ids: usize) -> String {
        format!(
            "SELECT id, key_hash FROM {} WHERE id IN ({}) AND status = 2 FOR UPDATE",
            self.t,
            marks(ids)
        )
    }

    /// Makes the dead rows among the given ids due again with a fresh attempt count, as
    /// tentative heads of their keys: a claim makes one wait if an older message of its
    /// key is unsettled.
    pub(crate) fn requeue(&self, ids: usize) -> String {
        format!(
            "UPDATE {} SET status = 0, attempts = 0, last_error = NULL, settled_at = NULL,
               lease_token = NULL, lease_until = NULL, waits = {TENTATIVE},
               available_at = UTC_TIMESTAMP(6)
             WHERE id IN ({}) AND status = 2",
            self.t,
            marks(ids)
        )
    }
}

/// Binds `values` padded to the length [`padded`] gives, repeating the last one.
pub(crate) fn bind_padded<'q, T>(
    mut query: sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>,
    values: &[T],
) -> sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>
where
    T: sqlx::Encode<'q, sqlx::MySql> + sqlx::Type<sqlx::MySql> + Clone + Send + 'q,
{
    for value in values {
        query = query.bind(value.clone());
    }
    if let Some(last) = values.last() {
        for _ in values.len()..padded(values.len()) {
            query = query.bind(last.clone());
        }
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_padded_to_powers_of_two() {
        assert_eq!(padded(0), 1);
        assert_eq!(padded(1), 1);
        assert_eq!(padded(3), 4);
        assert_eq!(padded(500), 512);
        assert_eq!(marks(3), "?, ?, ?, ?");
        assert_eq!(case_by_id(2), "CASE id WHEN ? THEN ? WHEN ? THEN ? END");
        let sql = Sql::new("outbox", 5_000_000);
        assert_eq!(sql.runs(3).matches('?').count(), 12);
        assert_eq!(sql.runs(3).matches("UNION ALL").count(), 3);
        assert_eq!(sql.oldest(3).matches("MIN(id)").count(), 4);
    }
}
