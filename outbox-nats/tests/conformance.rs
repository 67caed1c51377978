//! The publisher conformance suite against the local NATS server, each test on its own stream.

mod common;

use common::NatsHarness;

outbox_testkit::publisher_conformance!(optional NatsHarness::connect());
