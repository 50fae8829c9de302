//! The DNS wire format by hand, for UDP's fast path: reading the one question of an
//! ordinary query straight from the packet, and writing a [`Reply`] back as bytes.
//!
//! Why by hand: decoding a whole hickory `Message` (and encoding one back) allocates a
//! dozen times per query and cost more than the filtering itself. An ordinary query is
//! a 12-byte header, one question and at most one OPT record; this module reads exactly
//! that and declines everything else ([`Query::parse`] gives `None`), which then takes
//! the general path through hickory's decoder, so odd packets still get the answers
//! they got before (FORMERR, NOTIMP, BADVERS, REFUSED for other classes).
//!
//! Records are still written by hickory's encoder (`Record::emit`), with the question's
//! name registered for compression, so any record type upstream returns is written
//! correctly.

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{Name, Record, RecordType};
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};

use super::answer::{self, Reply, EDE_OPTION};

/// Length of the DNS header.
pub(crate) const HEADER_LEN: usize = 12;

const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// The DO ("DNSSEC OK") bit in the OPT record's flags.
const FLAG_DO: u16 = 0x8000;
const MAX_NAME_LEN: usize = 255;

/// Header flag bits (third and fourth octets).
const QR: u8 = 0x80;
const TC: u8 = 0x02;
const RD: u8 = 0x01;
const RA: u8 = 0x80;
const AD: u8 = 0x20;
const CD: u8 = 0x10;

/// What the client's OPT record said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEdns {
    pub payload: u16,
    pub dnssec_ok: bool,
    /// Where its options (RDATA) start in the packet; they run to the packet's end.
    options_at: usize,
}

/// An ordinary query: one question, no answer or authority records, at most an OPT
/// record (version 0), nothing after it. Borrowed from the packet.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    packet: &'a [u8],
    pub id: u16,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    pub authentic_data: bool,
    /// End of the question's name (just past its root label).
    name_end: usize,
    pub qtype: u16,
    /// End of the question section.
    question_end: usize,
    pub edns: Option<ClientEdns>,
}

impl<'a> Query<'a> {
    /// Read an ordinary query; `None` for anything else (then use hickory's decoder).
    pub fn parse(packet: &'a [u8]) -> Option<Query<'a>> {
        let header = packet.get(..HEADER_LEN)?;
        let (flags, more) = (header[2], header[3]);
        let opcode = (flags >> 3) & 0x0f;
        if flags & QR != 0 || opcode != 0 {
            return None;
        }
        let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
        let (questions, answers, authorities, additionals) =
            (count(4), count(6), count(8), count(10));
        if questions != 1 || answers != 0 || authorities != 0 || additionals > 1 {
            return None;
        }
        let name_end = name_end(packet, HEADER_LEN)?;
        let qtype = read_u16(packet, name_end)?;
        let qclass = read_u16(packet, name_end + 2)?;
        if qclass != CLASS_IN || qtype == TYPE_OPT {
            return None;
        }
        let question_end = name_end + 4;
        let edns = match additionals {
            0 => None,
            _ => Some(read_opt(packet, question_end)?),
        };
        if edns.is_none() && question_end != packet.len() {
            return None; // trailing bytes: let the general decoder judge them
        }
        Some(Query {
            packet,
            id: count(0),
            recursion_desired: flags & RD != 0,
            checking_disabled: more & CD != 0,
            authentic_data: more & AD != 0,
            name_end,
            qtype,
            question_end,
            edns,
        })
    }

    /// The question's name in wire form, as sent (case kept), root label included.
    pub(crate) fn name_wire(&self) -> &'a [u8] {
        &self.packet[HEADER_LEN..self.name_end]
    }

    /// The question's labels, as sent.
    pub fn labels(&self) -> Labels<'a> {
        Labels {
            wire: self.name_wire(),
        }
    }

    /// The question's name as a hickory `Name` (case kept), for building records.
    pub fn name(&self) -> Option<Name> {
        Name::read(&mut BinDecoder::new(self.name_wire())).ok()
    }

    pub fn record_type(&self) -> RecordType {
        RecordType::from(self.qtype)
    }

    /// The options of the client's OPT record, as raw `code, length, data` triples
    /// (empty without one): read with [`super::client_id::options`].
    pub(crate) fn opt_options(&self) -> &'a [u8] {
        self.edns
            .map_or(&[][..], |e| self.packet.get(e.options_at..).unwrap_or(&[]))
    }

    /// Did the client set DO in its OPT record?
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// The largest answer this client takes over UDP, and that we offer: its EDNS buffer
    /// (at least 512, at most [`answer::MAX_UDP_PAYLOAD`]), or 512 without EDNS.
    pub(crate) fn max_udp_payload(&self) -> u16 {
        answer::udp_payload(self.edns.map(|e| e.payload))
    }

    /// The header, question and (if any) OPT bytes of the query.
    fn question(&self) -> &'a [u8] {
        &self.packet[HEADER_LEN..self.question_end]
    }
}

/// Iterator over a wire name's labels (root excluded). Only built over names that
/// [`name_end`] accepted: plain labels, no compression.
pub struct Labels<'a> {
    wire: &'a [u8],
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, rest) = self.wire.split_first()?;
        let len = usize::from(len);
        if len == 0 || len > rest.len() {
            return None;
        }
        let (label, rest) = rest.split_at(len);
        self.wire = rest;
        Some(label)
    }
}

fn read_u16(packet: &[u8], at: usize) -> Option<u16> {
    let bytes = packet.get(at..at + 2)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// The end of an uncompressed name starting at `at` (no pointers: a question's name
/// never needs one), if it is well formed and at most 255 octets.
fn name_end(packet: &[u8], mut at: usize) -> Option<usize> {
    let start = at;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len & 0xc0 != 0 {
            return None; // a pointer or an extended label type
        }
        at += 1 + len;
        if at - start > MAX_NAME_LEN {
            return None;
        }
        if len == 0 {
            return Some(at);
        }
    }
}

/// The end of a (possibly compressed) name in a message we wrote: labels up to the root
/// or up to a pointer.
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l if l & 0xc0 != 0 => return None,
            l => at += 1 + usize::from(l),
        }
    }
}

/// Read the query's OPT record at `at`; it must be the last thing in the packet and of
/// EDNS version 0 (others get BADVERS from the general path).
fn read_opt(packet: &[u8], at: usize) -> Option<ClientEdns> {
    // Root owner name, TYPE, CLASS (= payload size), TTL (= extended rcode, version,
    // flags), RDLENGTH, options.
    if *packet.get(at)? != 0 || read_u16(packet, at + 1)? != TYPE_OPT {
        return None;
    }
    let payload = read_u16(packet, at + 3)?;
    let version = *packet.get(at + 6)?;
    let flags = read_u16(packet, at + 7)?;
    let rdlength = usize::from(read_u16(packet, at + 9)?);
    if version != 0 || at + 11 + rdlength != packet.len() {
        return None;
    }
    Some(ClientEdns {
        payload,
        dnssec_ok: flags & FLAG_DO != 0,
        options_at: at + 11,
    })
}

/// A response written by [`write_reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The records did not fit the client's buffer: only the header, question and OPT
    /// were sent, with TC set, so the client retries over TCP.
    pub truncated: bool,
}

/// Write the response to `query` carrying `reply` into `out` (replacing its contents),
/// at most `max` octets (see [`Query::max_udp_payload`]): the ID and question as sent,
/// RD and CD echoed, RA set, AD only when upstream vouched and the client asked (RFC
/// 6840), an OPT record only when the client sent one (RFC 6891), with the EDE if any.
pub(crate) fn write_reply(
    query: &Query<'_>,
    reply: &Reply,
    max: u16,
    out: &mut Vec<u8>,
) -> Written {
    if write_full(query, reply, max, out).is_ok() {
        return Written { truncated: false };
    }
    // Too big (or a record that cannot be written): the header, question and OPT alone
    // always fit in 512 octets (a name is at most 255, the EDE text is ours and short).
    write_head(query, reply, true, 0, 0, out);
    write_opt(query, reply, out);
    Written { truncated: true }
}

fn write_full(
    query: &Query<'_>,
    reply: &Reply,
    max: u16,
    out: &mut Vec<u8>,
) -> Result<(), hickory_server::proto::ProtoError> {
    let (answers, authorities) = (reply.answers.len(), reply.authorities.len());
    let (Ok(an), Ok(ns)) = (u16::try_from(answers), u16::try_from(authorities)) else {
        return Err("too many records".into());
    };
    write_head(query, reply, false, an, ns, out);
    let mut encoder = BinEncoder::with_offset(out, 0);
    encoder.set_offset(encoder.len());
    encoder.set_max_size(max);
    // Let records named like the question point back to it (name compression).
    let mut label = HEADER_LEN;
    while encoder.len() > label && encoder.slice_of(label, label + 1)[0] != 0 {
        encoder.store_label_pointer(label, HEADER_LEN + query.name_wire().len() - 1);
        label += 1 + usize::from(encoder.slice_of(label, label + 1)[0]);
    }
    emit_records(&mut encoder, &reply.answers)?;
    emit_records(&mut encoder, &reply.authorities)?;
    drop(encoder);
    write_opt(query, reply, out);
    if out.len() > usize::from(max) {
        return Err("over the client's buffer".into());
    }
    Ok(())
}

fn emit_records(
    encoder: &mut BinEncoder<'_>,
    records: &[Record],
) -> Result<(), hickory_server::proto::ProtoError> {
    for record in records {
        record.emit(encoder)?;
    }
    Ok(())
}

/// Header and question, with `an` answers and `ns` authorities to follow.
fn write_head(
    query: &Query<'_>,
    reply: &Reply,
    truncated: bool,
    an: u16,
    ns: u16,
    out: &mut Vec<u8>,
) {
    let rcode = u16::from(reply.rcode);
    let authentic = reply.authentic && (query.authentic_data || query.dnssec_ok());
    let mut flags = QR;
    if query.recursion_desired {
        flags |= RD;
    }
    if truncated {
        flags |= TC;
    }
    let mut more = RA | (rcode & 0x0f) as u8;
    if authentic {
        more |= AD;
    }
    if query.checking_disabled {
        more |= CD;
    }
    out.clear();
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&[flags, more]);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&an.to_be_bytes());
    out.extend_from_slice(&ns.to_be_bytes());
    out.extend_from_slice(&u16::from(query.edns.is_some()).to_be_bytes());
    out.extend_from_slice(query.question());
}

/// The OPT record, when the client sent one: our buffer size (at most what it offered),
/// its DO bit echoed, the extended rcode's upper bits, and the EDE option.
fn write_opt(query: &Query<'_>, reply: &Reply, out: &mut Vec<u8>) {
    if query.edns.is_none() {
        return;
    }
    let extended = (u16::from(reply.rcode) >> 4) as u8;
    let flags = if query.dnssec_ok() { FLAG_DO } else { 0 };
    out.push(0); // root
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&query.max_udp_payload().to_be_bytes());
    out.extend_from_slice(&[extended, 0]); // extended rcode, version 0
    out.extend_from_slice(&flags.to_be_bytes());
    match &reply.ede {
        None => out.extend_from_slice(&0u16.to_be_bytes()),
        Some((code, text)) => {
            // Our EDE texts are short; cut one that is not, at a character boundary.
            let mut end = text.len().min(400);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let data_len = 2 + end as u16;
            out.extend_from_slice(&(4 + data_len).to_be_bytes());
            out.extend_from_slice(&EDE_OPTION.to_be_bytes());
            out.extend_from_slice(&data_len.to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(&text.as_bytes()[..end]);
        }
    }
}

/// Where a written response keeps what an answer cache patches on reuse: the TTL of
/// every answer and authority record, and the OPT record's payload field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// `(offset, TTL as written)` of each answer and authority record.
    pub ttls: Vec<(u16, u32)>,
    /// Offset of the OPT record's payload-size field.
    pub opt_payload: Option<u16>,
}

impl Layout {
    /// Walk a response written by [`write_reply`]; `None` if it is not one.
    pub fn of(response: &[u8]) -> Option<Layout> {
        let count = |i| read_u16(response, i);
        let (questions, records, additionals) = (count(4)?, count(6)? + count(8)?, count(10)?);
        if questions != 1 {
            return None;
        }
        let mut at = name_end(response, HEADER_LEN)? + 4;
        let mut layout = Layout::default();
        for _ in 0..records {
            at = skip_name(response, at)?;
            let ttl_at = at + 4;
            let ttl = u32::from_be_bytes(response.get(ttl_at..ttl_at + 4)?.try_into().ok()?);
            layout.ttls.push((u16::try_from(ttl_at).ok()?, ttl));
            at = ttl_at + 6 + usize::from(read_u16(response, ttl_at + 4)?);
        }
        if additionals == 1 {
            layout.opt_payload = Some(u16::try_from(at + 3).ok()?);
        }
        Some(layout)
    }
}

/// Is the response's rcode NOERROR or NXDOMAIN (the answers worth caching)?
pub(crate) fn cacheable_rcode(rcode: ResponseCode) -> bool {
    matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain)
}

/// Patch a stored response for reuse by `query`: its ID, flags and question name (the
/// same name, perhaps in other case), every TTL less `age` seconds, and the OPT payload.
pub(crate) fn patch(out: &mut [u8], query: &Query<'_>, layout: &Layout, age: u32, authentic: bool) {
    out[..2].copy_from_slice(&query.id.to_be_bytes());
    let mut flags = out[2] & !RD;
    if query.recursion_desired {
        flags |= RD;
    }
    let mut more = out[3] & !(AD | CD);
    if authentic && (query.authentic_data || query.dnssec_ok()) {
        more |= AD;
    }
    if query.checking_disabled {
        more |= CD;
    }
    out[2] = flags;
    out[3] = more;
    let name = query.name_wire();
    out[HEADER_LEN..HEADER_LEN + name.len()].copy_from_slice(name);
    for &(at, ttl) in &layout.ttls {
        let at = usize::from(at);
        out[at..at + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
    }
    if let Some(at) = layout.opt_payload {
        let at = usize::from(at);
        out[at..at + 2].copy_from_slice(&query.max_udp_payload().to_be_bytes());
    }
}

/// A bare error answer (header only, no question) to a packet that has a header but
/// could not be decoded: FORMERR, as hickory's server gave. `None` for packets that
/// get no answer at all (shorter than a header, or themselves responses).
pub(crate) fn format_error(packet: &[u8]) -> Option<[u8; HEADER_LEN]> {
    let header = packet.get(..HEADER_LEN)?;
    if header[2] & QR != 0 {
        return None;
    }
    let mut out = [0u8; HEADER_LEN];
    out[..2].copy_from_slice(&header[..2]);
    out[2] = QR | (header[2] & (0x0f << 3)) | (header[2] & RD);
    out[3] = (header[3] & CD) | u16::from(ResponseCode::FormErr) as u8;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::QueryOutcome;
    use hickory_server::proto::op::{Edns, Message, Query as HQuery};
    use hickory_server::proto::rr::rdata::{A, CNAME};
    use hickory_server::proto::rr::RData;

    fn query_bytes(name: &str, qtype: RecordType, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x1234;
        message.metadata.recursion_desired = true;
        message.add_query(HQuery::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some((payload, dnssec_ok)) = edns {
            let mut e = Edns::new();
            e.set_max_payload(payload);
            e.set_dnssec_ok(dnssec_ok);
            message.set_edns(e);
        }
        message.to_vec().unwrap()
    }

    fn reply(answers: Vec<Record>, ede: Option<(u16, String)>) -> Reply {
        Reply {
            rcode: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
            ede,
            authentic: false,
            outcome: QueryOutcome::Allowed,
        }
    }

    #[test]
    fn reads_an_ordinary_query() {
        let bytes = query_bytes("WwW.Example.TEST.", RecordType::AAAA, Some((4096, true)));
        let q = Query::parse(&bytes).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(q.recursion_desired);
        assert_eq!(q.record_type(), RecordType::AAAA);
        assert_eq!(
            q.labels().collect::<Vec<_>>(),
            [&b"WwW"[..], b"Example", b"TEST"]
        );
        assert_eq!(q.name().unwrap().to_ascii(), "WwW.Example.TEST.");
        assert_eq!(q.max_udp_payload(), answer::MAX_UDP_PAYLOAD);
        assert!(q.dnssec_ok());
        let plain = query_bytes("a.test.", RecordType::A, None);
        assert_eq!(Query::parse(&plain).unwrap().max_udp_payload(), 512);
    }

    #[test]
    fn declines_what_is_not_an_ordinary_query() {
        let good = query_bytes("a.test.", RecordType::A, None);
        let mut cases = Vec::new();
        for (at, value) in [(2, 0x80u8), (2, 0x10), (5, 2), (5, 0), (7, 1), (11, 2)] {
            let mut bad = good.clone();
            bad[at] |= value;
            if value == 0 {
                bad[at] = 0;
            }
            cases.push(bad);
        }
        let mut chaos = good.clone();
        let last = chaos.len() - 1;
        chaos[last] = 3; // class CH
        cases.push(chaos);
        let mut trailing = good.clone();
        trailing.push(0);
        cases.push(trailing);
        cases.push(good[..good.len() - 1].to_vec());
        cases.push(good[..5].to_vec());
        let mut pointer = good.clone();
        pointer[12] = 0xc0;
        cases.push(pointer);
        let mut version1 = query_bytes("a.test.", RecordType::A, Some((1232, false)));
        let opt = version1.len() - 11;
        version1[opt + 6] = 1;
        cases.push(version1);
        for (i, case) in cases.iter().enumerate() {
            assert!(Query::parse(case).is_none(), "case {i} accepted: {case:?}");
        }
        // A name over 255 octets: five labels of 63.
        let mut long = good[..HEADER_LEN].to_vec();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(Query::parse(&long).is_none(), "a name over 255 octets");
    }

    #[test]
    fn writes_what_hickory_reads_back() {
        let bytes = query_bytes("Blocked.TEST.", RecordType::A, Some((1232, true)));
        let q = Query::parse(&bytes).unwrap();
        let owner = q.name().unwrap();
        let records = vec![
            Record::from_rdata(
                owner.clone(),
                60,
                RData::CNAME(CNAME(Name::from_ascii("cdn.test.").unwrap())),
            ),
            Record::from_rdata(
                Name::from_ascii("cdn.test.").unwrap(),
                30,
                RData::A(A::new(192, 0, 2, 1)),
            ),
        ];
        let r = Reply {
            authentic: true,
            ..reply(
                records.clone(),
                Some((15, "blocked by Warden: adult".into())),
            )
        };
        let mut out = Vec::new();
        assert!(!write_reply(&q, &r, q.max_udp_payload(), &mut out).truncated);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.recursion_available && m.metadata.recursion_desired);
        assert!(m.metadata.authentic_data, "DO set and upstream vouched");
        assert_eq!(m.queries[0].name().to_ascii(), "Blocked.TEST.");
        assert_eq!(m.answers, records);
        let edns = m.edns.unwrap();
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.max_payload(), 1232);
        let layout = Layout::of(&out).unwrap();
        assert_eq!(
            layout.ttls.iter().map(|t| t.1).collect::<Vec<_>>(),
            [60, 30]
        );
        // The CNAME's owner is a pointer back to the question's name at offset 12.
        let first_answer = HEADER_LEN + q.name_wire().len() + 4;
        assert_eq!(out[first_answer..first_answer + 2], [0xc0, 12]);
    }

    #[test]
    fn truncates_to_the_clients_buffer() {
        let bytes = query_bytes("big.test.", RecordType::A, None);
        let q = Query::parse(&bytes).unwrap();
        let owner = q.name().unwrap();
        let records: Vec<Record> = (0..60)
            .map(|i| Record::from_rdata(owner.clone(), 60, RData::A(A::new(192, 0, 2, i))))
            .collect();
        let mut out = Vec::new();
        assert!(write_reply(&q, &reply(records, None), q.max_udp_payload(), &mut out).truncated);
        let m = Message::from_vec(&out).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries.len(), 1);
        assert!(out.len() <= 512);
    }

    #[test]
    fn patches_a_stored_answer_for_another_asker() {
        let first = query_bytes("a.test.", RecordType::A, Some((1232, false)));
        let q = Query::parse(&first).unwrap();
        let record = Record::from_rdata(q.name().unwrap(), 300, RData::A(A::new(192, 0, 2, 7)));
        let mut stored = Vec::new();
        write_reply(
            &q,
            &reply(vec![record], None),
            q.max_udp_payload(),
            &mut stored,
        );
        let layout = Layout::of(&stored).unwrap();

        let mut second = query_bytes("A.TeSt.", RecordType::A, Some((700, false)));
        second[0] = 0xab;
        let q2 = Query::parse(&second).unwrap();
        let mut out = stored.clone();
        patch(&mut out, &q2, &layout, 100, false);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0xab34);
        assert_eq!(m.queries[0].name().to_ascii(), "A.TeSt.");
        assert_eq!(m.answers[0].ttl, 200);
        assert_eq!(m.edns.unwrap().max_payload(), 700);
    }

    #[test]
    fn format_error_echoes_the_id() {
        let mut packet = query_bytes("a.test.", RecordType::A, None);
        packet.truncate(14);
        let out = format_error(&packet).unwrap();
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(format_error(&packet[..11]).is_none());
    }
}
