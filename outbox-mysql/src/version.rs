//! The server's version, and whether the store can run on it.

use std::fmt;

use outbox_core::{Error, Result};

/// Which server answered: Oracle MySQL (or a MySQL-compatible fork) or MariaDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerFlavor {
    /// MySQL, or a server that reports a MySQL version (Percona Server, ...).
    MySql,
    /// MariaDB.
    MariaDb,
}

impl ServerFlavor {
    /// The oldest supported `(major, minor)` of this flavour: the first release with
    /// `FOR UPDATE SKIP LOCKED`, which the claim needs.
    ///
    /// ```
    /// use outbox_mysql::ServerFlavor;
    ///
    /// assert_eq!(ServerFlavor::MySql.minimum(), (8, 0));
    /// assert_eq!(ServerFlavor::MariaDb.minimum(), (10, 6));
    /// ```
    pub fn minimum(self) -> (u32, u32) {
        match self {
            ServerFlavor::MySql => (8, 0),
            ServerFlavor::MariaDb => (10, 6),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ServerFlavor::MySql => "MySQL",
            ServerFlavor::MariaDb => "MariaDB",
        }
    }
}

impl fmt::Display for ServerFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A server version as `SELECT VERSION()` reports it, e.g. `8.0.36` or
/// `10.11.6-MariaDB-0+deb12u1`.
///
/// ```
/// use outbox_mysql::{ServerFlavor, ServerVersion};
///
/// let version = ServerVersion::parse("10.11.6-MariaDB-0+deb12u1").unwrap();
/// assert_eq!(version.flavor, ServerFlavor::MariaDb);
/// assert_eq!((version.major, version.minor, version.patch), (10, 11, 6));
/// assert!(version.check().is_ok());
///
/// let old = ServerVersion::parse("5.7.44-log").unwrap();
/// assert!(old.check().unwrap_err().to_string().contains("needs MySQL 8.0 or later"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerVersion {
    /// MySQL or MariaDB.
    pub flavor: ServerFlavor,
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version (0 when the server reports none).
    pub patch: u32,
    /// The version string as the server reported it.
    pub raw: String,
}

impl ServerVersion {
    /// Reads a version string; `None` when it does not start with `major.minor`.
    ///
    /// MariaDB's replication prefix (`5.5.5-10.6.16-MariaDB`, as some proxies report it)
    /// is skipped.
    ///
    /// ```
    /// let version = outbox_mysql::ServerVersion::parse("8.0.36-0ubuntu0.22.04.1").unwrap();
    /// assert_eq!(version.to_string(), "MySQL 8.0.36");
    /// assert!(outbox_mysql::ServerVersion::parse("not a version").is_none());
    /// ```
    pub fn parse(version: &str) -> Option<Self> {
        let raw = version.trim();
        let flavor = if raw.to_ascii_lowercase().contains("mariadb") {
            ServerFlavor::MariaDb
        } else {
            ServerFlavor::MySql
        };
        let numbers = match flavor {
            ServerFlavor::MariaDb => raw.strip_prefix("5.5.5-").unwrap_or(raw),
            ServerFlavor::MySql => raw,
        };
        let numeric_end = numbers
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(numbers.len());
        let mut parts = numbers[..numeric_end].split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(patch) => patch.parse().ok()?,
            None => 0,
        };
        Some(ServerVersion {
            flavor,
            major,
            minor,
            patch,
            raw: raw.to_owned(),
        })
    }

    /// Whether the store runs on this server (MySQL 8.0+, MariaDB 10.6+).
    ///
    /// ```
    /// use outbox_mysql::ServerVersion;
    ///
    /// assert!(ServerVersion::parse("10.6.0-MariaDB").unwrap().is_supported());
    /// assert!(!ServerVersion::parse("10.5.23-MariaDB").unwrap().is_supported());
    /// ```
    pub fn is_supported(&self) -> bool {
        (self.major, self.minor) >= self.flavor.minimum()
    }

    /// `Ok` on a supported server; otherwise an [`Error::InvalidConfig`] that names the
    /// version found and the one needed.
    ///
    /// ```
    /// let old = outbox_mysql::ServerVersion::parse("10.5.23-MariaDB").unwrap();
    /// let message = old.check().unwrap_err().to_string();
    /// assert!(message.contains("MariaDB 10.5.23") && message.contains("MariaDB 10.6 or later"));
    /// ```
    pub fn check(&self) -> Result<()> {
        if self.is_supported() {
            return Ok(());
        }
        let (major, minor) = self.flavor.minimum();
        Err(Error::invalid_config(format!(
            "the server is {} {}.{}.{} ({:?}), but outbox-mysql needs {} {major}.{minor} or \
             later (MySQL 8.0+ or MariaDB 10.6+): older servers have no FOR UPDATE SKIP \
             LOCKED, which the relay's claim needs; upgrade the server",
            self.flavor, self.major, self.minor, self.patch, self.raw, self.flavor
        )))
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}.{}.{}",
            self.flavor, self.major, self.minor, self.patch
        )
    }
}

/// Reads `SELECT VERSION()` on `conn` and refuses servers that are too old.
pub(crate) async fn check_server(conn: &mut sqlx::MySqlConnection) -> Result<ServerVersion> {
    let row = sqlx::query("SELECT VERSION()")
        .fetch_one(conn)
        .await
        .map_err(|e| crate::error::store_error("version", e))?;
    let raw = crate::row::text(&row, 0, "version")?;
    let version = ServerVersion::parse(&raw).ok_or_else(|| {
        Error::invalid_config(format!(
            "cannot read the server version {raw:?}; outbox-mysql needs MySQL 8.0+ or MariaDB 10.6+"
        ))
    })?;
    version.check()?;
    Ok(version)
}
