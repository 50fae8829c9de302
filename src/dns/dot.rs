//! DNS over TLS (RFC 7858): DNS over TCP inside TLS, for enrolled devices off site and
//! clients that insist on encryption. A connection is admitted to the same table as
//! plain TCP ([`super::tcp`]: the caps, per-client limits and idle timeouts count
//! every stream connection together), then the TLS handshake has [`MESSAGE_TIMEOUT`]
//! to finish, and from there the connection is served exactly as a TCP one, through
//! the same [`Handler`].
//!
//! A device names itself in the TLS name it asks for: `{device id}.{hostname}`
//! ([`device_id_in_name`]); the handler decides what that ID gets. Behind a TCP load
//! balancer (`[server] proxy_protocol`), its PROXY header names the client, as on TCP.
//!
//! hickory-server has a DoT listener of its own, but it would bypass the connection
//! table and the handler's arrival (transport, device ID), so Warden drives rustls
//! itself (through tokio-rustls).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::tasks::Tasks;
use super::tcp::{read_proxy_header, Conn, Table, Ways, MESSAGE_TIMEOUT, PENDING_HEADERS};
use super::{Arrival, Handler, Transport};

/// What an encrypted listener needs beyond its socket: the handler, the TLS set-up,
/// the name devices reach it by, and the server's connection table, tasks and stop.
#[derive(Clone)]
pub(crate) struct Encrypted {
    pub handler: Arc<Handler>,
    pub acceptor: TlsAcceptor,
    /// `[encrypted] hostname`, lowercase.
    pub hostname: Arc<str>,
    pub table: Arc<Table>,
    pub tasks: Tasks,
    pub stop: CancellationToken,
}

impl Encrypted {
    /// Accept connections on `listener` until the stop, admitting each to the table as
    /// `transport` and handing it, once its handshake is done, to `serve` in a task.
    pub(crate) async fn accept<F, Fut>(self, listener: TcpListener, transport: Transport, serve: F)
    where
        F: Fn(Encrypted, Conn, tokio_rustls::server::TlsStream<TcpStream>) -> Fut
            + Send
            + Sync
            + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let serve = Arc::new(serve);
        let headers = Arc::new(tokio::sync::Semaphore::new(PENDING_HEADERS));
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, %transport, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // A load balancer's connection starts with a PROXY header naming the client
            // (read first, within the same cap as on TCP); anyone else's is the client's.
            let balancer = self.handler.expects_proxy_header(peer.ip());
            let permit = match balancer {
                false => None,
                true => match headers.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => continue,
                },
            };
            let (me, serve) = (self.clone(), serve.clone());
            self.tasks.spawn(async move {
                let (stream, client, via) = match permit {
                    None => (stream, peer, None),
                    Some(permit) => {
                        let header = read_proxy_header(stream, peer).await;
                        drop(permit);
                        let Some((stream, client)) = header else {
                            return;
                        };
                        (stream, client, Some(peer.ip()))
                    }
                };
                me.admit_and_serve(stream, client, via, transport, serve.as_ref())
                    .await;
            });
        }
    }

    /// Admit the connection of `client` (passed on by the balancer at `via`, if any) to
    /// the table, do its handshake, and serve it.
    async fn admit_and_serve<F, Fut>(
        self,
        stream: TcpStream,
        client: SocketAddr,
        via: Option<std::net::IpAddr>,
        transport: Transport,
        serve: &F,
    ) where
        F: Fn(Encrypted, Conn, tokio_rustls::server::TlsStream<TcpStream>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let ways = Ways {
            table: self.table.clone(),
            tasks: self.tasks.clone(),
            stop: self.stop.clone(),
        };
        let arrival = Arrival {
            transport,
            via,
            device_id: None,
        };
        let Some(conn) = ways.admit(client, arrival) else {
            return;
        };
        let _ = stream.set_nodelay(true);
        if let Some(tls) = self.handshake(stream, client, &conn).await {
            serve(self, conn, tls).await;
        }
    }

    /// The TLS handshake, within [`MESSAGE_TIMEOUT`] and the connection's life (the
    /// table may close it to make room meanwhile); counted by outcome.
    async fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        conn: &Conn,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let transport = conn.arrival.transport;
        let done = tokio::select! {
            _ = conn.close.cancelled() => return None,
            done = tokio::time::timeout(MESSAGE_TIMEOUT, self.acceptor.accept(stream)) => done,
        };
        let metrics = self.handler.metrics();
        match done {
            Ok(Ok(tls)) => {
                metrics.handshake(transport, "ok");
                Some(tls)
            }
            Ok(Err(error)) => {
                metrics.handshake(transport, "failed");
                tracing::debug!(client = %peer.ip(), %transport, %error, "TLS handshake failed");
                None
            }
            Err(_) => {
                metrics.handshake(transport, "timeout");
                None
            }
        }
    }

    /// The device ID in the TLS name the client asked for, if it asked for one.
    pub(crate) fn id_in_sni(
        &self,
        tls: &tokio_rustls::server::TlsStream<TcpStream>,
    ) -> Option<Arc<str>> {
        let sni = tls.get_ref().1.server_name()?;
        device_id_in_name(sni, &self.hostname).map(Arc::from)
    }
}

/// Serve one DNS over TLS connection: its device ID from the TLS name, then as TCP.
pub(crate) async fn serve(
    encrypted: Encrypted,
    mut conn: Conn,
    tls: tokio_rustls::server::TlsStream<TcpStream>,
) {
    conn.arrival.device_id = encrypted.id_in_sni(&tls);
    conn.serve(tls, encrypted.handler.clone()).await;
}

/// The device ID in a TLS name: the one label before `hostname` (`{id}.{hostname}`),
/// lowercased; `None` for the host name itself or any other name. Whether the ID is
/// enrolled is for the handler to say.
pub fn device_id_in_name(name: &str, hostname: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let label = name.strip_suffix(hostname)?.strip_suffix('.')?;
    (!label.is_empty() && !label.contains('.')).then(|| label.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_the_one_label_before_the_host_name() {
        let host = "warden.school.test";
        let id = |name: &str| device_id_in_name(name, host);
        assert_eq!(
            id("k3j5h7g9a1.warden.school.test").as_deref(),
            Some("k3j5h7g9a1")
        );
        assert_eq!(
            id("K3J5H7G9A1.Warden.School.Test.").as_deref(),
            Some("k3j5h7g9a1")
        );
        assert_eq!(id("warden.school.test"), None);
        assert_eq!(id("a.b.warden.school.test"), None);
        assert_eq!(id("xwarden.school.test"), None);
        assert_eq!(id("other.example"), None);
        assert_eq!(id(".warden.school.test"), None);
    }
}
