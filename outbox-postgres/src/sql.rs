//! The store's SQL, built once from validated identifiers.

/// Every statement the store runs, for one schema and table.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) insert: String,
    pub(crate) insert_and_notify: String,
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

    pub(crate) fn new(schema: &str, table: &str, durable_relay_commits: bool) -> Self {
        let t = format!("{schema}.{table}");
        // Joined into the relay's bookkeeping statements: `set_config(.., true)` lasts until
        // the end of the statement's transaction, so its commit skips the WAL flush wait.
        let relay = if durable_relay_commits {
            "(SELECT 1) AS relay_commit"
        } else {
            "(SELECT set_config('synchronous_commit', 'off', true)) AS relay_commit"
        };
        let held = "lease_token = $2 AND status = 0";
        let cols = MESSAGE_COLUMNS;
        let insert = Self::insert(&t);
        Sql {
            // NOTIFY in the same statement, so it needs no second round trip.
            insert_and_notify: format!(
                "WITH inserted AS ({insert}) SELECT (SELECT count(*) FROM inserted), pg_notify($7, '')"
            ),
            insert: format!("WITH inserted AS ({insert}) SELECT count(*) FROM inserted"),
            // Candidates: the first `$3` due, unleased rows in (available_at, id) order,
            // locked with SKIP LOCKED, so the claim's cost does not grow with the backlog and
            // concurrent claimers take disjoint rows. A keyed candidate is taken only as part
            // of a run from its key's head: the key's first candidate must be the key's
            // oldest unsettled message (so nothing earlier is leased, locked by another
            // claimer or waiting), and each next one must follow the previous with no
            // unsettled message of the key between them. Both checks are index probes.
            // Because available_at never decreases along a key, the LIMIT keeps runs prefixes.
            claim: format!(
                "WITH candidates AS (
                   SELECT id, msg_key, available_at FROM {t}
                   WHERE status = 0 AND available_at <= statement_timestamp()
                     AND (lease_until IS NULL OR lease_until <= statement_timestamp())
                   ORDER BY available_at, id
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED
                 ), ordered AS (
                   SELECT c.*, lag(c.id) OVER (PARTITION BY c.msg_key ORDER BY c.id) AS prev
                   FROM candidates c
                 ), linked AS (
                   SELECT o.id, o.msg_key, o.available_at,
                     CASE WHEN o.msg_key IS NULL THEN true
                          WHEN o.prev IS NULL THEN o.id = (
                            SELECT min(h.id) FROM {t} h WHERE h.status = 0 AND h.msg_key = o.msg_key)
                          ELSE NOT EXISTS (
                            SELECT 1 FROM {t} g WHERE g.status = 0 AND g.msg_key = o.msg_key
                              AND g.id > o.prev AND g.id < o.id)
                     END AS linked
                   FROM ordered o
                 ), picked AS (
                   SELECT l.id FROM (
                     SELECT l.*, bool_and(l.linked) OVER (PARTITION BY l.msg_key ORDER BY l.id) AS run
                     FROM linked l) l
                   WHERE l.run
                   ORDER BY l.available_at, l.id
                   LIMIT $4
                 )
                 UPDATE {t} SET lease_token = $1,
                   lease_until = statement_timestamp() + make_interval(secs => $2)
                 FROM picked, {relay} WHERE {t}.id = picked.id
                 RETURNING {t}.id, {t}.message_id, {t}.topic, {t}.msg_key, {t}.payload,
                   {t}.headers, {t}.attempts, {t}.created_at, {t}.lease_until"
            ),
            publish_delete: format!("DELETE FROM {t} USING {relay} WHERE id = ANY($1) AND {held}"),
            publish_keep: format!(
                "UPDATE {t} SET status = 1, settled_at = statement_timestamp(),
                   lease_token = NULL, lease_until = NULL
                 FROM {relay} WHERE id = ANY($1) AND {held}"
            ),
            release: format!(
                "UPDATE {t} SET lease_token = NULL, lease_until = NULL
                 FROM {relay} WHERE id = ANY($1) AND {held}"
            ),
            retry: format!(
                "UPDATE {t} SET attempts = attempts + 1, last_error = r.error,
                   available_at = statement_timestamp() + make_interval(secs => r.delay),
                   lease_token = NULL, lease_until = NULL
                 FROM unnest($1::bigint[], $3::float8[], $4::text[]) AS r(id, delay, error), {relay}
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
                 FROM unnest($1::bigint[], $3::text[]) AS d(id, reason), {relay}
                 WHERE {t}.id = d.id AND {t}.lease_token = $2 AND {t}.status = 0"
            ),
            renew: format!(
                "UPDATE {t} SET lease_until = statement_timestamp() + make_interval(secs => $2)
                 FROM {relay} WHERE lease_token = $1 AND status = 0
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
