//! Two-factor sign-in: time-based one-time codes (RFC 6238: HMAC-SHA1, 6 digits, 30 s
//! steps, the authenticator apps' defaults) and single-use recovery codes.
//!
//! A user's TOTP secret (base32) and the SHA-256 of each recovery code live in their
//! `[[users]]` entry, written by `warden user 2fa NAME`. What has been used is recorded
//! in the dashboard's store ([`Used`]), not in the config (which may be read-only to
//! the service): a code accepted once is refused after, across restarts too.
//!
//! A code is accepted for the current step and one either side (clocks drift, and a
//! code typed at the end of its 30 s arrives in the next), so up to 90 s.

use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, TOTP};

use super::auth::AuthError;
pub use crate::config::decode_totp_secret as decode_secret;

/// Seconds per step.
const STEP: u64 = 30;
/// Digits per code.
const DIGITS: usize = 6;
/// Steps accepted either side of the current one.
const SKEW: u64 = 1;
/// Bytes of a new secret (160 bits, as RFC 4226 recommends).
const SECRET_BYTES: usize = 20;
/// Recovery codes per enrolment.
pub const RECOVERY_CODES: usize = 10;
/// What a recovery code is written in: lowercase letters and digits a person cannot
/// misread (no 0/o, 1/l/i).
const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
/// Characters of a recovery code (about 50 bits), shown as two groups of five.
const RECOVERY_LEN: usize = 10;

/// What kind of second factor was used (the store keeps each use by kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A one-time code; the value kept is its step.
    Totp,
    /// A recovery code; the value kept is its hash.
    Recovery,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Totp => "totp",
            Kind::Recovery => "recovery",
        }
    }
}

/// A code that matched: what must be recorded as used before it is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub kind: Kind,
    pub value: String,
}

fn totp(secret: Vec<u8>, user: &str) -> TOTP {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP,
        secret,
        Some("Warden".to_string()),
        user.to_string(),
    )
}

/// Check what the user typed against their secret and recovery-code hashes at `unix`
/// seconds. Spaces and dashes are ignored; six digits are a one-time code, anything
/// else a recovery code. Whether it was used before is for the caller to ask the store.
pub fn check(secret: &[u8], recovery: &[String], typed: &str, unix: u64) -> Option<Matched> {
    let typed: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    if typed.len() == DIGITS && typed.bytes().all(|b| b.is_ascii_digit()) {
        let now = unix / STEP;
        let generator = totp(secret.to_vec(), "");
        // Every candidate is computed and compared, so the time taken does not say
        // which step (if any) matched.
        let mut found = None;
        for step in now.saturating_sub(SKEW)..=now + SKEW {
            let code = generator.generate(step * STEP);
            if super::auth::tokens_equal(&code, &typed) {
                found = Some(step);
            }
        }
        return found.map(|step| Matched {
            kind: Kind::Totp,
            value: step.to_string(),
        });
    }
    let hash = recovery_hash(&typed);
    let mut found = false;
    for kept in recovery {
        found |= super::auth::tokens_equal(kept, &hash);
    }
    found.then_some(Matched {
        kind: Kind::Recovery,
        value: hash,
    })
}

/// The hash a recovery code is kept as (of its letters and digits, lowercase).
pub fn recovery_hash(code: &str) -> String {
    let plain: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase();
    hex::encode(Sha256::digest(plain.as_bytes()))
}

/// A new enrolment: the secret (base32), the `otpauth://` URI an authenticator app
/// scans, and the recovery codes (shown once; only their hashes are kept).
pub struct Enrolment {
    pub secret_base32: String,
    pub uri: String,
    pub recovery_codes: Vec<String>,
}

impl Enrolment {
    /// A fresh secret and recovery codes for `user` at `issuer` (the organisation).
    pub fn new(user: &str, issuer: &str) -> Result<Enrolment, AuthError> {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(|e| AuthError::Random(e.to_string()))?;
        let mut generator = totp(secret.to_vec(), user);
        // The issuer is shown in the app beside the code; a ':' would break the label.
        let issuer = issuer.replace(':', " ").trim().to_string();
        generator.issuer = Some(if issuer.is_empty() {
            "Warden".to_string()
        } else {
            format!("Warden ({issuer})")
        });
        let mut recovery_codes = Vec::with_capacity(RECOVERY_CODES);
        for _ in 0..RECOVERY_CODES {
            recovery_codes.push(new_recovery_code()?);
        }
        Ok(Enrolment {
            secret_base32: generator.get_secret_base32(),
            uri: generator.get_url(),
            recovery_codes,
        })
    }

    /// The kept form of the recovery codes.
    pub fn recovery_hashes(&self) -> Vec<String> {
        self.recovery_codes
            .iter()
            .map(|c| recovery_hash(c))
            .collect()
    }
}

fn new_recovery_code() -> Result<String, AuthError> {
    let mut bytes = [0u8; RECOVERY_LEN];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    // 256 is not a multiple of the alphabet's 31 letters: redraw the few bytes that
    // would favour the first ones.
    let limit = 256 - 256 % RECOVERY_ALPHABET.len();
    let mut code = String::with_capacity(RECOVERY_LEN + 1);
    let mut i = 0;
    while code.len() < RECOVERY_LEN + 1 {
        if i == bytes.len() {
            getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
            i = 0;
        }
        let b = bytes[i] as usize;
        i += 1;
        if b >= limit {
            continue;
        }
        if code.len() == RECOVERY_LEN / 2 {
            code.push('-');
        }
        code.push(RECOVERY_ALPHABET[b % RECOVERY_ALPHABET.len()] as char);
    }
    Ok(code)
}

/// `text` as a QR code drawn in the terminal (two rows per character), for
/// authenticator apps to scan; `None` if it does not fit in one.
pub fn terminal_qr(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{is_recovery_hash, SecretError};

    /// The code for `unix` seconds.
    fn code_at(secret: &[u8], unix: u64) -> String {
        totp(secret.to_vec(), "").generate(unix)
    }

    /// RFC 6238 appendix B's SHA-1 secret.
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn codes_match_rfc_6238s_test_vectors() {
        // The RFC's 8-digit codes, of which a 6-digit code is the last six.
        for (unix, eight) in [
            (59, "94287082"),
            (1111111109, "07081804"),
            (1111111111, "14050471"),
            (1234567890, "89005924"),
            (2000000000, "69279037"),
            (20000000000, "65353130"),
        ] {
            assert_eq!(code_at(RFC_SECRET, unix), eight[2..], "at {unix}");
        }
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_no_further() {
        let now = 1_700_000_000;
        for (offset, accepted) in [
            (-60i64, false),
            (-30, true),
            (0, true),
            (30, true),
            (60, false),
        ] {
            let code = code_at(RFC_SECRET, (now as i64 + offset) as u64);
            let got = check(RFC_SECRET, &[], &code, now);
            assert_eq!(got.is_some(), accepted, "offset {offset}");
            if let Some(m) = got {
                assert_eq!(m.kind, Kind::Totp);
                assert_eq!(m.value, ((now as i64 + offset) as u64 / STEP).to_string());
            }
        }
        assert_eq!(check(RFC_SECRET, &[], "000000x", now), None);
        assert_eq!(check(RFC_SECRET, &[], "", now), None);
    }

    #[test]
    fn recovery_codes_match_their_hash_however_typed() {
        let enrolment = Enrolment::new("lead", "St Mary's").unwrap();
        let hashes = enrolment.recovery_hashes();
        assert_eq!(hashes.len(), RECOVERY_CODES);
        assert!(hashes.iter().all(|h| is_recovery_hash(h)));
        let code = &enrolment.recovery_codes[3];
        assert_eq!(code.len(), RECOVERY_LEN + 1);
        let secret = decode_secret(&enrolment.secret_base32).unwrap();
        for typed in [code.clone(), code.to_uppercase(), code.replace('-', " ")] {
            let got = check(&secret, &hashes, &typed, 0).expect(&typed);
            assert_eq!(got.kind, Kind::Recovery);
            assert_eq!(got.value, hashes[3]);
        }
        assert_eq!(check(&secret, &hashes, "abcde-fghjk", 0), None);
    }

    #[test]
    fn the_enrolment_uri_carries_the_secret_and_the_organisation() {
        let enrolment = Enrolment::new("jo.lead", "St Mary's: Year 7").unwrap();
        assert!(
            enrolment.uri.starts_with("otpauth://totp/"),
            "{}",
            enrolment.uri
        );
        assert!(enrolment
            .uri
            .contains(&format!("secret={}", enrolment.secret_base32)));
        assert!(enrolment.uri.contains("jo.lead"));
        assert!(
            !enrolment.uri[15..].contains("Year 7:"),
            "{}",
            enrolment.uri
        );
        assert_eq!(
            decode_secret(&enrolment.secret_base32).unwrap().len(),
            SECRET_BYTES
        );
        assert!(terminal_qr(&enrolment.uri).is_some());
    }

    #[test]
    fn secrets_must_be_base32_and_long_enough() {
        assert_eq!(decode_secret("not base32!"), Err(SecretError::NotBase32));
        assert_eq!(
            decode_secret("JBSWY3DPEHPK3PXP"),
            Err(SecretError::TooShort(80))
        );
        assert!(decode_secret("jbswy3dpehpk3pxpjbswy3dpehpk3pxp").is_ok());
    }
}
