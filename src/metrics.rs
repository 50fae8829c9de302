//! Prometheus metrics: one registry per running Warden, rendered at `/metrics`.
//!
//! Labels stay low-cardinality on purpose: outcomes, query-type classes, categories,
//! groups and list names, never query names or client addresses (those are personal
//! data, and belong in the audit log, which has a retention policy).
//!
//! Three ways numbers arrive here:
//! - the query path increments pre-resolved counters (no label lookup per allowed query);
//! - the reloader and the list sources record what they did as they do it;
//! - counters kept elsewhere (the audit writer's, hickory's cache) are read or bridged:
//!   the audit figures are copied in when `/metrics` is scraped, and hickory-resolver's
//!   own `metrics`-crate counters are routed into this registry by [`ResolverBridge`];
//!   the lists' freshness is read from their copies on disk at each scrape too, since a
//!   `warden lists update` run as another process refreshes them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hickory_proto::rr::RecordType;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::audit::writer::WriterStats;
use crate::audit::Sink;
use crate::lists::LoadedList;
use crate::sync::lock;

/// Reads the lists' freshness for [`Metrics::watch_list_freshness`].
pub(crate) type FreshnessFn = dyn Fn() -> Vec<ListFreshness> + Send + Sync;

/// One list's freshness as its copy on disk records it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListFreshness {
    pub list: String,
    /// The last successful check of its source, by whichever process made it.
    pub checked_at: Option<SystemTime>,
    /// For a list with a `max_age`: whether it is stale now.
    pub stale: Option<bool>,
}

/// How a query ended, as counted in `warden_queries_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryOutcome {
    /// Answered with a block.
    Blocked,
    /// Forwarded and answered (including upstream's NXDOMAIN or NODATA).
    Allowed,
    /// Upstream failed, timed out or refused: the client got SERVFAIL or upstream's error.
    UpstreamFailed,
    /// Refused by policy (a client outside `allow_networks`, a class other than IN, …).
    Refused,
    /// Over the client's rate limit (answered REFUSED or dropped).
    RateLimited,
    /// Malformed or unsupported (several questions, an unknown opcode or EDNS version).
    Invalid,
}

impl QueryOutcome {
    const ALL: [QueryOutcome; 6] = [
        QueryOutcome::Blocked,
        QueryOutcome::Allowed,
        QueryOutcome::UpstreamFailed,
        QueryOutcome::Refused,
        QueryOutcome::RateLimited,
        QueryOutcome::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueryOutcome::Blocked => "blocked",
            QueryOutcome::Allowed => "allowed",
            QueryOutcome::UpstreamFailed => "upstream_failed",
            QueryOutcome::Refused => "refused",
            QueryOutcome::RateLimited => "rate_limited",
            QueryOutcome::Invalid => "invalid",
        }
    }
}

/// Query types with their own label; everything else is "other".
const QTYPE_CLASSES: [&str; 11] = [
    "A", "AAAA", "HTTPS", "SVCB", "CNAME", "MX", "TXT", "PTR", "SRV", "NS", "other",
];

fn qtype_class(qtype: Option<RecordType>) -> usize {
    let class = match qtype {
        Some(RecordType::A) => "A",
        Some(RecordType::AAAA) => "AAAA",
        Some(RecordType::HTTPS) => "HTTPS",
        Some(RecordType::SVCB) => "SVCB",
        Some(RecordType::CNAME) => "CNAME",
        Some(RecordType::MX) => "MX",
        Some(RecordType::TXT) => "TXT",
        Some(RecordType::PTR) => "PTR",
        Some(RecordType::SRV) => "SRV",
        Some(RecordType::NS) => "NS",
        _ => "other",
    };
    QTYPE_CLASSES
        .iter()
        .position(|c| *c == class)
        .unwrap_or(QTYPE_CLASSES.len() - 1)
}

/// The transport a query came over, as logs and `/metrics` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    /// DNS over TLS (RFC 7858).
    Tls,
    /// DNS over HTTPS (RFC 8484).
    Https,
}

impl Transport {
    pub const ALL: [Transport; 4] = [
        Transport::Udp,
        Transport::Tcp,
        Transport::Tls,
        Transport::Https,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "dot",
            Transport::Https => "doh",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every metric Warden exports, by family.
pub struct Metrics {
    registry: Registry,
    query: QueryMetrics,
    lists: ListMetrics,
    reload: ReloadMetrics,
    audit: AuditMetrics,
    alerts: AlertMetrics,
    fleet: FleetMetrics,
    identity: IdentityMetrics,
    selftest: SelfTestMetrics,
    /// Read at each scrape: list freshness as the copies on disk record it.
    list_freshness: Mutex<Option<Box<FreshnessFn>>>,
    /// Where the audit figures are read from at scrape time, if auditing is on.
    audit_source: Mutex<Option<(Sink, Arc<WriterStats>)>>,
    /// The last self-test in words, for the fleet heartbeat.
    selftest_summary: Mutex<String>,
    names: Vec<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Queries answered, blocks, and the upstream servers and cache behind the answers.
struct QueryMetrics {
    /// `[outcome][qtype class]`, resolved once so a query costs one atomic add.
    queries: Vec<Vec<IntCounter>>,
    blocks: IntCounterVec,
    upstream_errors: IntCounterVec,
    upstream_responses: IntCounterVec,
    upstream_duration: Histogram,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    /// By [`Transport::ALL`]'s order.
    transports: Vec<IntCounter>,
    handshakes: IntCounterVec,
}

impl QueryMetrics {
    fn register(r: &Registrar<'_>) -> QueryMetrics {
        let query_vec = r.counter_vec(
            "warden_queries_total",
            "DNS queries answered, by outcome and query type",
            &["outcome", "qtype"],
        );
        let queries = QueryOutcome::ALL
            .iter()
            .map(|o| {
                QTYPE_CLASSES
                    .iter()
                    .map(|q| query_vec.with_label_values(&[o.as_str(), q]))
                    .collect()
            })
            .collect();
        QueryMetrics {
            queries,
            blocks: r.counter_vec(
                "warden_blocks_total",
                "Blocked answers, by category (each category of a multi-category rule) and client group",
                &["category", "group"],
            ),
            upstream_errors: r.counter_vec(
                "warden_upstream_errors_total",
                "Forwarded queries that got no usable answer, by kind",
                &["kind"],
            ),
            upstream_responses: r.counter_vec(
                "warden_upstream_responses_total",
                "Responses (or failures) from each upstream server, by status: its health",
                &["server", "status"],
            ),
            upstream_duration: r.seconds(
                "warden_upstream_duration_seconds",
                "Time upstream took to answer queries not in the cache",
                vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            ),
            cache_hits: r.counter("warden_cache_hits_total", "Allowed queries answered from the cache"),
            cache_misses: r.counter(
                "warden_cache_misses_total",
                "Allowed queries that had to ask upstream",
            ),
            handshakes: r.counter_vec(
                "warden_tls_handshakes_total",
                "TLS handshakes on the encrypted listeners, by transport (dot, doh) and result (ok, failed, timeout)",
                &["transport", "result"],
            ),
            transports: {
                let by_transport = r.counter_vec(
                    "warden_queries_by_transport_total",
                    "DNS queries received, by transport (udp, tcp, dot, doh)",
                    &["transport"],
                );
                Transport::ALL
                    .iter()
                    .map(|t| by_transport.with_label_values(&[t.as_str()]))
                    .collect()
            },
        }
    }
}

/// The lists: rules serving, and how their sources are refreshing.
struct ListMetrics {
    rules_per_list: IntGaugeVec,
    rules_per_category: IntGaugeVec,
    list_refresh_failures: IntCounterVec,
    list_refreshes: IntCounterVec,
    list_last_success: GaugeVec,
    list_stale: IntGaugeVec,
    list_missing: IntGaugeVec,
}

impl ListMetrics {
    fn register(r: &Registrar<'_>) -> ListMetrics {
        ListMetrics {
            rules_per_list: r.gauge_vec(
                "warden_list_rules",
                "Rules loaded from each list in the serving snapshot",
                &["list", "category"],
            ),
            rules_per_category: r.gauge_vec(
                "warden_category_rules",
                "Rules loaded per category in the serving snapshot",
                &["category"],
            ),
            list_refresh_failures: r.counter_vec(
                "warden_list_refresh_failures_total",
                "Failed or rejected list updates (download, parse, shrink guard), by list",
                &["list"],
            ),
            list_refreshes: r.counter_vec(
                "warden_list_refreshes_total",
                "List source checks, by list and result (updated, not_modified)",
                &["list", "result"],
            ),
            list_last_success: r.float_gauge_vec(
                "warden_list_last_success_timestamp_seconds",
                "When each list source last refreshed successfully (Unix time)",
                &["list"],
            ),
            list_stale: r.gauge_vec(
                "warden_list_stale",
                "1 when a locked list has not refreshed within its max_age (it keeps blocking \
                 if it has a copy; see warden_list_missing)",
                &["list"],
            ),
            list_missing: r.gauge_vec(
                "warden_list_missing",
                "1 when a url list has no downloaded copy in the serving rules: it blocks nothing",
                &["list"],
            ),
        }
    }
}

/// Reloads, and the snapshot serving.
struct ReloadMetrics {
    reloads: IntCounter,
    reload_failures: IntCounter,
    reload_duration: Histogram,
    snapshot_generation: IntGauge,
    snapshot_loaded: Gauge,
    snapshot_age: Gauge,
    restart_needed: IntGaugeVec,
}

impl ReloadMetrics {
    fn register(r: &Registrar<'_>) -> ReloadMetrics {
        ReloadMetrics {
            reloads: r.counter("warden_reloads_total", "Snapshot reloads attempted"),
            reload_failures: r.counter(
                "warden_reload_failures_total",
                "Snapshot reloads rejected (the previous rules stayed in force)",
            ),
            reload_duration: r.seconds(
                "warden_reload_duration_seconds",
                "Time to build and swap in a new snapshot",
                vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            snapshot_generation: r.gauge(
                "warden_snapshot_generation",
                "Number of the serving snapshot (1 at start, +1 per successful reload)",
            ),
            snapshot_loaded: r.float_gauge(
                "warden_snapshot_loaded_timestamp_seconds",
                "When the serving snapshot was swapped in (Unix time)",
            ),
            snapshot_age: r.float_gauge(
                "warden_snapshot_age_seconds",
                "Seconds since the serving snapshot was swapped in",
            ),
            restart_needed: r.gauge_vec(
                "warden_restart_needed",
                "1 when the config file changes a setting the running process read only at \
                 start-up (it keeps the old value until restarted); 0 once a reload puts it back",
                &["setting"],
            ),
        }
    }
}

/// The audit log's queue and writer (copied in at each scrape).
struct AuditMetrics {
    audit_queue_depth: IntGauge,
    audit_events: IntCounter,
    audit_rows_written: IntCounter,
    audit_write_errors: IntCounter,
    audit_folded: IntCounter,
    audit_pending: IntGauge,
}

impl AuditMetrics {
    fn register(r: &Registrar<'_>) -> AuditMetrics {
        AuditMetrics {
            audit_queue_depth: r.gauge(
                "warden_audit_queue_depth",
                "Audit events waiting for the writer",
            ),
            audit_events: r.counter(
                "warden_audit_events_total",
                "Events offered to the audit log",
            ),
            audit_rows_written: r.counter(
                "warden_audit_rows_written_total",
                "Audit rows inserted or updated in the store",
            ),
            audit_write_errors: r.counter(
                "warden_audit_write_errors_total",
                "Failed audit writes (retried; nothing is dropped while the writer runs)",
            ),
            audit_folded: r.counter(
                "warden_audit_folded_total",
                "Audit events folded into per-client or overflow rows under a flood",
            ),
            audit_pending: r.gauge(
                "warden_audit_pending",
                "Audit events answered but not yet committed to the log (queued, or held \
                 for a retry after a failed write)",
            ),
        }
    }
}

/// Alert messages and their deliveries.
struct AlertMetrics {
    alerts_raised: IntCounterVec,
    alert_deliveries: IntCounterVec,
    alerts_pending: IntGauge,
    alerts_held: IntGauge,
}

impl AlertMetrics {
    fn register(r: &Registrar<'_>) -> AlertMetrics {
        AlertMetrics {
            alerts_raised: r.counter_vec(
                "warden_alerts_total",
                "Alert messages raised for blocks in alerting categories, by kind (alert, digest)",
                &["kind"],
            ),
            alert_deliveries: r.counter_vec(
                "warden_alert_deliveries_total",
                "Alert delivery attempts, by channel (webhook, email) and result (ok; failed, \
                 to be retried; gave-up, the last attempt failed)",
                &["channel", "result"],
            ),
            alerts_pending: r.gauge(
                "warden_alerts_pending",
                "Alert deliveries not yet done: being sent or waiting to be retried",
            ),
            alerts_held: r.gauge(
                "warden_alerts_held",
                "Blocks held for a digest (repeats within a device and category's rate window)",
            ),
        }
    }
}

/// The self-test (`crate::selftest`).
struct SelfTestMetrics {
    ok: IntGaugeVec,
    runs: IntCounterVec,
    last_run: Gauge,
}

impl SelfTestMetrics {
    fn register(r: &Registrar<'_>) -> SelfTestMetrics {
        SelfTestMetrics {
            ok: r.gauge_vec(
                "warden_selftest_ok",
                "1 if the last self-test found this group's category (or safe-search, youtube) \
                 filtered as configured, 0 if not",
                &["group", "category"],
            ),
            runs: r.counter_vec(
                "warden_selftest_runs_total",
                "Self-test runs, by result (pass: every check passed; fail)",
                &["result"],
            ),
            last_run: r.float_gauge(
                "warden_selftest_last_run_timestamp_seconds",
                "When the last self-test ran (Unix time)",
            ),
        }
    }
}

/// Shipping the audit log to the trust's central store (`[fleet]`).
struct FleetMetrics {
    shipped: IntCounter,
    errors: IntCounter,
    backlog_rows: IntGauge,
    backlog_age: Gauge,
    policy_version: IntGauge,
    policy_refused: IntGauge,
    policy_notes: IntGauge,
    /// On the fleet dashboard: every site's state from its last heartbeat.
    site_silent: IntGaugeVec,
    site_policy_behind: IntGaugeVec,
    site_policy_refused: IntGaugeVec,
    site_heartbeat_age: GaugeVec,
}

impl FleetMetrics {
    fn register(r: &Registrar<'_>) -> FleetMetrics {
        FleetMetrics {
            shipped: r.counter(
                "warden_fleet_shipped_rows_total",
                "Sealed audit rows the central store confirmed",
            ),
            errors: r.counter(
                "warden_fleet_errors_total",
                "Failed attempts to reach or write the central store (each retried)",
            ),
            backlog_rows: r.gauge(
                "warden_fleet_backlog_rows",
                "Sealed audit rows not shipped to the central store yet",
            ),
            backlog_age: r.float_gauge(
                "warden_fleet_backlog_age_seconds",
                "How long ago the oldest unshipped sealed row was first seen (0: none waiting)",
            ),
            policy_version: r.gauge(
                "warden_fleet_policy_version",
                "The version of the trust's policy this site applies (0: none yet)",
            ),
            policy_refused: r.gauge(
                "warden_fleet_policy_refused_version",
                "A newer policy version this site refused (0: none); the last good one stays",
            ),
            policy_notes: r.gauge(
                "warden_fleet_policy_conflicts",
                "Entries of the trust's policy this site leaves out or cannot apply as written",
            ),
            site_silent: r.gauge_vec(
                "warden_fleet_site_silent",
                "Fleet dashboard: 1 if the site has sent no heartbeat within [fleet] silent_after",
                &["site"],
            ),
            site_policy_behind: r.gauge_vec(
                "warden_fleet_site_policy_behind",
                "Fleet dashboard: policy versions the site is behind the newest",
                &["site"],
            ),
            site_policy_refused: r.gauge_vec(
                "warden_fleet_site_policy_refused",
                "Fleet dashboard: 1 if the site refused the newest policy version",
                &["site"],
            ),
            site_heartbeat_age: r.float_gauge_vec(
                "warden_fleet_site_heartbeat_age_seconds",
                "Fleet dashboard: seconds since the site's last heartbeat",
                &["site"],
            ),
        }
    }
}

/// Who is signed in where: RADIUS accounting, sign-in feeds, the sign-ins held.
struct IdentityMetrics {
    radius_packets: IntCounterVec,
    feed_requests: IntCounterVec,
    signed_in: IntGauge,
}

impl IdentityMetrics {
    fn register(r: &Registrar<'_>) -> IdentityMetrics {
        IdentityMetrics {
            radius_packets: r.counter_vec(
                "warden_radius_packets_total",
                "RADIUS accounting packets by result: signed_in, signed_out, nothing, refused \
                 (answered); bad_authenticator, malformed, not_accounting, unknown_client (dropped)",
                &["result"],
            ),
            feed_requests: r.counter_vec(
                "warden_signin_feed_requests_total",
                "Sign-in feed requests by feed and result (ok, refused, bad_token)",
                &["feed", "result"],
            ),
            signed_in: r.gauge(
                "warden_signed_in_users",
                "Addresses with a signed-in user now (RADIUS, sign-in feeds, sessions file)",
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = Registrar(&registry, Default::default());
        // Registered family by family, in this order (see `names`).
        let query = QueryMetrics::register(&r);
        let lists = ListMetrics::register(&r);
        let reload = ReloadMetrics::register(&r);
        let audit = AuditMetrics::register(&r);
        let alerts = AlertMetrics::register(&r);
        let fleet = FleetMetrics::register(&r);
        let identity = IdentityMetrics::register(&r);
        let selftest = SelfTestMetrics::register(&r);
        Metrics {
            selftest,
            query,
            lists,
            reload,
            audit,
            alerts,
            fleet,
            identity,
            list_freshness: Mutex::new(None),
            audit_source: Mutex::new(None),
            selftest_summary: Mutex::new(String::new()),
            names: r.1.take(),
            registry,
        }
    }

    /// The name of every metric family registered (including labelled ones with no
    /// series yet, which `/metrics` leaves out until their first sample).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The last self-test in words (`14 of 14 checks pass at …; failing: …`), empty
    /// before the first.
    pub fn selftest_summary(&self) -> String {
        crate::sync::lock(&self.selftest_summary).clone()
    }

    /// A self-test's results: `ok` per (group, category), replacing the last run's (a
    /// group or category no longer checked leaves the metric), and the run in words.
    pub fn selftest(
        &self,
        results: &[(String, String, bool)],
        at: std::time::SystemTime,
        summary: String,
    ) {
        *crate::sync::lock(&self.selftest_summary) = summary;
        let gauges = &self.selftest.ok;
        gauges.reset();
        for (group, category, ok) in results {
            gauges
                .with_label_values(&[group.as_str(), category.as_str()])
                .set(i64::from(*ok));
        }
        let passed = results.iter().all(|(_, _, ok)| *ok);
        self.selftest
            .runs
            .with_label_values(&[if passed { "pass" } else { "fail" }])
            .inc();
        let seconds = at
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.selftest.last_run.set(seconds);
    }

    /// Count one answered query.
    pub fn query(&self, outcome: QueryOutcome, qtype: Option<RecordType>) {
        let row = QueryOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.query.queries[row][qtype_class(qtype)].inc();
    }

    /// One query received over `transport`.
    pub(crate) fn transport(&self, transport: Transport) {
        let row = Transport::ALL
            .iter()
            .position(|t| *t == transport)
            .unwrap_or(0);
        self.query.transports[row].inc();
    }

    /// One TLS handshake on an encrypted listener, by result.
    pub(crate) fn handshake(&self, transport: Transport, result: &str) {
        self.query
            .handshakes
            .with_label_values(&[transport.as_str(), result])
            .inc();
    }

    /// Count one block under each of its categories.
    pub fn block(&self, categories: &str, group: &str) {
        for category in categories.split(',').filter(|c| !c.is_empty()) {
            self.query
                .blocks
                .with_label_values(&[category, group])
                .inc();
        }
    }

    /// An allowed query answered from the DNS answer cache (counted with the
    /// resolver's own cache hits).
    pub(crate) fn answer_cache_hit(&self) {
        self.query.cache_hits.inc();
    }

    pub(crate) fn upstream_error(&self, kind: &str) {
        self.query.upstream_errors.with_label_values(&[kind]).inc();
    }

    /// A reload attempt ended; on success `lists` are those of the new serving snapshot.
    pub(crate) fn reload_done(
        &self,
        elapsed: Duration,
        generation: u64,
        lists: Option<&[LoadedList]>,
    ) {
        self.reload.reloads.inc();
        self.reload.reload_duration.observe(elapsed.as_secs_f64());
        match lists {
            Some(lists) => self.snapshot_swapped(generation, lists),
            None => self.reload.reload_failures.inc(),
        }
    }

    /// Describe the snapshot now serving (its generation and `lists`, as loaded): time,
    /// rules per list and category.
    pub(crate) fn snapshot_swapped(&self, generation: u64, lists: &[LoadedList]) {
        self.reload.snapshot_generation.set(generation as i64);
        self.reload
            .snapshot_loaded
            .set(unix_seconds(SystemTime::now()));
        self.lists.rules_per_list.reset();
        self.lists.rules_per_category.reset();
        self.lists.list_missing.reset();
        for list in lists {
            let category = list.category.as_deref().unwrap_or("allow");
            let rules = list.report.accepted as i64;
            self.lists
                .rules_per_list
                .with_label_values(&[&list.name, category])
                .set(rules);
            self.lists
                .rules_per_category
                .with_label_values(&[category])
                .add(rules);
            if list.category.is_some() {
                self.lists
                    .list_missing
                    .with_label_values(&[&list.name])
                    .set(i64::from(list.missing));
            }
        }
    }

    /// One RADIUS accounting packet, by what became of it.
    pub(crate) fn radius_packet(&self, result: &str) {
        self.identity
            .radius_packets
            .with_label_values(&[result])
            .inc();
    }

    /// One sign-in feed request (`feed`: its configured name, or `unknown` for a bad
    /// token), by result.
    pub(crate) fn feed_request(&self, feed: &str, result: &str) {
        self.identity
            .feed_requests
            .with_label_values(&[feed, result])
            .inc();
    }

    /// How many addresses have someone signed in.
    pub(crate) fn signed_in(&self, count: usize) {
        self.identity
            .signed_in
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Whether `setting` (named as in the file: `[server] listen`) needs a restart to
    /// take the config file's value.
    pub fn restart_needed(&self, setting: &str, needed: bool) {
        self.reload
            .restart_needed
            .with_label_values(&[setting])
            .set(i64::from(needed));
    }

    /// A list source was checked: `updated` (new content accepted) or `not_modified`.
    pub(crate) fn list_refreshed(&self, list: &str, result: &str, at: SystemTime) {
        self.lists
            .list_refreshes
            .with_label_values(&[list, result])
            .inc();
        self.lists
            .list_last_success
            .with_label_values(&[list])
            .set(unix_seconds(at));
    }

    /// A list update failed or was rejected; the last good copy stays in force.
    pub(crate) fn list_refresh_failed(&self, list: &str) {
        self.lists
            .list_refresh_failures
            .with_label_values(&[list])
            .inc();
    }

    /// Failed or rejected updates of `list` since start-up (for the dashboard).
    pub(crate) fn list_refresh_failure_count(&self, list: &str) -> u64 {
        self.lists
            .list_refresh_failures
            .get_metric_with_label_values(&[list])
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// Mark a locked list stale (true) or fresh (false).
    pub(crate) fn list_stale(&self, list: &str, stale: bool) {
        self.lists
            .list_stale
            .with_label_values(&[list])
            .set(i64::from(stale));
    }

    /// An alert message (`alert` or `digest`) was raised.
    pub(crate) fn alert_raised(&self, kind: &str) {
        self.alerts.alerts_raised.with_label_values(&[kind]).inc();
    }

    /// One delivery attempt on `channel` ended with `result` (`ok`, `failed`, `gave-up`).
    pub(crate) fn alert_delivery(&self, channel: &str, result: &str) {
        self.alerts
            .alert_deliveries
            .with_label_values(&[channel, result])
            .inc();
    }

    /// A delivery started (+1) or ended (-1).
    pub(crate) fn alerts_pending_add(&self, delta: i64) {
        self.alerts.alerts_pending.add(delta);
    }

    /// Blocks now held for digests.
    pub(crate) fn alerts_held(&self, held: usize) {
        self.alerts.alerts_held.set(held as i64);
    }

    /// The central store confirmed `rows` more rows.
    pub(crate) fn fleet_shipped(&self, rows: usize) {
        self.fleet.shipped.inc_by(rows as u64);
    }

    /// An attempt to reach or write the central store failed.
    pub(crate) fn fleet_error(&self) {
        self.fleet.errors.inc();
    }

    /// Sealed rows waiting to be shipped, and the age of the oldest.
    pub(crate) fn fleet_backlog(&self, rows: i64, age: Duration) {
        self.fleet.backlog_rows.set(rows);
        self.fleet.backlog_age.set(age.as_secs_f64());
    }

    /// The trust's policy as this site applies it: the version in force, a newer one
    /// refused (0: none), and entries left out or without effect here.
    pub(crate) fn fleet_policy(&self, version: i64, refused: i64, notes: usize) {
        self.fleet.policy_version.set(version);
        self.fleet.policy_refused.set(refused);
        self.fleet.policy_notes.set(notes as i64);
    }

    /// One site's state on the fleet dashboard (from its last heartbeat).
    pub(crate) fn fleet_site(
        &self,
        site: &str,
        age_s: f64,
        silent: bool,
        behind: i64,
        refused: bool,
    ) {
        let f = &self.fleet;
        f.site_heartbeat_age.with_label_values(&[site]).set(age_s);
        f.site_silent
            .with_label_values(&[site])
            .set(i64::from(silent));
        f.site_policy_behind.with_label_values(&[site]).set(behind);
        f.site_policy_refused
            .with_label_values(&[site])
            .set(i64::from(refused));
    }

    /// For a heartbeat: queries answered and blocked since start, and the fleet backlog.
    pub(crate) fn heartbeat_figures(&self) -> (u64, u64, i64) {
        let blocked_row = QueryOutcome::ALL
            .iter()
            .position(|o| *o == QueryOutcome::Blocked)
            .unwrap_or(0);
        let mut queries = 0;
        let mut blocked = 0;
        for (row, counters) in self.query.queries.iter().enumerate() {
            let n: u64 = counters.iter().map(IntCounter::get).sum();
            queries += n;
            if row == blocked_row {
                blocked += n;
            }
        }
        (queries, blocked, self.fleet.backlog_rows.get())
    }

    /// At each scrape, bring the lists' freshness up to what `read` finds on disk.
    pub(crate) fn watch_list_freshness(
        &self,
        read: impl Fn() -> Vec<ListFreshness> + Send + Sync + 'static,
    ) {
        *lock(&self.list_freshness) = Some(Box::new(read));
    }

    /// Read the audit figures from `sink` and `writer` at each scrape.
    pub(crate) fn watch_audit(&self, sink: Sink, writer: Arc<WriterStats>) {
        *lock(&self.audit_source) = Some((sink, writer));
    }

    /// The Prometheus text exposition of every metric, current as of this call.
    pub fn render(&self) -> String {
        self.refresh_derived();
        let mut out = Vec::new();
        // Encoding our own registry into a Vec cannot fail short of a bug in the encoder;
        // a partial page is still better than none for a scrape.
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "cannot encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Copy in the figures kept elsewhere. Counters only ever move up by the difference,
    /// under the lock, so two scrapes at once cannot count twice.
    fn refresh_derived(&self) {
        let loaded = self.reload.snapshot_loaded.get();
        if loaded > 0.0 {
            self.reload
                .snapshot_age
                .set((unix_seconds(SystemTime::now()) - loaded).max(0.0));
        }
        self.refresh_list_freshness();
        let guard = lock(&self.audit_source);
        let Some((sink, writer)) = guard.as_ref() else {
            return;
        };
        use std::sync::atomic::Ordering::Relaxed;
        self.audit.audit_queue_depth.set(sink.queue_depth() as i64);
        self.audit
            .audit_pending
            .set(i64::try_from(writer.pending(sink)).unwrap_or(i64::MAX));
        catch_up(&self.audit.audit_events, sink.received());
        catch_up(
            &self.audit.audit_folded,
            sink.folded() + writer.events_folded.load(Relaxed),
        );
        catch_up(
            &self.audit.audit_rows_written,
            writer.rows_inserted.load(Relaxed) + writer.rows_updated.load(Relaxed),
        );
        catch_up(
            &self.audit.audit_write_errors,
            writer.write_errors.load(Relaxed),
        );
    }

    fn refresh_list_freshness(&self) {
        let guard = lock(&self.list_freshness);
        let Some(read) = guard.as_ref() else {
            return;
        };
        for list in read() {
            if let Some(at) = list.checked_at {
                // Later of what this process saw and what another one recorded.
                let gauge = self
                    .lists
                    .list_last_success
                    .with_label_values(&[&list.list]);
                gauge.set(gauge.get().max(unix_seconds(at)));
            }
            if let Some(stale) = list.stale {
                self.list_stale(&list.list, stale);
            }
        }
    }

    /// A recorder that routes hickory-resolver's cache counters into this registry; use
    /// it (with `metrics::with_local_recorder`) while building the resolver.
    pub(crate) fn resolver_bridge(&self) -> ResolverBridge {
        ResolverBridge {
            cache_hits: self.query.cache_hits.clone(),
            cache_misses: self.query.cache_misses.clone(),
            upstream_duration: self.query.upstream_duration.clone(),
            upstream_responses: self.query.upstream_responses.clone(),
        }
    }
}

fn catch_up(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Creates and registers metrics. Registration only fails on a duplicate name or a bad
/// label set, both fixed at compile time here; a unit test renders every metric, so such
/// a mistake fails the test suite rather than a running server.
struct Registrar<'a>(&'a Registry, std::cell::RefCell<Vec<String>>);

impl Registrar<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        let names: Vec<String> = c.desc().iter().map(|d| d.fq_name.clone()).collect();
        self.1.borrow_mut().extend(names);
        if let Err(error) = self.0.register(Box::new(c.clone())) {
            tracing::error!(%error, "metric not registered");
        }
        c
    }
    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::with_opts(Opts::new(name, help)).expect("valid metric name"))
    }
    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name"))
    }
    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::with_opts(Opts::new(name, help)).expect("valid metric name"))
    }
    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name"))
    }
    fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        self.register(Gauge::with_opts(Opts::new(name, help)).expect("valid metric name"))
    }
    fn float_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.register(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric name"))
    }
    fn seconds(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        self.register(Histogram::with_opts(opts).expect("valid histogram"))
    }
}

/// Routes the few hickory-resolver metrics we export into our registry; the rest (per
/// name server, per protocol) are dropped.
pub(crate) struct ResolverBridge {
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    upstream_duration: Histogram,
    upstream_responses: IntCounterVec,
}

struct BridgedCounter(IntCounter);
struct BridgedHistogram(Histogram);

impl metrics::CounterFn for BridgedCounter {
    fn increment(&self, value: u64) {
        self.0.inc_by(value);
    }
    fn absolute(&self, value: u64) {
        catch_up(&self.0, value);
    }
}

impl metrics::HistogramFn for BridgedHistogram {
    fn record(&self, value: f64) {
        self.0.observe(value);
    }
}

impl metrics::Recorder for ResolverBridge {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let counter = match key.name() {
            hickory_resolver::metrics::CACHE_HIT_TOTAL => &self.cache_hits,
            hickory_resolver::metrics::CACHE_MISS_TOTAL => &self.cache_misses,
            hickory_resolver::metrics::NAME_SERVER_QUERY_RESPONSES => {
                // Registered per response, with the server's address and the status.
                let label = |name: &str| {
                    key.labels()
                        .find(|l| l.key() == name)
                        .map_or("", |l| l.value())
                };
                let series = self
                    .upstream_responses
                    .with_label_values(&[label("addr"), label("status")]);
                return metrics::Counter::from_arc(Arc::new(BridgedCounter(series)));
            }
            _ => return metrics::Counter::noop(),
        };
        metrics::Counter::from_arc(Arc::new(BridgedCounter(counter.clone())))
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        if key.name() == hickory_resolver::metrics::CACHE_MISS_DURATION {
            metrics::Histogram::from_arc(Arc::new(BridgedHistogram(self.upstream_duration.clone())))
        } else {
            metrics::Histogram::noop()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_and_counts_queries() {
        let m = Metrics::new();
        m.query(QueryOutcome::Blocked, Some(RecordType::A));
        m.query(QueryOutcome::Blocked, Some(RecordType::A));
        m.query(QueryOutcome::Allowed, Some(RecordType::CAA));
        m.block("adult,gambling", "default");
        m.upstream_error("timeout");
        m.list_refresh_failed("ctiru");
        m.list_stale("ctiru", true);
        m.alert_delivery("webhook", "failed");
        let text = m.render();
        assert!(
            text.contains(r#"warden_queries_total{outcome="blocked",qtype="A"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"warden_queries_total{outcome="allowed",qtype="other"} 1"#));
        assert!(text.contains(r#"warden_blocks_total{category="gambling",group="default"} 1"#));
        assert!(text.contains(r#"warden_list_refresh_failures_total{list="ctiru"} 1"#));
        assert!(text.contains(r#"warden_list_stale{list="ctiru"} 1"#));
        assert!(
            text.contains(r#"warden_alert_deliveries_total{channel="webhook",result="failed"} 1"#)
        );
        for name in [
            "warden_reloads_total",
            "warden_reload_failures_total",
            "warden_snapshot_generation",
            "warden_cache_hits_total",
            "warden_upstream_duration_seconds_bucket",
            "warden_audit_queue_depth",
            "warden_audit_pending",
            "warden_alerts_pending",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn bridge_routes_hickory_cache_counters() {
        let m = Metrics::new();
        let bridge = m.resolver_bridge();
        metrics::with_local_recorder(&bridge, || {
            metrics::counter!(hickory_resolver::metrics::CACHE_HIT_TOTAL).increment(3);
            metrics::counter!("something_else").increment(5);
            metrics::histogram!(hickory_resolver::metrics::CACHE_MISS_DURATION).record(0.02);
        });
        let text = m.render();
        assert!(text.contains("warden_cache_hits_total 3"), "{text}");
        assert!(
            text.contains("warden_upstream_duration_seconds_count 1"),
            "{text}"
        );
    }
}
