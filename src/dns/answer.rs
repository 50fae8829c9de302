//! Building answers: the blocked answer in each response mode, the Extended DNS Error
//! (RFC 8914) that says why, upstream answers passed on, and writing the response.

use std::net::IpAddr;

use hickory_server::net::NetError;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::opt::EdnsOption;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, SOA};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};

use crate::config::{BlockResponse, BlockingConfig};
use crate::metrics::QueryOutcome;
use crate::policy::Special;
use crate::upstream::Answer;

/// EDNS option code of an Extended DNS Error (RFC 8914).
pub(crate) const EDE_OPTION: u16 = 15;
/// EDE info code "Blocked": the name is on one of the operator's blocklists.
pub(crate) const EDE_BLOCKED: u16 = 15;
/// EDE info code "Filtered": blocked by a per-client policy (schedules, groups; later).
pub(crate) const EDE_FILTERED: u16 = 17;
/// EDE info code "No Reachable Authority": every upstream failed.
pub(crate) const EDE_NO_REACHABLE_AUTHORITY: u16 = 22;

/// Largest UDP answer we offer, whatever the client advertises (DNS flag day 2020).
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;
/// Smallest UDP answer every client accepts (RFC 1035 section 4.2.1).
pub(crate) const MIN_UDP_PAYLOAD: u16 = 512;

/// The UDP answer size we offer a client that advertised `offered` in its OPT record
/// (`None`: no EDNS, so 512).
pub(crate) fn udp_payload(offered: Option<u16>) -> u16 {
    offered.map_or(MIN_UDP_PAYLOAD, |o| {
        o.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
    })
}

/// Encode hickory's response in at most `max` octets (UDP: records that do not fit are
/// left out and TC is set). What every `ResponseHandler` of ours does before sending.
pub fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    max: u16,
) -> Result<(ResponseInfo, Vec<u8>), NetError> {
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    let info = response.destructive_emit(&mut encoder)?;
    Ok((info, bytes))
}

/// What to answer, before it is written out.
#[derive(Debug, Clone)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    /// Extended DNS Error: info code and text.
    pub ede: Option<(u16, String)>,
    /// Upstream vouched for the data (AD bit).
    pub authentic: bool,
    /// How the query ended, for the metrics.
    pub outcome: QueryOutcome,
}

impl Reply {
    /// An error answer of Warden's own: REFUSED by policy, or a malformed query.
    pub fn error(rcode: ResponseCode) -> Reply {
        let outcome = if rcode == ResponseCode::Refused {
            QueryOutcome::Refused
        } else {
            QueryOutcome::Invalid
        };
        Reply {
            rcode,
            answers: Vec::new(),
            authorities: Vec::new(),
            ede: None,
            authentic: false,
            outcome,
        }
    }

    /// An empty block answer with `rcode`, to be filled in by [`blocked`].
    fn block(rcode: ResponseCode) -> Reply {
        Reply {
            outcome: QueryOutcome::Blocked,
            ..Reply::error(rcode)
        }
    }

    /// Pass on what upstream said.
    pub(crate) fn from_upstream(answer: Answer) -> Reply {
        match answer {
            Answer::Records {
                rcode,
                answers,
                authorities,
                authentic,
            } => Reply {
                rcode,
                answers,
                authorities,
                ede: None,
                authentic,
                outcome: QueryOutcome::Allowed,
            },
            Answer::Negative { rcode, soa } => Reply {
                rcode,
                authorities: soa.into_iter().map(|s| *s).collect(),
                outcome: QueryOutcome::Allowed,
                ..Reply::error(rcode)
            },
            Answer::Refused(rcode) => Reply {
                outcome: QueryOutcome::UpstreamFailed,
                ..Reply::error(rcode)
            },
            Answer::Unreachable => Reply {
                ede: Some((
                    EDE_NO_REACHABLE_AUTHORITY,
                    "no upstream resolver answered".into(),
                )),
                outcome: QueryOutcome::UpstreamFailed,
                ..Reply::error(ResponseCode::ServFail)
            },
        }
    }
}

/// The answer for a blocked name, in the configured mode. Every query type is answered
/// here, so none (HTTPS/SVCB hints included) can leak the real addresses. `zone` is the
/// blocked name as the matcher wrote it (the listed suffix), owner of the negative SOA.
pub fn blocked(
    config: &BlockingConfig,
    mode: BlockResponse,
    categories: &str,
    qname: &Name,
    qtype: RecordType,
    zone: &str,
) -> Reply {
    let ttl = config.ttl;
    let ede = Some((EDE_BLOCKED, format!("blocked by Warden: {categories}")));
    let soa = || negative_soa(zone_name(qname, zone), ttl);
    let addresses: Vec<IpAddr> = match (mode, qtype) {
        (BlockResponse::Nxdomain, _) => {
            return Reply {
                rcode: ResponseCode::NXDomain,
                authorities: vec![soa()],
                ede,
                ..Reply::block(ResponseCode::NXDomain)
            };
        }
        (BlockResponse::Null, RecordType::A) => vec![IpAddr::from([0, 0, 0, 0])],
        (BlockResponse::Null, RecordType::AAAA) => vec![IpAddr::from([0u16; 8])],
        (BlockResponse::Ip, RecordType::A) => config
            .block_ip
            .iter()
            .copied()
            .filter(IpAddr::is_ipv4)
            .collect(),
        (BlockResponse::Ip, RecordType::AAAA) => config
            .block_ip
            .iter()
            .copied()
            .filter(IpAddr::is_ipv6)
            .collect(),
        _ => Vec::new(),
    };
    if addresses.is_empty() {
        // NODATA: the name exists but has nothing of this type (and a SOA to cache that).
        return Reply {
            authorities: vec![soa()],
            ede,
            ..Reply::block(ResponseCode::NoError)
        };
    }
    let answers = addresses
        .into_iter()
        .map(|ip| {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            Record::from_rdata(qname.clone(), ttl, data)
        })
        .collect();
    Reply {
        answers,
        ede,
        ..Reply::block(ResponseCode::NoError)
    }
}

/// The built-in answer to a way round the filter, with EDE 17 ("Filtered": by policy,
/// not by a list) and a SOA owned by the name itself.
pub(crate) fn special(kind: Special, qname: &Name, ttl: u32) -> Reply {
    let rcode = match kind {
        Special::NxDomain => ResponseCode::NXDomain,
        Special::NoData => ResponseCode::NoError,
    };
    Reply {
        authorities: vec![negative_soa(qname.clone(), ttl)],
        ede: Some((EDE_FILTERED, "blocked by Warden: circumvention".into())),
        ..Reply::block(rcode)
    }
}

/// Upstream's answer for a safe-search `target`, given as the answer for `qname`: a
/// CNAME from `qname` to the target first, then the target's records.
pub(crate) fn with_cname(qname: &Name, target: Name, answer: Answer) -> Reply {
    const CNAME_TTL: u32 = 300;
    let cname = Record::from_rdata(qname.clone(), CNAME_TTL, RData::CNAME(CNAME(target)));
    match answer {
        Answer::Records {
            rcode,
            mut answers,
            authorities,
            authentic: _,
        } => {
            answers.insert(0, cname);
            Reply {
                rcode,
                answers,
                authorities,
                ede: None,
                authentic: false, // the CNAME is ours, not signed data
                outcome: QueryOutcome::Allowed,
            }
        }
        Answer::Negative { rcode, soa } => Reply {
            answers: vec![cname],
            authorities: soa.into_iter().map(|s| *s).collect(),
            outcome: QueryOutcome::Allowed,
            ..Reply::error(rcode)
        },
        other => Reply::from_upstream(other),
    }
}

/// The SOA's server and mailbox names, parsed once.
fn soa_names() -> &'static (Name, Name) {
    static NAMES: std::sync::OnceLock<(Name, Name)> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let name = |text| Name::from_ascii(text).unwrap_or_else(|_| Name::root());
        (name("warden.invalid."), name("hostmaster.warden.invalid."))
    })
}

/// The blocked zone `zone` (as the matcher wrote it) as a name. Usually it is a suffix
/// of the question's name, which is then cut to it (no text to parse: this runs for
/// every block); a zone matched through a CNAME target is parsed.
fn zone_name(qname: &Name, zone: &str) -> Name {
    let labels = if zone.is_empty() {
        0
    } else {
        zone.split('.').count()
    };
    if usize::from(qname.num_labels()) >= labels {
        let suffix = qname.trim_to(labels);
        let same = suffix
            .iter()
            .zip(zone.split('.'))
            .all(|(ours, theirs)| ours.eq_ignore_ascii_case(theirs.as_bytes()));
        if same {
            return suffix;
        }
    }
    Name::from_ascii(zone)
        .map(|mut n| {
            n.set_fqdn(true);
            n
        })
        .unwrap_or_else(|_| Name::root())
}

/// A SOA owned by the blocked zone, so resolvers cache the negative answer for `ttl`.
fn negative_soa(owner: Name, ttl: u32) -> Record {
    let (mname, rname) = soa_names();
    let soa = SOA::new(mname.clone(), rname.clone(), 1, 3600, 600, 86400, ttl);
    Record::from_rdata(owner, ttl, RData::SOA(soa))
}

/// The EDNS to answer with: only when the client used EDNS (RFC 6891), echoing its DO
/// bit, offering at most what it offered, carrying the EDE if there is one.
fn response_edns(request: &Edns, ede: Option<&(u16, String)>) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(udp_payload(Some(request.max_payload())));
    edns.set_dnssec_ok(request.flags().dnssec_ok);
    edns.set_version(0);
    if let Some((code, text)) = ede {
        let mut data = code.to_be_bytes().to_vec();
        data.extend_from_slice(text.as_bytes());
        edns.options_mut()
            .insert(EdnsOption::Unknown(EDE_OPTION, data));
    }
    edns
}

/// What hickory records for a query Warden chose not to answer (nothing is sent).
pub(crate) fn unsent(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::Refused;
    Header {
        metadata,
        counts: HeaderCounts::default(),
    }
    .into()
}

/// Write `reply` to the client: the query's ID and question (as sent, case included),
/// RD and CD echoed, RA set, AD only when upstream vouched and the client asked (RFC
/// 6840: AD or DO set in the query). UDP answers too big for the client's buffer are
/// truncated by hickory with TC set.
pub async fn send<R: ResponseHandler>(
    request: &Request,
    reply: Reply,
    mut responder: R,
) -> ResponseInfo {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.recursion_available = true;
    meta.response_code = reply.rcode;
    let do_bit = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
    meta.authentic_data = reply.authentic && (request.metadata.authentic_data || do_bit);
    let edns = request
        .edns
        .as_ref()
        .map(|e| response_edns(e, reply.ede.as_ref()));
    let mut builder = MessageResponseBuilder::from_message_request(request);
    if let Some(edns) = &edns {
        builder.edns(edns);
    }
    let response = builder.build(meta, reply.answers.iter(), reply.authorities.iter(), [], []);
    match responder.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::warn!(client = %request.src().ip(), %error, "could not send a response");
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            Header {
                metadata,
                counts: HeaderCounts::default(),
            }
            .into()
        }
    }
}

/// Encodes each response, as the server would before sending it, and drops it.
/// (For benchmarks and fuzzing: the handler's whole cost, without a socket.)
#[derive(Clone)]
pub struct EncodeAndDrop;

#[async_trait::async_trait]
impl ResponseHandler for EncodeAndDrop {
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
        Ok(encode(response, u16::MAX)?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blocked_zone_is_cut_from_the_question_or_parsed() {
        let name = |s: &str| Name::from_ascii(s).unwrap();
        let q = name("WWW.Blocked.Test.");
        assert_eq!(zone_name(&q, "blocked.test").to_ascii(), "Blocked.Test.");
        assert_eq!(
            zone_name(&q, "www.blocked.test").to_ascii(),
            "WWW.Blocked.Test."
        );
        // Through a CNAME: the matched zone is not under the question's name.
        assert_eq!(zone_name(&q, "tracker.test").to_ascii(), "tracker.test.");
        assert_eq!(
            zone_name(&q, "a.www.blocked.test").to_ascii(),
            "a.www.blocked.test."
        );
        assert_eq!(zone_name(&q, "").to_ascii(), ".");
    }
}
