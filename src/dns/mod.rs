//! Serving DNS: the hickory `RequestHandler` whose [`Handler::resolve`] is the whole
//! query path, read top to bottom; answer building lives in [`answer`], the UDP/TCP
//! listeners in [`server`].
//!
//! The handler reads one immutable [`Engine`] snapshot per query (one atomic load from
//! an `ArcSwap`), so a reload never pauses or half-changes a query in flight.

pub mod answer;
pub mod limit;
pub mod server;
pub mod tcp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use crate::audit::{Event, Outcome, Sink};
use crate::config::LimitAction;
use crate::engine::Engine;
use crate::filter::{Block, CategorySet};
use crate::metrics::{Metrics, QueryOutcome};
use crate::name;
use crate::policy::{self, safe_search, Who};
use crate::upstream::{Answer, Forwarder};
use answer::Reply;

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
}

/// Where the handler reads the time for schedules (tests inject their own).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

impl Handler {
    pub fn new(engine: Arc<ArcSwap<Engine>>, forwarder: Forwarder) -> Handler {
        Handler {
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

    /// One query's path. Each stage returns early with its reply; `None` means "send
    /// nothing" (an over-limit query with `action = "drop"`).
    pub async fn resolve(&self, request: &Request) -> Option<Reply> {
        // 0. Only clients on our networks, each within its rate: a query from outside is
        //    never forwarded (no open resolver), and a looping device cannot starve the
        //    others or flood the audit log.
        let engine = self.engine.load_full();
        let client = request.src().ip();
        if !engine.policy.admits(client) {
            return Some(Reply::error(ResponseCode::Refused));
        }
        let limit = &engine.config.server.rate_limit;
        if limit.qps > 0.0
            && !self
                .limiter
                .allow(client, limit.qps, limit.burst, std::time::Instant::now())
        {
            return match limit.action {
                LimitAction::Refuse => Some(Reply {
                    outcome: QueryOutcome::RateLimited,
                    ..Reply::error(ResponseCode::Refused)
                }),
                LimitAction::Drop => None,
            };
        }
        Some(self.resolve_admitted(request, engine).await)
    }

    async fn resolve_admitted(&self, request: &Request, engine: Arc<Engine>) -> Reply {
        // 1. Only standard queries with exactly one IN question are served; anything
        //    else gets the error a resolver would give, before any work is done.
        if request.metadata.op_code != OpCode::Query {
            return Reply::error(ResponseCode::NotImp);
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return Reply::error(ResponseCode::BADVERS);
        }
        let Ok(info) = request.request_info() else {
            return Reply::error(ResponseCode::FormErr); // zero or several questions
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            return Reply::error(ResponseCode::Refused);
        }
        let qtype = query.query_type();
        let qname = query.original().name();
        let client = request.src();

        // 2. Normalise the name once; everything after compares this form. A name with
        //    octets no list entry can hold cannot match a rule itself, but its answer's
        //    CNAME chain is still checked below.
        let name = normalised(query.name());

        // 3. Who is asking decides what applies: their group (by address), its
        //    categories at this minute (schedules; locked ones always), its safe search.
        let who = engine.policy.who(client.ip());
        let asking = Asking {
            client,
            who,
            active: engine.policy.active(who.group, (self.clock)()),
            qtype,
        };

        if let Some(name) = &name {
            // 4. The built-in answers to the ways round the filter (DoH canary, Private
            //    Relay, DDR), when the group blocks circumvention.
            if let Some(kind) = policy::special(name).filter(|_| circumvention_on(&engine, &asking))
            {
                self.report_special(&engine, &asking, name, kind);
                return answer::special(kind, qname, engine.config.blocking.ttl);
            }
            // 5. The matcher decides before anything leaves the building: a blocked
            //    name never reaches upstream, whatever the query type.
            let verdict = engine.matcher.lookup(name, asking.active);
            if let Some(b) = verdict
                .block()
                .filter(|b| !asking.who.group.allows(name, b))
            {
                let categories = engine.matcher.category_names(b.categories);
                return self.block(&engine, &asking, name, qname, b, &categories, None);
            }
            // …and the group's own deny lists, unless an allow entry outranks them.
            if let Some(b) = who.group.denies(name, &verdict) {
                return self.block(&engine, &asking, name, qname, &b, policy::GROUP_DENY, None);
            }
            // 6. Safe search: the search engine's enforced-safe host, as a CNAME.
            if let Some(target) =
                safe_search::target(name, who.group.safe_search, who.group.youtube)
            {
                return self
                    .safe_search(qname, target, &engine, &asking, name)
                    .await;
            }
        }

        // 7. Allowed: ask upstream, then 8. check its CNAME chain (inside forward).
        let shown = name.unwrap_or_else(|| query.name().to_string());
        self.forward(query.name(), &engine, &asking, &shown).await
    }

    /// Forward to upstream, and refuse an answer whose CNAME chain runs through a blocked
    /// name (no "CNAME cloaking" around the lists). `name` is the query as logged.
    async fn forward(
        &self,
        qname: &LowerName,
        engine: &Engine,
        asking: &Asking<'_>,
        name: &str,
    ) -> Reply {
        let answer = self.ask_upstream(Name::from(qname), asking.qtype).await;
        if let Answer::Records { answers, .. } = &answer {
            if let Some(reply) = self.check_chain(answers, qname, engine, asking, name) {
                return reply;
            }
        }
        if let Some(sink) = self
            .audit
            .as_ref()
            .filter(|_| engine.config.audit.log_allowed)
        {
            sink.record(asking.client.ip(), Outcome::Allowed, "", name, || {
                allowed_event(asking, name)
            });
        }
        Reply::from_upstream(answer)
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
        qname: &LowerName,
        engine: &Engine,
        asking: &Asking<'_>,
        name: &str,
    ) -> Option<Reply> {
        for record in answers {
            let RData::CNAME(target) = &record.data else {
                continue;
            };
            let Some(target_name) = normalised(&LowerName::from(&target.0)) else {
                continue;
            };
            let verdict = engine.matcher.lookup(&target_name, asking.active);
            let via = Some(target_name.as_str());
            if let Some(b) = verdict
                .block()
                .filter(|b| !asking.who.group.allows(&target_name, b))
            {
                let categories = engine.matcher.category_names(b.categories);
                let qname = Name::from(qname);
                return Some(self.block(engine, asking, name, &qname, b, &categories, via));
            }
            if let Some(b) = asking.who.group.denies(&target_name, &verdict) {
                let qname = Name::from(qname);
                return Some(self.block(engine, asking, name, &qname, &b, policy::GROUP_DENY, via));
            }
        }
        None
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
        let mode = asking
            .who
            .group
            .block_response
            .unwrap_or(engine.config.blocking.response);
        answer::blocked(
            &engine.config.blocking,
            mode,
            categories,
            qname,
            asking.qtype,
            block,
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
        if let Some(sink) = self
            .audit
            .as_ref()
            .filter(|_| engine.config.audit.log_allowed)
        {
            sink.record(asking.client.ip(), Outcome::Allowed, "", name, || Event {
                response: format!("safe-search:{target}"),
                ..allowed_event(asking, name)
            });
        }
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
            let mode = asking
                .who
                .group
                .block_response
                .unwrap_or(engine.config.blocking.response);
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
        self.blocked.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .block(policy::CIRCUMVENTION, &asking.who.group.name);
        tracing::debug!(target: "warden::block", client = %asking.client.ip(), name, "circumvention attempt");
        let locked = engine
            .config
            .categories
            .get(policy::CIRCUMVENTION)
            .is_some_and(|c| c.locked);
        if let Some(sink) = &self.audit {
            sink.record(
                asking.client.ip(),
                Outcome::Blocked,
                policy::CIRCUMVENTION,
                name,
                || Event {
                    categories: policy::CIRCUMVENTION.to_string(),
                    locked,
                    list: "built-in".to_string(),
                    line: 0,
                    rule: name.to_string(),
                    response: match kind {
                        policy::Special::NxDomain => "nxdomain",
                        policy::Special::NoData => "nodata",
                    }
                    .to_string(),
                    cname: None,
                    outcome: Outcome::Blocked,
                    ..allowed_event(asking, name)
                },
            );
        }
    }
}

/// Who asked what: the client, their group and device, the categories active for them
/// now, and the query type.
struct Asking<'a> {
    client: SocketAddr,
    who: Who<'a>,
    active: CategorySet,
    qtype: RecordType,
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

/// A query name in the matcher's form (see [`name::normalize_labels`]).
fn normalised(name: &LowerName) -> Option<String> {
    name::normalize_labels(name.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_wire_names() {
        let n = |s: &str| normalised(&LowerName::from(Name::from_ascii(s).unwrap()));
        assert_eq!(n("WwW.ExAmPlE.TeSt.").as_deref(), Some("www.example.test"));
        assert_eq!(n("_dmarc.a.test.").as_deref(), Some("_dmarc.a.test"));
        assert_eq!(n(".").as_deref(), Some(""));
        let spaced = Name::from_labels([&b"a b"[..], b"test"]).unwrap();
        assert_eq!(normalised(&LowerName::from(spaced)), None);
    }
}
