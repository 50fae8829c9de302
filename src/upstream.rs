//! Forwarding allowed queries to the upstream resolvers, through `hickory-resolver`.
//!
//! The resolver brings the response cache (positive and negative, TTLs counting down),
//! in-flight de-duplication, UDP with TCP fallback on truncation, and failover across
//! the configured servers (queried two at a time, so one dead server costs no extra
//! round of waiting). Every lookup is also bounded here by the configured timeout, so a
//! client gets SERVFAIL in bounded time, never a hang.
//!
//! A reload may change `[upstream]`: the [`LiveForwarder`] every query asks through
//! then swaps in a forwarder built from the new section (with an empty cache), and one
//! that leaves the section as it was keeps the forwarder serving, cache and all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tokio::sync::OnceCell;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, Record, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use crate::config::{ServerSpec, UpstreamConfig};
use crate::metrics::{Metrics, ResolverBridge};

/// A configured upstream that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("[upstream] servers is empty: name at least one resolver")]
    NoServers,
    #[error("cannot start the upstream resolver: {0}")]
    Resolver(String),
}

/// The resolver's description of one configured upstream server.
fn name_server(spec: &ServerSpec) -> NameServerConfig {
    let with_port = |mut c: ConnectionConfig, port| {
        c.port = port;
        c
    };
    match spec {
        ServerSpec::Udp(a) => NameServerConfig::new(
            a.ip(),
            true,
            vec![
                with_port(ConnectionConfig::udp(), a.port()),
                with_port(ConnectionConfig::tcp(), a.port()),
            ],
        ),
        ServerSpec::Tcp(a) => NameServerConfig::new(
            a.ip(),
            true,
            vec![with_port(ConnectionConfig::tcp(), a.port())],
        ),
        ServerSpec::Tls(a, name) => NameServerConfig::new(
            a.ip(),
            true,
            vec![with_port(
                ConnectionConfig::tls(Arc::from(name.as_str())),
                a.port(),
            )],
        ),
    }
}

/// What upstream said about a name.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An answer (rcode usually NOERROR), with the CNAME chain if any.
    Records {
        rcode: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
        authentic: bool,
    },
    /// NXDOMAIN or NODATA (`rcode` NOERROR), with the SOA for negative caching.
    Negative {
        rcode: ResponseCode,
        soa: Option<Box<Record>>,
    },
    /// Upstream answered with an error code (SERVFAIL, REFUSED, …).
    Refused(ResponseCode),
    /// No usable answer in time: every server failed or timed out.
    Unreachable,
}

/// The TTL of a stale answer (RFC 8767 section 4 recommends 30 seconds).
const STALE_TTL: u32 = 30;

type Key = (Name, RecordType);

/// The last good answer to a question, and when it stops being fresh.
#[derive(Clone)]
struct Kept {
    answer: Answer,
    expires: Instant,
}

/// The forwarder shared by every query.
#[derive(Clone)]
pub struct Forwarder {
    /// The section it was built from, to tell whether a reload changes it.
    config: UpstreamConfig,
    /// Where its resolver's counters go (for a forwarder built to replace it).
    bridge: Option<Arc<ResolverBridge>>,
    resolver: TokioResolver,
    timeout: Duration,
    serve_stale: Duration,
    capacity: usize,
    inflight: Arc<DashMap<Key, Arc<OnceCell<Answer>>, foldhash::fast::RandomState>>,
    stale: Arc<DashMap<Key, Kept, foldhash::fast::RandomState>>,
}

impl Forwarder {
    /// Build the resolver from `[upstream]`. Must run inside a tokio runtime.
    pub fn new(config: &UpstreamConfig) -> Result<Forwarder, UpstreamError> {
        Forwarder::build(config, None)
    }

    /// A forwarder for `config`, its counters going where this one's go.
    pub(crate) fn rebuilt(&self, config: &UpstreamConfig) -> Result<Forwarder, UpstreamError> {
        Forwarder::build(config, self.bridge.clone())
    }

    /// Was it built from this `[upstream]`?
    pub(crate) fn built_from(&self, config: &UpstreamConfig) -> bool {
        self.config == *config
    }

    /// As [`Forwarder::new`], with the resolver's cache hits, misses and upstream latency
    /// counted in `metrics`.
    pub(crate) fn instrumented(
        config: &UpstreamConfig,
        metrics: &Metrics,
    ) -> Result<Forwarder, UpstreamError> {
        Forwarder::build(config, Some(Arc::new(metrics.resolver_bridge())))
    }

    fn build(
        config: &UpstreamConfig,
        bridge: Option<Arc<ResolverBridge>>,
    ) -> Result<Forwarder, UpstreamError> {
        if config.servers.is_empty() {
            return Err(UpstreamError::NoServers);
        }
        let servers = config.servers.iter().map(name_server).collect::<Vec<_>>();
        let mut builder = Resolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioRuntimeProvider::default(),
        );
        let opts = builder.options_mut();
        opts.timeout = config.timeout;
        // One retry within the deadline below; the pool already tries other servers.
        opts.attempts = 1;
        opts.cache_size = config.cache_size;
        opts.use_hosts_file = ResolveHosts::Never; // never answer from this machine's /etc/hosts
        opts.num_concurrent_reqs = 2;
        opts.server_ordering_strategy = ServerOrderingStrategy::QueryStatistics;
        opts.preserve_intermediates = true; // keep CNAME chains: they are checked for cloaking
                                            // Per-server response counts (with a global recorder, see `metrics`): upstream health.
        opts.enable_per_name_server_metrics = bridge.is_some();
        // hickory registers its counters while building, with whatever `metrics` recorder
        // is current: ours for this call only, so several forwarders can coexist.
        let resolver = match &bridge {
            Some(b) => ::metrics::with_local_recorder(b.as_ref(), || builder.build()),
            None => builder.build(),
        }
        .map_err(|e| UpstreamError::Resolver(e.to_string()))?;
        Ok(Forwarder {
            config: config.clone(),
            bridge,
            resolver,
            timeout: config.timeout,
            serve_stale: config.serve_stale,
            capacity: config.cache_size.max(1) as usize,
            inflight: Arc::default(),
            stale: Arc::default(),
        })
    }

    /// Resolve `name` (fully qualified) for `qtype`, within the configured timeout,
    /// sharing the lookup with identical questions in flight, and falling back to a
    /// stale answer when upstream fails.
    pub(crate) async fn forward(&self, name: Name, qtype: RecordType) -> Answer {
        let key = (name, qtype);
        let cell = self.inflight.entry(key.clone()).or_default().clone();
        let answer = cell
            .get_or_init(|| async {
                let answer = self.lookup(key.0.clone(), qtype).await;
                // Later questions start a lookup of their own (usually a cache hit).
                self.inflight.remove(&key);
                answer
            })
            .await
            .clone();
        match answer {
            Answer::Records { .. } | Answer::Negative { .. } => {
                self.keep(&key, &answer);
                answer
            }
            Answer::Refused(_) | Answer::Unreachable => self.stale_or(&key, answer),
        }
    }

    /// Remember a good answer for serve-stale, unless a fresh copy is kept already (so a
    /// cached hot name costs one map read, not a copy per query).
    fn keep(&self, key: &Key, answer: &Answer) {
        if self.serve_stale.is_zero() {
            return;
        }
        let now = Instant::now();
        if self.stale.get(key).is_some_and(|k| k.expires > now) {
            return;
        }
        if self.stale.len() >= self.capacity {
            // Full: drop everything past its stale window, then, if still full, skip
            // (the oldest answers are the least useful ones to serve stale anyway).
            let window = self.serve_stale;
            self.stale.retain(|_, k| k.expires + window > now);
            if self.stale.len() >= self.capacity {
                return;
            }
        }
        let ttl = answer_ttl(answer);
        self.stale.insert(
            key.clone(),
            Kept {
                answer: answer.clone(),
                expires: now + Duration::from_secs(u64::from(ttl)),
            },
        );
    }

    /// The kept answer, with short TTLs, if it expired less than `serve_stale` ago;
    /// otherwise `failed`.
    fn stale_or(&self, key: &Key, failed: Answer) -> Answer {
        let now = Instant::now();
        let Some(kept) = self.stale.get(key) else {
            return failed;
        };
        if kept.expires + self.serve_stale < now {
            return failed;
        }
        tracing::debug!(name = %key.0, qtype = %key.1, "upstream failed: serving a stale answer");
        with_ttl(kept.answer.clone(), STALE_TTL)
    }

    /// One lookup through the resolver, within the configured timeout.
    async fn lookup(&self, name: Name, qtype: RecordType) -> Answer {
        let lookup = self.resolver.lookup(name, qtype);
        match tokio::time::timeout(self.timeout, lookup).await {
            Err(_elapsed) => Answer::Unreachable,
            Ok(Ok(lookup)) => {
                let message = lookup.message();
                Answer::Records {
                    rcode: message.metadata.response_code,
                    answers: lookup.answers().to_vec(),
                    authorities: lookup.authorities().to_vec(),
                    authentic: message.metadata.authentic_data,
                }
            }
            Ok(Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords {
                response_code,
                soa,
                ..
            })))) => Answer::Negative {
                rcode: response_code,
                soa: soa.map(|s| Box::new(s.into_record_of_rdata())),
            },
            Ok(Err(NetError::Dns(DnsError::ResponseCode(code)))) => Answer::Refused(code),
            Ok(Err(_)) => Answer::Unreachable,
        }
    }
}

/// The forwarder serving now, behind an `ArcSwap` so a reload can replace it while
/// queries run (each query asks the one it loaded; the old one is dropped after the
/// last). Reloads call [`LiveForwarder::prepare`] before swapping the snapshot (a
/// forwarder that cannot be built rejects the reload, nothing changed) and
/// [`LiveForwarder::install`] after.
pub(crate) struct LiveForwarder {
    serving: ArcSwap<Forwarder>,
}

impl LiveForwarder {
    pub fn new(forwarder: Forwarder) -> LiveForwarder {
        LiveForwarder {
            serving: ArcSwap::from_pointee(forwarder),
        }
    }

    /// The forwarder to ask now.
    pub fn current(&self) -> Arc<Forwarder> {
        self.serving.load_full()
    }

    /// A forwarder for `config` if it differs from the serving one's `[upstream]`;
    /// `None` if it is the same (the serving one stays, and its cache with it). Must
    /// run inside a tokio runtime.
    pub fn prepare(&self, config: &UpstreamConfig) -> Result<Option<Forwarder>, UpstreamError> {
        let serving = self.serving.load();
        if serving.built_from(config) {
            return Ok(None);
        }
        serving.rebuilt(config).map(Some)
    }

    /// Serve with `forwarder` from the next query on.
    pub fn install(&self, forwarder: Forwarder) {
        self.serving.store(Arc::new(forwarder));
    }
}

/// The shortest TTL among an answer's records (how long it stays fresh).
fn answer_ttl(answer: &Answer) -> u32 {
    match answer {
        Answer::Records { answers, .. } => answers.iter().map(|r| r.ttl).min().unwrap_or(0),
        Answer::Negative { soa, .. } => soa.as_ref().map_or(0, |s| s.ttl),
        _ => 0,
    }
}

fn with_ttl(answer: Answer, ttl: u32) -> Answer {
    match answer {
        Answer::Records {
            rcode,
            mut answers,
            authorities,
            authentic,
        } => {
            for record in &mut answers {
                record.ttl = record.ttl.min(ttl);
            }
            Answer::Records {
                rcode,
                answers,
                authorities,
                authentic,
            }
        }
        Answer::Negative { rcode, mut soa } => {
            if let Some(soa) = soa.as_mut() {
                soa.ttl = soa.ttl.min(ttl);
            }
            Answer::Negative { rcode, soa }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_a_resolver_for_every_server_form() {
        let text = "[upstream]\nservers = [\"127.0.0.1:5300\", \"tcp://[::1]:5300\", \
                    \"tls://127.0.0.1:8853@dns.example\"]\ntimeout = \"500ms\"\n";
        let config = crate::config::Config::parse(text, std::path::Path::new("w.toml")).unwrap();
        let forwarder = Forwarder::new(&config.upstream).unwrap();
        assert_eq!(forwarder.timeout, Duration::from_millis(500));
    }

    #[tokio::test]
    async fn a_changed_upstream_builds_a_new_forwarder_and_the_same_one_keeps_it() {
        let parse = |text: &str| {
            crate::config::Config::parse(text, std::path::Path::new("w.toml"))
                .unwrap()
                .upstream
        };
        let first = parse("[upstream]\nservers = [\"127.0.0.1:5300\"]\n");
        let live = LiveForwarder::new(Forwarder::new(&first).unwrap());
        // The same section (however written) keeps the serving forwarder.
        let same = parse("[upstream]\nservers = [ \"127.0.0.1:5300\" ]\ncache_size = 8192\n");
        assert!(live.prepare(&same).unwrap().is_none());
        for changed in [
            "[upstream]\nservers = [\"127.0.0.1:5301\"]\n",
            "[upstream]\nservers = [\"127.0.0.1:5300\"]\ntimeout = \"700ms\"\n",
            "[upstream]\nservers = [\"127.0.0.1:5300\"]\ncache_size = 7\n",
            "[upstream]\nservers = [\"127.0.0.1:5300\"]\nserve_stale = \"0s\"\n",
        ] {
            let config = parse(changed);
            let built = live.prepare(&config).unwrap().expect(changed);
            assert!(built.built_from(&config), "{changed}");
        }
        let next = parse("[upstream]\nservers = [\"127.0.0.1:5301\"]\ntimeout = \"700ms\"\n");
        live.install(live.prepare(&next).unwrap().unwrap());
        assert_eq!(live.current().timeout, Duration::from_millis(700));
        assert!(live.prepare(&next).unwrap().is_none());
    }
}
