//! The shipped Grafana dashboard and Prometheus alert rules only use metrics that
//! Warden exports (a renamed metric must not silently blank a panel or an alert), and
//! each alert carries what an on-call reader needs.

use std::collections::BTreeSet;

use warden::metrics::Metrics;

/// Every metric family Warden registers, checked against what `/metrics` renders.
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::new();
    let names: BTreeSet<String> = metrics.names().iter().cloned().collect();
    let rendered = metrics.render();
    // Unlabelled families appear at once; labelled ones after their first sample.
    for line in rendered.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = line.split_whitespace().next().unwrap();
        assert!(names.contains(name), "{name} rendered but not listed");
    }
    assert!(names.len() > 20, "{names:?}");
    names
}

/// The `warden_…` names in a PromQL expression, without histogram suffixes.
fn used_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("warden_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.push(base.to_string());
        rest = &tail[end..];
    }
    names
}

fn read(path: &str) -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_string() + path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_dashboard_uses_only_exported_metrics() {
    let exported = exported();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/warden.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let names = used_in(expr);
            assert!(!names.is_empty(), "panel {title:?}: {expr}");
            for name in names {
                assert!(
                    exported.contains(&name),
                    "panel {title:?} uses {name}, which Warden does not export"
                );
                used.insert(name);
            }
        }
    }
    // The metrics the reload issue asks for are all on the dashboard.
    for needed in [
        "warden_queries_total",
        "warden_blocks_total",
        "warden_upstream_duration_seconds",
        "warden_upstream_errors_total",
        "warden_cache_hits_total",
        "warden_list_rules",
        "warden_category_rules",
        "warden_list_refresh_failures_total",
        "warden_reloads_total",
        "warden_reload_failures_total",
        "warden_reload_duration_seconds",
        "warden_snapshot_generation",
        "warden_snapshot_age_seconds",
        "warden_audit_queue_depth",
        "warden_audit_rows_written_total",
    ] {
        assert!(used.contains(needed), "{needed} is not on the dashboard");
    }
}

#[test]
fn alert_rules_use_exported_metrics_and_say_what_to_do() {
    let exported = exported();
    let text = read("deploy/prometheus/alerts.yml");
    let mut alerts = Vec::new();
    for block in text.split("- alert: ").skip(1) {
        let name = block.lines().next().unwrap().trim().to_string();
        let field = |key: &str| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("alert {name} has no {key}"))
        };
        let expr = field("expr:");
        field("for:");
        assert!(
            ["critical", "warning"].contains(&field("severity:").as_str()),
            "{name}"
        );
        assert!(
            field("summary:").len() > 10 && field("description:").len() > 20,
            "{name}"
        );
        for metric in used_in(&expr) {
            assert!(
                exported.contains(&metric),
                "alert {name} uses {metric}, which Warden does not export"
            );
        }
        alerts.push(name);
    }
    for needed in [
        "WardenListRefreshFailing",
        "WardenLockedListStale",
        "WardenUpstreamErrors",
        "WardenAuditWriteErrors",
        "WardenFleetSiteSilent",
        "WardenFleetPolicyRefused",
    ] {
        assert!(alerts.iter().any(|a| a == needed), "missing alert {needed}");
    }
}

#[test]
fn the_metric_name_extraction_finds_names_and_strips_suffixes() {
    assert_eq!(
        used_in(
            "histogram_quantile(0.5, rate(warden_upstream_duration_seconds_bucket[5m])) / warden_x"
        ),
        vec!["warden_upstream_duration_seconds", "warden_x"]
    );
    assert!(used_in("up == 0").is_empty());
}

/// The shipped systemd unit passes `systemd-analyze verify` (with its binary path
/// pointed at the one cargo built, since verify insists that the binary exists).
#[test]
fn the_systemd_unit_verifies() {
    let unit = read("deploy/systemd/warden.service");
    for needed in [
        "DynamicUser=yes",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "StateDirectory=warden",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/warden", env!("CARGO_BIN_EXE_warden")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/run installs it)");
    let messages = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && messages.trim().is_empty(),
        "{messages}"
    );
}

/// The example configs shipped for a Pi and for the container are valid (their list
/// paths point at an installed copy, so only the config itself is checked here).
#[test]
fn the_deployment_configs_are_valid() {
    for path in ["config/examples/pi.toml", "deploy/container/warden.toml"] {
        let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let config = warden::config::Config::load(&full).unwrap_or_else(|e| panic!("{e}"));
        // Everything the service writes is under its state folder.
        assert!(config.audit.path.starts_with("/var/lib/warden"), "{path}");
        assert!(
            config.admin.token_file.starts_with("/var/lib/warden"),
            "{path}"
        );
        assert!(
            config.sources.cache_dir.starts_with("/var/lib/warden"),
            "{path}"
        );
    }
}
