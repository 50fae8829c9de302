//! The admin HTTP listener (`[admin] listen`, loopback by default): what Prometheus, a
//! health check and the admin's `warden reload` talk to.
//!
//! - `GET /metrics`: Prometheus text exposition ([`crate::metrics`]).
//! - `GET /healthz`: 200 while DNS is being served from a loaded snapshot.
//! - `GET /readyz`: 200 when, also, every list has a copy to block from (a first-start
//!   download may still be missing); 503 with the reasons otherwise.
//! - `POST /reload`: rebuild and swap the rules now. Needs `Authorization: Bearer
//!   TOKEN`, the token in `[admin] token_file`; answers with the result as JSON,
//!   including `restart_needed`: the settings the file changes that only a restart
//!   applies (see [`crate::restart`]).
//! - `POST /selftest`: run the self-test ([`crate::selftest`]) now and answer with its
//!   results as JSON (`warden selftest` asks this). Needs the same token.
//!
//! - `POST /identity/signin` and `POST /identity/signout`: a sign-in feed (a logon
//!   script, an agent) says who signed in where (JSON: `user`, `address`, optional
//!   `groups` and `lifetime`; to sign out, `address` and optionally `user`). Needs
//!   `Authorization: Bearer TOKEN` with one of `[[identity.feeds]]`' tokens; the feed's
//!   name is recorded as where the sign-in came from.
//!
//! Tokens are compared in constant time and never logged.
//!
//! Every route, the dashboard's included, answers only requests that name this
//! listener in `Host` ([`host`]): a web page cannot reach them by DNS rebinding.

pub mod host;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::config::FeedConfig;
use crate::identity::{feed, Sessions};
use crate::metrics::Metrics;
use crate::reload::Reloader;

/// Why the admin listener cannot start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    #[error("[admin] listen {addr}: cannot bind: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("[admin] token_file {path}: {reason}")]
    Token { path: PathBuf, reason: String },
}

/// What the admin listener serves from.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    /// Whether DNS is being answered (for `/healthz`).
    pub serving: Arc<AtomicBool>,
    /// The e-safety lead's pages, when on.
    pub dashboard: Option<Arc<crate::dashboard::Dashboard>>,
    /// Who is signed in where, which the sign-in feeds write.
    pub sessions: Arc<Sessions>,
    /// The self-test, which `POST /selftest` runs.
    pub selftest: Option<Arc<crate::selftest::SelfTester>>,
}

/// What the handlers share.
#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    reloader: Arc<Reloader>,
    serving: Arc<AtomicBool>,
    token: Arc<str>,
    dashboard: Option<Arc<crate::dashboard::Dashboard>>,
    sessions: Arc<Sessions>,
    selftest: Option<Arc<crate::selftest::SelfTester>>,
}

/// What the `Host` check needs: the bound port, and the current config's `hosts`.
#[derive(Clone)]
struct HostGuard {
    port: u16,
    reloader: Arc<Reloader>,
}

/// A running admin listener.
pub(crate) struct AdminServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Wait for the listener to end (after the stop token given to [`start`] fires).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Bind `addr` and serve the admin routes (and the dashboard's, if on) until `stop`.
pub async fn start(
    addr: SocketAddr,
    token: String,
    shared: Shared,
    stop: tokio_util::sync::CancellationToken,
) -> Result<AdminServer, AdminError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    let guard = HostGuard {
        port: bound.port(),
        reloader: shared.reloader.clone(),
    };
    let state = AdminState {
        metrics: shared.metrics,
        reloader: shared.reloader,
        serving: shared.serving,
        token: Arc::from(token),
        dashboard: shared.dashboard.clone(),
        sessions: shared.sessions,
        selftest: shared.selftest,
    };
    let mut app = router(state);
    if let Some(dashboard) = shared.dashboard {
        app = app.merge(crate::dashboard::routes(dashboard));
    }
    // The fallback first, so unknown paths pass the Host check too.
    let app = app
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(guard, check_host));
    let task = tokio::spawn(async move {
        // Each request's addresses: the Host check needs the local one, the dashboard
        // the peer's (sign-in limits and records).
        let app = app.into_make_service_with_connect_info::<host::Connection>();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "admin listener failed");
        }
    });
    Ok(AdminServer { addr: bound, task })
}

/// Refuse a request that does not name this listener; pass the rest on with the peer's
/// address (`ConnectInfo<SocketAddr>`) for the handlers.
async fn check_host(State(guard): State<HostGuard>, mut request: Request, next: Next) -> Response {
    let connection = request
        .extensions()
        .get::<ConnectInfo<host::Connection>>()
        .map(|ConnectInfo(c)| *c);
    let listener = host::Listener {
        port: guard.port,
        local: connection.and_then(|c| c.local).map(|a| a.ip()),
    };
    let engine = guard.reloader.current();
    if let Err(refused) = host::check(&request, listener, &engine.config.dashboard.hosts) {
        tracing::debug!(
            peer = ?connection.map(|c| c.peer),
            error = %refused,
            "admin request refused"
        );
        return refused.into_response();
    }
    if let Some(connection) = connection {
        request
            .extensions_mut()
            .insert(ConnectInfo(connection.peer));
    }
    next.run(request).await
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/reload", post(reload))
        .route("/selftest", post(selftest))
        .route("/identity/signin", post(feed_sign_in))
        .route("/identity/signout", post(feed_sign_out))
        // A sign-in is a few hundred bytes: a bigger body is refused before it is read.
        .layer(axum::extract::DefaultBodyLimit::max(FEED_BODY_LIMIT))
        .with_state(state)
}

/// The largest request body the admin routes take.
const FEED_BODY_LIMIT: usize = 16 * 1024;

/// The feed whose token the request bears, or the 401 to answer (counted, logged
/// without the token).
fn feed_of(state: &AdminState, headers: &HeaderMap) -> Result<FeedConfig, Box<Response>> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let engine = state.reloader.current();
    let config = &engine.config;
    match feed::feed_for(&config.identity.feeds, &config.base_dir, presented) {
        Some(feed) => Ok(feed.clone()),
        None => {
            state.metrics.feed_request("unknown", "bad_token");
            tracing::warn!("sign-in feed request refused: missing or wrong token");
            let body =
                serde_json::json!({"ok": false, "error": feed::FeedError::Token.to_string()});
            Err(Box::new(
                (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response(),
            ))
        }
    }
}

/// The JSON body as `T`, or a 400 naming what is wrong with it.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not a sign-in feed request: {e}"))
}

async fn feed_sign_in(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let feed = match feed_of(&state, &headers) {
        Ok(feed) => feed,
        Err(refused) => return *refused,
    };
    let lifetime = state.sessions.lifetime();
    let result = json_body::<feed::SignIn>(&body).and_then(|request| {
        let address = request.address;
        let now = std::time::SystemTime::now();
        let until = feed::sign_in(&state.sessions, &feed, peer.ip(), request, lifetime, now)
            .map_err(|e| e.to_string())?;
        let until = chrono::DateTime::<chrono::Utc>::from(until).to_rfc3339();
        Ok(serde_json::json!({"ok": true, "address": address, "until": until}))
    });
    feed_reply(&state, &feed, result)
}

async fn feed_sign_out(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let feed = match feed_of(&state, &headers) {
        Ok(feed) => feed,
        Err(refused) => return *refused,
    };
    let result = json_body::<feed::SignOut>(&body).and_then(|request| {
        feed::authorize(&feed, peer.ip(), request.address).map_err(|e| e.to_string())?;
        let ended = state
            .sessions
            .sign_out(request.address, request.user.as_deref());
        Ok(serde_json::json!({"ok": true, "ended": ended}))
    });
    feed_reply(&state, &feed, result)
}

/// A feed request's answer, counted under its feed: 200 with `done`, or 400 with the
/// error (logged, so the admin can see why a logon script's posts are refused).
fn feed_reply(
    state: &AdminState,
    feed: &FeedConfig,
    result: Result<serde_json::Value, String>,
) -> Response {
    let name = feed.name.get_ref();
    match result {
        Ok(done) => {
            state.metrics.feed_request(name, "ok");
            (StatusCode::OK, axum::Json(done)).into_response()
        }
        Err(error) => {
            state.metrics.feed_request(name, "refused");
            tracing::warn!(feed = name, %error, "sign-in feed request refused");
            let body = serde_json::json!({"ok": false, "error": error});
            (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
        }
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut text = state.metrics.render();
    if let Some(dashboard) = &state.dashboard {
        text.push_str(&dashboard.render_metrics());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn healthz(State(state): State<AdminState>) -> Response {
    if !state.serving.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not serving DNS yet\n").into_response();
    }
    let engine = state.reloader.current();
    let generation = state.reloader.stats().generation.load(Ordering::Relaxed);
    let text = format!(
        "ok: serving snapshot {generation} with {} rules\n",
        engine.matcher.stats().rules
    );
    (StatusCode::OK, text).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let mut problems = Vec::new();
    if !state.serving.load(Ordering::Relaxed) {
        problems.push("not serving DNS yet".to_string());
    }
    let engine = state.reloader.current();
    for list in engine.lists.iter().filter(|l| l.missing) {
        problems.push(format!(
            "list {:?} has no downloaded copy yet: it blocks nothing",
            list.name
        ));
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let text = problems.join("\n") + "\n";
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

/// The 401 for a request without the admin token (`None`: it has it).
fn refuse_without_token(state: &AdminState, headers: &HeaderMap, route: &str) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if crate::secret::matches(presented.trim().as_bytes(), state.token.as_bytes()) {
        return None;
    }
    tracing::warn!("POST {route} refused: missing or wrong token");
    let body = serde_json::json!({
        "ok": false,
        "error": "a valid token is required: Authorization: Bearer <[admin] token_file>"
    });
    Some((StatusCode::UNAUTHORIZED, axum::Json(body)).into_response())
}

/// `POST /selftest`: run the self-test now; the run as JSON (`ok` false if any check
/// failed).
async fn selftest(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_without_token(&state, &headers, "/selftest") {
        return refused;
    }
    let Some(tester) = &state.selftest else {
        let body = serde_json::json!({"ok": false, "error": "the self-test is not running"});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    };
    let run = tester.run("on demand").await;
    let body = serde_json::json!({
        "ok": run.ok(),
        "passed": run.passed(),
        "total": run.outcomes.len(),
        "run": run,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn reload(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_without_token(&state, &headers, "/reload") {
        return refused;
    }
    match state.reloader.reload("POST /reload").await {
        Ok(done) => {
            let body = serde_json::json!({
                "ok": true,
                "generation": done.generation,
                "rules": done.rules,
                "duration_ms": done.duration_ms,
                "upstream_rebuilt": done.upstream_rebuilt,
                "base_reused": done.base_reused,
                "restart_needed": done.restart_needed,
            });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(error) => {
            let generation = state.reloader.stats().generation.load(Ordering::Relaxed);
            let body = serde_json::json!({
                "ok": false,
                "generation": generation,
                "error": error.to_string(),
            });
            (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
        }
    }
}

/// The admin token from `path`; if the file does not exist, a new random one is written
/// there (owner-only), so `warden reload` works out of the box on this machine.
pub(crate) fn load_or_create_token(path: &Path) -> Result<String, AdminError> {
    let err = |reason: String| AdminError::Token {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(err(
                    "the file is empty; put a token in it or delete it".into()
                ));
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| err(format!("no randomness: {e}")))?;
            let token = hex::encode(bytes);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            write_private(path, &format!("{token}\n")).map_err(|e| err(e.to_string()))?;
            tracing::info!(path = %path.display(), "created an admin token for POST /reload");
            Ok(token)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Read the token for a client (`warden reload`): the file must exist.
pub(crate) fn read_token(path: &Path) -> Result<String, AdminError> {
    let text = std::fs::read_to_string(path).map_err(|e| AdminError::Token {
        path: path.to_path_buf(),
        reason: format!("{e} (the running Warden creates it at start-up)"),
    })?;
    Ok(text.trim().to_string())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.token");
        let first = load_or_create_token(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create_token(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "\n").unwrap();
        let err = load_or_create_token(&path).unwrap_err().to_string();
        assert!(
            err.contains("admin.token") && err.contains("empty"),
            "{err}"
        );
    }
}
