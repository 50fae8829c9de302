//! DNS over HTTPS (RFC 8484): `GET /dns-query?dns=…` and `POST /dns-query` (and the
//! same under `/dns-query/{device id}`), over HTTP/2 or HTTP/1.1 inside TLS.
//! Connections are admitted and their handshake done as for DNS over TLS
//! ([`super::dot::Encrypted`]), so the same caps and idle timeouts hold; each request
//! is one DNS message through the same [`Handler`], and the connection is busy while
//! one is being answered.
//!
//! The device ID comes from the path (a browser's DoH template can hold it) or else
//! from the TLS name, as for DoT. hickory-server's DoH listener speaks only HTTP/2 on
//! one fixed path, so this one is Warden's own, on hyper.
//!
//! What is not a DNS query gets an HTTP error, never a DNS answer: 404 for another
//! path, 405 for another method, 415 for a POST that is not `application/dns-message`,
//! 413 for a body over 65,535 bytes, 400 for a message that does not decode or is a
//! response; a query over the rate limit with `action = "drop"` gets 429.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Message, MessageType};
use hickory_server::server::Request;
use http::{header, Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::dot::Encrypted;
use super::tcp::{idle_expired, Answer, Busy, Conn, IN_FLIGHT, MESSAGE_TIMEOUT};
use super::{Arrival, Handler};

/// The media type of a DNS message (RFC 8484 §6).
const DNS_MESSAGE: &str = "application/dns-message";
/// The path of the DoH endpoint.
pub const PATH: &str = "/dns-query";
/// Longest a DNS message can be.
const MAX_MESSAGE: usize = 65_535;
/// How long a closing connection may take to finish the requests it has.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// One DoH connection's part in each of its requests: the handler, the client, the
/// device ID its TLS name gave (if any), and its place in the table.
struct Exchange {
    handler: Arc<Handler>,
    peer: SocketAddr,
    sni_id: Option<Arc<str>>,
    table: Arc<super::tcp::Table>,
    id: super::limit::ConnectionId,
}

/// Serve one DNS over HTTPS connection until it ends, idles out, or is closed.
pub(crate) async fn serve(
    encrypted: Encrypted,
    conn: Conn,
    tls: tokio_rustls::server::TlsStream<TcpStream>,
) {
    let exchange = Arc::new(Exchange {
        handler: encrypted.handler.clone(),
        peer: conn.peer,
        sni_id: encrypted.id_in_sni(&tls),
        table: conn.table.clone(),
        id: conn.id,
    });
    let service = hyper::service::service_fn(move |request| {
        let exchange = exchange.clone();
        async move { Ok::<_, Infallible>(exchange.answer(request).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(MESSAGE_TIMEOUT)
        .max_buf_size(2 * MAX_MESSAGE + 8192);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(IN_FLIGHT as u32);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = conn.close.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle_expired(&conn.table, conn.id), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep(CLOSE_GRACE), if closing => return,
        }
    }
}

impl Exchange {
    /// One HTTP request: the DNS query in it answered, or the HTTP error it earns.
    async fn answer(&self, request: http::Request<Incoming>) -> http::Response<Full<Bytes>> {
        let Some(path_id) = device_in_path(request.uri().path()) else {
            return status(StatusCode::NOT_FOUND, "DNS over HTTPS is at /dns-query\n");
        };
        let path_id: Option<Arc<str>> = path_id.map(Arc::from);
        // Busy from here: a connection answering a query is not idle.
        let Some(busy) = Busy::begin(&self.table, self.id) else {
            return status(StatusCode::SERVICE_UNAVAILABLE, "closing\n");
        };
        let message = match read_message(request).await {
            Ok(message) => message,
            Err(refusal) => return refusal,
        };
        let device_id = path_id.or_else(|| self.sni_id.clone());
        let arrival = Arrival {
            transport: super::Transport::Https,
            via: None,
            device_id,
        };
        let request = match Request::from_bytes(message, self.peer, Protocol::Tcp) {
            Ok(request) if request.metadata.message_type == MessageType::Query => request,
            _ => return status(StatusCode::BAD_REQUEST, "not a DNS query\n"),
        };
        // One answer at most: the handler's responder sends it here (as over TCP).
        let (tx, mut rx) = mpsc::channel(1);
        self.handler
            .respond(&request, &arrival, Answer { tx })
            .await;
        drop(busy);
        match rx.recv().await {
            Some(bytes) => dns_response(bytes),
            // Nothing sent: over the rate limit with `action = "drop"`.
            None => status(StatusCode::TOO_MANY_REQUESTS, "slow down\n"),
        }
    }
}

/// The device ID in a DoH path: `Some(None)` for `/dns-query`, `Some(Some(id))` for
/// `/dns-query/{id}`, `None` for any other path.
fn device_in_path(path: &str) -> Option<Option<&str>> {
    let rest = path.strip_prefix(PATH)?;
    if rest.is_empty() || rest == "/" {
        return Some(None);
    }
    let id = rest.strip_prefix('/')?.trim_end_matches('/');
    (!id.is_empty() && !id.contains('/')).then_some(Some(id))
}

/// The DNS message a request carries: `?dns=` (base64url) for GET, the body for POST.
async fn read_message(
    request: http::Request<Incoming>,
) -> Result<Vec<u8>, http::Response<Full<Bytes>>> {
    match *request.method() {
        Method::GET => {
            let query = request.uri().query().unwrap_or("");
            let encoded = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("dns="))
                .ok_or_else(|| status(StatusCode::BAD_REQUEST, "no dns= parameter\n"))?;
            let message = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded.trim_end_matches('='))
                .map_err(|_| status(StatusCode::BAD_REQUEST, "dns= is not base64url\n"))?;
            if message.len() > MAX_MESSAGE {
                return Err(status(StatusCode::URI_TOO_LONG, "message too long\n"));
            }
            Ok(message)
        }
        Method::POST => {
            let content_type = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let wanted = content_type.eq_ignore_ascii_case(DNS_MESSAGE);
            // The body is read (within bounds) even when it will be refused: answering
            // before it is in makes HTTP/2 reset the stream under the client's upload.
            let body = Limited::new(request.into_body(), MAX_MESSAGE);
            let read = tokio::time::timeout(MESSAGE_TIMEOUT, body.collect()).await;
            let message = match read {
                Ok(Ok(collected)) => collected.to_bytes().to_vec(),
                Ok(Err(_)) => {
                    return Err(status(StatusCode::PAYLOAD_TOO_LARGE, "message too long\n"))
                }
                Err(_) => return Err(status(StatusCode::REQUEST_TIMEOUT, "too slow\n")),
            };
            if !wanted {
                return Err(status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "POST application/dns-message\n",
                ));
            }
            Ok(message)
        }
        _ => {
            let mut response = status(StatusCode::METHOD_NOT_ALLOWED, "GET or POST\n");
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, POST"));
            Err(response)
        }
    }
}

/// A DNS answer as an HTTP response, cacheable for as long as its shortest TTL.
fn dns_response(bytes: Vec<u8>) -> http::Response<Full<Bytes>> {
    let max_age = Message::from_vec(&bytes)
        .ok()
        .and_then(|m| {
            m.answers
                .iter()
                .chain(m.authorities.iter())
                .map(|r| r.ttl)
                .min()
        })
        .unwrap_or(0);
    let mut response = http::Response::new(Full::new(Bytes::from(bytes)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(DNS_MESSAGE),
    );
    if let Ok(value) = header::HeaderValue::from_str(&format!("max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    response
}

/// An HTTP error with a one-line text body.
fn status(code: StatusCode, text: &'static str) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_holds_the_endpoint_and_perhaps_an_id() {
        assert_eq!(device_in_path("/dns-query"), Some(None));
        assert_eq!(device_in_path("/dns-query/"), Some(None));
        assert_eq!(
            device_in_path("/dns-query/k3j5h7g9"),
            Some(Some("k3j5h7g9"))
        );
        assert_eq!(
            device_in_path("/dns-query/k3j5h7g9/"),
            Some(Some("k3j5h7g9"))
        );
        assert_eq!(device_in_path("/dns-query/a/b"), None);
        assert_eq!(device_in_path("/dns-queryx"), None);
        assert_eq!(device_in_path("/"), None);
        assert_eq!(device_in_path("/admin"), None);
    }
}
