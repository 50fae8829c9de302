//! DNS over UDP, served by Warden itself: one loop per socket that reads a datagram,
//! answers it in place when it can, and sends the answer straight back.
//!
//! Why not hickory's UDP server: it decodes every packet into a full `Message`, spawns
//! a task per query, and passes each answer through a channel to a sender task. With
//! one core that overhead cost more than the filtering. Here:
//! - an ordinary query ([`wire::Query`]) that needs no waiting (a refusal, a block, an
//!   answer from the answer cache) is answered inside the loop: no task, no channel, no
//!   allocation for the packet;
//! - one that must go upstream gets a task of its own ([`Handler::answer_later`]), so
//!   a slow upstream never holds up the loop;
//! - any other packet is decoded by hickory in a task and answered by
//!   [`Handler::resolve`], as before (FORMERR, NOTIMP, BADVERS, REFUSED, truncation).
//!
//! The loop reads until the socket is empty, then waits for readiness; it yields to the
//! runtime every [`BATCH`] packets so that, under a flood, upstream answers, TCP and
//! timers still get their turn on a one-thread runtime.
//!
//! On stop the loop ends (datagrams not read yet are never answered, nor recorded); the
//! tasks it spawned are [`Tasks`], which the server waits for, so a query already read
//! is still answered.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::MessageType;
use hickory_server::proto::rr::Record;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::answer::{self, MAX_UDP_PAYLOAD};
use super::tasks::Tasks;
use super::wire;
use super::{Handler, Now};

/// Packets handled before the loop lets other tasks run.
const BATCH: usize = 64;
/// Largest query read; a longer datagram is cut, fails to decode and gets FORMERR.
const MAX_QUERY: usize = 4096;

/// Serve queries arriving on `socket` until `stop`; queries that wait for upstream run
/// in `tasks`.
pub async fn serve(
    socket: UdpSocket,
    handler: Arc<Handler>,
    tasks: Tasks,
    stop: CancellationToken,
) {
    let socket = Arc::new(socket);
    let mut packet = vec![0u8; MAX_QUERY];
    let mut out = Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD));
    loop {
        tokio::select! {
            // Under a flood the socket is always readable: the stop must still win.
            biased;
            _ = stop.cancelled() => return,
            ready = socket.readable() => {
                if let Err(error) = ready {
                    tracing::error!(%error, "UDP socket failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        // Read until the socket is empty (readiness is edge-triggered)…
        let mut drained = false;
        for _ in 0..BATCH {
            let (len, client) = match socket.try_recv_from(&mut packet) {
                Ok(received) => received,
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(error) => {
                    // E.g. ICMP errors reported for an earlier send: not fatal.
                    tracing::debug!(%error, "UDP receive failed");
                    continue;
                }
            };
            // Never answer to port 0 (hickory's rule too: such replies go nowhere or
            // are part of a reflection attempt).
            if client.port() == 0 {
                continue;
            }
            handle(&socket, &handler, &tasks, &packet[..len], client, &mut out).await;
        }
        // …but after a full batch, let other tasks run before reading on. (Not after
        // draining: waiting for readiness yields anyway, and an extra yield would cost
        // a trip through the scheduler per packet at moderate rates.)
        if !drained {
            tokio::task::yield_now().await;
        }
    }
}

/// One datagram: answer it now, or hand it to a task.
async fn handle(
    socket: &Arc<UdpSocket>,
    handler: &Arc<Handler>,
    tasks: &Tasks,
    packet: &[u8],
    client: SocketAddr,
    out: &mut Vec<u8>,
) {
    let Some(query) = wire::Query::parse(packet) else {
        let (socket, handler, packet) = (socket.clone(), handler.clone(), packet.to_vec());
        tasks.spawn(async move { general(&socket, &handler, packet, client).await });
        return;
    };
    match handler.answer_now(&query, client, out) {
        Now::Send => send(socket, out, client).await,
        Now::Drop => {}
        Now::Later => {
            let (socket, handler, packet) = (socket.clone(), handler.clone(), packet.to_vec());
            tasks.spawn(async move {
                // The packet parsed once already; parsing is pure, so it parses again.
                let Some(query) = wire::Query::parse(&packet) else {
                    return;
                };
                let mut out = Vec::with_capacity(512);
                handler.answer_later(&query, client, &mut out).await;
                send(&socket, &out, client).await;
            });
        }
    }
}

/// Send one answer; a full socket buffer waits, an error is only logged (the client
/// will retry).
async fn send(socket: &UdpSocket, bytes: &[u8], client: SocketAddr) {
    let sent = match socket.try_send_to(bytes, client) {
        Err(error) if error.kind() == ErrorKind::WouldBlock => socket.send_to(bytes, client).await,
        other => other,
    };
    if let Err(error) = sent {
        tracing::debug!(client = %client.ip(), %error, "could not send a UDP answer");
    }
}

/// A packet the fast path declined: hickory decodes it and [`Handler::resolve`] answers.
async fn general(socket: &Arc<UdpSocket>, handler: &Handler, packet: Vec<u8>, client: SocketAddr) {
    let request = match Request::from_bytes(packet.clone(), client, Protocol::Udp) {
        Ok(request) => request,
        Err(_) => {
            // Not decodable: FORMERR if there is a header to answer (hickory's rule).
            if let Some(error) = wire::format_error(&packet) {
                send(socket, &error, client).await;
            }
            return;
        }
    };
    if request.metadata.message_type == MessageType::Response {
        return; // never answer a response: that is how reflection loops start
    }
    let max = answer::udp_payload(request.edns.as_ref().map(|e| e.max_payload()));
    let responder = UdpAnswer {
        socket: socket.clone(),
        client,
        max,
    };
    handler
        .handle_request::<_, TokioTime>(&request, responder)
        .await;
}

/// Encodes hickory's response within the client's buffer (truncating with TC set when
/// it does not fit) and sends it.
#[derive(Clone)]
struct UdpAnswer {
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    max: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpAnswer {
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
        let (info, bytes) = answer::encode(response, self.max)?;
        send(&self.socket, &bytes, self.client).await;
        Ok(info)
    }
}
