//! The store's SQL, built once from validated identifiers.

/// Every statement the store runs, for one schema and table.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) insert: String,
    pub(crate) insert_and_notify: String,
    pub(crate) claim_lock: String,
    pub(crate) claim: String,
    pub(crate) publish_delete: String,
    pub(crate) publish_keep: String,
    pub(crate) release: String,
    pub(crate) retry: String,
    pub(crate) push_followers: String,
    pub(crate) dead: String,
    pub(crate) renew: String,
    pub(crate) backlog: String,
    pub(crate) dead_letters: String,
    pub(crate) requeue: String,
    pub(crate) purge: String,
}

/// The columns `row::read_message` expects, in order.
pub(crate) const MESSAGE_COLUMNS: &str =
    "id, message_id, topic, msg_key, payload, headers, attempts, created_at";

impl Sql {
    fn insert(t: &str) -> String {
        // Many messages in one round trip, counted. Each is due no earlier than the key's
        // last unsettled message, keeping available_at non-decreasing along a key (the
        // caller's batch is already made monotonic per key). If one id is already there,
        // nothing is inserted: a unique violation would abort the caller's transaction.
        format!(
            "INSERT INTO {t} (message_id, topic, msg_key, payload, headers, available_at)
             SELECT m.message_id, m.topic, m.msg_key, m.payload, m.headers,
                    GREATEST(now(), m.not_before, (
                      SELECT p.available_at FROM {t} p
                      WHERE p.status = 0 AND p.msg_key = m.msg_key
                      ORDER BY p.id DESC LIMIT 1))
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::jsonb[], $6::timestamptz[])
               WITH ORDINALITY AS m(message_id, topic, msg_key, payload, headers, not_before, ord)
             WHERE NOT EXISTS (SELECT 1 FROM {t} d WHERE d.message_id = ANY($1))
             ORDER BY m.ord
             RETURNING 1"
        )
    }

    pub(crate) fn new(schema: &str, table: &str) -> Self {
        let t = format!("{schema}.{table}");
        let held = "lease_token = $2 AND status = 0";
        let cols = MESSAGE_COLUMNS;
        let insert = Self::insert(&t);
        Sql {
            // NOTIFY in the same statement, so it needs no second round trip.
            insert_and_notify: format!(
                "WITH inserted AS ({insert}) SELECT (SELECT count(*) FROM inserted), pg_notify($7, '')"
            ),
            insert: format!("WITH inserted AS ({insert}) SELECT count(*) FROM inserted"),
            // Claims are serialised per table by a transaction-level advisory lock, so a
            // claim always sees the leases of the claims before it and a key's run is never
            // split between two concurrent claimers.
            claim_lock: "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))".to_owned(),
            // Candidates: the first `window` due, unleased rows in (available_at, id) order,
            // so the claim's cost does not grow with the backlog. A keyed candidate is
            // taken unless an earlier row of its key is under an unexpired lease (looked up
            // in the small leased index); the LIMIT keeps each key's run a prefix.
            claim: format!(
                "WITH candidates AS (
                   SELECT id, msg_key, available_at FROM {t}
                   WHERE status = 0 AND available_at <= statement_timestamp()
                     AND (lease_until IS NULL OR lease_until <= statement_timestamp())
                   ORDER BY available_at, id
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED
                 ), picked AS (
                   SELECT c.id FROM candidates c
                   WHERE c.msg_key IS NULL OR NOT EXISTS (
                     SELECT 1 FROM {t} e
                     WHERE e.status = 0 AND e.lease_token IS NOT NULL AND e.msg_key = c.msg_key
                       AND e.id < c.id AND e.lease_until > statement_timestamp())
                   ORDER BY c.available_at, c.id
                   LIMIT $4
                 )
                 UPDATE {t} SET lease_token = $1,
                   lease_until = statement_timestamp() + make_interval(secs => $2)
                 FROM picked WHERE {t}.id = picked.id
                 RETURNING {t}.id, {t}.message_id, {t}.topic, {t}.msg_key, {t}.payload,
                   {t}.headers, {t}.attempts, {t}.created_at, {t}.lease_until"
            ),
            publish_delete: format!("DELETE FROM {t} WHERE id = ANY($1) AND {held}"),
            publish_keep: format!(
                "UPDATE {t} SET status = 1, settled_at = statement_timestamp(),
                   lease_token = NULL, lease_until = NULL
                 WHERE id = ANY($1) AND {held}"
            ),
            release: format!(
                "UPDATE {t} SET lease_token = NULL, lease_until = NULL WHERE id = ANY($1) AND {held}"
            ),
            retry: format!(
                "UPDATE {t} SET attempts = attempts + 1, last_error = r.error,
                   available_at = statement_timestamp() + make_interval(secs => r.delay),
                   lease_token = NULL, lease_until = NULL
                 FROM unnest($1::bigint[], $3::float8[], $4::text[]) AS r(id, delay, error)
                 WHERE {t}.id = r.id AND {t}.lease_token = $2 AND {t}.status = 0
                 RETURNING {t}.id, {t}.msg_key, {t}.available_at"
            ),
            // A retried (or requeued) message's later messages of its key become due no
            // earlier than it.
            push_followers: format!(
                "UPDATE {t} SET available_at = GREATEST({t}.available_at, p.at)
                 FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS p(id, msg_key, at)
                 WHERE {t}.status = 0 AND {t}.msg_key = p.msg_key AND {t}.id > p.id"
            ),
            dead: format!(
                "UPDATE {t} SET status = 2, attempts = attempts + 1, last_error = d.reason,
                   settled_at = statement_timestamp(), lease_token = NULL, lease_until = NULL
                 FROM unnest($1::bigint[], $3::text[]) AS d(id, reason)
                 WHERE {t}.id = d.id AND {t}.lease_token = $2 AND {t}.status = 0"
            ),
            renew: format!(
                "UPDATE {t} SET lease_until = statement_timestamp() + make_interval(secs => $2)
                 WHERE lease_token = $1 AND status = 0
                 RETURNING lease_until"
            ),
            backlog: format!(
                "SELECT
                   count(*) FILTER (WHERE status = 0),
                   count(*) FILTER (WHERE status = 0 AND lease_until > statement_timestamp()),
                   count(*) FILTER (WHERE status = 2),
                   min(created_at) FILTER (WHERE status = 0)
                 FROM {t}"
            ),
            dead_letters: format!(
                "SELECT {cols}, coalesce(last_error, '') FROM {t}
                 WHERE status = 2 ORDER BY id LIMIT $1"
            ),
            // Due now, but not before the earlier unsettled messages of its key.
            requeue: format!(
                "UPDATE {t} SET status = 0, attempts = 0, last_error = NULL, settled_at = NULL,
                   available_at = GREATEST(statement_timestamp(), (
                     SELECT max(e.available_at) FROM {t} e
                     WHERE e.status = 0 AND e.msg_key = {t}.msg_key AND e.id < {t}.id))
                 WHERE id = ANY($1) AND status = 2
                 RETURNING id, msg_key, available_at"
            ),
            purge: format!(
                "DELETE FROM {t} WHERE status = 1 AND settled_at <= statement_timestamp() - make_interval(secs => $1)"
            ),
        }
    }
}
