//! The listeners: UDP and TCP on every configured address, stopped by one cancellation
//! token. Binding happens after the snapshot is built (start-up order: load and validate
//! everything, then bind, then serve), and a port of 0 picks one free port shared by the
//! address's UDP and TCP sockets (tests use this).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Handler;

/// Outgoing responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 64;

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

/// Bind UDP and TCP on every address in `listen` and start serving with `handler`.
pub async fn start(
    listen: &[SocketAddr],
    handler: Handler,
    tcp_timeout: Duration,
) -> Result<RunningServer, ServeError> {
    let mut server = Server::new(handler);
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
        server.register_listener(tcp, tcp_timeout, TCP_RESPONSE_BUFFER);
        addrs.push(bound);
    }
    let token = server.shutdown_token().clone();
    let task = tokio::spawn(async move {
        server
            .block_until_done()
            .await
            .map_err(|e| ServeError::Stopped(e.to_string()))
    });
    Ok(RunningServer { addrs, token, task })
}
