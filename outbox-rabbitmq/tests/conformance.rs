//! The publisher conformance suite against the local RabbitMQ, each test on its own queue.

mod common;

use common::RabbitHarness;

outbox_testkit::publisher_conformance!(optional RabbitHarness::connect());
