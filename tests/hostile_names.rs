//! No name gets past a list, whatever bytes its labels hold: for any listed name and any
//! prefix of 1–3 labels of arbitrary bytes, the answer is a block in the list's category,
//! over UDP and TCP, and the upstream never sees the query. Also the CNAME chain: an
//! alias whose target is such a name is blocked too.

mod common;

use std::net::SocketAddr;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The listed names of the shared test config and the category each one's block names.
const LISTED: [(&str, &str); 3] = [
    ("blocked.test", "adult"),
    ("tracker.test", "adult"),
    ("locked.test", "terrorism"),
];

/// A wire name: `prefix` labels (raw bytes) above `listed`, cut so the whole name stays
/// within 255 octets.
fn hostile_name(prefix: &[Vec<u8>], listed: &str) -> Name {
    let mut room = 255 - (listed.len() + 2);
    let mut labels: Vec<Vec<u8>> = Vec::new();
    for label in prefix {
        if room < 2 {
            break;
        }
        let take = label.len().min(room - 1);
        labels.push(label[..take].to_vec());
        room -= take + 1;
    }
    labels.extend(listed.split('.').map(|l| l.as_bytes().to_vec()));
    let mut name = Name::from_labels(labels).expect("labels of 1-63 octets");
    name.set_fqdn(true);
    name
}

fn query_bytes(name: &Name, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.metadata.id = rand_id(name);
    msg.add_query(hickory_proto::op::Query::query(name.clone(), qtype));
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    msg.to_vec().expect("encodes")
}

/// An ID that differs between queries, so a stray answer cannot pass for another's.
fn rand_id(name: &Name) -> u16 {
    name.to_string()
        .bytes()
        .fold(7u16, |h, b| h.wrapping_mul(31).wrapping_add(u16::from(b)))
}

async fn over_udp(server: SocketAddr, bytes: &[u8]) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(bytes, server).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("a UDP answer in time")
        .expect("recv");
    Message::from_vec(&buf[..n]).expect("the answer decodes")
}

async fn over_tcp(server: SocketAddr, bytes: &[u8]) -> Message {
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(server))
        .await
        .expect("connect in time")
        .expect("connect");
    let len = u16::try_from(bytes.len()).expect("small query");
    stream.write_u16(len).await.expect("write");
    stream.write_all(bytes).await.expect("write");
    let n = tokio::time::timeout(WAIT, stream.read_u16())
        .await
        .expect("a TCP answer in time")
        .expect("read");
    let mut buf = vec![0u8; usize::from(n)];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("the whole answer in time")
        .expect("read");
    Message::from_vec(&buf).expect("the answer decodes")
}

fn assert_blocked(resp: &Message, category: &str, how: &str, name: &Name) {
    assert_eq!(
        resp.metadata.response_code,
        ResponseCode::NXDomain,
        "{how}: {name:?} not blocked"
    );
    let (code, text) = ede(resp).unwrap_or_else(|| panic!("{how}: no EDE for {name:?}"));
    assert_eq!(code, 15, "{how}: EDE Blocked for {name:?}");
    assert!(
        text.contains(category),
        "{how}: {name:?} blocked as {text:?}, not {category}"
    );
}

fn label() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Any bytes at all.
        proptest::collection::vec(any::<u8>(), 1..=63),
        // The ones a pupil would try first.
        prop::sample::select(vec![
            b"*".to_vec(),
            b"a+b".to_vec(),
            b"www ".to_vec(),
            b"WWW".to_vec(),
            b"a.b".to_vec(),
            b"\\".to_vec(),
            vec![0xc3, 0xa9],
            vec![0],
        ]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_subdomain_of_a_listed_name_is_blocked_and_never_forwarded(
        prefix in proptest::collection::vec(label(), 1..=3),
        which in 0..LISTED.len(),
        qtype in prop::sample::select(vec![RecordType::A, RecordType::AAAA, RecordType::TXT, RecordType::HTTPS]),
    ) {
        let (listed, category) = LISTED[which];
        let name = hostile_name(&prefix, listed);
        let bytes = query_bytes(&name, qtype);
        runtime().block_on(async {
            let h = shared().await;
            let before = h.upstream.total();
            assert_blocked(&over_udp(h.warden, &bytes).await, category, "UDP", &name);
            assert_blocked(&over_tcp(h.warden, &bytes).await, category, "TCP", &name);
            assert_eq!(h.upstream.total(), before, "the upstream saw {name:?}");
        });
    }
}

/// One runtime and one Warden for all the property test's cases (each case is a few
/// queries); the other tests start their own, so none sees another's upstream traffic.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

async fn shared() -> &'static Harness {
    static H: tokio::sync::OnceCell<Harness> = tokio::sync::OnceCell::const_new();
    H.get_or_init(|| harness("response = \"nxdomain\"")).await
}

/// The examples from the report, by name, so a failure reads plainly.
#[tokio::test]
async fn the_reported_names_are_blocked() {
    let h = harness("response = \"nxdomain\"").await;
    let before = h.upstream.total();
    for (text, category) in [
        ("a+b.locked.test", "terrorism"),
        ("*.locked.test", "terrorism"),
        ("www\\032.locked.test", "terrorism"),
        ("x+y.blocked.test", "adult"),
        ("*.blocked.test", "adult"),
        ("WWW.Blocked.TEST", "adult"),
    ] {
        let name = dns_name(text);
        let bytes = query_bytes(&name, RecordType::A);
        assert_blocked(&over_udp(h.warden, &bytes).await, category, "UDP", &name);
        assert_blocked(&over_tcp(h.warden, &bytes).await, category, "TCP", &name);
    }
    assert_eq!(h.upstream.total(), before, "nothing was forwarded");
}

/// An allowed alias whose CNAME target is an odd-labelled subdomain of a locked name is
/// blocked in the locked category.
#[tokio::test]
async fn a_cname_to_an_odd_subdomain_of_a_listed_name_is_blocked() {
    let h = harness("response = \"nxdomain\"").await;
    let name = dns_name("hidden-alias.test");
    let bytes = query_bytes(&name, RecordType::A);
    assert_blocked(&over_udp(h.warden, &bytes).await, "terrorism", "UDP", &name);
    assert_blocked(&over_tcp(h.warden, &bytes).await, "terrorism", "TCP", &name);
}

/// The allow exception still covers its own odd subdomains (adult is not locked): the
/// key form did not stop allow entries from matching.
#[tokio::test]
async fn an_allow_entry_covers_odd_subdomains_too() {
    let h = harness("response = \"nxdomain\"").await;
    let before = h.upstream.total();
    let name = dns_name("a+b.ok.blocked.test");
    let resp = over_udp(h.warden, &query_bytes(&name, RecordType::A)).await;
    assert!(ede(&resp).is_none(), "not a block: {resp:?}");
    assert_eq!(h.upstream.total(), before + 1, "forwarded once");
}
