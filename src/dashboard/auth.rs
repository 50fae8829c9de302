//! Who is signed in: password hashes, sessions, CSRF tokens and the sign-in limiter.
//!
//! - Passwords are Argon2id hashes in `[[users]]` (`warden user add` writes them); the
//!   plain password is never stored or logged.
//! - A session is a random 256-bit token in an `HttpOnly`, `SameSite=Strict` cookie,
//!   kept in memory only (a restart signs everyone out) and ended after
//!   `[dashboard] session_ttl`. Each session has its own CSRF token, which every form
//!   carries and every POST must return.
//! - The sign-in form, before any session exists, is protected by a double-submit
//!   token: a random value in a cookie scoped to `/login` and in the form.
//! - Failed sign-ins are limited per client address and per user name, so a password
//!   cannot be guessed at speed from one device or against one account from many.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use dashmap::DashMap;

use crate::config::{Config, Role};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "warden_session";
/// The sign-in form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "warden_login";

/// Failed sign-ins allowed per address or per user name within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// How long a failed sign-in counts against its address and user name.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most sessions held at once; past it the oldest is ended (bounded memory).
const MAX_SESSIONS: usize = 1024;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no randomness for the salt: {0}")]
    Random(String),
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// A random token, 64 hex digits.
pub fn random_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// The Argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so an unknown name takes
/// as long to refuse as a wrong password (no user-name probing by timing).
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("warden decoy password").unwrap_or_default())
}

/// Constant-time comparison of two tokens.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One signed-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// The token every form of this session must return.
    pub csrf: String,
    /// The password hash signed in with: a reset password (a new hash) ends the session.
    hash: String,
    created: Instant,
    expires: Instant,
}

/// The sessions held in memory.
#[derive(Default)]
pub struct Sessions {
    map: DashMap<String, Session>,
}

impl Sessions {
    /// Start a session for `user`, who signed in against password `hash`; returns its
    /// cookie token.
    pub fn start(
        &self,
        user: &str,
        role: Role,
        hash: &str,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        if self.map.len() >= MAX_SESSIONS {
            self.sweep(Instant::now());
            if self.map.len() >= MAX_SESSIONS {
                let oldest = self
                    .map
                    .iter()
                    .min_by_key(|e| e.created)
                    .map(|e| e.key().clone());
                if let Some(key) = oldest {
                    self.map.remove(&key);
                }
            }
        }
        let token = random_token()?;
        let now = Instant::now();
        self.map.insert(
            token.clone(),
            Session {
                user: user.to_string(),
                role,
                csrf: random_token()?,
                hash: hash.to_string(),
                created: now,
                expires: now + ttl,
            },
        );
        Ok(token)
    }

    /// The live session for `token`, checked against the current config: a user who
    /// has been removed, or whose role or password changed, is signed out.
    pub fn get(&self, token: &str, config: &Config) -> Option<Session> {
        let session = self.map.get(token)?.clone();
        let still_valid = session.expires > Instant::now()
            && config.users.iter().any(|u| {
                *u.name.get_ref() == session.user
                    && u.role == session.role
                    && *u.password_hash.get_ref() == session.hash
            });
        if !still_valid {
            self.map.remove(token);
            return None;
        }
        Some(session)
    }

    pub fn end(&self, token: &str) {
        self.map.remove(token);
    }

    fn sweep(&self, now: Instant) {
        self.map.retain(|_, s| s.expires > now);
    }
}

/// Failed sign-ins per address and per user name, each a list of recent failure times.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

/// Most keys the limiter tracks; past it, keys with no recent failure are dropped first.
const MAX_LIMITER_KEYS: usize = 10_000;

impl LoginLimiter {
    /// `Some(wait)` if `client` or `user` has used up its failures: refuse without
    /// checking the password.
    pub fn blocked(&self, client: IpAddr, user: &str, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        [addr_key(client), user_key(user)]
            .iter()
            .filter_map(|key| {
                let times = failures.get(key)?;
                let recent: Vec<&Instant> = times
                    .iter()
                    .filter(|t| now.duration_since(**t) < FAILURE_WINDOW)
                    .collect();
                if recent.len() < MAX_FAILURES {
                    return None;
                }
                let oldest = recent.iter().min()?;
                Some(FAILURE_WINDOW.saturating_sub(now.duration_since(**oldest)))
            })
            .max()
    }

    pub fn failed(&self, client: IpAddr, user: &str, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_LIMITER_KEYS {
            failures.retain(|_, times| {
                times.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
                !times.is_empty()
            });
        }
        for key in [addr_key(client), user_key(user)] {
            let times = failures.entry(key).or_default();
            times.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
            times.push(now);
        }
    }

    /// A successful sign-in clears the user's count (not the address's: one device
    /// guessing several accounts stays limited).
    /// Whether a refusal of `client` should be recorded: the first in each minute only,
    /// so a device hammering the form cannot fill the audit database.
    pub fn record_refusal(&self, client: IpAddr, now: Instant) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let times = failures.entry(format!("refused:{client}")).or_default();
        times.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        let first = times.is_empty();
        if first {
            times.push(now);
        }
        first
    }

    pub fn succeeded(&self, user: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&user_key(user));
    }
}

fn addr_key(client: IpAddr) -> String {
    format!("addr:{client}")
}
fn user_key(user: &str) -> String {
    format!("user:{}", user.to_ascii_lowercase())
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, and `Secure` when asked.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        max_age.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_wrong_passwords_do_not() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horse ", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
        // Two hashes of one password differ (fresh salt).
        assert_ne!(hash, hash_password("correct horse").unwrap());
    }

    #[test]
    fn limiter_blocks_after_five_failures_per_address_or_name() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(limiter.blocked(a, "lead", t0).is_none());
            limiter.failed(a, "lead", t0);
        }
        assert!(limiter.blocked(a, "lead", t0).is_some());
        // The same account from elsewhere is limited too, another account from `a` too.
        assert!(limiter.blocked(b, "lead", t0).is_some());
        assert!(limiter.blocked(a, "admin", t0).is_some());
        // A fresh address and name are not.
        assert!(limiter.blocked(b, "admin", t0).is_none());
        // Refusals are recorded once a minute per address.
        assert!(limiter.record_refusal(a, t0));
        assert!(!limiter.record_refusal(a, t0 + Duration::from_secs(30)));
        assert!(limiter.record_refusal(b, t0));
        assert!(limiter.record_refusal(a, t0 + Duration::from_secs(61)));
        // The window passes.
        let later = t0 + FAILURE_WINDOW + Duration::from_secs(1);
        assert!(limiter.blocked(a, "lead", later).is_none());
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let header = "a=1; warden_session=abc; warden_session_x=zzz";
        assert_eq!(cookie(header, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(header, "warden"), None);
        let set = set_cookie("n", "v", "/", Duration::from_secs(60), true);
        assert_eq!(
            set,
            "n=v; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
    }

    #[test]
    fn token_comparison() {
        assert!(tokens_equal("abc", "abc"));
        assert!(!tokens_equal("abc", "abd"));
        assert!(!tokens_equal("", ""));
    }
}
