//! DNS over TCP (RFC 7766), served by Warden itself rather than by hickory's listener,
//! for the limits a LAN resolver needs and that listener lacks. TCP is how a client
//! fetches an answer too big for UDP, so no client may be able to lock the others out:
//! - a cap on open connections (`[server] tcp_max_connections`), so a flood cannot
//!   exhaust file descriptors, and a cap per client address
//!   (`[server] tcp_connections_per_client`): a client at its cap has its new
//!   connection closed at once;
//! - at the cap, the connection idle longest is closed to make room (as unbound and
//!   dnsdist do): a newcomer is refused only when every open connection is busy with a
//!   query. Above three quarters of the cap the idle timeout drops to
//!   [`PRESSURE_IDLE`], so a crowd of idle connections drains within seconds (the
//!   bookkeeping is [`super::limit::ConnectionTable`]);
//! - an idle timeout (`[server] tcp_timeout`), counted from the last answer, and a
//!   per-message timeout: a client that starts a message must finish it promptly, and
//!   one that does not read its answers is dropped;
//! - pipelining: every query on a connection is handled as soon as it arrives (up to
//!   [`IN_FLIGHT`] at once), and each answer is written as soon as it is ready
//!   (possibly out of order, as RFC 7766 allows; clients match answers by ID);
//! - what is not a query gets what it gets over UDP: a response (QR=1) is dropped
//!   unanswered (answering responses is how reflection loops start), and a message
//!   that cannot be decoded gets FORMERR if it has a header.
//!
//! Each query goes through the same [`Handler`] as UDP queries.
//!
//! On stop the listener closes, and so does every connection: an idle one at once, one
//! with queries already read once their answers are written. Connections and their
//! queries run in the server's [`Tasks`], which the stop waits for (bounded).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::MessageType;
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::limit::{ConnectionId, ConnectionLimits, ConnectionTable, IdleCheck};
use super::tasks::Tasks;
use super::{proxy, wire, Arrival, Handler, Transport};
use crate::config::ServerConfig;
use crate::config::{DEFAULT_TCP_CONNECTIONS, DEFAULT_TCP_CONNECTIONS_PER_CLIENT};
use crate::policy::clients::device_key;

/// Longest a client may take to send the rest of a message it has started, or to take
/// one answer off our hands.
pub(crate) const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// The idle timeout while more than three quarters of `tcp_max_connections` are open.
pub const PRESSURE_IDLE: Duration = Duration::from_secs(2);
/// Queries one connection may have in flight; beyond it, reading waits (TCP's own flow
/// control then holds the client back), so a pipelining client costs bounded memory.
pub(crate) const IN_FLIGHT: usize = 64;
/// Answers queued for one connection's writer.
const WRITE_QUEUE: usize = IN_FLIGHT;
/// PROXY headers being read at once. A balancer's connection is counted by the table
/// only once its header names the client, so until then this cap is what bounds the
/// tasks a balancer (or a fault in one) can hold open; beyond it new ones are closed.
pub const PENDING_HEADERS: usize = 256;

/// Limits for the TCP listener.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Open connections at once, all clients together.
    pub max_connections: usize,
    /// Open connections at once from one client address.
    pub per_client: usize,
    /// How long a connection may sit idle (when not under pressure).
    pub idle: Duration,
}

impl TcpLimits {
    /// The defaults, with the idle timeout `idle`.
    pub(crate) fn with_idle(idle: Duration) -> TcpLimits {
        TcpLimits {
            max_connections: DEFAULT_TCP_CONNECTIONS,
            per_client: DEFAULT_TCP_CONNECTIONS_PER_CLIENT,
            idle,
        }
    }

    /// The limits `[server]` configures.
    pub fn from_config(server: &ServerConfig) -> TcpLimits {
        TcpLimits {
            max_connections: server.tcp_max_connections.max(1),
            per_client: server.tcp_connections_per_client,
            idle: server.tcp_timeout,
        }
    }

    fn table(&self) -> ConnectionLimits {
        ConnectionLimits {
            max: self.max_connections,
            per_client: self.per_client,
            idle: self.idle,
            pressure_idle: PRESSURE_IDLE,
        }
    }
}

/// The open connections of every TCP listener of one server, so the caps count them
/// all together. Each lock is held for a few map operations, never across an await.
#[derive(Debug)]
pub struct Table(Mutex<ConnectionTable>);

impl Table {
    pub fn new(limits: TcpLimits) -> Arc<Table> {
        Arc::new(Table(Mutex::new(ConnectionTable::new(limits.table()))))
    }

    /// Enforce `limits` from the next connection on (a reload changed them; see
    /// [`ConnectionTable::set_limits`] for the connections already open).
    pub(crate) fn set_limits(&self, limits: TcpLimits) {
        self.lock().set_limits(limits.table());
    }

    fn lock(&self) -> MutexGuard<'_, ConnectionTable> {
        // A panic elsewhere while holding the lock leaves the table consistent (every
        // method finishes its updates before returning), so keep serving.
        crate::sync::lock(&self.0)
    }
}

/// Accept connections on `listener` until `stop`, within the limits of `table`; each
/// connection and its queries run in `tasks`.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    table: Arc<Table>,
    tasks: Tasks,
    stop: CancellationToken,
) {
    let headers = Arc::new(Semaphore::new(PENDING_HEADERS));
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // EMFILE and friends: wait a moment rather than spin.
                    tracing::warn!(%error, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ways = Ways {
            table: table.clone(),
            tasks: tasks.clone(),
            stop: stop.clone(),
        };
        if handler.expects_proxy_header(peer.ip()) {
            // A load balancer: its header names the client, which the limits then
            // count (read in a task of its own, so a slow balancer holds up no one).
            let Ok(permit) = headers.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "TCP connection closed: {PENDING_HEADERS} PROXY headers already pending");
                continue;
            };
            let handler = handler.clone();
            tasks.spawn(async move {
                let header = read_proxy_header(stream, peer).await;
                drop(permit);
                if let Some((stream, client)) = header {
                    let arrival = Arrival {
                        transport: Transport::Tcp,
                        via: Some(peer.ip()),
                        device_id: None,
                    };
                    if let Some(conn) = ways.admit(client, arrival) {
                        conn.spawn_serving(stream, handler);
                    }
                }
            });
            continue;
        }
        let arrival = Arrival {
            transport: Transport::Tcp,
            ..Arrival::default()
        };
        if let Some(conn) = ways.admit(peer, arrival) {
            conn.spawn_serving(stream, handler.clone());
        }
    }
}

/// What admitting a connection needs: the table of open connections, the server's
/// tasks and its stop. DNS over TLS and over HTTPS admit theirs here too, so the caps
/// count every stream connection together.
pub(crate) struct Ways {
    pub table: Arc<Table>,
    pub tasks: Tasks,
    pub stop: CancellationToken,
}

impl Ways {
    /// Admit a connection of `client` (which came as `arrival` says) within the
    /// limits: its place in the table, or `None` (the caller closes it at once).
    pub(crate) fn admit(self, client: SocketAddr, arrival: Arrival) -> Option<Conn> {
        let close = self.stop.child_token();
        let key = client_of(client);
        let admitted = self.table.lock().admit(key, close.clone(), Instant::now());
        let id = match admitted {
            Ok(admitted) => {
                if admitted.evicted > 0 {
                    tracing::debug!(client = %key, closed = admitted.evicted, "idle TCP connections closed to make room");
                }
                admitted.id
            }
            Err(refusal) => {
                tracing::debug!(client = %key, %refusal, transport = %arrival.transport, "connection refused");
                return None;
            }
        };
        Some(Conn {
            table: self.table,
            id,
            peer: client,
            arrival,
            close,
            tasks: self.tasks,
        })
    }
}

/// Read the PROXY protocol v2 header a balancer at `peer` must send first (within
/// [`MESSAGE_TIMEOUT`]): the stream and the client it names (the balancer itself for a
/// `LOCAL` health check), or `None` (the connection is dropped) for a missing, slow or
/// malformed header.
pub(crate) async fn read_proxy_header(
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TcpStream, SocketAddr)> {
    let read = async {
        let mut fixed = [0u8; proxy::FIXED];
        stream.read_exact(&mut fixed).await.ok()?;
        let length = match proxy::rest_len(&fixed) {
            Ok(length) => length,
            Err(error) => {
                tracing::warn!(%peer, %error, "[server] proxy_protocol: connection without a valid header closed");
                return None;
            }
        };
        let mut rest = vec![0u8; length];
        stream.read_exact(&mut rest).await.ok()?;
        match proxy::parse(&fixed, &rest) {
            Ok(proxy::Header::Local) => Some(peer),
            Ok(proxy::Header::Proxied(client)) => Some(client),
            Err(error) => {
                tracing::warn!(%peer, %error, "[server] proxy_protocol: connection without a valid header closed");
                None
            }
        }
    };
    let client = tokio::time::timeout(MESSAGE_TIMEOUT, read).await.ok()??;
    Some((stream, client))
}

/// One admitted connection: its place in the table, the token that closes it
/// (cancelled by the table's eviction, by the server's stop, or by its own writer), and
/// the server's tasks, where its queries run.
pub(crate) struct Conn {
    pub table: Arc<Table>,
    pub id: ConnectionId,
    /// The client: the peer, or the one a load balancer's PROXY header named.
    pub peer: SocketAddr,
    /// How its queries come: the transport, the balancer, the device ID.
    pub arrival: Arrival,
    pub close: CancellationToken,
    pub tasks: Tasks,
}

impl Conn {
    /// Serve a plain TCP connection in a task of its own.
    fn spawn_serving(self, stream: TcpStream, handler: Arc<Handler>) {
        let _ = stream.set_nodelay(true);
        let tasks = self.tasks.clone();
        tasks.spawn(async move { self.serve(stream, handler).await });
    }

    /// Read length-prefixed messages (RFC 7766, and RFC 7858 inside TLS) until idle,
    /// closed or stopped; answer each query in its own task; one writer task sends the
    /// answers.
    pub(crate) async fn serve<S>(self, stream: S, handler: Arc<Handler>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, writer) = tokio::io::split(stream);
        let (tx, rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let write = tokio::spawn(write_answers(writer, rx, self.close.clone()));
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        while let Some((message, busy)) = self.next_message(&mut reader).await {
            let Some(request) = self.request(message, &tx).await else {
                continue; // not a query: nothing (or FORMERR) sent, `busy` ends here
            };
            // A query read is answered even if the connection is closing meanwhile (the
            // server's stop): without waiting for a slot, and as its last.
            let permit = tokio::select! {
                _ = self.close.cancelled() => None,
                permit = in_flight.clone().acquire_owned() => permit.ok(),
            };
            let last = permit.is_none();
            let (handler, tx, arrival) = (handler.clone(), tx.clone(), self.arrival.clone());
            self.tasks.spawn(async move {
                handler.respond(&request, &arrival, Answer { tx }).await;
                drop((permit, busy));
            });
            if last {
                break;
            }
        }
        drop(tx);
        // Queries still in flight hold their own sender; the writer ends after the last.
        // Then `self` drops, which frees the slot.
        let _ = write.await;
    }

    /// The next whole message, and the mark that keeps the connection busy (not idle)
    /// until it is dealt with; `None` when the connection should close.
    async fn next_message<R>(&self, reader: &mut R) -> Option<(Vec<u8>, Busy)>
    where
        R: AsyncRead + Unpin,
    {
        // A read cut short by close or idleness loses bytes, which is fine: the
        // connection closes.
        let length = tokio::select! {
            biased;
            _ = self.close.cancelled() => return None,
            read = reader.read_u16() => usize::from(read.ok()?),
            _ = idle_expired(&self.table, self.id) => return None,
        };
        // Busy only once the whole message is in: a client trickling its bytes must not
        // shield its connection from being closed to make room at the cap.
        let mut message = vec![0u8; length];
        let read = tokio::select! {
            _ = self.close.cancelled() => return None,
            read = tokio::time::timeout(MESSAGE_TIMEOUT, reader.read_exact(&mut message)) => read,
        };
        // A message started and not finished: drop the connection.
        if !matches!(read, Ok(Ok(_))) {
            return None;
        }
        let busy = Busy::begin(&self.table, self.id)?;
        Some((message, busy))
    }

    /// The query in `message`, or `None` for a message that gets no query handling: a
    /// response is dropped, and an undecodable message with a header gets FORMERR.
    async fn request(&self, message: Vec<u8>, tx: &mpsc::Sender<Vec<u8>>) -> Option<Request> {
        let header = message.get(..12).map(<[u8]>::to_vec);
        match Request::from_bytes(message, self.peer, Protocol::Tcp) {
            Ok(request) if request.metadata.message_type == MessageType::Response => {
                tracing::debug!(client = %self.peer.ip(), "TCP message with QR=1 dropped");
                None
            }
            Ok(request) => Some(request),
            Err(_) => {
                // wire::format_error gives nothing for a response, as over UDP.
                if let Some(error) = header.as_deref().and_then(wire::format_error) {
                    let _ = tx.send(error.to_vec()).await;
                }
                None
            }
        }
    }
}

impl Drop for Conn {
    /// The slot is freed however the connection ends, even by a panic in its task.
    fn drop(&mut self) {
        self.table.lock().close(self.id);
    }
}

/// Resolves when connection `id` has been idle too long (or the table closed it).
pub(crate) async fn idle_expired(table: &Table, id: ConnectionId) {
    loop {
        let check = table.lock().idle_check(id, Instant::now());
        match check {
            IdleCheck::Close => return,
            IdleCheck::At(at) => tokio::time::sleep_until(at.into()).await,
        }
    }
}

/// The writer: frames and sends each answer. A client that does not take an answer
/// within [`MESSAGE_TIMEOUT`] is closed, so it cannot pin a busy connection.
async fn write_answers<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    close: CancellationToken,
) {
    while let Some(bytes) = rx.recv().await {
        let Ok(length) = u16::try_from(bytes.len()) else {
            continue; // encode() keeps answers within u16::MAX; never frame a lie
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&bytes);
        let written = tokio::time::timeout(MESSAGE_TIMEOUT, writer.write_all(&framed)).await;
        if !matches!(written, Ok(Ok(()))) {
            close.cancel();
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// A message being read or answered on a connection: the connection is busy while any
/// exists, and idle from when the last one is dropped.
pub(crate) struct Busy {
    table: Arc<Table>,
    id: ConnectionId,
}

impl Busy {
    /// `None` if the table has closed the connection meanwhile.
    pub(crate) fn begin(table: &Arc<Table>, id: ConnectionId) -> Option<Busy> {
        table.lock().begin(id).then(|| Busy {
            table: table.clone(),
            id,
        })
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.table.lock().end(self.id, Instant::now());
    }
}

/// Encodes an answer and hands it to whoever sends it: the connection's writer (TCP,
/// DoT) or the waiting HTTP request (DoH).
#[derive(Clone)]
pub(crate) struct Answer {
    pub tx: mpsc::Sender<Vec<u8>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Answer {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, bytes) = super::answer::encode(response, u16::MAX)?;
        // A closed connection just drops the answer.
        let _ = self.tx.send(bytes).await;
        Ok(info)
    }
}

/// The client a connection counts against: its IPv4 address (a v4 client on a
/// dual-stack socket unwrapped), or its IPv6 /64 ([`device_key`]).
fn client_of(peer: SocketAddr) -> IpAddr {
    device_key(peer.ip())
}
