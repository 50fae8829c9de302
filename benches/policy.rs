//! Per-query cost of client and policy resolution: from a client address to its group,
//! device name and the categories active for it now, with 1,000 `[[clients]]` entries
//! (IPv4 devices, subnets and sites, IPv6 networks and hosts) and groups with schedules.
//!
//! Baseline, measured in the same run: what a query cost before client groups existed,
//! the default group's active set. The difference is what client and policy resolution
//! add per query (target: ≤ 100 ns). Run with `cargo bench --bench policy`;
//! `cargo test --all-targets` runs it once, briefly, as a smoke test.

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use warden::engine::Engine;

const CLIENTS: usize = 1_000;
const SAMPLE: usize = 10_000;

/// A deterministic xorshift generator (the bench must be repeatable).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn byte(&mut self) -> u8 {
        (self.next() % 256) as u8
    }
}

/// 1,000 clients over three groups: 600 IPv4 devices (/32), 250 IPv4 subnets (/24), 50
/// IPv4 sites (/16), 60 IPv6 networks (/64), 40 IPv6 hosts (/128).
fn config(rng: &mut Rng) -> String {
    let mut text = String::from(
        "[server]\ndefault_group = \"guests\"\n[upstream]\nservers = [\"127.0.0.1:9\"]\n\
         [categories.adult]\n[categories.social]\n[categories.gaming]\n\
         [groups.guests]\nblock = [\"adult\"]\n\
         [groups.staff]\nblock = [\"adult\"]\n\
         [groups.young-people]\nblock = [\"adult\"]\nsafe_search = true\n\
         [[groups.young-people.schedule]]\nblock = [\"social\", \"gaming\"]\ndays = [\"weekdays\"]\nfrom = \"09:00\"\nto = \"17:00\"\n\
         [[groups.young-people.schedule]]\nallow = [\"social\"]\ndays = [\"daily\"]\nfrom = \"12:00\"\nto = \"13:00\"\n",
    );
    let groups = ["staff", "young-people", "guests"];
    let mut entry = |cidr: String, i: usize| {
        let _ = write!(
            text,
            "[[clients]]\ncidr = \"{cidr}\"\ngroup = \"{}\"\nname = \"device-{i}\"\n",
            groups[i % 3]
        );
    };
    let mut i = 0;
    for _ in 0..600 {
        entry(
            format!("10.{}.{}.{}", rng.byte() % 16, rng.byte(), rng.byte()),
            i,
        );
        i += 1;
    }
    for _ in 0..250 {
        entry(format!("10.{}.{}.0/24", rng.byte() % 16, rng.byte()), i);
        i += 1;
    }
    for _ in 0..50 {
        entry(format!("172.{}.0.0/16", 16 + rng.byte() % 16), i);
        i += 1;
    }
    for _ in 0..60 {
        entry(
            format!(
                "2001:db8:{:x}:{:x}::/64",
                rng.next() % 0xffff,
                rng.next() % 0xffff
            ),
            i,
        );
        i += 1;
    }
    for _ in 0..40 {
        entry(format!("2001:db8:1::{:x}", rng.next() % 0xffff), i);
        i += 1;
    }
    assert_eq!(i, CLIENTS);
    text
}

/// Query sources: a mix of matched and unmatched, IPv4 and IPv6 addresses.
fn sources(rng: &mut Rng) -> Vec<IpAddr> {
    (0..SAMPLE)
        .map(|k| match k % 5 {
            0 | 1 => format!("10.{}.{}.{}", rng.byte() % 16, rng.byte(), rng.byte()),
            2 => format!("172.{}.{}.{}", 16 + rng.byte() % 32, rng.byte(), rng.byte()),
            3 => format!("192.168.{}.{}", rng.byte(), rng.byte()),
            _ => format!(
                "2001:db8:{:x}:{:x}::1",
                rng.next() % 0xffff,
                rng.next() % 0xffff
            ),
        })
        .map(|s| s.parse().unwrap())
        .collect()
}

fn median_ns(group: &str, bench: &str) -> Option<f64> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not (smoke run).
    let full = std::env::args().any(|a| a == "--bench");
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, config(&mut rng)).unwrap();
    let engine = Engine::load(&path).unwrap();
    let ips = sources(&mut rng);
    let policy = &engine.policy;
    let now = chrono::Utc::now();
    let matched = ips
        .iter()
        .filter(|ip| policy.who(**ip).device.is_some())
        .count();

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(if full { 1000 } else { 10 }))
        .measurement_time(Duration::from_millis(if full { 4000 } else { 20 }))
        .sample_size(if full { 50 } else { 10 });
    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(SAMPLE as u64));
    g.bench_function("baseline_default_group", |b| {
        b.iter(|| {
            for ip in &ips {
                black_box(ip);
                black_box(policy.active(policy.default_group(), now));
            }
        })
    });
    g.bench_function("client_and_policy", |b| {
        b.iter(|| {
            for ip in &ips {
                let who = policy.who(*ip);
                black_box(who.device);
                black_box(policy.active(who.group, now));
            }
        })
    });
    g.finish();
    c.final_summary();

    if let (Some(base), Some(with)) = (
        median_ns("policy", "baseline_default_group"),
        median_ns("policy", "client_and_policy"),
    ) {
        let per = |t: f64| t / SAMPLE as f64;
        println!(
            "{CLIENTS} clients, {SAMPLE} query sources ({matched} matched an entry): baseline {:.1} ns/query, \
             with client and policy resolution {:.1} ns/query: {:.1} ns added (target ≤ 100 ns), {:.2}× the baseline",
            per(base),
            per(with),
            per(with) - per(base),
            with / base
        );
    }
}
