#!/usr/bin/env bash
# pgbench: an order row alone, with a plain INSERT of an outbox row, and with the store's
# enqueue statement (16 clients, 8 s each). See BENCHMARKS.md, "Producer overhead".
set -euo pipefail
cd "$(dirname "$0")"
url="${OUTBOX_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
psql -q "$url" -f setup.sql
for script in order_only plain_insert enqueue; do
    printf '%s: ' "$script"
    pgbench -n -M prepared -c 16 -j 2 -T 8 -f "$script.sql" "$url" | grep '^tps'
done
