//! The listeners: UDP ([`super::udp`]) and TCP ([`super::tcp`]) on every configured
//! address, stopped by one cancellation token. Binding happens after the snapshot is built (start-up order: load and validate
//! everything, then bind, then serve), and a port of 0 picks one free port shared by the
//! address's UDP and TCP sockets (tests use this).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::tcp::{self, TcpLimits};
use super::{udp, Handler};

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
}

/// A server that is running; drop-safe, stop it with [`RunningServer::shutdown`].
pub struct RunningServer {
    /// The addresses actually bound (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    token: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// A token that stops the server when cancelled (e.g. from a signal handler).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Wait until the server stops (its token was cancelled, or it failed).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task
            .await
            .map_err(|e| ServeError::Stopped(e.to_string()))?
    }

    /// Stop accepting, let in-flight TCP work finish, and wait.
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

/// Open TCP connections allowed at once unless configured otherwise.
pub const DEFAULT_TCP_CONNECTIONS: usize = 512;
/// Open TCP connections allowed at once from one client address unless configured
/// otherwise: far more than a stub resolver uses (one or two, reused), and at most a
/// sixteenth of the default cap, so it takes many addresses to put the cap under
/// pressure.
pub const DEFAULT_TCP_CONNECTIONS_PER_CLIENT: usize = 32;

/// [`start`] with explicit TCP limits.
pub async fn start_with(
    listen: &[SocketAddr],
    handler: Handler,
    limits: TcpLimits,
) -> Result<RunningServer, ServeError> {
    let handler = Arc::new(handler);
    let mut sockets = Vec::with_capacity(listen.len());
    for &addr in listen {
        sockets.push(bind_pair(addr).await?);
    }
    let token = CancellationToken::new();
    let addrs = sockets.iter().map(|(addr, _, _)| *addr).collect();
    // One connection table for every listener: the caps count all TCP connections.
    let table = tcp::Table::new(limits);
    let mut tasks = Vec::with_capacity(2 * sockets.len());
    for (_, udp, tcp) in sockets {
        tasks.push(tokio::spawn(udp::serve(
            udp,
            handler.clone(),
            token.clone(),
        )));
        tasks.push(tokio::spawn(tcp::serve(
            tcp,
            handler.clone(),
            table.clone(),
            token.clone(),
        )));
    }
    let task = tokio::spawn(async move {
        for task in tasks {
            task.await.map_err(|e| ServeError::Stopped(e.to_string()))?;
        }
        Ok(())
    });
    Ok(RunningServer { addrs, token, task })
}

/// Tries at a fresh port when "port 0" gave UDP a port whose TCP side is taken.
const PORT_ZERO_ATTEMPTS: usize = 16;

/// UDP and TCP sockets on `addr`, TCP on the port UDP got, so "port 0" yields one port
/// for both. That port may be taken for TCP (by any client socket's ephemeral port, on
/// a busy machine): with port 0, try again at another port rather than fail.
async fn bind_pair(addr: SocketAddr) -> Result<(SocketAddr, UdpSocket, TcpListener), ServeError> {
    let attempts = if addr.port() == 0 {
        PORT_ZERO_ATTEMPTS
    } else {
        1
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp_error = |source| ServeError::Bind {
            addr,
            proto: "udp",
            source,
        };
        let udp = UdpSocket::bind(addr).await.map_err(udp_error)?;
        let bound = udp.local_addr().map_err(udp_error)?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((bound, udp, tcp)),
            Err(error) if error.kind() == ErrorKind::AddrInUse && attempt < attempts => {
                tracing::debug!(%bound, "TCP port taken; binding both again at another port");
            }
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
