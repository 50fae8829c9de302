//! A row's personal columns and their digest, as the hash chain takes them: shared by
//! the store that seals rows, the outbox that ships them, and the purges (site and
//! central) that keep the digest when they delete the columns.

use sha2::{Digest, Sha256};

/// A row's personal columns, as the chain digests them (and as a purge keeps the
/// digest when the columns are deleted).
#[derive(Debug, Clone, Copy)]
pub struct Personal<'a> {
    pub salt: Option<&'a str>,
    pub client_ip: &'a str,
    pub device: Option<&'a str>,
    pub name: &'a str,
    pub cname: Option<&'a str>,
    pub mac: Option<&'a str>,
    pub user: Option<&'a str>,
    pub sources: Option<&'a str>,
}

impl Personal<'_> {
    /// `hex(SHA-256(salt ‖ client ‖ device ‖ name ‖ cname [‖ mac ‖ user ‖ sources]))`,
    /// joined by U+001F (NULL as U+0000). The identity columns are added only when one
    /// is set, so a row without them (every row written before they existed) keeps its
    /// digest, and the chains written by earlier releases still verify.
    pub fn digest(&self) -> String {
        let mut cells = vec![
            Cell::Maybe(self.salt),
            Cell::Text(self.client_ip),
            Cell::Maybe(self.device),
            Cell::Text(self.name),
            Cell::Maybe(self.cname),
        ];
        if self.mac.is_some() || self.user.is_some() || self.sources.is_some() {
            cells.extend([
                Cell::Maybe(self.mac),
                Cell::Maybe(self.user),
                Cell::Maybe(self.sources),
            ]);
        }
        hex::encode(Sha256::digest(joined(&cells).as_bytes()))
    }
}

/// One column value of a canonical row.
pub(crate) enum Cell<'a> {
    Text(&'a str),
    Maybe(Option<&'a str>),
    Int(i64),
}

/// Values joined by U+001F; NULL as U+0000 (as `store::join_columns`).
pub(crate) fn joined(cells: &[Cell<'_>]) -> String {
    let mut out = String::with_capacity(256);
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push('\u{1f}');
        }
        match cell {
            Cell::Text(t) | Cell::Maybe(Some(t)) => out.push_str(t),
            Cell::Maybe(None) => out.push('\u{0}'),
            Cell::Int(n) => out.push_str(&n.to_string()),
        }
    }
    out
}
