-- Tables for the pgbench comparison in BENCHMARKS.md ("Producer overhead"): an orders
-- table and an outbox table shaped like outbox-postgres's (migrations 1 and 2).
DROP SCHEMA IF EXISTS pgb CASCADE;
CREATE SCHEMA pgb;
CREATE TABLE pgb.orders (id BIGSERIAL PRIMARY KEY, customer TEXT NOT NULL, total BIGINT NOT NULL);
CREATE TABLE pgb.o (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id   UUID        NOT NULL UNIQUE,
    topic        TEXT        NOT NULL,
    msg_key      TEXT,
    payload      BYTEA       NOT NULL,
    headers      JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    available_at TIMESTAMPTZ NOT NULL,
    attempts     INTEGER     NOT NULL DEFAULT 0,
    status       SMALLINT    NOT NULL DEFAULT 0,
    lease_token  UUID,
    lease_until  TIMESTAMPTZ,
    last_error   TEXT,
    settled_at   TIMESTAMPTZ
) WITH (fillfactor = 50);
CREATE INDEX o_due ON pgb.o (available_at, id) WHERE status = 0;
CREATE INDEX o_key_order ON pgb.o (msg_key, id) WHERE status = 0 AND msg_key IS NOT NULL;
CREATE INDEX o_dead ON pgb.o (id) WHERE status = 2;
CREATE INDEX o_published ON pgb.o (settled_at) WHERE status = 1;
