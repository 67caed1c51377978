// The README's example uses the `sqlite` and `testkit` adapters, so it is the crate doc
// (and a doctest) when those features are on.
#![cfg_attr(all(feature = "sqlite", feature = "testkit"), doc = include_str!("../README.md"))]
#![cfg_attr(
    not(all(feature = "sqlite", feature = "testkit")),
    doc = "A transactional outbox for Rust: see the README for an overview and an example."
)]
//!
//! # Cargo features
//!
//! | feature | enables |
//! | --- | --- |
//! | `sqlite` | [`sqlite`]: the SQLite store (`outbox-sqlite`, rusqlite with SQLite bundled) |
//! | `postgres` | [`postgres`]: the PostgreSQL store (`outbox-postgres`, sqlx) |
//! | `mysql` | [`mysql`]: the MySQL / MariaDB store (`outbox-mysql`, sqlx) |
//! | `nats` | [`nats`]: the NATS JetStream publisher (`outbox-nats`, async-nats) |
//! | `rabbitmq` | [`rabbitmq`]: the RabbitMQ publisher (`outbox-rabbitmq`, lapin) |
//! | `kafka` | [`kafka`]: the Kafka publisher (`outbox-kafka`, rdkafka with librdkafka built from source) |
//! | `testkit` | [`testkit`]: in-memory adapters, fault injection, history checker, conformance suites, JSON-lines publisher |
//!
//! # Supported databases and brokers
//!
//! | adapter | crate | tested against |
//! | --- | --- | --- |
//! | SQLite store | `outbox-sqlite` | SQLite 3.46 (bundled) |
//! | PostgreSQL store | `outbox-postgres` | PostgreSQL 15 (needs 13+) |
//! | MySQL / MariaDB store | `outbox-mysql` | MariaDB 10.11 (needs MySQL 8.0+ or MariaDB 10.6+) |
//! | NATS JetStream publisher | `outbox-nats` | nats-server 2.9 with JetStream |
//! | RabbitMQ publisher | `outbox-rabbitmq` | RabbitMQ 3.10 (AMQP 0-9-1, publisher confirms) |
//! | Kafka publisher | `outbox-kafka` | tansu 0.6 (Kafka API) and librdkafka's mock cluster; librdkafka 2.12 |
//! | in-memory store and publisher | `outbox-testkit` | — |
//! | JSON lines to any `io::Write` | `outbox-testkit` | — |

pub use outbox_core::*;

/// The SQLite store (feature `sqlite`).
#[cfg(feature = "sqlite")]
pub use outbox_sqlite as sqlite;

/// The PostgreSQL store (feature `postgres`).
#[cfg(feature = "postgres")]
pub use outbox_postgres as postgres;

/// The MySQL / MariaDB store (feature `mysql`).
#[cfg(feature = "mysql")]
pub use outbox_mysql as mysql;

/// The NATS JetStream publisher (feature `nats`).
#[cfg(feature = "nats")]
pub use outbox_nats as nats;

/// The RabbitMQ publisher (feature `rabbitmq`).
#[cfg(feature = "rabbitmq")]
pub use outbox_rabbitmq as rabbitmq;

/// The Kafka publisher (feature `kafka`).
#[cfg(feature = "kafka")]
pub use outbox_kafka as kafka;

/// Test doubles and conformance suites (feature `testkit`).
#[cfg(feature = "testkit")]
pub use outbox_testkit as testkit;
