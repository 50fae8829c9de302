//! Serving DNS: the hickory `RequestHandler` whose [`Handler::resolve`] is the whole
//! query path, read top to bottom; answer building lives in [`answer`], the UDP/TCP
//! listeners in [`server`].
//!
//! The handler reads one immutable [`Engine`] snapshot per query (one atomic load from
//! an `ArcSwap`), so a reload never pauses or half-changes a query in flight.

pub mod answer;
pub mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};

use crate::audit::{Event, Outcome, Sink};
use crate::engine::Engine;
use crate::filter::Block;
use crate::metrics::Metrics;
use crate::name;
use crate::upstream::{Answer, Forwarder};
use answer::Reply;

pub use server::{start, RunningServer, ServeError};

/// The query handler: the engine snapshot, the upstream forwarder, the audit sink and
/// the metrics.
pub struct Handler {
    engine: Arc<ArcSwap<Engine>>,
    forwarder: Forwarder,
    audit: Option<Sink>,
    blocked: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl Handler {
    pub fn new(engine: Arc<ArcSwap<Engine>>, forwarder: Forwarder) -> Handler {
        Handler {
            engine,
            forwarder,
            audit: None,
            blocked: Arc::new(AtomicU64::new(0)),
            metrics: Arc::new(Metrics::new()),
        }
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

    /// One query's path. Each stage returns early with its reply.
    pub async fn resolve(&self, request: &Request) -> Reply {
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
        let client = request.src();

        // 2. Normalise the name once; everything after compares this form. A name with
        //    octets no list entry can hold cannot match a rule itself, but its answer's
        //    CNAME chain is still checked below.
        let name = normalised(query.name());

        // 3. Who is asking decides which categories apply. Until client groups exist,
        //    every client is in the default group (locked categories always included).
        let engine = self.engine.load_full();
        let active = engine.default_active();

        // 4. The matcher decides before anything leaves the building: a blocked name
        //    never reaches upstream, whatever the query type.
        if let Some(name) = &name {
            if let Some(block) = engine.matcher.lookup(name, active).block() {
                self.report_block(&engine, client, name, qtype, block, None);
                return answer::blocked(
                    &engine.config.blocking,
                    &engine,
                    query.original().name(),
                    qtype,
                    block,
                );
            }
        }

        // 5. Allowed: ask upstream, then 6. check its CNAME chain (inside forward).
        let shown = name.unwrap_or_else(|| query.name().to_string());
        self.forward(query.name(), qtype, client, &engine, &shown)
            .await
    }

    /// Forward to upstream, and refuse an answer whose CNAME chain runs through a blocked
    /// name (no "CNAME cloaking" around the lists). `name` is the query as logged.
    async fn forward(
        &self,
        qname: &LowerName,
        qtype: RecordType,
        client: SocketAddr,
        engine: &Engine,
        name: &str,
    ) -> Reply {
        let answer = self.forwarder.forward(Name::from(qname), qtype).await;
        match &answer {
            Answer::Unreachable => self.metrics.upstream_error("unreachable"),
            Answer::Refused(ResponseCode::ServFail) => self.metrics.upstream_error("servfail"),
            Answer::Refused(ResponseCode::Refused) => self.metrics.upstream_error("refused"),
            Answer::Refused(_) => self.metrics.upstream_error("other_rcode"),
            _ => {}
        }
        if let Answer::Records { answers, .. } = &answer {
            let active = engine.default_active();
            for record in answers {
                let RData::CNAME(target) = &record.data else {
                    continue;
                };
                let Some(target_name) = normalised(&LowerName::from(&target.0)) else {
                    continue;
                };
                if let Some(block) = engine.matcher.lookup(&target_name, active).block() {
                    self.report_block(engine, client, name, qtype, block, Some(&target_name));
                    return answer::blocked(
                        &engine.config.blocking,
                        engine,
                        &Name::from(qname),
                        qtype,
                        block,
                    );
                }
            }
        }
        if let Some(sink) = self
            .audit
            .as_ref()
            .filter(|_| engine.config.audit.log_allowed)
        {
            sink.record(client.ip(), Outcome::Allowed, "", name, || {
                allowed_event(engine, client, name, qtype)
            });
        }
        Reply::from_upstream(answer)
    }

    /// Count a block, record it for the audit log, and trace it (at DEBUG: names are
    /// personal data, and the audit log is where they belong).
    fn report_block(
        &self,
        engine: &Engine,
        client: SocketAddr,
        name: &str,
        qtype: RecordType,
        block: &Block<'_>,
        via_cname: Option<&str>,
    ) {
        self.blocked.fetch_add(1, Ordering::Relaxed);
        let categories = engine.matcher.category_names(block.categories);
        self.metrics
            .block(&categories, &engine.config.server.default_group);
        tracing::debug!(
            target: "warden::block",
            client = %client.ip(),
            name,
            qtype = %qtype,
            categories = %categories,
            locked = block.locked,
            list = block.rule.list_name(),
            line = block.rule.line(),
            cname = via_cname.unwrap_or(""),
            "blocked"
        );
        if let Some(sink) = &self.audit {
            sink.record(client.ip(), Outcome::Blocked, &categories, name, || Event {
                categories: categories.to_string(),
                locked: block.locked,
                list: block.rule.list_name().to_string(),
                line: block.rule.line(),
                rule: block.rule.text(),
                response: engine.config.blocking.response.as_str().to_string(),
                cname: via_cname.map(str::to_string),
                outcome: Outcome::Blocked,
                ..allowed_event(engine, client, name, qtype)
            });
        }
    }
}

/// The audit event of an allowed query (recorded only with `[audit] log_allowed`); a
/// block's event is this one with the rule's details.
fn allowed_event(engine: &Engine, client: SocketAddr, name: &str, qtype: RecordType) -> Event {
    Event {
        time: SystemTime::now(),
        client: client.ip(),
        device: None,
        group: engine.config.server.default_group.clone(),
        name: name.to_string(),
        qtype: qtype.to_string(),
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
        self.metrics.query(reply.outcome, qtype);
        answer::send(request, reply, responder).await
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
