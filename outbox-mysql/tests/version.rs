//! The server version check: MySQL 8.0+ and MariaDB 10.6+ are accepted, older servers are
//! refused with an error naming the version found and the one needed.

mod common;

use outbox_core::Error;
use outbox_mysql::{ServerFlavor, ServerVersion};

fn parse(raw: &str) -> ServerVersion {
    ServerVersion::parse(raw).unwrap_or_else(|| panic!("{raw:?} parses"))
}

#[test]
fn version_strings_of_both_servers_are_read() {
    for (raw, flavor, numbers) in [
        ("8.0.36", ServerFlavor::MySql, (8, 0, 36)),
        ("8.0.36-0ubuntu0.22.04.1", ServerFlavor::MySql, (8, 0, 36)),
        ("8.4.0-commercial", ServerFlavor::MySql, (8, 4, 0)),
        ("9.1.0", ServerFlavor::MySql, (9, 1, 0)),
        ("5.7.44-log", ServerFlavor::MySql, (5, 7, 44)),
        ("8.0.35-27", ServerFlavor::MySql, (8, 0, 35)),
        (
            "10.11.6-MariaDB-0+deb12u1",
            ServerFlavor::MariaDb,
            (10, 11, 6),
        ),
        ("10.6.16-MariaDB-log", ServerFlavor::MariaDb, (10, 6, 16)),
        ("11.4.2-MariaDB-ubu2404", ServerFlavor::MariaDb, (11, 4, 2)),
        ("5.5.5-10.5.23-MariaDB", ServerFlavor::MariaDb, (10, 5, 23)),
        ("10.3.39-MariaDB", ServerFlavor::MariaDb, (10, 3, 39)),
        ("  10.6.0-mariadb ", ServerFlavor::MariaDb, (10, 6, 0)),
        ("8.0", ServerFlavor::MySql, (8, 0, 0)),
    ] {
        let version = parse(raw);
        assert_eq!(version.flavor, flavor, "{raw}");
        assert_eq!(
            (version.major, version.minor, version.patch),
            numbers,
            "{raw}"
        );
    }
    for raw in ["", "MariaDB", "eight", "8", "x.y.z"] {
        assert!(ServerVersion::parse(raw).is_none(), "{raw:?}");
    }
}

#[test]
fn supported_servers_are_mysql_8_and_mariadb_10_6_and_later() {
    for raw in [
        "8.0.0",
        "8.0.36",
        "8.4.0",
        "9.1.0",
        "10.6.0-MariaDB",
        "10.11.6-MariaDB",
        "11.4.2-MariaDB",
        "5.5.5-10.6.16-MariaDB",
    ] {
        let version = parse(raw);
        assert!(version.is_supported(), "{raw}");
        version.check().expect(raw);
    }
    for (raw, found, needed) in [
        ("5.7.44-log", "MySQL 5.7.44", "MySQL 8.0 or later"),
        ("5.6.51", "MySQL 5.6.51", "MySQL 8.0 or later"),
        (
            "10.5.23-MariaDB",
            "MariaDB 10.5.23",
            "MariaDB 10.6 or later",
        ),
        (
            "5.5.5-10.3.39-MariaDB",
            "MariaDB 10.3.39",
            "MariaDB 10.6 or later",
        ),
    ] {
        let version = parse(raw);
        assert!(!version.is_supported(), "{raw}");
        let err = version.check().expect_err(raw);
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(found), "{text}");
        assert!(text.contains(needed), "{text}");
        assert!(text.contains("SKIP LOCKED"), "{text}");
    }
}

/// The server under test is accepted, by `server_version`, `connect` and `migrate`.
#[test]
fn the_test_server_is_accepted() {
    outbox_testkit::block_on(async {
        let Some((store, _cleanup)) = common::fresh_store(|_| {}).await else {
            return;
        };
        let version = store.server_version().await.expect("a supported server");
        println!("server under test: {version} ({})", version.raw);
        assert!(version.is_supported());
        outbox_mysql::MySqlStore::connect(&common::url(), outbox_mysql::MySqlConfig::default())
            .await
            .expect("connect checks the version and accepts it");
    });
}
