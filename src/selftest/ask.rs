//! Asking Warden's own DNS listener one planned question, marked as the self-test's
//! ([`crate::dns::probe`]), over UDP, and judging the answer by what the check expects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_server::proto::op::{Edns, Message, Query, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_server::proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

use super::plan::{Expect, Question};
use crate::dns::probe::{ProbeKey, PROBE_OPTION};

/// EDE info codes (RFC 8914) a block carries: "Blocked", "Filtered".
const EDE_BLOCKED: u16 = 15;
const EDE_FILTERED: u16 = 17;

/// Where to ask: a bound DNS address, with an unspecified one (`0.0.0.0`, `::`) asked on
/// loopback.
pub fn target(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bound.port())
        }
        _ => bound,
    }
}

/// Ask `question` at `server`, waiting at most `timeout`: `Ok(())` if the answer is the
/// one expected, else what was wrong, in words.
pub async fn ask(
    server: SocketAddr,
    key: &ProbeKey,
    question: &Question,
    timeout: Duration,
) -> Result<(), String> {
    let name = Name::from_ascii(format!("{}.", question.name))
        .map_err(|e| format!("{:?} is not a name that can be asked: {e}", question.name))?;
    let id: u16 = rand_id();
    let mut message = Message::query();
    message.metadata.id = id;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name, RecordType::A));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.options_mut().insert(EdnsOption::Unknown(
        PROBE_OPTION,
        key.marker(&question.group),
    ));
    message.set_edns(edns);
    let bytes = message
        .to_vec()
        .map_err(|e| format!("cannot write the question: {e}"))?;
    let reply = tokio::time::timeout(timeout, exchange(server, &bytes, id))
        .await
        .map_err(|_| {
            format!(
                "no answer from {server} within {}",
                humantime::format_duration(timeout)
            )
        })??;
    judge(&reply, &question.expect)
}

/// Send `bytes` to `server` and read until the answer with `id` comes.
async fn exchange(server: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, String> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("cannot open a socket: {e}"))?;
    socket
        .send_to(bytes, server)
        .await
        .map_err(|e| format!("cannot send to {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = socket
            .recv_from(&mut buf)
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if from != server {
            continue;
        }
        match Message::from_vec(&buf[..n]) {
            Ok(reply) if reply.metadata.id == id => return Ok(reply),
            _ => continue,
        }
    }
}

/// A query id nobody can predict (the socket is new, so a stray answer is unlikely; this
/// makes it harmless).
fn rand_id() -> u16 {
    let mut bytes = [0u8; 2];
    let _ = getrandom::fill(&mut bytes);
    u16::from_be_bytes(bytes)
}

/// Whether `reply` is what `expect` asks for; if not, what it was.
pub fn judge(reply: &Message, expect: &Expect) -> Result<(), String> {
    let ede = extended_error(reply);
    let rcode = reply.metadata.response_code;
    match expect {
        Expect::Blocked { category } => match &ede {
            Some((EDE_BLOCKED, text)) => {
                let named = text
                    .strip_prefix("blocked by Warden: ")
                    .unwrap_or(text)
                    .split(',')
                    .any(|c| c.trim() == category);
                if named {
                    Ok(())
                } else {
                    Err(format!("blocked, but not as {category:?} ({text})"))
                }
            }
            _ => Err(format!("not blocked: {}", described(reply))),
        },
        Expect::Circumvention => match &ede {
            Some((EDE_FILTERED, _)) if rcode == ResponseCode::NXDomain => Ok(()),
            _ => Err(format!(
                "not answered as a way round the filter: {}",
                described(reply)
            )),
        },
        Expect::Alias { target } => {
            let aliased = reply.answers.iter().any(|record| match &record.data {
                RData::CNAME(cname) => cname
                    .0
                    .to_ascii()
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(target),
                _ => false,
            });
            if aliased {
                Ok(())
            } else {
                Err(format!("not sent to {target}: {}", described(reply)))
            }
        }
    }
}

/// The extended DNS error of `reply`, if it has one.
fn extended_error(reply: &Message) -> Option<(u16, String)> {
    let edns = reply.edns.as_ref()?;
    match edns.option(EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(15, data) if data.len() >= 2 => Some((
            u16::from_be_bytes([data[0], data[1]]),
            String::from_utf8_lossy(&data[2..]).into_owned(),
        )),
        _ => None,
    }
}

/// `NOERROR with 1 record`, `NXDOMAIN`, `SERVFAIL`: what an answer was, for the lead.
fn described(reply: &Message) -> String {
    let rcode = reply.metadata.response_code;
    match reply.answers.len() {
        0 => format!("answered {rcode}"),
        1 => format!("answered {rcode} with 1 record"),
        n => format!("answered {rcode} with {n} records"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::rr::rdata::CNAME;
    use hickory_server::proto::rr::Record;

    fn reply(rcode: ResponseCode, ede: Option<(u16, &str)>) -> Message {
        let mut m = Message::query();
        m.metadata.response_code = rcode;
        let mut edns = Edns::new();
        if let Some((code, text)) = ede {
            let mut data = code.to_be_bytes().to_vec();
            data.extend_from_slice(text.as_bytes());
            edns.options_mut().insert(EdnsOption::Unknown(15, data));
        }
        m.set_edns(edns);
        m
    }

    #[test]
    fn a_block_passes_only_as_its_own_category() {
        let adult = Expect::Blocked {
            category: "adult".into(),
        };
        let blocked = reply(
            ResponseCode::NXDomain,
            Some((15, "blocked by Warden: adult,social")),
        );
        assert_eq!(judge(&blocked, &adult), Ok(()));
        let other = reply(
            ResponseCode::NXDomain,
            Some((15, "blocked by Warden: adultish")),
        );
        assert!(judge(&other, &adult)
            .unwrap_err()
            .contains("not as \"adult\""));
        let plain = reply(ResponseCode::NoError, None);
        assert!(judge(&plain, &adult)
            .unwrap_err()
            .contains("not blocked: answered"));
        // The circumvention answer is NXDOMAIN with "Filtered", not "Blocked".
        let filtered = reply(
            ResponseCode::NXDomain,
            Some((17, "blocked by Warden: circumvention")),
        );
        assert_eq!(judge(&filtered, &Expect::Circumvention), Ok(()));
        assert!(judge(&blocked, &Expect::Circumvention).is_err());
    }

    #[test]
    fn safe_search_passes_with_the_alias_to_its_host() {
        let expect = Expect::Alias {
            target: "forcesafesearch.google.com",
        };
        let mut m = reply(ResponseCode::NoError, None);
        assert!(judge(&m, &expect).is_err());
        let owner = Name::from_ascii("www.google.com.").unwrap();
        let target = Name::from_ascii("forcesafesearch.google.com.").unwrap();
        m.add_answer(Record::from_rdata(owner, 300, RData::CNAME(CNAME(target))));
        assert_eq!(judge(&m, &expect), Ok(()));
        assert_eq!(
            target_of("0.0.0.0:53"),
            "127.0.0.1:53".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            target_of("[::]:53"),
            "[::1]:53".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            target_of("10.0.0.2:53"),
            "10.0.0.2:53".parse::<SocketAddr>().unwrap()
        );
    }

    fn target_of(bound: &str) -> SocketAddr {
        target(bound.parse().unwrap())
    }
}
