//! The store's SQL, built once from the validated table name.

use crate::row::MESSAGE_COLUMNS;

/// Every statement the store runs, for one table.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) insert: String,
    pub(crate) heads: String,
    pub(crate) followers: String,
    pub(crate) lease: String,
    pub(crate) mark_unreadable: String,
    pub(crate) publish_delete: String,
    pub(crate) publish_keep: String,
    pub(crate) retry: String,
    pub(crate) dead: String,
    pub(crate) release: String,
    pub(crate) key_of: String,
    pub(crate) promote: String,
    pub(crate) renew: String,
    pub(crate) backlog: String,
    pub(crate) dead_letters: String,
    pub(crate) requeue: String,
    pub(crate) demote_later_heads: String,
    pub(crate) purge: String,
}

impl Sql {
    pub(crate) fn new(t: &str) -> Self {
        let held = "id = :id AND lease_token = :token AND status = 0";
        Sql {
            // A keyed message whose key already has an unsettled message waits (NULL) behind
            // it; otherwise it is due at its not-before time.
            insert: format!(
                "INSERT INTO {t} (message_id, topic, msg_key, payload, headers, created_at, not_before, available_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,
                   CASE WHEN ?3 IS NOT NULL AND EXISTS (SELECT 1 FROM {t} WHERE status = 0 AND msg_key = ?3)
                        THEN NULL ELSE max(?6, coalesce(?7, ?6)) END)"
            ),
            // Due heads and unkeyed messages, oldest first; blocked messages are not in
            // this index, so the cost is the batch size whatever the backlog.
            heads: format!(
                "SELECT id, msg_key, attempts FROM {t}
                 WHERE status = 0 AND available_at <= :now AND coalesce(lease_until, 0) <= :now
                 ORDER BY available_at, id LIMIT :limit"
            ),
            // The run behind a head: its key's waiting messages, in order.
            followers: format!(
                "SELECT id, coalesce(not_before, 0) FROM {t}
                 WHERE status = 0 AND msg_key = :key AND id > :head AND available_at IS NULL
                 ORDER BY id LIMIT :limit"
            ),
            lease: format!(
                "UPDATE {t} SET lease_token = :token, lease_until = :until
                 WHERE id IN (SELECT value FROM json_each(:ids))
                 RETURNING {MESSAGE_COLUMNS}"
            ),
            mark_unreadable: format!(
                "UPDATE {t} SET status = 2, attempts = attempts + 1, last_error = :error,
                   settled_at = :now, lease_token = NULL, lease_until = NULL
                 WHERE id = :id"
            ),
            publish_delete: format!("DELETE FROM {t} WHERE {held}"),
            publish_keep: format!(
                "UPDATE {t} SET status = 1, settled_at = :now, lease_token = NULL, lease_until = NULL
                 WHERE {held}"
            ),
            // A retried message is its key's oldest unsettled one (the relay stops a run at
            // its first failure), so it stays or becomes the head, due at :at.
            retry: format!(
                "UPDATE {t} SET attempts = attempts + 1, available_at = :at, last_error = :error,
                   lease_token = NULL, lease_until = NULL
                 WHERE {held}"
            ),
            dead: format!(
                "UPDATE {t} SET status = 2, attempts = attempts + 1, last_error = :error,
                   settled_at = :now, lease_token = NULL, lease_until = NULL
                 WHERE {held}"
            ),
            release: format!(
                "UPDATE {t} SET lease_token = NULL, lease_until = NULL WHERE {held}"
            ),
            key_of: format!("SELECT msg_key FROM {t} WHERE id = :id"),
            // After a key's head left (published or dead), its oldest waiting message
            // becomes the head. A no-op while the oldest unsettled message is a head.
            promote: format!(
                "UPDATE {t} SET available_at = max(:now, coalesce(not_before, :now))
                 WHERE id = (SELECT min(id) FROM {t} WHERE status = 0 AND msg_key = :key)
                   AND available_at IS NULL"
            ),
            renew: format!(
                "UPDATE {t} SET lease_until = :until WHERE lease_token = :token AND status = 0"
            ),
            backlog: format!(
                "SELECT
                   count(*) FILTER (WHERE status = 0),
                   count(*) FILTER (WHERE status = 0 AND lease_until > :now),
                   count(*) FILTER (WHERE status = 2),
                   min(created_at) FILTER (WHERE status = 0)
                 FROM {t}"
            ),
            dead_letters: format!(
                "SELECT {MESSAGE_COLUMNS}, coalesce(last_error, '') FROM {t}
                 WHERE status = 2 ORDER BY id LIMIT :limit"
            ),
            // A requeued message is its key's head again unless an older message of the
            // key is still unsettled.
            requeue: format!(
                "UPDATE {t} SET status = 0, attempts = 0, last_error = NULL, settled_at = NULL,
                   available_at = CASE WHEN msg_key IS NOT NULL AND EXISTS (
                       SELECT 1 FROM {t} e WHERE e.status = 0 AND e.msg_key = {t}.msg_key AND e.id < {t}.id)
                     THEN NULL ELSE :now END
                 WHERE id = :id AND status = 2
                 RETURNING msg_key"
            ),
            // ... and the key's later heads that nobody holds wait behind it again.
            demote_later_heads: format!(
                "UPDATE {t} SET available_at = NULL
                 WHERE status = 0 AND msg_key = :key AND id > :id AND available_at IS NOT NULL
                   AND coalesce(lease_until, 0) <= :now"
            ),
            purge: format!("DELETE FROM {t} WHERE status = 1 AND settled_at <= :before"),
        }
    }
}
