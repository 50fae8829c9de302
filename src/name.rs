//! Domain-name normalisation: the one place that decides what a valid name looks like.
//!
//! Every name that enters Warden (a list line, a `warden check` argument, a DNS query)
//! goes through [`normalize`] (or, for a query's wire labels, [`key`]), so
//! the matcher only ever compares one canonical form:
//! lower-case ASCII, no trailing dot, Unicode labels converted to punycode (IDNA/UTS 46),
//! labels of 1–63 octets, at most 253 octets in all.
//!
//! Labels may contain letters, digits, `-` and `_` (underscores are common in real
//! lists and legal in DNS, e.g. `_dmarc`). ASCII input is *not* run through IDNA,
//! because strict IDNA rejects labels such as `ab--cd` that real lists contain and
//! real resolvers answer.

/// Longest name in presentation form without the trailing dot (RFC 1035: 255 octets on
/// the wire, which is 253 characters of text).
pub(crate) const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035).
pub(crate) const MAX_LABEL_LEN: usize = 63;

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
    pub(crate) fn reason_key(&self) -> &'static str {
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
pub(crate) fn validate(name: &str) -> Result<(), NameError> {
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

/// A query name in the matcher's key form, from its wire labels (as a DNS packet carries
/// them: any bytes, 1–63 per label). Never fails: every name has a key, so no name can
/// slip past the matcher by holding a byte a list entry cannot.
///
/// Letters are folded to lower case; digits, `-`, `_` and the other printable ASCII
/// characters stay as they are, except `.`, `\` and the few a zone file gives meaning
/// to (`"();@$`); those, the space, control characters and bytes ≥ 0x80 are written
/// `\DDD` (the byte in decimal, as in RFC 1035's presentation form). So `.` only ever separates labels, the key is ASCII, and a label
/// no list entry can equal (`a+b`, `*`, `www\032`) still sits under its parents: the
/// suffix match covers it like any other label. For a name of ordinary labels the key is
/// exactly what [`normalize`] gives, so list entries and keys compare directly.
pub fn key<'a>(labels: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut text = String::with_capacity(64);
    for (i, label) in labels.into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_label(&mut text, label);
    }
    text
}

/// Printable characters a key still escapes: `.` and `\` (so labels stay apart and
/// escapes unambiguous) and those a zone file gives meaning to, as `dig` escapes them.
const PRESENTATION_SPECIAL: &[u8] = b".\\\"();@$";

/// Append one label in key form (see [`key`]).
fn push_label(text: &mut String, label: &[u8]) {
    for &b in label {
        let c = b.to_ascii_lowercase();
        if c.is_ascii_graphic() && !PRESENTATION_SPECIAL.contains(&c) {
            text.push(char::from(c));
        } else {
            text.push('\\');
            text.push(char::from(b'0' + b / 100));
            text.push(char::from(b'0' + b / 10 % 10));
            text.push(char::from(b'0' + b % 10));
        }
    }
}

/// A name a person typed (`warden check`) in the matcher's key form: a list-style name
/// (Unicode allowed) as [`normalize`] reads it, or ASCII presentation form with any
/// bytes, escaped as `\DDD` or `\X` (`a+b.site.test`, `*.site.test`,
/// `www\032.site.test`), read label by label into [`key`].
pub(crate) fn key_from_text(input: &str) -> Result<String, NameError> {
    let trimmed = input.trim();
    if !trimmed.is_ascii() {
        return normalize(trimmed);
    }
    let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    let labels = presentation_labels(trimmed)?;
    let wire_len: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    if wire_len > MAX_NAME_LEN + 2 {
        return Err(NameError::NameTooLong(wire_len - 2));
    }
    Ok(key(labels.iter().map(Vec::as_slice)))
}

/// Split presentation text into labels of raw bytes, undoing `\DDD` and `\X` escapes.
fn presentation_labels(text: &str) -> Result<Vec<Vec<u8>>, NameError> {
    let mut labels = vec![Vec::new()];
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        let label = labels.last_mut().ok_or(NameError::Empty)?;
        match b {
            b'.' => labels.push(Vec::new()),
            b'\\' => label.push(unescape(&mut bytes)?),
            b if b.is_ascii_graphic() => label.push(b),
            b => return Err(NameError::BadChar(char::from(b))),
        }
    }
    for label in &labels {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong(label.len()));
        }
    }
    Ok(labels)
}

/// The byte an escape stands for, after its backslash: `DDD` (decimal, ≤ 255) or one
/// character taken as itself.
fn unescape(rest: &mut impl Iterator<Item = u8>) -> Result<u8, NameError> {
    let first = rest.next().ok_or(NameError::BadChar('\\'))?;
    if !first.is_ascii_digit() {
        return Ok(first);
    }
    let mut value = u32::from(first - b'0');
    for _ in 0..2 {
        match rest.next() {
            Some(d) if d.is_ascii_digit() => value = value * 10 + u32::from(d - b'0'),
            _ => return Err(NameError::BadChar('\\')),
        }
    }
    u8::try_from(value).map_err(|_| NameError::BadChar('\\'))
}

/// Is `text` an IPv4 or IPv6 address (as found by mistake in domain lists)?
pub(crate) fn is_ip_address(text: &str) -> bool {
    text.parse::<std::net::IpAddr>().is_ok()
}

/// A host name or address, lower case and without a trailing dot; `None` if it is
/// neither an IP address nor a DNS name of letters, digits, `-` and `_` (how the admin
/// listener compares `Host` headers with its own names).
pub(crate) fn host_name(text: &str) -> Option<String> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Some(ip.to_string());
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (!name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)).then_some(name)
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
    fn wire_labels_become_keys() {
        let labels: [&[u8]; 3] = [b"WWW", b"Example", b"TEST"];
        assert_eq!(key(labels), "www.example.test");
        let odd: [&[u8]; 2] = [b"a b", b"test"];
        assert_eq!(key(odd), "a\\032b.test");
        let odd: [&[u8]; 3] = [b"A+B", b"*", b"test"];
        assert_eq!(key(odd), "a+b.*.test");
        let dotted: [&[u8]; 2] = [b"a.b\\", b"test"];
        assert_eq!(key(dotted), "a\\046b\\092.test");
        let high: [&[u8]; 2] = [&[0xff, 0x00, 0x80], b"test"];
        assert_eq!(key(high), "\\255\\000\\128.test");
        assert_eq!(key([]), "");
    }

    #[test]
    fn typed_names_read_escapes() {
        assert_eq!(
            key_from_text("WWW.Example.test.").unwrap(),
            "www.example.test"
        );
        assert_eq!(key_from_text("a+b.x.test").unwrap(), "a+b.x.test");
        assert_eq!(key_from_text("*.x.test").unwrap(), "*.x.test");
        assert_eq!(key_from_text("www\\032.x.test").unwrap(), "www\\032.x.test");
        assert_eq!(key_from_text("a\\.b.x.test").unwrap(), "a\\046b.x.test");
        assert_eq!(key_from_text("bücher.test").unwrap(), "xn--bcher-kva.test");
        assert_eq!(key_from_text("a..test"), Err(NameError::EmptyLabel));
        assert_eq!(key_from_text("a\\999.test"), Err(NameError::BadChar('\\')));
        assert_eq!(key_from_text("a\\"), Err(NameError::BadChar('\\')));
    }

    proptest::proptest! {
        /// Keys are ASCII, split into exactly the name's labels, and read back (as
        /// typed text) to themselves.
        #[test]
        fn keys_keep_label_boundaries(
            labels in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..20), 1..5)
        ) {
            let k = key(labels.iter().map(Vec::as_slice));
            proptest::prop_assert!(k.is_ascii());
            proptest::prop_assert_eq!(k.split('.').count(), labels.len());
            proptest::prop_assert_eq!(key_from_text(&k).ok(), Some(k.clone()));
        }
    }

    #[test]
    fn recognises_ip_addresses() {
        assert!(is_ip_address("0.0.0.0"));
        assert!(is_ip_address("::1"));
        assert!(!is_ip_address("a.test"));
        assert!(!is_ip_address("1.2.3.4.test"));
    }
}
