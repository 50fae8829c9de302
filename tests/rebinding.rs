//! DNS rebinding protection through the real binary: an upstream answer that puts a
//! public name on a private address is blocked in its own category and recorded in the
//! audit log; the LAN's own names and configured domains still resolve; it can be
//! switched off.

mod common;

use std::process::Command;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

/// A config on the shared lists with `extra` appended, its audit log in the folder.
fn config(
    dir: &std::path::Path,
    upstream: std::net::SocketAddr,
    extra: &str,
) -> std::path::PathBuf {
    let path = write_config(dir, upstream, "response = \"nxdomain\"");
    let mut text = std::fs::read_to_string(&path).expect("config written");
    text.push_str("[audit]\npath = \"audit.sqlite\"\nflush_interval = \"100ms\"\n");
    text.push_str(extra);
    std::fs::write(&path, text).expect("config written");
    path
}

fn audit_rows(config: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["audit", "list", "--json", "--config"])
        .arg(config)
        .output()
        .expect("warden audit list runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON row a line"))
        .collect()
}

fn assert_rebinding_block(resp: &hickory_proto::op::Message, what: &str) {
    assert_eq!(
        resp.metadata.response_code,
        ResponseCode::NXDomain,
        "{what}: {resp:?}"
    );
    assert!(resp.answers.is_empty(), "{what}: no address leaks");
    let (code, text) = ede(resp).unwrap_or_else(|| panic!("{what}: EDE"));
    assert_eq!(code, 15, "{what}");
    assert!(text.contains("rebinding"), "{what}: {text}");
}

#[test]
fn public_names_on_internal_addresses_are_blocked_and_recorded() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (_upstream, upstream_addr, token) = runtime.block_on(start_upstream());
    let _stop = token.drop_guard();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = config(
        dir.path(),
        upstream_addr,
        "[rebinding]\nallow = [\"school.example\"]\n",
    );
    let (child, addr) = spawn_warden(&path);
    runtime.block_on(async {
        assert_rebinding_block(&udp(addr, "rebind.test.", RecordType::A, true).await, "A");
        assert_rebinding_block(
            &udp(addr, "rebind.test.", RecordType::AAAA, true).await,
            "AAAA",
        );
        assert_rebinding_block(&tcp(addr, "Rebind.Test.", RecordType::A).await, "TCP");
        // Browsers connect to an HTTPS record's address hints too.
        assert_rebinding_block(
            &udp(addr, "rebind.test.", RecordType::HTTPS, true).await,
            "HTTPS hint",
        );
        // A public name aliased to a LAN name is still a public name in the browser.
        assert_rebinding_block(
            &udp(addr, "via-lan.test.", RecordType::A, true).await,
            "CNAME",
        );
        // The LAN's own names, and a configured domain, resolve.
        for name in ["router.lan.", "nas.school.example."] {
            let r = udp(addr, name, RecordType::A, true).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(
                matches!(r.answers.first().map(|a| &a.data), Some(RData::A(_))),
                "{name}: {r:?}"
            );
        }
        // Public addresses are untouched.
        let r = udp(addr, "allowed.test.", RecordType::A, true).await;
        assert_eq!(r.answers.len(), 1);
    });
    assert!(stop_warden(child).success());
    let rows = audit_rows(&path);
    let rebinding: Vec<_> = rows
        .iter()
        .filter(|r| r["categories"] == "rebinding")
        .collect();
    let count: i64 = rebinding.iter().filter_map(|r| r["count"].as_i64()).sum();
    assert_eq!(count, 5, "every rebinding block is recorded: {rows:?}");
    assert!(
        rebinding.iter().any(|r| r["name"] == "rebind.test"
            && r["rule"]
                .as_str()
                .is_some_and(|rule| rule.contains("192.168.1.1"))),
        "{rebinding:?}"
    );
    assert!(
        rebinding.iter().any(|r| r["name"] == "via-lan.test"),
        "{rebinding:?}"
    );
}

#[test]
fn protection_can_be_switched_off() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (_upstream, upstream_addr, token) = runtime.block_on(start_upstream());
    let _stop = token.drop_guard();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = config(dir.path(), upstream_addr, "[rebinding]\nenabled = false\n");
    let (child, addr) = spawn_warden(&path);
    runtime.block_on(async {
        let r = udp(addr, "rebind.test.", RecordType::A, true).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
    });
    assert!(stop_warden(child).success());
}
