//! The publisher conformance suite against the Kafka broker under test, each test on its
//! own topic.

mod common;

use common::KafkaHarness;

outbox_testkit::publisher_conformance!(optional KafkaHarness::connect());
