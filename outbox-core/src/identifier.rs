//! Validation of configured SQL identifiers (table and schema names).

use crate::error::{Error, Result};

/// Checks that `name` is a plain SQL identifier: an ASCII letter or `_`, then letters,
/// digits or `_`, at most 63 bytes (PostgreSQL's limit). Store adapters call it on every
/// configured table or schema name before putting it into SQL, so no SQL is ever built from
/// an unchecked string.
///
/// ```
/// use outbox_core::validate_identifier;
///
/// assert!(validate_identifier("table", "outbox_messages").is_ok());
/// assert!(validate_identifier("table", "orders; DROP TABLE x").is_err());
/// ```
pub fn validate_identifier(what: &str, name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let starts_well = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if starts_well && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(Error::invalid_config(format!(
            "{what} name {name:?} is not a plain SQL identifier: use a letter or _ followed by \
             letters, digits or _, at most 63 characters"
        )))
    }
}
