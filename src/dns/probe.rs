//! The self-test's marker ([`crate::selftest`]): an EDNS option that makes a query a
//! check of the filter rather than a device's question. It names the group whose
//! filtering is being checked, and it is believed only with this process's key in it
//! (16 random bytes made at start-up, never written anywhere and never sent off the
//! machine: the self-test asks its own listener). A marked query goes through the
//! whole query path as that group's member, but is not a device's: it is neither
//! recorded in the audit log nor counted as a block, and no network or rate limit
//! applies to it. A marker with any other key is ignored (the query is an ordinary
//! one), so guessing gains nothing but a normal answer.

use subtle::ConstantTimeEq;

/// The option code, in the range RFC 6891 keeps for local and experimental use (clear of
/// dnsmasq's 65001, 65073 and 65074).
pub const PROBE_OPTION: u16 = 65_381;

/// Bytes of key at the start of the option's data.
const KEY_LEN: usize = 16;

/// This process's self-test key.
#[derive(Clone)]
pub struct ProbeKey([u8; KEY_LEN]);

impl std::fmt::Debug for ProbeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeKey(..)")
    }
}

impl ProbeKey {
    /// A new random key (from the operating system's generator).
    pub fn random() -> ProbeKey {
        let mut key = [0u8; KEY_LEN];
        if getrandom::fill(&mut key).is_err() {
            // Without randomness no key can be trusted: a key of zeroes plus a marker
            // nobody else can match is not possible, so make marking impossible instead.
            return ProbeKey::unusable();
        }
        ProbeKey(key)
    }

    /// A key no marker matches (see [`ProbeKey::group_in`]).
    fn unusable() -> ProbeKey {
        ProbeKey([0u8; KEY_LEN])
    }

    fn usable(&self) -> bool {
        self.0 != [0u8; KEY_LEN]
    }

    /// The option's data marking a query as a check of `group`.
    pub fn marker(&self, group: &str) -> Vec<u8> {
        let mut data = self.0.to_vec();
        data.extend_from_slice(group.as_bytes());
        data
    }

    /// The group a query's options mark it as checking, if exactly one option is a
    /// marker with this key and a group name in UTF-8.
    pub fn group_in<'a>(
        &self,
        options: impl IntoIterator<Item = (u16, &'a [u8])>,
    ) -> Option<&'a str> {
        if !self.usable() {
            return None;
        }
        let mut found = None;
        for (code, data) in options {
            if code != PROBE_OPTION {
                continue;
            }
            if found.is_some() {
                return None;
            }
            let (key, group) = data.split_at_checked(KEY_LEN)?;
            if !bool::from(key.ct_eq(&self.0)) {
                return None;
            }
            found = Some(std::str::from_utf8(group).ok()?);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_this_processs_key_marks_a_query() {
        let key = ProbeKey::random();
        let marker = key.marker("pupils");
        assert_eq!(key.group_in([(PROBE_OPTION, &marker[..])]), Some("pupils"));
        let other = ProbeKey::random().marker("pupils");
        assert_eq!(key.group_in([(PROBE_OPTION, &other[..])]), None);
        // The right bytes under another option code mark nothing.
        assert_eq!(key.group_in([(65_001, &marker[..])]), None);
        // Two markers, even both right, are one too many.
        assert_eq!(
            key.group_in([(PROBE_OPTION, &marker[..]), (PROBE_OPTION, &marker[..])]),
            None
        );
        assert_eq!(key.group_in([(PROBE_OPTION, &marker[..5])]), None);
        let mut bad_utf8 = key.marker("");
        bad_utf8.push(0xff);
        assert_eq!(key.group_in([(PROBE_OPTION, &bad_utf8[..])]), None);
        // A key of zeroes (no randomness) never matches, even its own marker.
        let unusable = ProbeKey::unusable();
        let zeroes = unusable.marker("pupils");
        assert_eq!(unusable.group_in([(PROBE_OPTION, &zeroes[..])]), None);
    }

    proptest! {
        #[test]
        fn no_bytes_forge_a_marker_or_panic(code: u16, data: Vec<u8>) {
            let key = ProbeKey::random();
            prop_assert_eq!(key.group_in([(code, &data[..])]), None);
        }
    }
}
