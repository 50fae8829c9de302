//! Domain-name normalisation: the one place that decides what a valid name looks like.
//!
//! Every name that enters Warden (a list line, a `warden check` argument, a DNS query)
//! goes through [`normalize`] (or, for a query's wire labels, [`normalize_labels`]), so
//! the matcher only ever compares one canonical form:
//! lower-case ASCII, no trailing dot, Unicode labels converted to punycode (IDNA/UTS 46),
//! labels of 1–63 octets, at most 253 octets in all.
//!
//! Labels may contain letters, digits, `-` and `_` (underscores are common in real
//! lists and legal in DNS, e.g. `_dmarc`). ASCII input is *not* run through IDNA,
//! because strict IDNA rejects labels such as `ab--cd` that real lists contain and
//! real resolvers answer.

use std::fmt;

/// Longest name in presentation form without the trailing dot (RFC 1035: 255 octets on
/// the wire, which is 253 characters of text).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a piece of text is not a usable domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    #[error("label longer than 63 octets ({0})")]
    LabelTooLong(usize),
    #[error("name longer than 253 octets ({0})")]
    NameTooLong(usize),
    #[error("character {0:?} is not allowed in a domain name")]
    BadChar(char),
    #[error("not a valid internationalised name")]
    InvalidIdn,
}

impl NameError {
    /// A short, stable key for grouping list diagnostics by reason.
    pub fn reason_key(&self) -> &'static str {
        match self {
            NameError::Empty => "empty name",
            NameError::EmptyLabel => "empty label",
            NameError::LabelTooLong(_) => "label longer than 63",
            NameError::NameTooLong(_) => "name longer than 253",
            NameError::BadChar(_) => "bad character",
            NameError::InvalidIdn => "invalid IDN",
        }
    }
}

/// Normalise `input` into Warden's canonical form (see the module doc).
///
/// Surrounding whitespace and one trailing dot are removed; upper case is folded;
/// non-ASCII input is converted to punycode.
pub fn normalize(input: &str) -> Result<String, NameError> {
    let trimmed = input.trim();
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(trimmed).map_err(|_| NameError::InvalidIdn)?
    };
    validate(&ascii)?;
    Ok(ascii)
}

/// Check that an already lower-cased ASCII name obeys the length and character rules.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::NameTooLong(name.len()));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong(label.len()));
        }
        if let Some(bad) = label.chars().find(|c| !is_name_char(*c)) {
            return Err(NameError::BadChar(bad));
        }
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

/// Normalise a query name given as its wire labels (from a DNS packet): lower case,
/// joined with dots, no trailing dot. Returns `None` when a label holds octets that no
/// list entry can contain (so the name can never match).
pub fn normalize_labels<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> Option<String> {
    let mut text = String::with_capacity(64);
    for (i, label) in labels.into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        for &b in label {
            let c = b.to_ascii_lowercase() as char;
            if !is_name_char(c) {
                return None;
            }
            text.push(c);
        }
    }
    Some(text)
}

/// Is `text` an IPv4 or IPv6 address (as found by mistake in domain lists)?
pub fn is_ip_address(text: &str) -> bool {
    text.parse::<std::net::IpAddr>().is_ok()
}

/// Display helper that prints a name or `.` for the root.
pub struct DisplayName<'a>(pub &'a str);

impl fmt::Display for DisplayName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_trailing_dot() {
        assert_eq!(normalize("WwW.ExAmPlE.TeSt.").unwrap(), "www.example.test");
        assert_eq!(normalize("  a.test \t").unwrap(), "a.test");
    }

    #[test]
    fn converts_unicode_to_punycode() {
        assert_eq!(normalize("bücher.test").unwrap(), "xn--bcher-kva.test");
        assert_eq!(normalize("BÜCHER.test").unwrap(), "xn--bcher-kva.test");
    }

    #[test]
    fn keeps_ascii_labels_that_strict_idna_rejects() {
        assert_eq!(normalize("ab--cd.test").unwrap(), "ab--cd.test");
        assert_eq!(normalize("_dmarc.a.test").unwrap(), "_dmarc.a.test");
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(normalize(""), Err(NameError::Empty));
        assert_eq!(normalize("."), Err(NameError::Empty));
        assert_eq!(normalize("a..test"), Err(NameError::EmptyLabel));
        assert_eq!(normalize(".a.test"), Err(NameError::EmptyLabel));
        assert_eq!(normalize("a b.test"), Err(NameError::BadChar(' ')));
        assert_eq!(normalize("a/b.test"), Err(NameError::BadChar('/')));
        let long_label = format!("{}.test", "a".repeat(64));
        assert_eq!(normalize(&long_label), Err(NameError::LabelTooLong(64)));
        let ok_label = format!("{}.test", "a".repeat(63));
        assert!(normalize(&ok_label).is_ok());
        let long_name = vec!["abcdefghi"; 26].join("."); // 26*10-1 = 259
        assert_eq!(normalize(&long_name), Err(NameError::NameTooLong(259)));
    }

    #[test]
    fn wire_labels_normalise() {
        let labels: [&[u8]; 3] = [b"WWW", b"Example", b"TEST"];
        assert_eq!(
            normalize_labels(labels).as_deref(),
            Some("www.example.test")
        );
        let bad: [&[u8]; 2] = [b"a b", b"test"];
        assert_eq!(normalize_labels(bad), None);
        assert_eq!(normalize_labels([]).as_deref(), Some(""));
    }

    #[test]
    fn recognises_ip_addresses() {
        assert!(is_ip_address("0.0.0.0"));
        assert!(is_ip_address("::1"));
        assert!(!is_ip_address("a.test"));
        assert!(!is_ip_address("1.2.3.4.test"));
    }
}
