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
//!   cannot be guessed at speed from one device or against one account from many. Each
//!   attempt is counted before its password is checked, so parallel requests cannot
//!   race past the limit, and checks run a few at a time ([`PasswordChecker`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use dashmap::DashMap;

use crate::config::{Config, Role};
use crate::policy::clients::device_key;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "warden_session";
/// The sign-in form's double-submit cookie.
pub(crate) const LOGIN_COOKIE: &str = "warden_login";

/// Failed sign-ins allowed per address or per user name within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
/// How long a failed sign-in counts against its address and user name.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most sessions held at once; past it the oldest is ended (bounded memory).
const MAX_SESSIONS: usize = 1024;

/// Why a password could not be hashed (or a secret made).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no randomness: {0}")]
    Random(String),
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// A random token, 64 hex digits.
pub(crate) fn random_token() -> Result<String, AuthError> {
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
pub(crate) fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Passwords checked at once. Each Argon2 check takes tens of milliseconds of CPU and
/// 19 MiB of memory: more at once would let a crowd of sign-ins starve DNS of its cores.
pub(crate) const CONCURRENT_CHECKS: usize = 2;
/// How long a sign-in waits for its turn before it is told to try again.
pub(crate) const CHECK_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// Why a password could not be checked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    #[error("every password check slot stayed busy for {0:?}")]
    Busy(Duration),
    #[error("the password check did not finish: {0}")]
    Failed(String),
    /// The use of a second factor could not be recorded (so it could not be accepted).
    #[error("recording the second factor's use: {0}")]
    Store(String),
}

/// Checks passwords on blocking threads, [`CONCURRENT_CHECKS`] at a time, and counts
/// every check it runs (the count is what `/metrics` shows and tests observe).
pub(crate) struct PasswordChecker {
    permits: Arc<tokio::sync::Semaphore>,
    wait: Duration,
    checks: prometheus::IntCounter,
}

impl PasswordChecker {
    /// Run at most `concurrent` checks at once; a check waits at most `wait` for its
    /// turn. Each check run adds one to `checks`.
    pub fn new(concurrent: usize, wait: Duration, checks: prometheus::IntCounter) -> Self {
        PasswordChecker {
            permits: Arc::new(tokio::sync::Semaphore::new(concurrent.max(1))),
            wait,
            checks,
        }
    }

    /// Whether `password` matches `hash`; `None` checks against [`decoy_hash`], so an
    /// unknown user takes as long to refuse. The check holds its slot until it ends,
    /// even if the request is dropped meanwhile.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, CheckError> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| CheckError::Busy(self.wait))?
            .map_err(|e| CheckError::Failed(e.to_string()))?;
        let checks = self.checks.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            let hash = match hash.as_deref() {
                Some(hash) => hash,
                None => decoy_hash(),
            };
            checks.inc();
            verify_password(&password, hash)
        })
        .await
        .map_err(|e| CheckError::Failed(e.to_string()))
    }
}

/// A hash to verify against when the user does not exist, so an unknown name takes
/// as long to refuse as a wrong password (no user-name probing by timing).
pub(crate) fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("warden decoy password").unwrap_or_default())
}

/// Constant-time comparison of two tokens.
pub(crate) fn tokens_equal(a: &str, b: &str) -> bool {
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
    /// The TOTP secret signed in with, if any: setting up (or removing) two-factor
    /// sign-in ends the session, as does a role coming to need it.
    second_factor: Option<String>,
    created: Instant,
    expires: Instant,
}

/// The sessions held in memory.
#[derive(Default)]
pub(crate) struct Sessions {
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
        second_factor: Option<&str>,
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
                second_factor: second_factor.map(str::to_string),
                created: now,
                expires: now + ttl,
            },
        );
        Ok(token)
    }

    /// The live session for `token`, checked against the current config: a user who
    /// has been removed, or whose role, password or second factor changed, is signed
    /// out, as is one signed in without a second factor that their role now needs.
    pub fn get(&self, token: &str, config: &Config) -> Option<Session> {
        let session = self.map.get(token)?.clone();
        let needs_second_factor = config.dashboard.require_2fa_for.contains(&session.role);
        let still_valid = session.expires > Instant::now()
            && (session.second_factor.is_some() || !needs_second_factor)
            && config.users.iter().any(|u| {
                *u.name.get_ref() == session.user
                    && u.role == session.role
                    && *u.password_hash.get_ref() == session.hash
                    && u.totp_secret.as_ref().map(|s| s.get_ref()) == session.second_factor.as_ref()
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

/// Sign-in attempts per address and per user name within [`FAILURE_WINDOW`].
///
/// An attempt is *reserved* against both its address and its user name, under one lock,
/// before its password is checked: a crowd of parallel requests cannot all pass the check
/// before the first of them is counted. A reservation counts as a failure until the
/// password is found right ([`LoginLimiter::succeeded`]) or was never checked
/// ([`LoginLimiter::release`]); a request dropped mid-check stays counted, as its hash ran.
#[derive(Default)]
pub(crate) struct LoginLimiter {
    state: Mutex<LimiterState>,
}

#[derive(Default)]
struct LimiterState {
    next_id: u64,
    /// Per `addr:` / `user:` key, the attempts inside the window, oldest first.
    attempts: HashMap<String, Vec<Counted>>,
    /// Per address, when a refusal was last recorded.
    refusals: HashMap<IpAddr, Instant>,
}

/// One attempt counted against a key.
#[derive(Debug, Clone, Copy)]
struct Counted {
    id: u64,
    at: Instant,
    /// Its password was checked and was wrong (an in-flight attempt is not yet settled).
    settled: bool,
}

/// A reserved sign-in attempt: hand it back to [`LoginLimiter::failed`],
/// [`LoginLimiter::succeeded`] or [`LoginLimiter::release`].
#[derive(Debug)]
#[must_use = "an attempt is counted until it is settled"]
pub struct Attempt {
    id: u64,
    client: IpAddr,
    user: String,
}

impl Attempt {
    /// The user name the attempt was for.
    pub fn user(&self) -> &str {
        &self.user
    }
}

/// Most keys the limiter tracks; past it, keys with no recent attempt are dropped first.
const MAX_LIMITER_KEYS: usize = 10_000;

impl LimiterState {
    /// The attempts on `key` still inside the window (older ones are forgotten).
    fn recent(&mut self, key: &str, now: Instant) -> usize {
        match self.attempts.get_mut(key) {
            Some(list) => {
                list.retain(|c| now.saturating_duration_since(c.at) < FAILURE_WINDOW);
                list.len()
            }
            None => 0,
        }
    }

    /// How long until the oldest attempt on `key` leaves the window.
    fn wait(&self, key: &str, now: Instant) -> Duration {
        self.attempts
            .get(key)
            .and_then(|list| list.first())
            .map(|oldest| FAILURE_WINDOW.saturating_sub(now.saturating_duration_since(oldest.at)))
            .unwrap_or(FAILURE_WINDOW)
    }

    fn make_room(&mut self, now: Instant) {
        if self.attempts.len() >= MAX_LIMITER_KEYS {
            self.attempts.retain(|_, list| {
                list.retain(|c| now.saturating_duration_since(c.at) < FAILURE_WINDOW);
                !list.is_empty()
            });
        }
        if self.refusals.len() >= MAX_LIMITER_KEYS {
            self.refusals
                .retain(|_, at| now.saturating_duration_since(*at) < Duration::from_secs(60));
        }
    }

    /// Apply `edit` to `key`'s attempts, forgetting the key once it has none.
    fn edit(&mut self, key: &str, edit: impl FnOnce(&mut Vec<Counted>)) {
        if let Some(list) = self.attempts.get_mut(key) {
            edit(list);
            if list.is_empty() {
                self.attempts.remove(key);
            }
        }
    }
}

impl LoginLimiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        crate::sync::lock(&self.state)
    }

    /// Count an attempt from `client` for `user` now, or `Err(wait)` if either has used
    /// up its [`MAX_FAILURES`] attempts: then refuse without checking the password.
    pub(crate) fn reserve(
        &self,
        client: IpAddr,
        user: &str,
        now: Instant,
    ) -> Result<Attempt, Duration> {
        let mut state = self.lock();
        let keys = [addr_key(client), user_key(user)];
        let full: Vec<&String> = keys
            .iter()
            .filter(|key| state.recent(key, now) >= MAX_FAILURES)
            .collect();
        if !full.is_empty() {
            let wait = full.iter().map(|k| state.wait(k, now)).max();
            return Err(wait.unwrap_or(FAILURE_WINDOW));
        }
        state.make_room(now);
        let id = state.next_id;
        state.next_id += 1;
        for key in keys {
            state.attempts.entry(key).or_default().push(Counted {
                id,
                at: now,
                settled: false,
            });
        }
        Ok(Attempt {
            id,
            client,
            user: user.to_string(),
        })
    }

    /// The password was wrong: the attempt stays counted against both keys.
    pub fn failed(&self, attempt: Attempt) {
        let mut state = self.lock();
        for key in [addr_key(attempt.client), user_key(&attempt.user)] {
            state.edit(&key, |list| {
                list.iter_mut()
                    .filter(|c| c.id == attempt.id)
                    .for_each(|c| c.settled = true)
            });
        }
    }

    /// The password was right: the attempt no longer counts, and neither do the user's
    /// earlier wrong passwords (their own typos). The address's other failures stay (one
    /// device guessing several accounts stays limited), and so do attempts still being
    /// checked, so a crowd racing a real sign-in gains nothing.
    pub(crate) fn succeeded(&self, attempt: Attempt) {
        let mut state = self.lock();
        state.edit(&addr_key(attempt.client), |list| {
            list.retain(|c| c.id != attempt.id)
        });
        state.edit(&user_key(&attempt.user), |list| {
            list.retain(|c| c.id != attempt.id && !c.settled)
        });
    }

    /// The password was never checked (the server was too busy): give the attempt back.
    pub fn release(&self, attempt: Attempt) {
        let mut state = self.lock();
        for key in [addr_key(attempt.client), user_key(&attempt.user)] {
            state.edit(&key, |list| list.retain(|c| c.id != attempt.id));
        }
    }

    /// Whether a refusal of `client` should be recorded: the first in each minute only,
    /// so a device hammering the form cannot fill the audit database.
    pub(crate) fn record_refusal(&self, client: IpAddr, now: Instant) -> bool {
        let mut state = self.lock();
        state.make_room(now);
        let last = state.refusals.get(&client).copied();
        let first =
            last.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(60));
        if first {
            state.refusals.insert(client, now);
        }
        first
    }
}

/// A device's attempts are counted by its IPv4 address or IPv6 /64 (see
/// [`device_key`]), so one device cannot multiply its allowance by changing address.
fn addr_key(client: IpAddr) -> String {
    format!("addr:{}", device_key(client))
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

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn limiter_blocks_after_five_failures_per_address_or_name() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        let (a, b) = (ip(1), ip(2));
        for _ in 0..MAX_FAILURES {
            let attempt = limiter.reserve(a, "lead", t0).expect("under the limit");
            limiter.failed(attempt);
        }
        let wait = limiter.reserve(a, "lead", t0).unwrap_err();
        assert_eq!(wait, FAILURE_WINDOW);
        // The same account from elsewhere is limited too, another account from `a` too;
        // the name's count ignores case, as sign-in does not.
        assert!(limiter.reserve(b, "LEAD", t0).is_err());
        assert!(limiter.reserve(a, "admin", t0).is_err());
        // A fresh address and name are not.
        limiter.failed(limiter.reserve(b, "admin", t0).expect("fresh"));
        // Refusals are recorded once a minute per address.
        assert!(limiter.record_refusal(a, t0));
        assert!(!limiter.record_refusal(a, t0 + Duration::from_secs(30)));
        assert!(limiter.record_refusal(b, t0));
        assert!(limiter.record_refusal(a, t0 + Duration::from_secs(61)));
        // The window passes.
        let later = t0 + FAILURE_WINDOW + Duration::from_secs(1);
        assert!(limiter.reserve(a, "lead", later).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_before_their_password_is_checked() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        // Five reserved, none settled: the sixth is refused all the same.
        let held: Vec<Attempt> = (0..MAX_FAILURES)
            .map(|i| limiter.reserve(ip(i as u32), "lead", t0).unwrap())
            .collect();
        assert!(limiter.reserve(ip(99), "lead", t0).is_err());
        // One never checked (busy) is given back; a dropped one would not be.
        let mut held = held.into_iter();
        limiter.release(held.next().unwrap());
        let again = limiter
            .reserve(ip(99), "lead", t0)
            .expect("a slot was given back");
        assert!(limiter.reserve(ip(98), "lead", t0).is_err());
        // The right password frees its own slot and the user's settled failures, but not
        // the attempts still in flight.
        limiter.failed(held.next().unwrap());
        limiter.failed(held.next().unwrap());
        limiter.succeeded(again);
        let still_running = 2; // held[3], held[4]
        for i in 0..(MAX_FAILURES - still_running) {
            let attempt = limiter.reserve(ip(200 + i as u32), "lead", t0).unwrap();
            limiter.failed(attempt);
        }
        assert!(limiter.reserve(ip(300), "lead", t0).is_err());
    }

    #[test]
    fn a_right_password_keeps_the_devices_failures() {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        for user in ["a", "b", "c", "d"] {
            limiter.failed(limiter.reserve(ip(1), user, t0).unwrap());
        }
        let ok = limiter.reserve(ip(1), "lead", t0).unwrap();
        limiter.succeeded(ok);
        // The success did not count, the four failures still do: one more is allowed.
        limiter.failed(limiter.reserve(ip(1), "e", t0).unwrap());
        assert!(limiter.reserve(ip(1), "lead", t0).is_err());
    }

    /// Threads racing to reserve: per address and per name, at most MAX_FAILURES are
    /// let through, whatever the interleaving.
    fn race(pairs: &[(u32, u8)]) -> (HashMap<u32, usize>, HashMap<u8, usize>) {
        let limiter = LoginLimiter::default();
        let t0 = Instant::now();
        let granted = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for chunk in pairs.chunks(pairs.len().div_ceil(8).max(1)) {
                let (limiter, granted) = (&limiter, &granted);
                scope.spawn(move || {
                    for &(addr, user) in chunk {
                        if let Ok(attempt) = limiter.reserve(ip(addr), &format!("u{user}"), t0) {
                            limiter.failed(attempt);
                            granted.lock().unwrap().push((addr, user));
                        }
                    }
                });
            }
        });
        let mut by_addr = HashMap::new();
        let mut by_user = HashMap::new();
        for (addr, user) in granted.into_inner().unwrap() {
            *by_addr.entry(addr).or_default() += 1;
            *by_user.entry(user).or_default() += 1;
        }
        (by_addr, by_user)
    }

    #[test]
    fn a_crowd_for_one_name_gets_five_checks() {
        // One address, one name; then forty addresses, one name.
        let (addr, user) = race(&[(1, 0); 100]);
        assert_eq!((addr[&1], user[&0]), (MAX_FAILURES, MAX_FAILURES));
        let many: Vec<(u32, u8)> = (0..100).map(|i| (i % 40, 0)).collect();
        let (_, user) = race(&many);
        assert_eq!(user[&0], MAX_FAILURES);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn no_key_gets_more_than_its_attempts(
            pairs in proptest::collection::vec((0u32..6, 0u8..6), 1..200)
        ) {
            let (by_addr, by_user) = race(&pairs);
            for (addr, n) in &by_addr {
                proptest::prop_assert!(*n <= MAX_FAILURES, "address {addr}: {n}");
            }
            for (user, n) in &by_user {
                proptest::prop_assert!(*n <= MAX_FAILURES, "user {user}: {n}");
            }
            // And nobody is refused early: every pair whose address and name both had
            // room got through, so a key with fewer than MAX_FAILURES grants saw no
            // refusal caused by itself alone. Checked sequentially against a model:
            let limiter = LoginLimiter::default();
            let t0 = Instant::now();
            let mut model_a: HashMap<u32, usize> = HashMap::new();
            let mut model_u: HashMap<u8, usize> = HashMap::new();
            for &(addr, user) in &pairs {
                let room = model_a.get(&addr).copied().unwrap_or(0) < MAX_FAILURES
                    && model_u.get(&user).copied().unwrap_or(0) < MAX_FAILURES;
                let got = limiter.reserve(ip(addr), &format!("u{user}"), t0);
                proptest::prop_assert_eq!(got.is_ok(), room);
                if let Ok(attempt) = got {
                    limiter.failed(attempt);
                    *model_a.entry(addr).or_default() += 1;
                    *model_u.entry(user).or_default() += 1;
                }
            }
        }
    }

    #[tokio::test]
    async fn checks_run_a_few_at_a_time_and_are_counted() {
        let checks = prometheus::IntCounter::new("checks", "checks").unwrap();
        let checker = Arc::new(PasswordChecker::new(
            2,
            Duration::from_secs(60),
            checks.clone(),
        ));
        let hash = hash_password("right").unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let (checker, hash) = (checker.clone(), hash.clone());
                let password = if i == 0 { "right" } else { "wrong" };
                tokio::spawn(async move { checker.verify(password.into(), Some(hash)).await })
            })
            .collect();
        let mut right = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() {
                right += 1;
            }
        }
        assert_eq!((right, checks.get()), (1, 6));
        // An unknown user is checked against the decoy, and counted.
        assert!(!checker.verify("x".into(), None).await.unwrap());
        assert_eq!(checks.get(), 7);
    }

    #[tokio::test]
    async fn a_check_that_never_gets_a_slot_is_busy_and_not_counted() {
        let checks = prometheus::IntCounter::new("checks", "checks").unwrap();
        let checker = PasswordChecker::new(1, Duration::from_millis(50), checks.clone());
        let slot = checker.permits.clone().acquire_owned().await.unwrap();
        let hash = hash_password("right").unwrap();
        let result = checker.verify("right".into(), Some(hash)).await;
        assert!(matches!(result, Err(CheckError::Busy(_))), "{result:?}");
        assert_eq!(checks.get(), 0);
        drop(slot);
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
