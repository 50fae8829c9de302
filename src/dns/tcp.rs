//! DNS over TCP (RFC 7766), served by Warden itself rather than by hickory's listener,
//! for the limits a LAN resolver needs and that listener lacks:
//! - a cap on open connections (`[server] tcp_max_connections`): beyond it, a new
//!   connection is closed at once, so a flood of idle connections cannot exhaust file
//!   descriptors and starve the real clients;
//! - an idle timeout (`[server] tcp_timeout`) and a per-message timeout: a client that
//!   starts a message must finish it promptly;
//! - pipelining: every query on a connection is handled as soon as it arrives, and each
//!   answer is written as soon as it is ready (possibly out of order, as RFC 7766 allows;
//!   clients match answers by ID).
//!
//! Each query goes through the same [`Handler`] as UDP queries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Handler;

/// Longest a client may take to send the rest of a message it has started.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Answers queued for one connection's writer.
const WRITE_QUEUE: usize = 64;

/// Limits for the TCP listener.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub idle: Duration,
}

/// Accept connections on `listener` until `stop`, at most `limits.max_connections` at a
/// time.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    limits: TcpLimits,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(client = %peer.ip(), "TCP connection refused: at tcp_max_connections");
            drop(stream);
            continue;
        };
        let (handler, stop) = (handler.clone(), stop.clone());
        tokio::spawn(async move {
            connection(stream, peer, handler, limits.idle, stop).await;
            drop(slot);
        });
    }
}

/// One connection: read length-prefixed messages until idle, closed or stopped; answer
/// each in its own task; one writer task sends the answers.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    idle: Duration,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let write = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            framed.extend_from_slice(&bytes);
            if writer.write_all(&framed).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    loop {
        let length = tokio::select! {
            _ = stop.cancelled() => break,
            read = tokio::time::timeout(idle, reader.read_u16()) => match read {
                Ok(Ok(length)) => length as usize,
                _ => break, // idle too long, closed, or reset
            },
        };
        let mut message = vec![0u8; length];
        match tokio::time::timeout(MESSAGE_TIMEOUT, reader.read_exact(&mut message)).await {
            Ok(Ok(_)) => {}
            _ => break, // a message started and not finished: drop the connection
        }
        let Ok(request) = Request::from_bytes(message, peer, Protocol::Tcp) else {
            continue; // not a DNS message: nothing to answer
        };
        let (handler, tx) = (handler.clone(), tx.clone());
        tokio::spawn(async move {
            handler
                .handle_request::<_, TokioTime>(&request, Answer { tx })
                .await;
        });
    }
    drop(tx);
    // Queries still in flight hold their own sender; the writer ends after the last.
    let _ = write.await;
}

/// Encodes an answer and hands it to the connection's writer.
#[derive(Clone)]
struct Answer {
    tx: mpsc::Sender<Vec<u8>>,
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
