//! Serving DNS: the [`Handler`] whose query path reads top to bottom, stage by stage:
//! admit ([`Handler::admit`]: networks, rate), check the question, know it
//! ([`QueryContext::new`]: the name's key form, who is asking), decide
//! ([`Handler::decide`]: built-in answers, the matcher, safe search), then forward
//! ([`Handler::forward`]: upstream, CNAME chain).
//!
//! Two ways in share those stages:
//! - UDP, the hot path ([`udp`]): an ordinary query is read straight from the packet
//!   ([`wire`]) and [`Handler::answer_now`] answers at once whatever needs no waiting:
//!   refusals, blocks, and allowed answers kept as bytes in the [`cache`]. Only a cache
//!   miss goes on to [`Handler::answer_later`], in a task of its own.
//! - TCP ([`tcp`]) and odd UDP packets: hickory decodes them, and
//!   [`Handler::resolve`] runs the same stages; [`answer`] builds and writes the reply.
//!
//! Once admitted, a question becomes one [`QueryContext`] (who asks, the question, the
//! snapshot, the transport, the time), built once and passed by reference through
//! every later stage.
//!
//! The handler reads one immutable [`Engine`] snapshot per query (one atomic load from
//! an `ArcSwap`), so a reload never pauses or half-changes a query in flight. What a
//! reload changes outside the snapshot follows it too: the forwarder is swapped when
//! `[upstream]` changes ([`LiveForwarder`]), and the answer cache's size and the rate
//! limits are read from the snapshot.

pub mod answer;
pub mod cache;
pub mod client_id;
pub mod doh;
pub mod dot;
pub mod limit;
pub mod probe;
pub mod proxy;
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
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use crate::audit::{Event, Identity, Outcome, Person, Sink};
use crate::config::{BlockResponse, LimitAction, UnknownDevice};
use crate::engine::Engine;
use crate::filter::{Block, CategorySet};
use crate::identity::{Session, Sessions};
pub use crate::metrics::Transport;
use crate::metrics::{Metrics, QueryOutcome};
use crate::name;
use crate::policy::{self, rebinding, safe_search, Seen, Who};
use crate::upstream::{Answer, Forwarder, LiveForwarder};
use answer::Reply;
use cache::AnswerCache;
use client_id::Carried;

pub use server::{start, start_full, start_with, EncryptedSetup, RunningServer, ServeError};

/// The query handler: the engine snapshot, the upstream forwarder, the audit sink and
/// the metrics.
pub struct Handler {
    engine: Arc<ArcSwap<Engine>>,
    /// Swapped by a reload that changes `[upstream]` (see [`LiveForwarder`]).
    upstream: Arc<LiveForwarder>,
    audit: Option<Sink>,
    blocked: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    clock: Clock,
    limiter: limit::RateLimiter,
    /// Token buckets per enrolled device (DoT, DoH).
    devices: limit::RateLimiter<Box<str>>,
    /// Allowed answers as sent, for UDP's fast path.
    cache: AnswerCache,
    /// Who is signed in where (RADIUS, sign-in feeds), shared with their listeners.
    sessions: Arc<Sessions>,
    /// What marks a query as the self-test's ([`probe`]).
    probe: probe::ProbeKey,
}

/// Where the handler reads the time for schedules (tests inject their own).
pub(crate) type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

impl Handler {
    pub fn new(engine: Arc<ArcSwap<Engine>>, forwarder: Forwarder) -> Handler {
        Handler::with_upstream(engine, Arc::new(LiveForwarder::new(forwarder)))
    }

    /// A handler asking upstream through `upstream`, which a reload may swap (the
    /// reloader holds it too: see `Reloader::with_upstream`).
    pub(crate) fn with_upstream(
        engine: Arc<ArcSwap<Engine>>,
        upstream: Arc<LiveForwarder>,
    ) -> Handler {
        let capacity = engine.load().config.upstream.cache_size;
        Handler {
            cache: AnswerCache::new(cache_capacity(capacity)),
            engine,
            upstream,
            audit: None,
            blocked: Arc::new(AtomicU64::new(0)),
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(Utc::now),
            limiter: limit::RateLimiter::new(),
            devices: limit::RateLimiter::new(),
            sessions: Arc::new(Sessions::new()),
            probe: probe::ProbeKey::random(),
        }
    }

    /// The key the self-test marks its queries with ([`probe`]).
    pub fn probe_key(&self) -> probe::ProbeKey {
        self.probe.clone()
    }

    /// Read sign-ins from `sessions` (which the RADIUS listener and feeds fill).
    pub fn with_sessions(mut self, sessions: Arc<Sessions>) -> Handler {
        self.sessions = sessions;
        self
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

    /// The metrics it counts in (the encrypted listeners count their handshakes there).
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A counter of blocked answers given, readable while the server runs.
    pub fn blocked_counter(&self) -> Arc<AtomicU64> {
        self.blocked.clone()
    }

    /// One query's path, for a query decoded by hickory (TCP, and UDP packets the
    /// fast path declines). `None` means "send nothing" (an over-limit query with
    /// `action = "drop"`).
    pub async fn resolve(&self, request: &Request) -> Option<Reply> {
        self.resolve_arrived(request, &Arrival::of(request)).await
    }

    /// [`Handler::resolve`] for a query that came as `arrival` says: over which
    /// transport, passed on by which load balancer (PROXY protocol: `request`'s source
    /// is the client it named), with which device ID.
    pub(crate) async fn resolve_arrived(
        &self,
        request: &Request,
        arrival: &Arrival,
    ) -> Option<Reply> {
        // 0. Only clients on our networks (or enrolled devices), each within its rate
        //    (a trusted forwarder's clients each within their own).
        let engine = self.engine.load_full();
        let carried = carried_by(&engine, request);
        let device_id = arrival.device_id.as_deref();
        let options = edns_options(request);
        let probe = self
            .probe
            .group_in(options.iter().map(|(code, data)| (*code, data.as_slice())));
        if probe.is_none() {
            if let Err(refusal) = self.admit(&engine, request.src().ip(), &carried, device_id) {
                return refusal;
            }
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
        let asked = Asked {
            client: request.src(),
            via: arrival.via,
            carried,
            qname: query.original().name(),
            qtype: query.query_type(),
            transport: arrival.transport,
            device_id,
            probe,
        };
        let cx = QueryContext::new(&engine, asked, &self.clock, &self.sessions);
        Some(self.answer(&cx).await.0)
    }

    /// UDP's fast path, for an ordinary query read straight from the packet (see
    /// [`wire`]): answer now, into `out`, whatever needs no waiting (a refusal, a block,
    /// an answer from the answer cache). [`Now::Later`] means it must go upstream: call
    /// [`Handler::answer_later`] (admission is done; it must not be done twice).
    pub(crate) fn answer_now(
        &self,
        query: &wire::Query<'_>,
        client: SocketAddr,
        out: &mut Vec<u8>,
    ) -> Now {
        let engine = self.engine.load();
        let carried = carried_in(&engine, client, query);
        // The self-test's checks are not devices' queries: not admitted, not counted.
        let probe = self.probe_in(query);
        let counted = probe.is_none();
        if counted {
            self.metrics.transport(Transport::Udp);
            if let Err(refusal) = self.admit(&engine, client.ip(), &carried, None) {
                return self.send_now(query, refusal, counted, out);
            }
        }
        let Some(qname) = query.name() else {
            return Now::Later;
        };
        let asked = Asked::udp(client, carried, &qname, query, probe);
        let cx = QueryContext::new(&engine, asked, &self.clock, &self.sessions);
        match self.decide(&cx) {
            Step::Reply(reply) => self.send_now(query, Some(reply), counted, out),
            Step::SafeSearch { .. } => Now::Later,
            Step::Forward => {
                let key = cache::key(cx.who.group_id, cx.active, query);
                if !self
                    .cache
                    .answer(&key, query, engine.id, Instant::now(), out)
                {
                    return Now::Later;
                }
                self.record_allowed(&cx, "forwarded");
                if counted {
                    self.metrics.answer_cache_hit();
                    self.metrics.query(QueryOutcome::Allowed, Some(cx.qtype));
                }
                Now::Send
            }
        }
    }

    /// The group a fast-path query is the self-test's check of, if it is one.
    fn probe_in<'q>(&self, query: &wire::Query<'q>) -> Option<&'q str> {
        self.probe.group_in(client_id::options(query.opt_options()))
    }

    /// Write `reply` (`None`: nothing to send) for the fast path, and count it if
    /// `counted` (a device's query, not the self-test's).
    fn send_now(
        &self,
        query: &wire::Query<'_>,
        reply: Option<Reply>,
        counted: bool,
        out: &mut Vec<u8>,
    ) -> Now {
        let qtype = Some(query.record_type());
        let Some(reply) = reply else {
            self.metrics.query(QueryOutcome::RateLimited, qtype);
            return Now::Drop;
        };
        if counted {
            self.metrics.query(reply.outcome, qtype);
        }
        wire::write_reply(query, &reply, query.max_udp_payload(), out);
        Now::Send
    }

    /// UDP's slow path, for a query [`Handler::answer_now`] left for later: decide again
    /// (a reload may have come in between), ask upstream, write the answer into `out`,
    /// and keep an allowed answer in the answer cache for the next asker.
    pub(crate) async fn answer_later(
        &self,
        query: &wire::Query<'_>,
        client: SocketAddr,
        out: &mut Vec<u8>,
    ) {
        let engine = self.engine.load_full();
        let Some(qname) = query.name() else {
            let reply = Reply::error(ResponseCode::FormErr);
            self.metrics.query(reply.outcome, Some(query.record_type()));
            wire::write_reply(query, &reply, query.max_udp_payload(), out);
            return;
        };
        let carried = carried_in(&engine, client, query);
        let asked = Asked::udp(client, carried, &qname, query, self.probe_in(query));
        let cx = QueryContext::new(&engine, asked, &self.clock, &self.sessions);
        let (reply, keep) = self.answer(&cx).await;
        if !cx.probe {
            self.metrics.query(reply.outcome, Some(cx.qtype));
        }
        let written = wire::write_reply(query, &reply, query.max_udp_payload(), out);
        if keep && !written.truncated {
            // `[upstream] cache_size` of the snapshot that allowed it: a reload applies.
            self.cache
                .set_capacity(cache_capacity(engine.config.upstream.cache_size));
            let key = cache::key(cx.who.group_id, cx.active, query);
            self.cache
                .insert(&key, out, reply.authentic, engine.id, Instant::now());
        }
    }

    /// Stage 0: only clients on our networks, each within its rate. A query from outside
    /// is never forwarded (no open resolver), and a looping device cannot starve the
    /// others or flood the audit log. `Err` holds the answer to give instead (`None`:
    /// send nothing). Both read the snapshot, so a reload's networks and rate apply to
    /// the next query (each client's bucket is kept across it). A trusted forwarder's
    /// queries count against the device it names, so one busy router does not put a
    /// whole school over the rate. An enrolled device's ID (DoT, DoH) admits it from
    /// anywhere, within its own rate (`[encrypted.device_rate_limit]`); an ID that is
    /// not enrolled is refused or treated as no ID (`[encrypted] unknown_device`).
    fn admit(
        &self,
        engine: &Engine,
        source: IpAddr,
        carried: &Carried,
        device_id: Option<&str>,
    ) -> Result<(), Option<Reply>> {
        if let Some(id) = device_id {
            if engine.policy.enrolled(id).is_some() {
                let limit = &engine.config.encrypted.device_rate_limit;
                let now = Instant::now();
                if limit.qps > 0.0 && !self.devices.allow(id.into(), limit.qps, limit.burst, now) {
                    return Err(over_limit(limit.action));
                }
                return Ok(());
            }
            if engine.config.encrypted.unknown_device == UnknownDevice::Refuse {
                return Err(Some(Reply::error(ResponseCode::Refused)));
            }
        }
        if !engine.policy.admits(source) {
            return Err(Some(Reply::error(ResponseCode::Refused)));
        }
        let limit = &engine.config.server.rate_limit;
        let device = device_address(source, carried);
        if limit.qps > 0.0
            && !self
                .limiter
                .allow(device, limit.qps, limit.burst, Instant::now())
        {
            return Err(over_limit(limit.action));
        }
        Ok(())
    }

    /// The answer to an admitted IN question, asking upstream if allowed; and whether
    /// it may be kept in the answer cache (an allowed upstream answer, not a block, not
    /// an error, not safe search's composed answer).
    async fn answer(&self, cx: &QueryContext<'_>) -> (Reply, bool) {
        match self.decide(cx) {
            Step::Reply(reply) => (reply, false),
            Step::SafeSearch { target } => (self.safe_search(cx, target).await, false),
            Step::Forward => {
                // 7. Allowed: ask upstream, then 8. check its CNAME chain (inside forward).
                let reply = self.forward(cx).await;
                let keep =
                    reply.outcome == QueryOutcome::Allowed && wire::cacheable_rcode(reply.rcode);
                (reply, keep)
            }
        }
    }

    /// Stages 4 to 6, which never wait: whether the name is blocked for this client
    /// (then reported and answered here), rewritten for safe search, or to be
    /// forwarded. Stages 2 and 3 (the name's key form, who is asking) are done once,
    /// in [`QueryContext::new`].
    fn decide(&self, cx: &QueryContext<'_>) -> Step {
        let (engine, name, group) = (cx.engine, cx.name.as_str(), cx.who.group);
        // 4. The built-in answers to the ways round the filter (DoH canary, Private
        //    Relay, DDR), when the group blocks circumvention.
        if let Some(kind) = policy::special(name).filter(|_| cx.circumvention_on()) {
            self.report_special(cx, kind);
            return Step::Reply(answer::special(kind, cx.qname, engine.config.blocking.ttl));
        }
        // 5. The matcher decides before anything leaves the building: a blocked name
        //    never reaches upstream, whatever the query type.
        let verdict = engine.matcher.lookup(name, cx.active);
        if let Some(b) = verdict.block().filter(|b| !group.allows(name, b)) {
            let categories = engine.matcher.category_names(b.categories);
            return Step::Reply(self.block(cx, ListBlock::new(b, &categories, None)));
        }
        // …and the group's own deny lists, unless an allow entry outranks them.
        if let Some(b) = group.denies(name, &verdict) {
            return Step::Reply(self.block(cx, ListBlock::new(&b, policy::GROUP_DENY, None)));
        }
        // 6. Safe search: the search engine's enforced-safe host, as a CNAME.
        if let Some(target) = safe_search::target(name, group.safe_search, group.youtube) {
            return Step::SafeSearch { target };
        }
        Step::Forward
    }

    /// Forward to upstream, and refuse an answer whose CNAME chain runs through a blocked
    /// name (no "CNAME cloaking" around the lists).
    async fn forward(&self, cx: &QueryContext<'_>) -> Reply {
        let answer = self.ask_upstream(cx.qname.to_lowercase(), cx.qtype).await;
        if let Answer::Records { answers, .. } = &answer {
            if let Some(reply) = self.check_chain(cx, answers) {
                return reply;
            }
            if let Some(reply) = self.check_rebinding(cx, answers) {
                return reply;
            }
        }
        self.record_allowed(cx, "forwarded");
        Reply::from_upstream(answer)
    }

    /// Record an allowed query, if `[audit] log_allowed` asks for that.
    fn record_allowed(&self, cx: &QueryContext<'_>, response: &str) {
        if let Some(sink) = self
            .audit
            .as_ref()
            .filter(|_| cx.engine.config.audit.log_allowed && !cx.probe)
        {
            sink.record(
                cx.address,
                cx.person(),
                Outcome::Allowed,
                "",
                &cx.name,
                || Event {
                    response: response.to_string(),
                    ..cx.allowed_event()
                },
            );
        }
    }

    /// Ask the forwarder serving now (the one a reload may have swapped in).
    async fn ask_upstream(&self, name: Name, qtype: RecordType) -> Answer {
        let forwarder = self.upstream.current();
        let answer = forwarder.forward(name, qtype).await;
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
    fn check_chain(&self, cx: &QueryContext<'_>, answers: &[Record]) -> Option<Reply> {
        let (matcher, group) = (&cx.engine.matcher, cx.who.group);
        for record in answers {
            let RData::CNAME(target) = &record.data else {
                continue;
            };
            let target_name = name::key(target.0.iter());
            let verdict = matcher.lookup(&target_name, cx.active);
            let via = Some(target_name.as_str());
            if let Some(b) = verdict.block().filter(|b| !group.allows(&target_name, b)) {
                let categories = matcher.category_names(b.categories);
                return Some(self.block(cx, ListBlock::new(b, &categories, via)));
            }
            if let Some(b) = group.denies(&target_name, &verdict) {
                return Some(self.block(cx, ListBlock::new(&b, policy::GROUP_DENY, via)));
            }
        }
        None
    }

    /// A block answer if upstream put this public name on an internal address (DNS
    /// rebinding, see [`rebinding`]). The query's own name decides the exemptions: a
    /// public name aliased to `router.lan` is still a public name in the browser.
    fn check_rebinding(&self, cx: &QueryContext<'_>, answers: &[Record]) -> Option<Reply> {
        let config = &cx.engine.config;
        if !rebinding::applies(&config.rebinding, &cx.name) {
            return None;
        }
        let internal = answers
            .iter()
            .flat_map(|record| addresses(&record.data))
            .find(|ip| rebinding::is_internal(*ip))?;
        let mode = cx.block_mode();
        let builtin = Builtin {
            category: policy::REBINDING,
            rule: format!("{} -> {internal}", cx.name),
            response: mode.as_str(),
        };
        self.report_builtin(cx, builtin);
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
            &config.blocking,
            mode,
            policy::REBINDING,
            cx.qname,
            cx.qtype,
            &cx.name,
        ))
    }

    /// Report a block a list made and build its answer, both in the client's block
    /// mode (looked up once, here).
    fn block(&self, cx: &QueryContext<'_>, list: ListBlock<'_, '_>) -> Reply {
        let mode = cx.block_mode();
        self.report_block(cx, &list, mode);
        answer::blocked(
            &cx.engine.config.blocking,
            mode,
            list.categories,
            cx.qname,
            cx.qtype,
            list.block.rule.matched,
        )
    }

    /// Answer the question with a CNAME to the safe-search `target` and the target's own
    /// records, as resolved upstream.
    async fn safe_search(&self, cx: &QueryContext<'_>, target: &str) -> Reply {
        let Ok(target_name) = Name::from_ascii(format!("{target}.")) else {
            return Reply::error(ResponseCode::ServFail);
        };
        let answer = self.ask_upstream(target_name.clone(), cx.qtype).await;
        tracing::debug!(target: "warden::safe_search", name = cx.name, target, group = cx.who.group.name, "safe search");
        self.record_allowed(cx, &format!("safe-search:{target}"));
        answer::with_cname(cx.qname, target_name, answer)
    }

    /// Count a block, record it for the audit log (answered as `mode`), and trace it (at
    /// DEBUG: names are personal data, and the audit log is where they belong).
    fn report_block(&self, cx: &QueryContext<'_>, list: &ListBlock<'_, '_>, mode: BlockResponse) {
        let (block, categories) = (list.block, list.categories);
        if cx.probe {
            return; // the self-test's check: no device asked
        }
        self.blocked.fetch_add(1, Ordering::Relaxed);
        self.metrics.block(categories, &cx.who.group.name);
        tracing::debug!(
            target: "warden::block",
            client = %cx.address,
            group = cx.who.group.name,
            name = cx.name,
            qtype = %cx.qtype,
            transport = %cx.transport,
            categories = %categories,
            locked = block.locked,
            list = block.rule.list_name(),
            line = block.rule.line(),
            cname = list.via_cname.unwrap_or(""),
            "blocked"
        );
        if let Some(sink) = &self.audit {
            sink.record(
                cx.address,
                cx.person(),
                Outcome::Blocked,
                categories,
                &cx.name,
                || Event {
                    categories: categories.to_string(),
                    locked: block.locked,
                    list: block.rule.list_name().to_string(),
                    line: block.rule.line(),
                    rule: block.rule.text(),
                    response: mode.as_str().to_string(),
                    cname: list.via_cname.map(str::to_string),
                    outcome: Outcome::Blocked,
                    ..cx.allowed_event()
                },
            );
        }
    }

    /// Count and record a built-in circumvention answer like any block, so the lead can
    /// see a device trying to get round the filter.
    fn report_special(&self, cx: &QueryContext<'_>, kind: policy::Special) {
        let response = match kind {
            policy::Special::NxDomain => "nxdomain",
            policy::Special::NoData => "nodata",
        };
        let builtin = Builtin {
            category: policy::CIRCUMVENTION,
            rule: cx.name.clone(),
            response,
        };
        self.report_builtin(cx, builtin);
    }

    /// Count and record a block that no list made (a built-in answer or rebinding
    /// protection), in its own category, for the lead like any other.
    fn report_builtin(&self, cx: &QueryContext<'_>, b: Builtin) {
        if cx.probe {
            return; // the self-test's check: no device asked
        }
        self.blocked.fetch_add(1, Ordering::Relaxed);
        self.metrics.block(b.category, &cx.who.group.name);
        tracing::debug!(target: "warden::block", client = %cx.address, name = cx.name, category = b.category, transport = %cx.transport, "built-in block");
        let locked = cx
            .engine
            .config
            .categories
            .get(b.category)
            .is_some_and(|c| c.locked);
        if let Some(sink) = &self.audit {
            sink.record(
                cx.address,
                cx.person(),
                Outcome::Blocked,
                b.category,
                &cx.name,
                || Event {
                    categories: b.category.to_string(),
                    locked,
                    list: "built-in".to_string(),
                    line: 0,
                    rule: b.rule,
                    response: b.response.to_string(),
                    cname: None,
                    outcome: Outcome::Blocked,
                    ..cx.allowed_event()
                },
            );
        }
    }
}

/// What a trusted forwarder's options say of the device behind it (nothing from anyone
/// else): read from the raw OPT record of a fast-path query only when the source is
/// trusted, so an ordinary query pays one comparison.
fn carried_in(engine: &Engine, source: SocketAddr, query: &wire::Query<'_>) -> Carried {
    if !engine.policy.trusts_forwarder(source.ip()) {
        return Carried::default();
    }
    Carried::from_options(client_id::options(query.opt_options()))
}

/// The same for a query hickory decoded.
fn carried_by(engine: &Engine, request: &Request) -> Carried {
    if !engine.policy.trusts_forwarder(request.src().ip()) {
        return Carried::default();
    }
    let options = edns_options(request);
    Carried::from_options(options.iter().map(|(code, data)| (*code, data.as_slice())))
}

/// The options of a query hickory decoded, re-encoded one by one (none without EDNS).
fn edns_options(request: &Request) -> Vec<(u16, Vec<u8>)> {
    let Some(edns) = request.edns.as_ref() else {
        return Vec::new();
    };
    edns.options()
        .options
        .iter()
        .filter_map(|(code, option)| Some((u16::from(*code), Vec::<u8>::try_from(option).ok()?)))
        .collect()
}

/// The device's address: the host address a trusted forwarder's client subnet gives,
/// else the query's source. A subnet wider than one host names a network, not a
/// device, and is not taken as an address.
fn device_address(source: IpAddr, carried: &Carried) -> IpAddr {
    carried
        .subnet
        .filter(|s| s.is_host())
        .map_or(source, |s| s.addr)
        .to_canonical()
}

/// `[upstream] cache_size` as a count of answers.
fn cache_capacity(size: u64) -> usize {
    usize::try_from(size).unwrap_or(usize::MAX)
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

/// A block a list made: the rule that decided, its categories by name (as the matcher
/// that decided numbers them), and the CNAME target it was found on, if not the name
/// asked.
struct ListBlock<'b, 'm> {
    block: &'b Block<'m>,
    categories: &'b str,
    via_cname: Option<&'b str>,
}

impl<'b, 'm> ListBlock<'b, 'm> {
    fn new(block: &'b Block<'m>, categories: &'b str, via_cname: Option<&'b str>) -> Self {
        ListBlock {
            block,
            categories,
            via_cname,
        }
    }
}

/// How a query reached the handler, beyond its source address.
#[derive(Debug, Clone, Default)]
pub(crate) struct Arrival {
    pub transport: Transport,
    /// The load balancer that passed it on (PROXY protocol), if one did.
    pub via: Option<IpAddr>,
    /// The device ID it came with (DoH path, DoT TLS name), if any.
    pub device_id: Option<Arc<str>>,
}

impl Arrival {
    /// A query hickory decoded from a plain socket: UDP or TCP, nothing more.
    fn of(request: &Request) -> Arrival {
        let transport = if request.protocol() == Protocol::Udp {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        Arrival {
            transport,
            ..Arrival::default()
        }
    }
}

/// What a client asked, as it arrived: from where (and what a trusted forwarder says of
/// the device behind it), the name as sent, the type, over what and with which device
/// ID.
struct Asked<'a> {
    client: SocketAddr,
    /// The load balancer that named `client` (PROXY protocol), if one did.
    via: Option<IpAddr>,
    carried: Carried,
    qname: &'a Name,
    qtype: RecordType,
    transport: Transport,
    device_id: Option<&'a str>,
    /// The group the self-test checks, if this is its query ([`probe`]).
    probe: Option<&'a str>,
}

impl<'a> Asked<'a> {
    /// A question read straight from a UDP packet.
    fn udp(
        client: SocketAddr,
        carried: Carried,
        qname: &'a Name,
        query: &wire::Query<'_>,
        probe: Option<&'a str>,
    ) -> Asked<'a> {
        Asked {
            client,
            via: None,
            carried,
            qname,
            qtype: query.record_type(),
            transport: Transport::Udp,
            device_id: None,
            probe,
        }
    }
}

/// One query as every stage sees it, built once per query and passed by reference:
/// who asks (address, group, device, and the categories active for them now), the
/// question (the name as asked and in key form, the type), how it came in, when, and
/// the engine snapshot it is decided under (so every stage reads the same one).
struct QueryContext<'a> {
    engine: &'a Engine,
    /// The query's source: the device, or a forwarder or proxy in front of it.
    client: SocketAddr,
    /// The device's address: the source's, or the one a trusted forwarder gave.
    address: IpAddr,
    /// Who is signed in at `address`, if anyone.
    session: Option<Arc<Session>>,
    /// The load balancer that passed the query on, if one did.
    via: Option<IpAddr>,
    who: Who<'a>,
    active: CategorySet,
    qname: &'a Name,
    /// The name in the matcher's key form: what is matched, and what is logged.
    name: String,
    qtype: RecordType,
    transport: Transport,
    /// When it was asked, by the handler's clock: the schedules' time and the audit's.
    at: DateTime<Utc>,
    /// The self-test's check, not a device's question: never recorded or counted.
    probe: bool,
}

impl<'a> QueryContext<'a> {
    /// Stages 2 and 3 (the rest are the handler's): normalise the name once into the
    /// matcher's key form (every name has one, whatever bytes its labels hold, so
    /// `a+b.listed.test` or `*.listed.test` is matched under `listed.test` like any
    /// other subdomain); then who is asking, which decides what applies: their group
    /// and device (by address), and the group's categories at this minute (schedules;
    /// locked ones always).
    fn new(
        engine: &'a Engine,
        asked: Asked<'a>,
        clock: &Clock,
        sessions: &Sessions,
    ) -> QueryContext<'a> {
        let at = clock();
        let address = device_address(asked.client.ip(), &asked.carried);
        // An enrolled device's sign-in is its own, not whoever is signed in at the
        // address it happens to come from.
        let enrolled = asked
            .device_id
            .is_some_and(|id| engine.policy.enrolled(id).is_some());
        let session = (!enrolled)
            .then(|| sessions.find(address, SystemTime::from(at)))
            .flatten();
        let seen = Seen {
            address: Some(address),
            mac: asked.carried.mac.map(|(mac, _)| mac),
            session: session.as_deref(),
            device_id: asked.device_id,
        };
        // The self-test asks as a member of the group it checks.
        let probe = asked.probe.and_then(|g| engine.policy.self_test_who(g));
        let is_probe = probe.is_some();
        let who = probe.unwrap_or_else(|| engine.policy.identify(&seen));
        QueryContext {
            engine,
            client: asked.client,
            address,
            session,
            via: asked.via,
            active: engine.policy.active(who.group, at),
            who,
            qname: asked.qname,
            name: name::key(asked.qname.iter()),
            qtype: asked.qtype,
            transport: asked.transport,
            at,
            probe: is_probe,
        }
    }

    /// What the audit log keeps of who asked beyond the address and device name: the
    /// MAC, the signed-in user, and where each came from.
    fn identity(&self) -> Identity {
        let mut sources = Vec::new();
        if let Some(proxy) = self.via {
            sources.push(format!("address via proxy {proxy} (PROXY protocol)"));
        }
        if self.address != self.client.ip().to_canonical() {
            sources.push(format!(
                "address via forwarder {} (client subnet)",
                self.client.ip()
            ));
        }
        if let Some((_, from)) = self.who.mac {
            sources.push(from.describe().to_string());
        }
        if let Some(session) = &self.session {
            sources.push(format!("user from {}", session.source.describe()));
        }
        if self.who.enrolled.is_some() {
            sources.push(format!("enrolled device over {}", self.transport));
        }
        sources.push(self.who.group_from.describe().to_string());
        Identity {
            mac: self.who.mac.map(|(mac, _)| mac.to_string()),
            user: self.user().map(str::to_string),
            sources: Some(sources.join("; ")),
        }
    }

    /// The person asking: the one signed in at the address, or the enrolled device's.
    fn user(&self) -> Option<&str> {
        self.session
            .as_deref()
            .map(|s| s.user.as_str())
            .or_else(|| self.who.enrolled.and_then(|d| d.user.as_deref()))
    }

    /// Who asked beyond the address, as the audit log keeps rows apart.
    fn person(&self) -> Person<'_> {
        Person {
            mac: self.who.mac.map(|(mac, _)| mac),
            user: self.user(),
            device: self.who.device,
        }
    }

    /// How this client's blocks are answered: its group's mode, else `[blocking]`'s.
    fn block_mode(&self) -> BlockResponse {
        self.who
            .group
            .block_response
            .unwrap_or(*self.engine.config.blocking.response.get_ref())
    }

    /// Is the built-in circumvention category active for this client?
    fn circumvention_on(&self) -> bool {
        self.engine
            .matcher
            .category_id(policy::CIRCUMVENTION)
            .is_some_and(|id| self.active.contains(id))
    }

    /// The audit event of an allowed query (recorded only with `[audit] log_allowed`);
    /// a block's event is this one with the rule's details.
    fn allowed_event(&self) -> Event {
        Event {
            // The sink stamps the time it records at; this is when it was asked.
            time: SystemTime::from(self.at),
            client: self.address,
            device: self.who.device.map(str::to_string),
            identity: self.identity(),
            group: self.who.group.name.clone(),
            name: self.name.clone(),
            qtype: self.qtype.to_string(),
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
}

/// What an over-limit query gets: REFUSED (counted as rate-limited), or nothing.
fn over_limit(action: LimitAction) -> Option<Reply> {
    match action {
        LimitAction::Refuse => Some(Reply {
            outcome: QueryOutcome::RateLimited,
            ..Reply::error(ResponseCode::Refused)
        }),
        LimitAction::Drop => None,
    }
}

/// What [`Handler::answer_now`] did with a UDP query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Now {
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
    SafeSearch { target: &'static str },
    /// Allowed: ask upstream.
    Forward,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        responder: R,
    ) -> ResponseInfo {
        self.respond(request, &Arrival::of(request), responder)
            .await
    }
}

impl Handler {
    /// Whether TCP connections from `peer` must start with a PROXY protocol header
    /// (`[server] proxy_protocol`, as the serving snapshot has it).
    pub(crate) fn expects_proxy_header(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        let engine = self.engine.load();
        engine
            .config
            .server
            .proxy_protocol
            .iter()
            .any(|net| net.0.contains(&peer))
    }

    /// Answer `request` (which came as `arrival` says) through `responder`, counting
    /// it.
    pub(crate) async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        arrival: &Arrival,
        responder: R,
    ) -> ResponseInfo {
        let reply = self.resolve_arrived(request, arrival).await;
        self.metrics.transport(arrival.transport);
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
