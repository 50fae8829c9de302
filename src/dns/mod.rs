//! Serving DNS: the [`Handler`] whose query path reads top to bottom, stage by stage:
//! admit ([`Handler::admit`]: networks, rate), check the question, decide
//! ([`Handler::decide`]: who is asking, built-in answers, the matcher, safe search),
//! then forward ([`Handler::forward`]: upstream, CNAME chain).
//!
//! Two ways in share those stages:
//! - UDP, the hot path ([`udp`]): an ordinary query is read straight from the packet
//!   ([`wire`]) and [`Handler::answer_now`] answers at once whatever needs no waiting:
//!   refusals, blocks, and allowed answers kept as bytes in the [`cache`]. Only a cache
//!   miss goes on to [`Handler::answer_later`], in a task of its own.
//! - TCP ([`tcp`]) and odd UDP packets: hickory decodes them, and
//!   [`Handler::resolve`] runs the same stages; [`answer`] builds and writes the reply.
//!
//! The handler reads one immutable [`Engine`] snapshot per query (one atomic load from
//! an `ArcSwap`), so a reload never pauses or half-changes a query in flight.

pub mod answer;
pub mod cache;
pub mod limit;
pub mod server;
pub mod tasks;
pub mod tcp;
pub mod udp;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use crate::audit::{Event, Outcome, Sink};
use crate::config::{BlockResponse, LimitAction};
use crate::engine::Engine;
use crate::filter::{Block, CategorySet};
use crate::metrics::{Metrics, QueryOutcome};
use crate::name;
use crate::policy::{self, rebinding, safe_search, Who};
use crate::upstream::{Answer, Forwarder};
use answer::Reply;
use cache::AnswerCache;

pub use server::{start, start_with, RunningServer, ServeError};

/// The query handler: the engine snapshot, the upstream forwarder, the audit sink and
/// the metrics.
pub struct Handler {
    engine: Arc<ArcSwap<Engine>>,
    forwarder: Forwarder,
    audit: Option<Sink>,
    blocked: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    clock: Clock,
    limiter: limit::RateLimiter,
    /// Allowed answers as sent, for UDP's fast path.
    cache: AnswerCache,
}

/// Where the handler reads the time for schedules (tests inject their own).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

impl Handler {
    pub fn new(engine: Arc<ArcSwap<Engine>>, forwarder: Forwarder) -> Handler {
        let capacity = engine.load().config.upstream.cache_size;
        Handler {
            cache: AnswerCache::new(usize::try_from(capacity).unwrap_or(usize::MAX)),
            engine,
            forwarder,
            audit: None,
            blocked: Arc::new(AtomicU64::new(0)),
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(Utc::now),
            limiter: limit::RateLimiter::new(),
        }
    }

    /// Evaluate schedules at `clock`'s time instead of the system's.
    pub fn with_clock(mut self, clock: Clock) -> Handler {
        self.clock = clock;
        self
    }

    /// Count queries and blocks in `metrics` (the registry `/metrics` shows).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Handler {
        self.metrics = metrics;
        self
    }

    /// Record every block (and, if configured, every allowed query) in `sink`.
    pub fn with_audit(mut self, sink: Sink) -> Handler {
        self.audit = Some(sink);
        self
    }

    /// A counter of blocked answers given, readable while the server runs.
    pub fn blocked_counter(&self) -> Arc<AtomicU64> {
        self.blocked.clone()
    }

    /// One query's path, for a query decoded by hickory (TCP, and UDP packets the
    /// fast path declines). `None` means "send nothing" (an over-limit query with
    /// `action = "drop"`).
    pub async fn resolve(&self, request: &Request) -> Option<Reply> {
        // 0. Only clients on our networks, each within its rate.
        let engine = self.engine.load_full();
        if let Err(refusal) = self.admit(&engine, request.src().ip()) {
            return refusal;
        }
        // 1. Only standard queries with exactly one IN question are served; anything
        //    else gets the error a resolver would give, before any work is done.
        if request.metadata.op_code != OpCode::Query {
            return Some(Reply::error(ResponseCode::NotImp));
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Some(Reply::error(ResponseCode::BADVERS));
        }
        let Ok(info) = request.request_info() else {
            return Some(Reply::error(ResponseCode::FormErr)); // zero or several questions
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            return Some(Reply::error(ResponseCode::Refused));
        }
        let asking = Asking::new(&engine, request.src(), query.query_type(), &self.clock);
        Some(
            self.answer(&engine, &asking, query.original().name())
                .await
                .0,
        )
    }

    /// UDP's fast path, for an ordinary query read straight from the packet (see
    /// [`wire`]): answer now, into `out`, whatever needs no waiting (a refusal, a block,
    /// an answer from the answer cache). [`Now::Later`] means it must go upstream: call
    /// [`Handler::answer_later`] (admission is done; it must not be done twice).
    pub fn answer_now(
        &self,
        query: &wire::Query<'_>,
        client: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Now {
        let engine = self.engine.load();
        let qtype = query.record_type();
        if let Err(refusal) = self.admit(&engine, client.ip()) {
            return self.send_now(query, refusal, out);
        }
        let Some(qname) = query.name() else {
            return Now::Later;
        };
        let asking = Asking::new(&engine, client, qtype, &self.clock);
        match self.decide(&engine, &asking, &qname) {
            Step::Reply(reply) => self.send_now(query, Some(reply), out),
            Step::SafeSearch { .. } => Now::Later,
            Step::Forward { name } => {
                let key = cache::key(asking.who.group_id, asking.active, query);
                if !self
                    .cache
                    .answer(&key, query, engine.id, Instant::now(), out)
                {
                    return Now::Later;
                }
                self.metrics.answer_cache_hit();
                self.record_allowed(&engine, &asking, &name, "forwarded");
                self.metrics.query(QueryOutcome::Allowed, Some(qtype));
                Now::Send
            }
        }
    }

    /// Write `reply` (`None`: nothing to send) for the fast path, and count it.
    fn send_now(&self, query: &wire::Query<'_>, reply: Option<Reply>, out: &mut Vec<u8>) -> Now {
        let qtype = Some(query.record_type());
        let Some(reply) = reply else {
            self.metrics.query(QueryOutcome::RateLimited, qtype);
            return Now::Drop;
        };
        self.metrics.query(reply.outcome, qtype);
        wire::write_reply(query, &reply, query.max_udp_payload(), out);
        Now::Send
    }

    /// UDP's slow path, for a query [`Handler::answer_now`] left for later: decide again
    /// (a reload may have come in between), ask upstream, write the answer into `out`,
    /// and keep an allowed answer in the answer cache for the next asker.
    pub async fn answer_later(
        &self,
        query: &wire::Query<'_>,
        client: SocketAddr,
        out: &mut Vec<u8>,
    ) {
        let engine = self.engine.load_full();
        let qtype = query.record_type();
        let asking = Asking::new(&engine, client, qtype, &self.clock);
        let (reply, keep) = match query.name() {
            Some(qname) => self.answer(&engine, &asking, &qname).await,
            None => (Reply::error(ResponseCode::FormErr), false),
        };
        self.metrics.query(reply.outcome, Some(qtype));
        let written = wire::write_reply(query, &reply, query.max_udp_payload(), out);
        if keep && !written.truncated {
            let key = cache::key(asking.who.group_id, asking.active, query);
            self.cache
                .insert(&key, out, reply.authentic, engine.id, Instant::now());
        }
    }

    /// Stage 0: only clients on our networks, each within its rate. A query from outside
    /// is never forwarded (no open resolver), and a looping device cannot starve the
    /// others or flood the audit log. `Err` holds the answer to give instead (`None`:
    /// send nothing).
    fn admit(&self, engine: &Engine, client: IpAddr) -> Result<(), Option<Reply>> {
        if !engine.policy.admits(client) {
            return Err(Some(Reply::error(ResponseCode::Refused)));
        }
        let limit = &engine.config.server.rate_limit;
        if limit.qps > 0.0
            && !self
                .limiter
                .allow(client, limit.qps, limit.burst, Instant::now())
        {
            return Err(match limit.action {
                LimitAction::Refuse => Some(Reply {
                    outcome: QueryOutcome::RateLimited,
                    ..Reply::error(ResponseCode::Refused)
                }),
                LimitAction::Drop => None,
            });
        }
        Ok(())
    }

    /// The answer to an admitted IN question, asking upstream if allowed; and whether
    /// it may be kept in the answer cache (an allowed upstream answer, not a block, not
    /// an error, not safe search's composed answer).
    async fn answer(&self, engine: &Engine, asking: &Asking<'_>, qname: &Name) -> (Reply, bool) {
        match self.decide(engine, asking, qname) {
            Step::Reply(reply) => (reply, false),
            Step::SafeSearch { target, name } => {
                let reply = self.safe_search(qname, target, engine, asking, &name).await;
                (reply, false)
            }
            Step::Forward { name } => {
                // 7. Allowed: ask upstream, then 8. check its CNAME chain (inside forward).
                let reply = self.forward(qname, engine, asking, &name).await;
                let keep =
                    reply.outcome == QueryOutcome::Allowed && wire::cacheable_rcode(reply.rcode);
                (reply, keep)
            }
        }
    }

    /// Stages 2 to 6, which never wait: what applies to this client, and whether the
    /// name is blocked (then reported and answered here), rewritten for safe search, or
    /// to be forwarded.
    fn decide(&self, engine: &Engine, asking: &Asking<'_>, qname: &Name) -> Step {
        // 2. Normalise the name once into the matcher's key form; everything after
        //    compares this form. Every name has one, whatever bytes its labels hold, so
        //    `a+b.listed.test` or `*.listed.test` is matched under `listed.test` like
        //    any other subdomain.
        let name = name::key(qname.iter());
        // 3. Who is asking decides what applies (see Asking::new): their group, its
        //    categories at this minute (schedules; locked ones always), its safe search.
        let who = &asking.who;

        // 4. The built-in answers to the ways round the filter (DoH canary, Private
        //    Relay, DDR), when the group blocks circumvention.
        if let Some(kind) = policy::special(&name).filter(|_| circumvention_on(engine, asking)) {
            self.report_special(engine, asking, &name, kind);
            return Step::Reply(answer::special(kind, qname, engine.config.blocking.ttl));
        }
        // 5. The matcher decides before anything leaves the building: a blocked name
        //    never reaches upstream, whatever the query type.
        let verdict = engine.matcher.lookup(&name, asking.active);
        if let Some(b) = verdict.block().filter(|b| !who.group.allows(&name, b)) {
            let categories = engine.matcher.category_names(b.categories);
            return Step::Reply(self.block(engine, asking, &name, qname, b, &categories, None));
        }
        // …and the group's own deny lists, unless an allow entry outranks them.
        if let Some(b) = who.group.denies(&name, &verdict) {
            return Step::Reply(self.block(
                engine,
                asking,
                &name,
                qname,
                &b,
                policy::GROUP_DENY,
                None,
            ));
        }
        // 6. Safe search: the search engine's enforced-safe host, as a CNAME.
        if let Some(target) = safe_search::target(&name, who.group.safe_search, who.group.youtube) {
            return Step::SafeSearch { target, name };
        }
        Step::Forward { name }
    }

    /// Forward to upstream, and refuse an answer whose CNAME chain runs through a blocked
    /// name (no "CNAME cloaking" around the lists). `name` is the query as logged.
    async fn forward(
        &self,
        qname: &Name,
        engine: &Engine,
        asking: &Asking<'_>,
        name: &str,
    ) -> Reply {
        let answer = self.ask_upstream(qname.to_lowercase(), asking.qtype).await;
        if let Answer::Records { answers, .. } = &answer {
            if let Some(reply) = self.check_chain(answers, qname, engine, asking, name) {
                return reply;
            }
            if let Some(reply) = self.check_rebinding(answers, qname, engine, asking, name) {
                return reply;
            }
        }
        self.record_allowed(engine, asking, name, "forwarded");
        Reply::from_upstream(answer)
    }

    /// Record an allowed query, if `[audit] log_allowed` asks for that.
    fn record_allowed(&self, engine: &Engine, asking: &Asking<'_>, name: &str, response: &str) {
        if let Some(sink) = self
            .audit
            .as_ref()
            .filter(|_| engine.config.audit.log_allowed)
        {
            sink.record(asking.client.ip(), Outcome::Allowed, "", name, || Event {
                response: response.to_string(),
                ..allowed_event(asking, name)
            });
        }
    }

    async fn ask_upstream(&self, name: Name, qtype: RecordType) -> Answer {
        let answer = self.forwarder.forward(name, qtype).await;
        match &answer {
            Answer::Unreachable => self.metrics.upstream_error("unreachable"),
            Answer::Refused(ResponseCode::ServFail) => self.metrics.upstream_error("servfail"),
            Answer::Refused(ResponseCode::Refused) => self.metrics.upstream_error("refused"),
            Answer::Refused(_) => self.metrics.upstream_error("other_rcode"),
            _ => {}
        }
        answer
    }

    /// A block answer if any CNAME target in `answers` is blocked for this client.
    fn check_chain(
        &self,
        answers: &[hickory_server::proto::rr::Record],
        qname: &Name,
        engine: &Engine,
        asking: &Asking<'_>,
        name: &str,
    ) -> Option<Reply> {
        for record in answers {
            let RData::CNAME(target) = &record.data else {
                continue;
            };
            let target_name = name::key(target.0.iter());
            let verdict = engine.matcher.lookup(&target_name, asking.active);
            let via = Some(target_name.as_str());
            if let Some(b) = verdict
                .block()
                .filter(|b| !asking.who.group.allows(&target_name, b))
            {
                let categories = engine.matcher.category_names(b.categories);
                return Some(self.block(engine, asking, name, qname, b, &categories, via));
            }
            if let Some(b) = asking.who.group.denies(&target_name, &verdict) {
                return Some(self.block(engine, asking, name, qname, &b, policy::GROUP_DENY, via));
            }
        }
        None
    }

    /// A block answer if upstream put this public name on an internal address (DNS
    /// rebinding, see [`rebinding`]). The query's own name decides the exemptions: a
    /// public name aliased to `router.lan` is still a public name in the browser.
    fn check_rebinding(
        &self,
        answers: &[hickory_server::proto::rr::Record],
        qname: &Name,
        engine: &Engine,
        asking: &Asking<'_>,
        name: &str,
    ) -> Option<Reply> {
        if !rebinding::applies(&engine.config.rebinding, name) {
            return None;
        }
        let internal = answers
            .iter()
            .flat_map(|record| addresses(&record.data))
            .find(|ip| rebinding::is_internal(*ip))?;
        let mode = asking.block_mode(engine);
        let builtin = Builtin {
            category: policy::REBINDING,
            rule: format!("{name} -> {internal}"),
            response: mode.as_str(),
        };
        self.report_builtin(engine, asking, name, builtin);
        // An internal name served by the upstream (split-horizon DNS, Active Directory)
        // is blocked until the admin names its domain: say how, once, where they look.
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            // The name stays in the audit log (personal data), not in the system log.
            tracing::warn!(
                "DNS rebinding protection blocked a public name answered with an internal \
                 address (`warden audit list --category rebinding` shows which); if it is \
                 one of your own names, add its domain to [rebinding] allow"
            );
        }
        Some(answer::blocked(
            &engine.config.blocking,
            mode,
            policy::REBINDING,
            qname,
            asking.qtype,
            name,
        ))
    }

    /// Report a block and build its answer. `categories` names the block's categories,
    /// as the matcher that decided numbers them.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        engine: &Engine,
        asking: &Asking<'_>,
        name: &str,
        qname: &Name,
        block: &Block<'_>,
        categories: &str,
        via_cname: Option<&str>,
    ) -> Reply {
        self.report_block(engine, asking, name, block, categories, via_cname);
        let mode = asking.block_mode(engine);
        answer::blocked(
            &engine.config.blocking,
            mode,
            categories,
            qname,
            asking.qtype,
            block.rule.matched,
        )
    }

    /// Answer `qname` with a CNAME to the safe-search `target` and the target's own
    /// records, as resolved upstream.
    async fn safe_search(
        &self,
        qname: &Name,
        target: &str,
        engine: &Engine,
        asking: &Asking<'_>,
        name: &str,
    ) -> Reply {
        let Ok(target_name) = Name::from_ascii(format!("{target}.")) else {
            return Reply::error(ResponseCode::ServFail);
        };
        let answer = self.ask_upstream(target_name.clone(), asking.qtype).await;
        tracing::debug!(target: "warden::safe_search", name, target, group = asking.who.group.name, "safe search");
        self.record_allowed(engine, asking, name, &format!("safe-search:{target}"));
        answer::with_cname(qname, target_name, answer)
    }

    /// Count a block, record it for the audit log, and trace it (at DEBUG: names are
    /// personal data, and the audit log is where they belong).
    fn report_block(
        &self,
        engine: &Engine,
        asking: &Asking<'_>,
        name: &str,
        block: &Block<'_>,
        categories: &str,
        via_cname: Option<&str>,
    ) {
        self.blocked.fetch_add(1, Ordering::Relaxed);
        self.metrics.block(categories, &asking.who.group.name);
        tracing::debug!(
            target: "warden::block",
            client = %asking.client.ip(),
            group = asking.who.group.name,
            name,
            qtype = %asking.qtype,
            categories = %categories,
            locked = block.locked,
            list = block.rule.list_name(),
            line = block.rule.line(),
            cname = via_cname.unwrap_or(""),
            "blocked"
        );
        if let Some(sink) = &self.audit {
            let mode = asking.block_mode(engine);
            sink.record(
                asking.client.ip(),
                Outcome::Blocked,
                categories,
                name,
                || Event {
                    categories: categories.to_string(),
                    locked: block.locked,
                    list: block.rule.list_name().to_string(),
                    line: block.rule.line(),
                    rule: block.rule.text(),
                    response: mode.as_str().to_string(),
                    cname: via_cname.map(str::to_string),
                    outcome: Outcome::Blocked,
                    ..allowed_event(asking, name)
                },
            );
        }
    }

    /// Count and record a built-in circumvention answer like any block, so the lead can
    /// see a device trying to get round the filter.
    fn report_special(
        &self,
        engine: &Engine,
        asking: &Asking<'_>,
        name: &str,
        kind: policy::Special,
    ) {
        let response = match kind {
            policy::Special::NxDomain => "nxdomain",
            policy::Special::NoData => "nodata",
        };
        let builtin = Builtin {
            category: policy::CIRCUMVENTION,
            rule: name.to_string(),
            response,
        };
        self.report_builtin(engine, asking, name, builtin);
    }

    /// Count and record a block that no list made (a built-in answer or rebinding
    /// protection), in its own category, for the lead like any other.
    fn report_builtin(&self, engine: &Engine, asking: &Asking<'_>, name: &str, b: Builtin) {
        self.blocked.fetch_add(1, Ordering::Relaxed);
        self.metrics.block(b.category, &asking.who.group.name);
        tracing::debug!(target: "warden::block", client = %asking.client.ip(), name, category = b.category, "built-in block");
        let locked = engine
            .config
            .categories
            .get(b.category)
            .is_some_and(|c| c.locked);
        if let Some(sink) = &self.audit {
            sink.record(
                asking.client.ip(),
                Outcome::Blocked,
                b.category,
                name,
                || Event {
                    categories: b.category.to_string(),
                    locked,
                    list: "built-in".to_string(),
                    line: 0,
                    rule: b.rule,
                    response: b.response.to_string(),
                    cname: None,
                    outcome: Outcome::Blocked,
                    ..allowed_event(asking, name)
                },
            );
        }
    }
}

/// The addresses a record hands a client: an A or AAAA record's, and the address hints
/// of an HTTPS or SVCB record (browsers connect to those too).
fn addresses(data: &RData) -> Vec<IpAddr> {
    use hickory_server::proto::rr::rdata::svcb::{SvcParamValue, SVCB};
    let hints = |svcb: &SVCB| -> Vec<IpAddr> {
        svcb.svc_params
            .iter()
            .flat_map(|(_, value)| match value {
                SvcParamValue::Ipv4Hint(h) => h.0.iter().map(|a| IpAddr::V4(a.0)).collect(),
                SvcParamValue::Ipv6Hint(h) => h.0.iter().map(|a| IpAddr::V6(a.0)).collect(),
                _ => Vec::new(),
            })
            .collect()
    };
    match data {
        RData::A(a) => vec![IpAddr::V4(a.0)],
        RData::AAAA(aaaa) => vec![IpAddr::V6(aaaa.0)],
        RData::HTTPS(https) => hints(&https.0),
        RData::SVCB(svcb) => hints(svcb),
        _ => Vec::new(),
    }
}

/// A block that no list made: its category, what it is recorded as having matched, and
/// the answer given.
struct Builtin {
    category: &'static str,
    rule: String,
    response: &'static str,
}

/// Who asked what: the client, their group and device, the categories active for them
/// now, and the query type.
struct Asking<'a> {
    client: SocketAddr,
    who: Who<'a>,
    active: CategorySet,
    qtype: RecordType,
}

impl<'a> Asking<'a> {
    /// Stage 3: the client's group and device (by address), and the categories blocked
    /// for that group at `clock`'s time.
    fn new(engine: &'a Engine, client: SocketAddr, qtype: RecordType, clock: &Clock) -> Asking<'a> {
        let who = engine.policy.who(client.ip());
        Asking {
            client,
            who,
            active: engine.policy.active(who.group, clock()),
            qtype,
        }
    }
}

impl Asking<'_> {
    /// How this client's blocks are answered: its group's mode, else `[blocking]`'s.
    fn block_mode(&self, engine: &Engine) -> BlockResponse {
        self.who
            .group
            .block_response
            .unwrap_or(*engine.config.blocking.response.get_ref())
    }
}

/// What [`Handler::answer_now`] did with a UDP query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    /// The answer is in the buffer: send it.
    Send,
    /// Send nothing (over the client's rate, `action = "drop"`).
    Drop,
    /// It needs upstream: hand it to [`Handler::answer_later`].
    Later,
}

/// Where [`Handler::decide`] leaves a question.
enum Step {
    /// Answered here: a block or a built-in answer (already reported).
    Reply(Reply),
    /// Safe search: answer with a CNAME to `target` and the target's records.
    SafeSearch { target: &'static str, name: String },
    /// Allowed: ask upstream. `name` is the query as logged.
    Forward { name: String },
}

/// Is the built-in circumvention category active for this client?
fn circumvention_on(engine: &Engine, asking: &Asking<'_>) -> bool {
    engine
        .matcher
        .category_id(policy::CIRCUMVENTION)
        .is_some_and(|id| asking.active.contains(id))
}

/// The audit event of an allowed query (recorded only with `[audit] log_allowed`); a
/// block's event is this one with the rule's details.
fn allowed_event(asking: &Asking<'_>, name: &str) -> Event {
    Event {
        time: SystemTime::now(),
        client: asking.client.ip(),
        device: asking.who.device.map(str::to_string),
        group: asking.who.group.name.clone(),
        name: name.to_string(),
        qtype: asking.qtype.to_string(),
        categories: String::new(),
        locked: false,
        list: String::new(),
        line: 0,
        rule: String::new(),
        response: "forwarded".to_string(),
        cname: None,
        outcome: Outcome::Allowed,
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        responder: R,
    ) -> ResponseInfo {
        let reply = self.resolve(request).await;
        let qtype = request.request_info().ok().map(|i| i.query.query_type());
        let outcome = reply
            .as_ref()
            .map_or(QueryOutcome::RateLimited, |r| r.outcome);
        self.metrics.query(outcome, qtype);
        match reply {
            Some(reply) => answer::send(request, reply, responder).await,
            None => answer::unsent(request),
        }
    }
}
