//! What can go wrong between a site and the trust's central store. Every message names
//! the database by host, port and name only: never a password.

use crate::audit::AuditError;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// `[fleet]` cannot be put to use (a password file that does not read, a CA file
    /// without certificates).
    #[error("[fleet] {0}")]
    Config(String),
    /// The database refused or failed a statement, or could not be reached.
    #[error("the fleet database {target}: {message}")]
    Database { target: String, message: String },
    /// The central store holds something this site's log contradicts: shipping stops
    /// until a person looks (see the message).
    #[error("site {site:?}: {message}")]
    Conflict { site: String, message: String },
    #[error(transparent)]
    Audit(#[from] AuditError),
}
