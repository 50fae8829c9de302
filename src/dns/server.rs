//! The listeners: UDP ([`super::udp`]) and TCP ([`super::tcp`]) on every configured
//! address, stopped by one cancellation token. Binding happens after the snapshot is
//! built (start-up order: load and validate everything, then bind, then serve), and a
//! port of 0 picks one free port shared by the address's UDP and TCP sockets (tests use
//! this).
//!
//! The stop drains: every task a listener spawns (a UDP query waiting for upstream, a
//! TCP connection and its queries) is tracked in [`Tasks`]; when the token is cancelled
//! the listeners stop accepting, and [`RunningServer::wait`] returns only once those
//! tasks have finished, or [`DRAIN_TIMEOUT`] has passed and the rest were cut off. So
//! whoever stops the audit writer after `wait` knows no query can still record a block.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::dot::{self, Encrypted};
use super::tasks::Tasks;
use super::tcp::{self, TcpLimits};
use super::{doh, udp, Handler, Transport};
use crate::tls::Certs;

/// How long a stop waits for the queries in flight (upstream lookups, TCP queries
/// already read) before cutting them off: longer than an upstream answer takes, short
/// enough for systemd's stop timeout (90 s by default) and an impatient admin.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Why serving could not start or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({proto}): {source}")]
    Bind {
        addr: SocketAddr,
        proto: &'static str,
        source: std::io::Error,
    },
    #[error("the DNS server stopped with an error: {0}")]
    Stopped(String),
    #[error("[encrypted]: {0}")]
    Tls(String),
}

/// A server that is running; drop-safe, stop it with [`RunningServer::shutdown`].
pub struct RunningServer {
    /// The addresses actually bound (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    /// The DNS over TLS addresses bound.
    pub dot_addrs: Vec<SocketAddr>,
    /// The DNS over HTTPS addresses bound.
    pub doh_addrs: Vec<SocketAddr>,
    token: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
    /// The TCP connections of every listener, and the limits they are held to.
    table: Arc<tcp::Table>,
}

impl RunningServer {
    /// A token that stops the server when cancelled (e.g. from a signal handler).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The TCP connection table, whose limits a reload may change
    /// ([`tcp::Table::set_limits`]).
    pub(crate) fn tcp_table(&self) -> Arc<tcp::Table> {
        self.table.clone()
    }

    /// Wait until the server stops (its token was cancelled, or it failed) and the work
    /// in flight has drained: finished, or cut off after [`DRAIN_TIMEOUT`].
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task
            .await
            .map_err(|e| ServeError::Stopped(e.to_string()))?
    }

    /// Stop accepting, let in-flight work finish (bounded), and wait.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.token.cancel();
        self.wait().await
    }
}

/// Bind UDP and TCP on every address in `listen` and start serving with `handler`;
/// TCP connections idle for `tcp_timeout` are closed. At most
/// [`DEFAULT_TCP_CONNECTIONS`] TCP connections at once, and
/// [`DEFAULT_TCP_CONNECTIONS_PER_CLIENT`] from one client (see [`start_with`]).
pub async fn start(
    listen: &[SocketAddr],
    handler: Handler,
    tcp_timeout: Duration,
) -> Result<RunningServer, ServeError> {
    start_with(listen, handler, TcpLimits::with_idle(tcp_timeout)).await
}

pub use crate::config::{DEFAULT_TCP_CONNECTIONS, DEFAULT_TCP_CONNECTIONS_PER_CLIENT};

/// [`start`] with explicit TCP limits.
pub async fn start_with(
    listen: &[SocketAddr],
    handler: Handler,
    limits: TcpLimits,
) -> Result<RunningServer, ServeError> {
    start_full(listen, handler, limits, None).await
}

/// The encrypted listeners to start beside UDP and TCP (`[encrypted]`).
pub struct EncryptedSetup {
    pub dot: Vec<SocketAddr>,
    pub doh: Vec<SocketAddr>,
    /// The certificate both present (and watch for renewal while the server runs).
    pub certs: Arc<Certs>,
    /// `[encrypted] hostname`: device IDs are the label before it in the TLS name.
    pub hostname: String,
}

/// [`start_with`], and DNS over TLS and over HTTPS as `encrypted` says.
pub async fn start_full(
    listen: &[SocketAddr],
    handler: Handler,
    limits: TcpLimits,
    encrypted: Option<EncryptedSetup>,
) -> Result<RunningServer, ServeError> {
    let handler = Arc::new(handler);
    let mut sockets = Vec::with_capacity(listen.len());
    for &addr in listen {
        sockets.push(bind_pair(addr).await?);
    }
    let (mut dot, mut doh) = (Vec::new(), Vec::new());
    if let Some(setup) = &encrypted {
        for &addr in &setup.dot {
            dot.push(bind_tcp(addr, "tls").await?);
        }
        for &addr in &setup.doh {
            doh.push(bind_tcp(addr, "https").await?);
        }
    }
    let dot_addrs = dot.iter().filter_map(|l| l.local_addr().ok()).collect();
    let doh_addrs = doh.iter().filter_map(|l| l.local_addr().ok()).collect();
    let token = CancellationToken::new();
    let addrs = sockets.iter().map(|(addr, _, _)| *addr).collect();
    // One connection table for every listener: the caps count all TCP connections.
    let table = tcp::Table::new(limits);
    let tasks = Tasks::new();
    let mut listeners = Vec::with_capacity(2 * sockets.len());
    for (_, udp, tcp) in sockets {
        listeners.push(tokio::spawn(udp::serve(
            udp,
            handler.clone(),
            tasks.clone(),
            token.clone(),
        )));
        listeners.push(tokio::spawn(tcp::serve(
            tcp,
            handler.clone(),
            table.clone(),
            tasks.clone(),
            token.clone(),
        )));
    }
    if let Some(setup) = encrypted {
        let base = Encrypted {
            handler: handler.clone(),
            acceptor: acceptor(&setup, &[])?,
            hostname: Arc::from(setup.hostname.to_ascii_lowercase()),
            table: table.clone(),
            tasks: tasks.clone(),
            stop: token.clone(),
        };
        listeners.extend(spawn_encrypted(&setup, base, dot, doh)?);
        tokio::spawn(setup.certs.clone().watch(token.clone()));
    }
    let task = tokio::spawn(stop_and_drain(listeners, tasks, token.clone()));
    Ok(RunningServer {
        addrs,
        dot_addrs,
        doh_addrs,
        token,
        task,
        table,
    })
}

/// A TLS acceptor presenting `setup`'s certificate, offering `alpn`.
fn acceptor(
    setup: &EncryptedSetup,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    setup
        .certs
        .server_config(alpn)
        .map(tokio_rustls::TlsAcceptor::from)
        .map_err(|e| ServeError::Tls(e.to_string()))
}

/// Serve DNS over TLS on `dot` and over HTTPS (HTTP/2 or HTTP/1.1, by ALPN) on `doh`.
fn spawn_encrypted(
    setup: &EncryptedSetup,
    base: Encrypted,
    dot: Vec<TcpListener>,
    doh: Vec<TcpListener>,
) -> Result<Vec<JoinHandle<()>>, ServeError> {
    let mut listeners = Vec::new();
    for listener in dot {
        let accept = base.clone().accept(listener, Transport::Tls, dot::serve);
        listeners.push(tokio::spawn(accept));
    }
    let https = Encrypted {
        acceptor: acceptor(setup, &[b"h2", b"http/1.1"])?,
        ..base
    };
    for listener in doh {
        let accept = https.clone().accept(listener, Transport::Https, doh::serve);
        listeners.push(tokio::spawn(accept));
    }
    Ok(listeners)
}

/// A TCP listener on `addr` for `proto` (named in the error).
async fn bind_tcp(addr: SocketAddr, proto: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr,
            proto,
            source,
        })
}

/// Wait for every listener to end (they end when `token` is cancelled; one that fails
/// stops the others), then drain the work they spawned.
async fn stop_and_drain(
    listeners: Vec<JoinHandle<()>>,
    tasks: Tasks,
    token: CancellationToken,
) -> Result<(), ServeError> {
    let mut result = Ok(());
    for listener in listeners {
        if let Err(error) = listener.await {
            token.cancel();
            if result.is_ok() {
                result = Err(ServeError::Stopped(error.to_string()));
            }
        }
    }
    tasks.drain(DRAIN_TIMEOUT).await;
    result
}

/// How many ports "port 0" tries before giving up on one free for both UDP and TCP.
const FRESH_PORT_ATTEMPTS: usize = 16;

/// Whether binding `requested` should start again on a fresh port after TCP failed with
/// `err` on attempt `attempt` (counted from 1). Only for port 0: the kernel picks a port
/// free for UDP, which another socket may hold for TCP (a busy machine's outgoing
/// connections use the same range); a fixed port that is taken stays an error.
fn fresh_port_helps(requested: SocketAddr, err: &std::io::Error, attempt: usize) -> bool {
    requested.port() == 0 && err.kind() == ErrorKind::AddrInUse && attempt < FRESH_PORT_ATTEMPTS
}

/// UDP and TCP on `addr`: TCP on the port UDP got, so "port 0" yields one port for
/// both, trying a fresh one (bounded) when that port is taken for TCP.
async fn bind_pair(addr: SocketAddr) -> Result<(SocketAddr, UdpSocket, TcpListener), ServeError> {
    let udp_error = |source| ServeError::Bind {
        addr,
        proto: "udp",
        source,
    };
    let mut attempt = 1;
    loop {
        let udp = UdpSocket::bind(addr).await.map_err(udp_error)?;
        let bound = udp.local_addr().map_err(udp_error)?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((bound, udp, tcp)),
            Err(e) if fresh_port_helps(addr, &e, attempt) => attempt += 1,
            Err(source) => {
                return Err(ServeError::Bind {
                    addr: bound,
                    proto: "tcp",
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Error;

    proptest! {
        /// A fresh port is tried only for port 0, only when TCP's port was in use, and
        /// at most FRESH_PORT_ATTEMPTS times in all.
        #[test]
        fn only_port_0_in_use_is_retried_and_boundedly(
            port in 0u16..4,
            in_use in any::<bool>(),
            attempt in 1usize..40,
        ) {
            let requested = SocketAddr::from(([127, 0, 0, 1], port));
            let kind = if in_use { ErrorKind::AddrInUse } else { ErrorKind::PermissionDenied };
            let retried = fresh_port_helps(requested, &Error::from(kind), attempt);
            prop_assert_eq!(
                retried,
                port == 0 && in_use && attempt < FRESH_PORT_ATTEMPTS
            );
        }
    }

    #[tokio::test]
    async fn port_0_gives_one_port_for_udp_and_tcp() {
        let (bound, udp, tcp) = bind_pair("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_ne!(bound.port(), 0);
        assert_eq!(udp.local_addr().unwrap(), bound);
        assert_eq!(tcp.local_addr().unwrap(), bound);
    }

    #[tokio::test]
    async fn a_fixed_port_taken_for_tcp_is_an_error_naming_it() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        // UDP on that port may be free or not; either way the bind fails, saying where.
        match bind_pair(addr).await {
            Err(ServeError::Bind { addr: at, .. }) => assert_eq!(at, addr),
            Ok(_) => panic!("bound {addr} twice for TCP"),
            Err(e) => panic!("{e}"),
        }
    }
}
