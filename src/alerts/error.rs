//! Why alerts cannot run: the error of [`super::start`] and of its database tasks, kept
//! apart so the channels can report setup errors without importing the alerts task.

use crate::audit::AuditError;

/// Why alerts cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("[alerts] {0}")]
    Setup(String),
    #[error("alerts: a database task failed: {0}")]
    Task(String),
}
