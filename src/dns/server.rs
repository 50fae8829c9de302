//! The listeners: UDP (hickory's) and TCP (ours, see [`super::tcp`]) on every configured
//! address, stopped by one cancellation token. Binding happens after the snapshot is built (start-up order: load and validate
//! everything, then bind, then serve), and a port of 0 picks one free port shared by the
//! address's UDP and TCP sockets (tests use this).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use super::tcp::{self, TcpLimits};
use super::Handler;

/// The handler shared by hickory's UDP server and our TCP listener.
struct Shared(Arc<Handler>);

#[async_trait::async_trait]
impl RequestHandler for Shared {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        responder: R,
    ) -> ResponseInfo {
        self.0.handle_request::<R, T>(request, responder).await
    }
}

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
/// [`DEFAULT_TCP_CONNECTIONS`] TCP connections at once (see [`start_with`]).
pub async fn start(
    listen: &[SocketAddr],
    handler: Handler,
    tcp_timeout: Duration,
) -> Result<RunningServer, ServeError> {
    let limits = TcpLimits {
        max_connections: DEFAULT_TCP_CONNECTIONS,
        idle: tcp_timeout,
    };
    start_with(listen, handler, limits).await
}

/// Open TCP connections allowed at once unless configured otherwise.
pub const DEFAULT_TCP_CONNECTIONS: usize = 512;

/// [`start`] with explicit TCP limits.
pub async fn start_with(
    listen: &[SocketAddr],
    handler: Handler,
    limits: TcpLimits,
) -> Result<RunningServer, ServeError> {
    let handler = Arc::new(handler);
    let mut server = Server::new(Shared(handler.clone()));
    let mut tcp_listeners = Vec::new();
    let mut addrs = Vec::with_capacity(listen.len());
    for &addr in listen {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr,
                proto: "udp",
                source,
            })?;
        // TCP on the port UDP got, so "port 0" yields one port for both.
        let bound = udp.local_addr().map_err(|source| ServeError::Bind {
            addr,
            proto: "udp",
            source,
        })?;
        let tcp = TcpListener::bind(bound)
            .await
            .map_err(|source| ServeError::Bind {
                addr: bound,
                proto: "tcp",
                source,
            })?;
        server.register_socket(udp);
        tcp_listeners.push(tcp);
        addrs.push(bound);
    }
    let token = server.shutdown_token().clone();
    let tcp_tasks: Vec<_> = tcp_listeners
        .into_iter()
        .map(|l| tokio::spawn(tcp::serve(l, handler.clone(), limits, token.clone())))
        .collect();
    let task = tokio::spawn(async move {
        let udp = server
            .block_until_done()
            .await
            .map_err(|e| ServeError::Stopped(e.to_string()));
        for tcp in tcp_tasks {
            let _ = tcp.await;
        }
        udp
    });
    Ok(RunningServer { addrs, token, task })
}
