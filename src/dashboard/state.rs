//! What the dashboard's handlers share (the [`Dashboard`]: its audit database, sessions,
//! sign-in limits) and how a failed request becomes a page ([`PageError`]). Below the
//! handlers (`mod.rs`) and their extractors (`extract.rs`), which both use it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::Markup;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::auth::{self, Session, LOGIN_COOKIE, SESSION_COOKIE};
use super::backend::{Backend, BackendError};
use super::pages;
use crate::audit::{AuditError, Store};
use crate::engine::Engine;
use crate::fleet::read::{Central, Scope};
use crate::fleet::FleetError;
use crate::metrics::Metrics;
use crate::reload::Reloader;

/// Why the dashboard cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("registering the sign-in metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What the dashboard's handlers share.
pub struct Dashboard {
    pub(super) reloader: Arc<Reloader>,
    pub(super) metrics: Arc<Metrics>,
    /// The events shown: this site's log, or every site's in the central store.
    pub(super) backend: Backend,
    pub(super) sessions: auth::Sessions,
    pub(super) limiter: auth::LoginLimiter,
    /// Runs the Argon2 checks, a few at a time.
    pub(super) checker: auth::PasswordChecker,
    pub(super) signin_metrics: SigninMetrics,
    /// One allow-file edit (and its reload) at a time.
    pub(super) allow_edit: tokio::sync::Mutex<()>,
    /// Exports that may run at once ([`super::export`]).
    pub(super) exports: Arc<tokio::sync::Semaphore>,
}

impl Dashboard {
    /// Open the dashboard's own connection to the audit database at `audit_path`.
    pub fn open(
        audit_path: &std::path::Path,
        reloader: Arc<Reloader>,
        metrics: Arc<Metrics>,
    ) -> Result<Dashboard, DashboardError> {
        let backend = Backend::Site {
            store: Arc::new(Mutex::new(Store::open_existing(audit_path)?)),
            path: audit_path.to_path_buf(),
        };
        Dashboard::with_backend(backend, reloader, metrics)
    }

    /// The trust's fleet dashboard: every site's events from the central store, each
    /// user seeing the sites their `[[users]] sites` names (every site without it).
    pub fn fleet(
        central: Arc<Central>,
        reloader: Arc<Reloader>,
        metrics: Arc<Metrics>,
    ) -> Result<Dashboard, DashboardError> {
        Dashboard::with_backend(Backend::Fleet(central), reloader, metrics)
    }

    fn with_backend(
        backend: Backend,
        reloader: Arc<Reloader>,
        metrics: Arc<Metrics>,
    ) -> Result<Dashboard, DashboardError> {
        let signin_metrics = SigninMetrics::new()?;
        let checker = auth::PasswordChecker::new(
            auth::CONCURRENT_CHECKS,
            auth::CHECK_QUEUE_WAIT,
            signin_metrics.checks.clone(),
        );
        Ok(Dashboard {
            reloader,
            metrics,
            backend,
            sessions: auth::Sessions::default(),
            limiter: auth::LoginLimiter::default(),
            checker,
            signin_metrics,
            allow_edit: tokio::sync::Mutex::new(()),
            exports: super::export::slots(),
        })
    }

    /// The dashboard's own counters (sign-ins), in Prometheus text format.
    pub(crate) fn render_metrics(&self) -> String {
        self.signin_metrics.render()
    }

    pub(super) fn engine(&self) -> Arc<Engine> {
        self.reloader.current()
    }

    /// Run `f` on this site's audit log on a blocking thread (not found on the fleet
    /// dashboard, which has none).
    pub(super) async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, AuditError> + Send + 'static,
    ) -> Result<T, PageError> {
        Ok(self.backend.db(f).await?)
    }

    /// The sites `session`'s user may see: those of their `[[users]] sites`, or all.
    pub(super) fn scope(&self, session: &Session) -> Scope {
        let engine = self.engine();
        let user = engine
            .config
            .users
            .iter()
            .find(|u| *u.name.get_ref() == session.user);
        match user.and_then(|u| u.sites.as_ref()) {
            Some(sites) => Scope::Sites(sites.iter().map(|s| s.get_ref().clone()).collect()),
            None => Scope::All,
        }
    }

    /// The session the request's cookie names, if it is live.
    pub(super) fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let token = cookie(headers, SESSION_COOKIE)?;
        self.sessions.get(token, &self.engine().config)
    }
}

pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| auth::cookie(h, name))
}

/// Why a dashboard request failed: each becomes a page with a status and a plain message.
#[derive(Debug)]
pub enum PageError {
    /// A page asked for without a session: go and sign in.
    SignInFirst,
    /// A form posted without a session.
    NotSignedIn,
    /// The CSRF token was missing or wrong.
    BadToken,
    Forbidden(String),
    BadRequest(String),
    NotFound(String),
    Conflict(String),
    /// Too much at once (exports): try again later.
    Busy(String),
    Internal(String),
}

impl From<AuditError> for PageError {
    fn from(e: AuditError) -> PageError {
        match e {
            AuditError::NoSuchEvent(id) => PageError::NotFound(format!("There is no event {id}.")),
            AuditError::Invalid(message) => PageError::BadRequest(message),
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl From<BackendError> for PageError {
    fn from(e: BackendError) -> PageError {
        match e {
            BackendError::Audit(e) | BackendError::Fleet(FleetError::Audit(e)) => {
                PageError::from(e)
            }
            BackendError::NotHere(message) => PageError::NotFound(message),
            other => PageError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, text) = match self {
            PageError::SignInFirst => {
                return (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response()
            }
            PageError::NotSignedIn => (
                StatusCode::UNAUTHORIZED,
                "Please sign in",
                "Your session has ended. Sign in again, then repeat what you were doing.".to_string(),
            ),
            PageError::BadToken => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "The form had expired or did not come from this dashboard. Reload the page and try again."
                    .to_string(),
            ),
            PageError::Forbidden(t) => (StatusCode::FORBIDDEN, "Not allowed", t),
            PageError::BadRequest(t) => (StatusCode::BAD_REQUEST, "Something was wrong with the request", t),
            PageError::NotFound(t) => (StatusCode::NOT_FOUND, "Not found", t),
            PageError::Conflict(t) => (StatusCode::CONFLICT, "Not done", t),
            PageError::Busy(t) => (StatusCode::SERVICE_UNAVAILABLE, "Busy", t),
            PageError::Internal(t) => {
                tracing::error!(error = %t, "dashboard request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Warden could not do that",
                    format!("Warden could not complete the request: {t}"),
                )
            }
        };
        (status, html(pages::message(title, &text, None))).into_response()
    }
}

pub(super) fn html(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

pub(super) fn redirect(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response(),
    }
}

pub(super) fn form<T>(parsed: Result<Form<T>, FormRejection>) -> Result<T, PageError> {
    parsed.map(|Form(v)| v).map_err(|e| {
        PageError::BadRequest(format!("The form could not be read: {}", e.body_text()))
    })
}

pub(super) type PageResult = Result<Response, PageError>;

/// The sign-in form, with a fresh login token in its cookie.
pub(super) fn login_page(
    d: &Dashboard,
    error: Option<&str>,
    user: &str,
    status: StatusCode,
) -> PageResult {
    let token = auth::random_token().map_err(|e| PageError::Internal(e.to_string()))?;
    let secure = d.engine().config.dashboard.secure_cookie;
    let cookie = auth::set_cookie(
        LOGIN_COOKIE,
        &token,
        "/login",
        Duration::from_secs(3600),
        secure,
    );
    let org = d.engine().config.dashboard.organisation.clone();
    let mut response = html(pages::login(&org, &token, error, user));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// The sign-in counters `/metrics` shows after the daemon's own.
pub(crate) struct SigninMetrics {
    registry: Registry,
    /// Argon2 verifications run (a decoy check for an unknown user included).
    pub checks: IntCounter,
    /// Sign-in attempts by result: ok, wrong-password, unknown-user, wrong-code,
    /// reused-code, needs-2fa, limited, busy.
    results: IntCounterVec,
}

impl SigninMetrics {
    pub fn new() -> Result<SigninMetrics, prometheus::Error> {
        let registry = Registry::new();
        let checks = IntCounter::new(
            "warden_dashboard_password_checks_total",
            "Passwords checked (Argon2 verifications) by the dashboard's sign-in form.",
        )?;
        let results = IntCounterVec::new(
            Opts::new(
                "warden_dashboard_signins_total",
                "Dashboard sign-in attempts, by result (limited: refused without a check).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(checks.clone()))?;
        registry.register(Box::new(results.clone()))?;
        Ok(SigninMetrics {
            registry,
            checks,
            results,
        })
    }

    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(error) = prometheus::Encoder::encode(&encoder, &self.registry.gather(), &mut out)
        {
            tracing::error!(%error, "cannot encode the sign-in metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    pub(super) fn count(&self, result: &str) {
        self.results.with_label_values(&[result]).inc();
    }
}
