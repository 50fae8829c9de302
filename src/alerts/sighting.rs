//! What the alerts task passes between its parts: one audit event an alert is about
//! ([`Sighting`]), and whom a rate limit and a message apply to ([`Key`]). Both the
//! [`super::limit`]er and the [`super::message`] wording use them, so they sit below
//! both.

/// One audit event an alert is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// The audit event's id (`warden audit list`, the dashboard's `/events/ID`).
    pub id: i64,
    /// When it was first seen, RFC 3339 UTC.
    pub time: String,
    pub client: String,
    pub device: Option<String>,
    /// The device's MAC and the signed-in user, when known.
    pub mac: Option<String>,
    pub user: Option<String>,
    pub group: String,
    pub name: String,
    pub categories: String,
    pub list: String,
    pub rule: String,
    /// Blocks counted into the event when it was read.
    pub count: i64,
}

/// Whom a rate limit applies to: a client address and an alerting category.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub client: String,
    pub category: String,
}

impl Key {
    pub fn new(client: &str, category: &str) -> Key {
        Key {
            client: client.to_string(),
            category: category.to_string(),
        }
    }

    /// The key of the shared digest of blocks past `max_keys`.
    pub fn overflow() -> Key {
        Key::new("*", "*")
    }

    pub(crate) fn is_overflow(&self) -> bool {
        *self == Key::overflow()
    }
}
