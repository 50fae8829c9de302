//! Benchmark helper, not part of Warden: a minimal authoritative stub upstream for
//! `benches/dnsperf.sh`. It answers every A query with 192.0.2.1 and every AAAA query
//! with 2001:db8::1 (TTL 3600), and NODATA (with a SOA) for any other type, on UDP and
//! TCP, until it is killed.
//!
//! Usage: `cargo run --release --example stub_upstream -- 127.0.0.1:5399`

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

const TTL: u32 = 3600;

struct Stub;

#[async_trait::async_trait]
impl RequestHandler for Stub {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut responder: R,
    ) -> ResponseInfo {
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            let response = builder.error_msg(&request.metadata, ResponseCode::FormErr);
            return responder.send_response(response).await.unwrap();
        };
        let name = Name::from(info.query.name());
        let data = match info.query.query_type() {
            RecordType::A => Some(RData::A(A::new(192, 0, 2, 1))),
            RecordType::AAAA => Some(RData::AAAA(AAAA("2001:db8::1".parse().unwrap()))),
            _ => None,
        };
        let answers: Vec<Record> = data
            .map(|d| Record::from_rdata(name.clone(), TTL, d))
            .into_iter()
            .collect();
        let soa = Record::from_rdata(
            name.clone(),
            TTL,
            RData::SOA(SOA::new(
                Name::from_ascii("ns.stub.invalid.").unwrap(),
                Name::from_ascii("host.stub.invalid.").unwrap(),
                1,
                3600,
                600,
                86400,
                TTL,
            )),
        );
        let authorities = if answers.is_empty() {
            vec![soa]
        } else {
            Vec::new()
        };
        let response = builder.build(meta, answers.iter(), authorities.iter(), [], []);
        responder.send_response(response).await.unwrap()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(addr) = std::env::args()
        .nth(1)
        .and_then(|a| a.parse::<SocketAddr>().ok())
    else {
        eprintln!("usage: stub_upstream ADDR   (e.g. 127.0.0.1:5399)");
        std::process::exit(2);
    };
    let udp = tokio::net::UdpSocket::bind(addr).await.expect("bind UDP");
    let tcp = tokio::net::TcpListener::bind(addr).await.expect("bind TCP");
    let mut server = hickory_server::Server::new(Stub);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    eprintln!("stub upstream on {addr} (UDP and TCP)");
    let _ = server.block_until_done().await;
}
