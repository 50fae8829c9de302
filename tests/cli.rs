//! The `warden` binary's `check`, `lists stats`, `config check` and `fleet report`
//! commands: output format, exit codes, and clear errors for bad configs and arguments.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn warden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("warden runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The first usable entry of a shipped list, with its line number, read independently of
/// Warden's parser (the test must not trust what it tests).
fn first_entry(list: &str) -> (String, u32) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(list);
    let file = std::fs::File::open(&path).unwrap();
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    for (i, line) in reader.lines().enumerate() {
        let line = line.unwrap();
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') && line.contains('.') {
            return (line.to_lowercase(), i as u32 + 1);
        }
    }
    panic!("no entry in {list}");
}

#[test]
fn check_blocks_a_name_from_a_shipped_list_and_its_subdomains() {
    let (name, line) = first_entry("blocklists/adult/shadowwhisperer-adult.domains.txt.gz");
    let sub = format!("Deep.Sub.{}.", name.to_uppercase());
    let out = warden(&["check", &name, &sub, "warden-allowed.test"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("{name}\tblocked\tadult\tadult-shadowwhisperer:{line}\t{name}")
    );
    assert_eq!(
        lines[1],
        format!("deep.sub.{name}\tblocked\tadult\tadult-shadowwhisperer:{line}\t{name}")
    );
    assert_eq!(lines[2], "warden-allowed.test\tallowed");
}

#[test]
fn check_answers_for_names_with_any_bytes_in_their_labels() {
    let (name, line) = first_entry("blocklists/adult/shadowwhisperer-adult.domains.txt.gz");
    let plus = format!("a+b.{name}");
    let star = format!("*.{name}");
    let space = format!("www\\032.{name}");
    let out = warden(&["check", &plus, &star, &space]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let rule = format!("blocked\tadult\tadult-shadowwhisperer:{line}\t{name}");
    assert_eq!(lines[0], format!("a+b.{name}\t{rule}"));
    assert_eq!(lines[1], format!("*.{name}\t{rule}"));
    assert_eq!(lines[2], format!("www\\032.{name}\t{rule}"));
}

#[test]
fn check_exits_zero_when_all_allowed_and_speaks_json() {
    let out = warden(&["check", "--json", "warden-allowed.test", "another.test"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for line in stdout(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["verdict"], "allowed");
    }
    let (name, line) = first_entry("blocklists/gambling/ut1-gambling.domains.txt.gz");
    let out = warden(&["check", "--json", &name]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["verdict"], "blocked");
    assert_eq!(v["categories"][0], "gambling");
    assert_eq!(v["list"], "gambling-ut1");
    assert_eq!(v["line"], line);
    assert_eq!(v["locked"], false);
}

#[test]
fn check_rejects_an_invalid_name_with_exit_2() {
    let out = warden(&["check", "bad name.test"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid name \"bad name.test\""),
        "{}",
        stderr(&out)
    );
    let out = warden(&["check"]);
    assert_eq!(out.status.code(), Some(2), "no names is a usage error");
}

#[test]
fn lists_stats_reports_every_list_with_positions() {
    let out = warden(&["lists", "stats"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for list in [
        "adult-shadowwhisperer",
        "terrorism-ctiru",
        "child-abuse-iwf",
        "local-exceptions",
    ] {
        assert!(text.contains(list), "{list} missing from:\n{text}");
    }
    // UT1's malware list has bare IP addresses: reported by reason with file:line.
    assert!(
        text.contains(
            "IP address, not a name: config/../blocklists/malware/ut1-malware.domains.txt.gz:"
        ),
        "{text}"
    );
    assert!(text.contains("distinct names"), "{text}");

    let out = warden(&["lists", "stats", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let lists = v["lists"].as_array().unwrap();
    assert!(lists.len() > 40);
    let total: u64 = lists
        .iter()
        .map(|l| l["report"]["accepted"].as_u64().unwrap())
        .sum();
    assert_eq!(total, v["matcher"]["rules"].as_u64().unwrap());
}

/// A config in a temporary folder with the given body and list files.
fn temp_config(body: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let path = dir.path().join("warden.toml");
    std::fs::write(&path, body).unwrap();
    (dir, path)
}

#[test]
fn undefined_category_exits_2_naming_it_and_the_line() {
    let (_dir, path) = temp_config(
        "[categories.adult]\n\n[[lists]]\nname = \"x\"\ncategory = \"gamblng\"\npath = \"x.txt\"\n",
        &[("x.txt", "a.test\n")],
    );
    let p = path.to_str().unwrap();
    for args in [
        vec!["check", "--config", p, "a.test"],
        vec!["lists", "stats", "--config", p],
    ] {
        let out = warden(&args);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains(&format!("{p}:5:")), "{err}");
        assert!(
            err.contains("undefined category \"gamblng\"") && err.contains("adult"),
            "{err}"
        );
    }
}

#[test]
fn missing_list_file_exits_2_naming_the_file() {
    let (_dir, path) = temp_config(
        "[categories.adult]\n[[lists]]\nname = \"x\"\ncategory = \"adult\"\npath = \"nope.txt\"\n",
        &[],
    );
    let out = warden(&["config", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("nope.txt") && err.contains("list \"x\""),
        "{err}"
    );
}

#[test]
fn missing_config_exits_2() {
    let out = warden(&["check", "--config", "/nonexistent/warden.toml", "a.test"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/warden.toml"));
}

#[test]
fn locked_category_beats_allow_list_and_group_choice() {
    let body = r#"
[categories.terrorism]
locked = true
[categories.social]
[groups.default]
block = []
[[lists]]
name = "ctiru"
category = "terrorism"
path = "ctiru.txt"
format = "hashed"
[[lists]]
name = "social"
category = "social"
path = "social.txt"
[[allow]]
name = "exceptions"
path = "allow.txt"
"#;
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(b"bad.test"));
    let ctiru = format!("# restricted\nsha256:{hash}\n");
    let (_dir, path) = temp_config(
        body,
        &[
            ("ctiru.txt", &ctiru),
            ("social.txt", "chat.test\n"),
            ("allow.txt", "www.bad.test\n"),
        ],
    );
    let p = path.to_str().unwrap();
    let out = warden(&["check", "--config", p, "www.bad.test", "chat.test"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("www.bad.test\tblocked\tterrorism\tctiru:2\tsha256:{hash}")
    );
    assert_eq!(
        lines[1], "chat.test\tallowed",
        "social is not blocked for this group"
    );
}

#[test]
fn config_check_reports_the_load() {
    let out = warden(&["config", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("OK") && text.contains("2 locked"), "{text}");
}

#[test]
fn the_trust_report_without_a_fleet_section_or_with_a_bad_period_says_why_and_writes_nothing() {
    let (dir, path) = temp_config(
        "[categories.adult]\n[[lists]]\nname = \"x\"\ncategory = \"adult\"\npath = \"x.txt\"\n",
        &[("x.txt", "a.test\n")],
    );
    let p = path.to_str().unwrap();
    let out_file = dir.path().join("trust.html");
    let o = out_file.to_str().unwrap();
    let no_fleet = warden(&["fleet", "report", "--config", p, "--out", o]);
    assert_eq!(no_fleet.status.code(), Some(2), "{}", stderr(&no_fleet));
    let err = stderr(&no_fleet);
    assert!(
        err.contains(p) && err.contains("no [fleet] section"),
        "{err}"
    );
    let with_fleet = path.with_file_name("trust.toml");
    std::fs::write(
        &with_fleet,
        format!(
            "{}[fleet]\ndatabase = \"postgresql://warden@127.0.0.1:9/warden\"\n",
            std::fs::read_to_string(&path).unwrap()
        ),
    )
    .unwrap();
    let f = with_fleet.to_str().unwrap();
    let bad_period = warden(&[
        "fleet", "report", "--config", f, "--since", "lately", "--out", o,
    ]);
    assert_eq!(bad_period.status.code(), Some(2), "{}", stderr(&bad_period));
    assert!(
        stderr(&bad_period).contains("lately"),
        "{}",
        stderr(&bad_period)
    );
    // Nothing listens on the discard port: the store cannot be reached.
    let unreachable = warden(&["fleet", "report", "--config", f, "--out", o]);
    assert_eq!(
        unreachable.status.code(),
        Some(2),
        "{}",
        stderr(&unreachable)
    );
    let err = stderr(&unreachable);
    assert!(err.contains("fleet database 127.0.0.1:9"), "{err}");
    assert!(!out_file.exists());
}
