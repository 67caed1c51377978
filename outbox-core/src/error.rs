//! The one error type of the outbox crates.

use std::fmt;

use crate::message::ValidationError;
use crate::store::LeaseToken;

/// A boxed error from a driver or broker client, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the outbox [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the outbox crates.
///
/// Match on [`Error::kind`] rather than on variants when you only need to decide what to do,
/// and use [`Error::is_transient`] to decide whether to retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message was rejected before anything was written: fix the message.
    #[error("invalid message: {0}")]
    InvalidMessage(ValidationError),

    /// A configuration value is out of range or inconsistent: fix the configuration.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and what to change.
        reason: String,
    },

    /// A database operation failed; `transient` says whether retrying may succeed.
    #[error("store operation `{operation}` failed{}", if *transient { " (transient: the same call may succeed later)" } else { "" })]
    Store {
        /// The store operation that failed, e.g. `claim` or `enqueue`.
        operation: &'static str,
        /// Whether the same call may succeed later (deadlock, lock timeout, lost connection).
        transient: bool,
        /// The driver's error.
        source: BoxError,
    },

    /// The lease was taken over by another relay (it expired) or never existed; the
    /// messages it covered are no longer this caller's to settle.
    #[error("lease {token} is no longer held; its messages will be handled by their new holder")]
    LeaseLost {
        /// The token of the lost lease.
        token: LeaseToken,
    },

    /// A payload could not be serialised.
    #[error("could not serialise the payload as JSON")]
    Serialize {
        /// The serde error.
        source: serde_json::Error,
    },
}

/// What kind of [`Error`] happened, for matching without depending on variant fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::InvalidMessage`].
    InvalidMessage,
    /// See [`Error::InvalidConfig`].
    InvalidConfig,
    /// See [`Error::Store`].
    Store,
    /// See [`Error::LeaseLost`].
    LeaseLost,
    /// See [`Error::Serialize`].
    Serialize,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ErrorKind::InvalidMessage => "invalid message",
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::Store => "store error",
            ErrorKind::LeaseLost => "lease lost",
            ErrorKind::Serialize => "serialisation error",
        };
        f.write_str(name)
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidMessage(_) => ErrorKind::InvalidMessage,
            Error::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            Error::Store { .. } => ErrorKind::Store,
            Error::LeaseLost { .. } => ErrorKind::LeaseLost,
            Error::Serialize { .. } => ErrorKind::Serialize,
        }
    }

    /// Whether repeating the same call may succeed. Only store errors marked transient by
    /// their adapter (deadlock, lock timeout, lost connection) are.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Store {
                transient: true,
                ..
            }
        )
    }

    /// A store error from a driver error; `transient` comes from the adapter's own mapping.
    pub fn store(operation: &'static str, transient: bool, source: impl Into<BoxError>) -> Self {
        Error::Store {
            operation,
            transient,
            source: source.into(),
        }
    }

    /// This error followed by its causes, `: `-separated, for logs and messages to people.
    ///
    /// `Display` shows only this error (its causes are reachable through
    /// [`source`](std::error::Error::source)); `report` shows the whole chain.
    ///
    /// ```
    /// let err = outbox_core::Error::store("claim", true, "database is locked");
    /// assert_eq!(
    ///     err.report().to_string(),
    ///     "store operation `claim` failed (transient: the same call may succeed later): database is locked"
    /// );
    /// ```
    pub fn report(&self) -> impl fmt::Display + '_ {
        Report(self)
    }

    /// An [`Error::InvalidConfig`] with the given explanation.
    pub fn invalid_config(reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            reason: reason.into(),
        }
    }
}

impl From<ValidationError> for Error {
    fn from(value: ValidationError) -> Self {
        Error::InvalidMessage(value)
    }
}

struct Report<'a>(&'a Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut cause = std::error::Error::source(self.0);
        while let Some(err) = cause {
            let text = err.to_string();
            // Many drivers already print their source in their own text (sqlx's
            // "error returned from database: {source}"): say it once.
            if !last.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            cause = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Inner;

    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("1213 (40001): Deadlock found")
        }
    }

    impl std::error::Error for Inner {}

    /// Prints its source inside its own text, as sqlx's database errors do.
    #[derive(Debug)]
    struct Wrapper(Inner);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "error returned from database: {}", self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn report_says_a_cause_once_when_its_wrapper_already_printed_it() {
        let err = Error::store("claim", true, Wrapper(Inner));
        let report = err.report().to_string();
        assert_eq!(report.matches("Deadlock found").count(), 1, "{report}");
        assert!(report.ends_with("error returned from database: 1213 (40001): Deadlock found"));
    }

    #[test]
    fn report_chains_causes_that_add_text() {
        let err = Error::store("claim", true, Inner);
        assert!(
            err.report()
                .to_string()
                .ends_with("): 1213 (40001): Deadlock found")
        );
    }
}
