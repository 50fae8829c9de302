//! `POST /login`: one sign-in attempt, in the order that keeps the limits true under a
//! crowd of parallel requests.
//!
//! 1. The form's double-submit token is checked (no password is looked at without it).
//! 2. The attempt is reserved against the device's address and the user name at once
//!    ([`auth::LoginLimiter::reserve`]); past [`auth::MAX_FAILURES`] on either, the
//!    request is refused without checking anything.
//! 3. Only then is the password checked, on a blocking thread, a few at a time
//!    ([`auth::PasswordChecker`]); a check that never got its turn gives the
//!    attempt back.
//! 4. With the right password, a user with two-factor sign-in must give a code
//!    ([`second_factor`]) not used before (the store records each use, so a code seen
//!    over a shoulder is no use after); a wrong or used code is a failure like a wrong
//!    password, with the same words, so they do not say the password was right. A user
//!    whose role `[dashboard] require_2fa_for` names, without a second factor set up,
//!    is not signed in.
//!
//! Every password check is counted (`warden_dashboard_password_checks_total`) and every
//! outcome too (`warden_dashboard_signins_total{result}`), beside the sign-in records
//! kept in the audit database.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};

use super::auth::{self, Attempt, CheckError, LOGIN_COOKIE, SESSION_COOKIE};
use super::second_factor;
use super::state::{cookie, form, login_page, redirect, Dashboard, PageError, PageResult};
use crate::config::{Role, UserConfig};

#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    csrf: String,
    user: String,
    password: String,
    /// A TOTP or recovery code; empty for a user without two-factor sign-in.
    #[serde(default)]
    code: String,
}

pub(super) async fn login_submit(
    State(d): State<Arc<Dashboard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    parsed: Result<Form<LoginForm>, FormRejection>,
) -> PageResult {
    let login = form(parsed)?;
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if !auth::tokens_equal(&login.csrf, expected) {
        return login_page(
            &d,
            Some("The sign-in form had expired. Please try again."),
            &login.user,
            StatusCode::FORBIDDEN,
        );
    }
    let client = peer.ip();
    // User names are at most 64 characters without control characters (config
    // validation): a longer one cannot match, and is cut so it cannot grow the limiter or
    // the sign-in records; a control character (a NUL cannot even be stored centrally)
    // cannot match either, and is recorded as U+FFFD.
    let user: String = login
        .user
        .trim()
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    let now = Instant::now();
    let attempt = match d.limiter.reserve(client, &user, now) {
        Ok(attempt) => attempt,
        Err(wait) => return refuse_limited(&d, &user, client, wait, now).await,
    };
    let engine = d.engine();
    let account = engine
        .config
        .users
        .iter()
        .find(|u| *u.name.get_ref() == user)
        .cloned();
    let required = engine.config.dashboard.require_2fa_for.clone();
    drop(engine);
    let hash = account.as_ref().map(|u| u.password_hash.get_ref().clone());
    match d.checker.verify(login.password, hash).await {
        Ok(true) => match account {
            Some(account) => {
                second_factor_then_sign_in(&d, attempt, client, &account, &required, &login.code)
                    .await
            }
            // The decoy hash matched a password: no account, so still a refusal.
            None => refuse_wrong(&d, attempt, client, "unknown-user").await,
        },
        Ok(false) => {
            let result = if account.is_some() {
                "wrong-password"
            } else {
                "unknown-user"
            };
            refuse_wrong(&d, attempt, client, result).await
        }
        Err(error) => refuse_busy(&d, attempt, client, error).await,
    }
}

/// The password was right: check the second factor (if the user has one, or their
/// role needs one), then sign in.
async fn second_factor_then_sign_in(
    d: &Dashboard,
    attempt: Attempt,
    client: IpAddr,
    account: &UserConfig,
    required: &[Role],
    code: &str,
) -> PageResult {
    let hash = account.password_hash.get_ref();
    let Some(secret) = &account.totp_secret else {
        if required.contains(&account.role) {
            return refuse_without_second_factor(d, attempt, client, account).await;
        }
        return signed_in(d, attempt, client, hash, account.role, None).await;
    };
    // Checked at start-up and reload; a secret that no longer decodes signs nobody in.
    let Ok(bytes) = second_factor::decode_secret(secret.get_ref()) else {
        return refuse_wrong(d, attempt, client, "wrong-code").await;
    };
    let recovery: Vec<String> = account
        .recovery_codes
        .iter()
        .map(|c| c.get_ref().clone())
        .collect();
    let now = SystemTime::now();
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let Some(matched) = second_factor::check(&bytes, &recovery, code, unix) else {
        return refuse_wrong(d, attempt, client, "wrong-code").await;
    };
    let user = attempt.user().to_string();
    let first_use = d
        .backend
        .use_second_factor(now, user.clone(), matched.kind.as_str(), matched.value)
        .await;
    match first_use {
        Ok(true) => {
            signed_in(
                d,
                attempt,
                client,
                hash,
                account.role,
                Some(secret.get_ref()),
            )
            .await
        }
        Ok(false) => refuse_wrong(d, attempt, client, "reused-code").await,
        // Without the record a code could be used twice: refuse, and nothing was learnt.
        Err(error) => refuse_busy(d, attempt, client, CheckError::Store(error.to_string())).await,
    }
}

/// The role needs a second factor and this user has none yet: the password was right,
/// so this says what to do rather than that it was wrong.
async fn refuse_without_second_factor(
    d: &Dashboard,
    attempt: Attempt,
    client: IpAddr,
    account: &UserConfig,
) -> PageResult {
    let user = attempt.user().to_string();
    d.limiter.release(attempt);
    d.signin_metrics.count("needs-2fa");
    record_signin(d, &user, client, "needs-2fa").await;
    tracing::warn!(user = %user, client = %client, role = account.role.as_str(), "dashboard sign-in needs two-factor set up");
    let text = format!(
        "A {} must sign in with a code from an authenticator app, and yours is not set up \
         yet. Ask your Warden admin to run: warden user 2fa {user}",
        account.role.as_str()
    );
    login_page(d, Some(&text), &user, StatusCode::FORBIDDEN)
}

/// Too many attempts from this device or for this name: say for how long.
async fn refuse_limited(
    d: &Dashboard,
    user: &str,
    client: IpAddr,
    wait: std::time::Duration,
    now: Instant,
) -> PageResult {
    d.signin_metrics.count("limited");
    if d.limiter.record_refusal(client, now) {
        record_signin(d, user, client, "limited").await;
    }
    let minutes = wait.as_secs().div_ceil(60).max(1);
    let text = format!(
        "Too many failed sign-ins. Try again in {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    );
    login_page(d, Some(&text), user, StatusCode::TOO_MANY_REQUESTS)
}

async fn refuse_wrong(
    d: &Dashboard,
    attempt: Attempt,
    client: IpAddr,
    result: &'static str,
) -> PageResult {
    let user = attempt.user().to_string();
    d.limiter.failed(attempt);
    d.signin_metrics.count(result);
    record_signin(d, &user, client, result).await;
    tracing::warn!(user = %user, client = %client, result, "dashboard sign-in refused");
    login_page(
        d,
        Some("That user name, password and code do not match."),
        &user,
        StatusCode::UNAUTHORIZED,
    )
}

/// The password could not be checked: the attempt is given back (nothing was learnt).
async fn refuse_busy(
    d: &Dashboard,
    attempt: Attempt,
    client: IpAddr,
    error: CheckError,
) -> PageResult {
    let user = attempt.user().to_string();
    d.limiter.release(attempt);
    d.signin_metrics.count("busy");
    record_signin(d, &user, client, "busy").await;
    tracing::warn!(user = %user, client = %client, %error, "dashboard sign-in not checked");
    login_page(
        d,
        Some("Warden is busy checking other sign-ins. Please try again in a moment."),
        &user,
        StatusCode::SERVICE_UNAVAILABLE,
    )
}

/// The password was right: start a session and send the user to the overview.
async fn signed_in(
    d: &Dashboard,
    attempt: Attempt,
    client: IpAddr,
    hash: &str,
    role: Role,
    second_factor: Option<&str>,
) -> PageResult {
    let user = attempt.user().to_string();
    d.limiter.succeeded(attempt);
    d.signin_metrics.count("ok");
    record_signin(d, &user, client, "ok").await;
    tracing::info!(user = %user, client = %client, "dashboard sign-in");
    let engine = d.engine();
    let config = &engine.config.dashboard;
    let token = d
        .sessions
        .start(&user, role, hash, second_factor, config.session_ttl)
        .map_err(|e| PageError::Internal(e.to_string()))?;
    let cookie = auth::set_cookie(
        SESSION_COOKIE,
        &token,
        "/",
        config.session_ttl,
        config.secure_cookie,
    );
    let mut response = redirect("/");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

async fn record_signin(d: &Dashboard, user: &str, client: IpAddr, result: &'static str) {
    // The user name is as typed: cap it, so the record cannot be used to fill the disk.
    let user: String = user.chars().take(64).collect();
    let at = SystemTime::now();
    let written = d
        .backend
        .record_signin(at, user, client.to_string(), result)
        .await;
    if let Err(error) = written {
        tracing::error!(?error, "could not record a sign-in");
    }
}
