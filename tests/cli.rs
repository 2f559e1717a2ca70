//! The command-line contract: `decode` answers line N with object N, `run` stops cleanly on signals.

use std::io::Read;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

mod common;

fn beacond() -> Command {
    Command::cargo_bin("beacond").unwrap()
}

#[test]
fn decode_answers_each_stdin_line_in_order_and_fails_at_the_end() {
    let input = "02011A1AFF4C000215E2C56DB5DFFB48D2B060D0F5A71096E000640000C5\n\
                 not hex\n\
                 03:03:AA:FE:0A:16:AA:FE:10:EB:02:61:62:63:07\n\
                 02 01 06 05 FF 4C\n\
                 \n";
    let out = beacond()
        .arg("decode")
        .write_stdin(input)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["frames"][0]["major"], 100);
    assert!(lines[1]["error"]
        .as_str()
        .unwrap()
        .contains("invalid character 'n' at column 1"));
    assert_eq!(lines[2]["frames"][0]["url"], "http://abc.com");
    assert_eq!(
        lines[3]["error"],
        "AD structure at byte 3 declares 5 bytes but only 2 follow"
    );
    assert!(lines[4]["error"]
        .as_str()
        .unwrap()
        .starts_with("empty line"));
}

#[test]
fn decode_takes_arguments_and_succeeds_when_all_decode() {
    beacond()
        .args([
            "decode",
            "0303AAFE0A16AAFE10EB0261626307",
            "02010607FF590001020304",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("http://abc.com"))
        .stdout(predicate::function(|s: &str| s.lines().count() == 2));
}

#[test]
fn decode_survives_invalid_utf8_on_stdin() {
    let out = beacond()
        .arg("decode")
        .write_stdin(vec![
            0xff, 0xfe, b'\n', b'0', b'2', b'0', b'1', b'0', b'6', b'\n',
        ])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.lines().next().unwrap().contains("error"));
}

#[test]
fn version_and_help_describe_the_tool() {
    beacond()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::starts_with(concat!(
            "beacond ",
            env!("CARGO_PKG_VERSION")
        )));
    beacond()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("check-config"))
        .stdout(predicate::str::contains("decode"));
}

#[test]
fn run_rejects_a_bad_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[scan]\nsource = \"blues\"\n").unwrap();
    beacond()
        .arg("run")
        .arg("--config")
        .arg(&p)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("did you mean `bluez`?"));
}

/// `run` must stop cleanly, with exit 0, on SIGTERM and on SIGINT.
#[test]
fn run_stops_cleanly_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[hub]\ndata_dir = {:?}\n[scan]\nsource = \"sim\"\n[mqtt]\nenabled = false\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    for sig in ["-TERM", "-INT"] {
        let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("beacond"))
            .arg("run")
            .arg("--config")
            .arg(&p)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        // Wait for the start line so the signal handlers are installed.
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 256];
        while !seen.contains("beacond started") && Instant::now() < deadline {
            let n = stderr.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.contains("beacond started"), "{seen}");
        StdCommand::new("kill")
            .arg(sig)
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        let mut rest = String::new();
        stderr.read_to_string(&mut rest).unwrap();
        assert!(status.success(), "{sig}: {status:?} {rest}");
        assert!(rest.contains("beacond stopped"), "{rest}");
    }
}

#[test]
fn simulate_json_has_the_metric_keys_at_the_top_and_under_baseline() {
    let out = beacond()
        .args(["simulate", "boutique", "--json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "zone_accuracy",
        "enter_latency_p50_s",
        "enter_latency_p95_s",
        "exit_latency_p50_s",
        "exit_latency_p95_s",
        "false_enters",
        "missed_visits",
        "flaps_per_customer_hour",
    ] {
        assert!(v[key].is_number(), "{key} missing: {v}");
        assert!(
            v["baseline"][key].is_number(),
            "baseline.{key} missing: {v}"
        );
    }
}

fn simulate_json(args: &[&str]) -> Value {
    let out = beacond()
        .arg("simulate")
        .args(args)
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .clone();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn simulate_seed_runs_the_same_store_with_other_shoppers_reproducibly() {
    let own = simulate_json(&["boutique"]);
    let a = simulate_json(&["boutique", "--seed", "7"]);
    let b = simulate_json(&["boutique", "--seed", "7"]);
    assert_eq!(own["seed"], 11, "the scenario's own seed is reported");
    assert_eq!(a["seed"], 7);
    assert_eq!(a["adverts"], b["adverts"]);
    assert_eq!(a["zone_accuracy"], b["zone_accuracy"]);
    assert_ne!(a["adverts"], own["adverts"], "another seed, other shoppers");
}

#[test]
fn simulate_calibrate_walks_each_zone_as_a_field_engineer_would() {
    let v = simulate_json(&["boutique", "--calibrate"]);
    assert_eq!(v["scenario"], "boutique");
    let zones = v["zones"].as_array().unwrap();
    let ids: Vec<&str> = zones.iter().map(|z| z["zone"].as_str().unwrap()).collect();
    assert_eq!(ids, ["window", "rails", "fitting"]);
    for z in zones {
        assert_eq!(z["configured"]["enter_rssi"], -75, "{z}");
        let enter = z["suggested"]["enter_rssi"].as_i64().unwrap();
        let exit = z["suggested"]["exit_rssi"].as_i64().unwrap();
        // Each area's edge, 2.5 m out and 1.4 m below the hub, reads -68 dBm before shadowing.
        assert!((-74..=-65).contains(&enter), "{z}");
        assert!(
            enter - exit >= 9,
            "the engine's exit margin and one more: {z}"
        );
        // The fobs' calibrated -59 dBm at 1 m, give or take one shadowing draw.
        let p1m = z["suggested"]["measured_power"].as_i64().unwrap();
        assert!((-63..=-55).contains(&p1m), "{z}");
        assert_eq!(z["phases"].as_array().unwrap().len(), 3, "{z}");
        assert_eq!(z["matches"], (enter + 75).abs() <= 1, "{z}");
    }
    let text = beacond()
        .args(["simulate", "supermarket", "--calibrate"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("zone \"produce\": configured enter -76 / exit -85, suggested"),
        "{text}"
    );
    assert!(text.contains("enter_rssi = "), "{text}");
}

#[test]
fn simulate_rejects_an_unknown_scenario_clearly() {
    beacond()
        .args(["simulate", "no-such-store"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no built-in scenario \"no-such-store\"",
        ))
        .stderr(predicate::str::contains("supermarket"));
}

/// `beacond demo ARGS` with its own TMPDIR, piped: what it printed.
fn demo(tmp: &std::path::Path, args: &[&str]) -> String {
    let out = beacond()
        .arg("demo")
        .args(args)
        .env("TMPDIR", tmp)
        .timeout(Duration::from_secs(60))
        .assert()
        .success()
        .get_output()
        .clone();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn demo_shows_a_live_feed_and_headcounts_when_piped() {
    let tmp = tempfile::tempdir().unwrap();
    let text = demo(tmp.path(), &["--duration", "3", "--speed", "30"]);
    assert!(text.contains("entered"), "{text}");
    assert!(text.contains("customers in zone now"), "{text}");
    // The supermarket's offer rules fire as customers move.
    assert!(text.contains("OFFER"), "{text}");
    // Piped output is plain lines: no cursor movement.
    assert!(!text.contains("\x1b["), "{text}");
    // Its throwaway spool, offer caps and learned margins went with it.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_demo_plays_its_store_again_when_the_scenario_ends() {
    let tmp = tempfile::tempdir().unwrap();
    // The boutique's hour takes 1.2 s at this speed: the demo must still be showing shoppers after it.
    let args = [
        "--scenario",
        "boutique",
        "--speed",
        "3000",
        "--duration",
        "4",
    ];
    let text = demo(tmp.path(), &args);
    let seconds_of_day: Vec<u32> = text
        .lines()
        .filter(|l| l.contains("entered"))
        .filter_map(|l| {
            let hms: Vec<u32> = l
                .get(..8)?
                .split(':')
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            Some(hms[0] * 3600 + hms[1] * 60 + hms[2])
        })
        .collect();
    let span = seconds_of_day.iter().max().unwrap() - seconds_of_day.iter().min().unwrap();
    assert!(span > 3600, "entries over {span} s of store time:\n{text}");
}

#[test]
fn run_with_the_sim_source_prints_presence_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    // Its own data directory: the daemon keeps what its hubs learned there.
    std::fs::write(
        &p,
        format!(
            "[hub]\nhub_id = \"hub-window\"\ndata_dir = {:?}\n[scan]\nsource = \"sim\"\n\
             sim_scenario = \"builtin:boutique\"\nspeed = 600.0\n[mqtt]\nenabled = false\n\
             [[zones]]\nid = \"window\"\nenter_rssi = -75\nexit_rssi = -84\nmin_enter_s = 1.0\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("beacond"))
        .arg("run")
        .arg("--config")
        .arg(&p)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    StdCommand::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut text = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(status.success(), "{status:?}");
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["type"] == "presence" && r["event"] == "enter" && r["zone"] == "window"),
        "{text}"
    );
    assert!(records.iter().any(|r| r["type"] == "headcount"), "{text}");
    // Anonymous devices never appear by id.
    assert!(records
        .iter()
        .all(|r| r["type"] != "presence" || r["customer_id"].is_string()));
}

#[test]
fn a_repeating_sim_source_keeps_the_store_going_past_the_scenarios_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = |repeat: bool| {
        let p = dir.path().join(format!("repeat-{repeat}.toml"));
        std::fs::write(
            &p,
            format!(
                "[hub]\nhub_id = \"hub-window\"\ndata_dir = {:?}\n[scan]\nsource = \"sim\"\n\
                 sim_scenario = \"builtin:boutique\"\nspeed = 3000.0\nsim_repeat = {repeat}\n\
                 [mqtt]\nenabled = false\n\
                 [[zones]]\nid = \"window\"\nenter_rssi = -75\nexit_rssi = -84\n",
                dir.path()
                    .join(format!("data-{repeat}"))
                    .display()
                    .to_string()
            ),
        )
        .unwrap();
        p
    };
    let wait_for_exit = |child: &mut std::process::Child, within: Duration| {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    };
    // Without it, the daemon stops when the boutique's hour (1.2 s at this speed) is over.
    let (mut once, _) = common::start_daemon_collecting(&config(false), None, None);
    let status = wait_for_exit(&mut once, Duration::from_secs(60)).expect("the hour ends");
    assert!(status.success(), "{status:?}");
    // With it, the hour plays again and again until the daemon is told to stop.
    let log = dir.path().join("log");
    let (mut again, records) =
        common::start_daemon_collecting(&config(true), Some(&log), Some("info"));
    assert!(
        wait_for_exit(&mut again, Duration::from_secs(6)).is_none(),
        "a repeating store does not end"
    );
    common::signal(&again, "-TERM");
    let status = wait_for_exit(&mut again, Duration::from_secs(30)).expect("stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(err.contains("simulated scenario starts again"), "{err}");
    // Time runs on: shoppers enter again after the first hour (09:00 to 10:00 simulated).
    let records = records.lock().unwrap();
    let late_enters = records
        .iter()
        .filter(|r| r["type"] == "presence" && r["event"] == "enter")
        .filter(|r| r["at"].as_str().unwrap() >= "2026-01-05T10:00:00")
        .count();
    assert!(late_enters > 0, "{records:?}");
}

#[test]
fn a_sim_source_can_hear_one_hub_as_a_real_hub_would() {
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, sim_hub: &str| {
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!(
                "[hub]\nhub_id = \"hub-rails\"\ndata_dir = {:?}\n[scan]\nsource = \"sim\"\n\
                 sim_scenario = \"builtin:boutique\"\nspeed = 3000.0\n{sim_hub}\n\
                 [mqtt]\nenabled = false\n\
                 [[zones]]\nid = \"window\"\nhub = \"hub-window\"\nenter_rssi = -75\nexit_rssi = -84\n\
                 [[zones]]\nid = \"rails\"\nhub = \"hub-rails\"\nenter_rssi = -75\nexit_rssi = -84\n\
                 [[zones]]\nid = \"fitting\"\nhub = \"hub-fitting\"\nenter_rssi = -75\nexit_rssi = -84\n",
                dir.path().join(format!("data-{name}")).display().to_string()
            ),
        )
        .unwrap();
        p
    };
    // The boutique's hour, to its end: which zones saw anyone, and what the daemon logged.
    let run = |cfg: &std::path::Path| {
        let out = StdCommand::new(assert_cmd::cargo::cargo_bin("beacond"))
            .args(["run", "--config"])
            .arg(cfg)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let zones: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["type"] == "presence" && r["event"] == "enter")
            .map(|r| r["zone"].as_str().unwrap().to_owned())
            .collect();
        (
            out.status,
            zones,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, zones, _) = run(&config("every-hub", ""));
    assert!(status.success());
    assert_eq!(zones.len(), 3, "{zones:?}");
    // Hearing hub-rails alone, only its zone is ever entered, and the other two are named.
    let (status, zones, err) = run(&config("rails", "sim_hub = \"hub-rails\""));
    assert!(status.success(), "{err}");
    assert_eq!(zones.into_iter().collect::<Vec<_>>(), ["rails"]);
    for (i, zone) in [(0, "window"), (2, "fitting")] {
        assert!(
            err.contains(&format!(
                "zones[{i}].hub: zone \"{zone}\" is measured by hub hub-{zone}, but this hub hears \
                 only hub-rails of the simulated store builtin:boutique (scan.sim_hub)"
            )),
            "{err}"
        );
    }
    // A hub the scenario does not have: the daemon does not start, and says which it has.
    let wrong = config("wrong", "sim_hub = \"hub-till\"");
    let expected = "scan.sim_hub: hub-till is not a hub of the simulated store builtin:boutique; \
                    use one of hub-window, hub-rails, hub-fitting";
    let (status, _, err) = run(&wrong);
    assert!(!status.success());
    assert!(err.contains(expected), "{err}");
    beacond()
        .arg("check-config")
        .arg(&wrong)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "{}: warning: {expected}",
            wrong.display()
        )));
}

#[test]
fn token_prints_the_published_vector() {
    let out = beacond()
        .args([
            "token",
            "--key",
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "--at",
            "2026-11-25T10:03:00Z",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["token"], "1b328fa79d826711");
    assert_eq!(v["service_data"], "011b328fa79d826711");
    assert_eq!(v["epoch"], 2_992_668);
    beacond()
        .args(["token", "--key", "zz", "--at", "2026-11-25T10:03:00Z"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--key must be 64 hex digits"));
    beacond()
        .args(["token", "--day-key", &"ab".repeat(32), "--at", "yesterday"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("RFC 3339"));
}

#[test]
fn cache_commands_export_import_get_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let export = dir.path().join("export.jsonl");
    std::fs::write(
        &export,
        format!(
            "{{\"beacond_customer_export\":1,\"seq\":42,\"customers\":2}}\n\
             {{\"id\":\"c-1\",\"segments\":[\"wine\"],\"beacons\":[\"ibeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6:7:1\"]}}\n\
             {{\"id\":\"c-2\",\"app_key\":\"{}\"}}\n",
            "cd".repeat(32)
        ),
    )
    .unwrap();
    let dd = data.to_str().unwrap();
    beacond()
        .args(["cache", "--data-dir", dd, "import"])
        .arg(&export)
        .assert()
        .success()
        .stderr(predicate::str::contains("imported 2 customers"));
    let out = beacond()
        .args(["cache", "--data-dir", dd, "stats"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (v["customers"].as_u64(), v["seq"].as_u64()),
        (Some(2), Some(42))
    );
    beacond()
        .args(["cache", "--data-dir", dd, "get", "c-1"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"wine\""));
    beacond()
        .args(["cache", "--data-dir", dd, "get", "nobody"])
        .assert()
        .failure();
    let again = dir.path().join("again.jsonl");
    beacond()
        .args(["cache", "--data-dir", dd, "export"])
        .arg(&again)
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(&again).unwrap().lines().count(), 3);
    // A bad line names file and line, and changes nothing.
    std::fs::write(
        &export,
        "{\"beacond_customer_export\":1,\"seq\":50,\"customers\":1}\n{\"id\":\"c-9\",\"beacons\":[\"ibeacon:x\"]}\n",
    )
    .unwrap();
    beacond()
        .args(["cache", "--data-dir", dd, "import"])
        .arg(&export)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "export.jsonl:2: customer.beacons[0]",
        ));
    beacond()
        .args(["cache", "--data-dir", dd, "get", "c-2"])
        .assert()
        .success();
}

#[test]
fn sync_keygen_and_publish_print_signed_batches() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("platform.key");
    let out = beacond()
        .arg("sync-keygen")
        .arg(&key)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let public = String::from_utf8(out).unwrap().trim().to_owned();
    let vk = beacond::identity::sync::parse_public_key(&public).unwrap();
    let batch = dir.path().join("snap.json");
    std::fs::write(
        &batch,
        r#"{"v":1,"store":"s1","seq":1,"type":"snapshot","customers":[{"id":"a"},{"id":"b"},{"id":"c"}]}"#,
    )
    .unwrap();
    let out = beacond()
        .args(["sync-publish", "--print", "--chunk-size", "2", "--key"])
        .arg(&key)
        .arg(&batch)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "two chunks, each a signature line and a body"
    );
    let mut state = beacond::identity::sync::SyncState::new(Some(vk), "s1", 0);
    let now = beacond::time::Timestamp(0);
    for pair in lines.chunks(2) {
        let payload = format!("{}\n{}", pair[0], pair[1]);
        let a = state.check(now, payload.as_bytes()).unwrap();
        state.commit(now, &a);
    }
    assert_eq!(state.applied(), 1);
    // The key file is the secret: not readable by others.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o077,
        0
    );
}

/// A card with no space left when beacond starts: the stores are the disk's victims, not broken,
/// so nothing is moved aside or started afresh; the daemon says what to do and, once there is
/// room, finds the customer cache as it was. Runs in a mount namespace of its own with a 1 MiB
/// tmpfs as the data directory (no root needed).
#[test]
fn a_full_card_at_start_keeps_the_stores_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let export = dir.path().join("export.jsonl");
    std::fs::write(
        &export,
        "{\"beacond_customer_export\":1,\"seq\":42,\"customers\":1}\n{\"id\":\"c-1\",\"segments\":[\"wine\"]}\n",
    )
    .unwrap();
    let cfg = dir.path().join("beacond.toml");
    std::fs::write(
        &cfg,
        format!(
            "[hub]\nstore_id = \"s\"\nhub_id = \"hub-window\"\ndata_dir = {:?}\n\
             [scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\nspeed = 60\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\
             [[zones]]\nid = \"window\"\nhub = \"hub-window\"\nenter_rssi = -75\nexit_rssi = -84\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let bin = assert_cmd::cargo::cargo_bin("beacond");
    let out = dir.path();
    let script = format!(
        "set -u; mount -t tmpfs -o size=1m tmpfs {data:?} || exit 99
         {bin:?} cache --data-dir {data:?} import {export:?} || exit 98
         dd if=/dev/zero of={data:?}/filler bs=4k 2>/dev/null
         timeout 20 {bin:?} run --config {cfg:?} >/dev/null 2>{out:?}/run.log; echo $? >{out:?}/run.code
         ls {data:?} >{out:?}/listing
         rm {data:?}/filler
         {bin:?} cache --data-dir {data:?} stats >{out:?}/stats.json 2>&1"
    );
    let status = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .status()
        .expect("unshare (util-linux)");
    assert!(status.success(), "{status:?}");
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    let log = read("run.log");
    assert_ne!(read("run.code").trim(), "0", "{log}");
    assert_ne!(read("run.code").trim(), "124", "it must not hang: {log}");
    assert!(
        log.contains("No space left on device")
            && log.contains("nothing was moved or deleted: free space on the card"),
        "{log}"
    );
    assert!(!read("listing").contains("broken"), "{}", read("listing"));
    let v: Value = serde_json::from_str(&read("stats.json")).unwrap();
    assert_eq!(
        (v["customers"].as_u64(), v["seq"].as_u64()),
        (Some(1), Some(42))
    );
}

#[test]
fn simulate_filter_takes_the_config_files_spelling_and_the_hyphenated_one() {
    // The docs and `[presence] filter` say `kalman_trend`; a field engineer copies that.
    let snake = simulate_json(&["boutique", "--filter", "trimmed_mean"]);
    let kebab = simulate_json(&["boutique", "--filter", "trimmed-mean"]);
    assert_eq!(snake["filter"], "trimmed_mean");
    assert_eq!(snake["zone_accuracy"], kebab["zone_accuracy"]);
    let default = simulate_json(&["boutique"]);
    let named = simulate_json(&["boutique", "--filter", "kalman_trend"]);
    assert_eq!(named["filter"], default["filter"]);
    assert_eq!(named["zone_accuracy"], default["zone_accuracy"]);
    assert_ne!(
        snake["zone_accuracy"], default["zone_accuracy"],
        "the filter is really switched"
    );
}

#[test]
fn simulate_hours_runs_a_longer_day_of_the_same_store() {
    let hour = simulate_json(&["boutique"]);
    let day = simulate_json(&["boutique", "--hours", "6"]);
    assert_eq!(day["simulated_s"], 6 * 3600);
    // Shoppers keep arriving at the scenario's rate: about six times the visits to score.
    let (h, d) = (
        hour["truth_visits"].as_f64().unwrap(),
        day["truth_visits"].as_f64().unwrap(),
    );
    assert!(
        d > 4.5 * h && d < 7.5 * h,
        "{h} visits in an hour, {d} in six"
    );
    beacond()
        .args(["simulate", "boutique", "--hours", "0"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--hours"));
}

#[test]
fn simulate_set_changes_one_setting_of_the_store_for_the_run() {
    let own = simulate_json(&["boutique"]);
    // Everyone a registered customer: more customers are scored, from the same arrivals.
    let all_known = simulate_json(&["boutique", "--set", "shoppers.known_share=1.0"]);
    assert!(
        all_known["customers"].as_u64() > own["customers"].as_u64(),
        "{} customers, {} with every shopper known",
        own["customers"],
        all_known["customers"]
    );
    // Every zone at once, and a table the scenario does not have ([presence]).
    let kalman = simulate_json(&[
        "boutique",
        "--set",
        "zones.enter_rssi=-72",
        "--set",
        "presence.filter=kalman",
    ]);
    assert_eq!(kalman["filter"], "kalman");
    assert_ne!(kalman["zone_accuracy"], own["zone_accuracy"]);
    // Mistakes are named, with the override, the key and what would be valid.
    beacond()
        .args(["simulate", "boutique", "--set", "radio.shadowing_sigm=1.5"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("builtin:boutique (with --set)"))
        .stderr(predicate::str::contains(
            "did you mean `shadowing_sigma_db`",
        ));
    beacond()
        .args(["simulate", "boutique", "--set", "zones[3].enter_rssi=-70"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--set zones[3].enter_rssi=-70: [[zones]] has 3 entries",
        ));
    // A value out of range says which range, at the line the override wrote.
    beacond()
        .args(["simulate", "boutique", "--set", "radio.packet_loss=1"])
        .args(["--set", "radio.body_loss_db=-3"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "radio.packet_loss: 1 is out of range: the share of adverts lost, at least 0 and below 1",
        ))
        .stderr(predicate::str::contains(
            "radio.body_loss_db: -3 is out of range: a loss in dB, 0 or more",
        ));
}

/// The files under `dir`, by name, with their contents.
fn files_in(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn the_packaged_man_pages_and_completions_match_the_binary() {
    let stale = "is out of date with the command line: run scripts/gen-man and commit the result";
    let dir = tempfile::tempdir().unwrap();
    beacond().arg("man").arg(dir.path()).assert().success();
    let generated = files_in(dir.path());
    let shipped = files_in(&std::path::Path::new(ROOT).join("docs/man"));
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>(),
        "docs/man {stale}"
    );
    for (name, text) in &generated {
        assert!(shipped[name] == *text, "docs/man/{name} {stale}");
    }
    for (shell, file) in [
        ("bash", "beacond.bash"),
        ("zsh", "_beacond"),
        ("fish", "beacond.fish"),
    ] {
        let out = beacond().args(["completions", shell]).assert().success();
        let script = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        let shipped = std::fs::read_to_string(format!("{ROOT}/docs/completions/{file}")).unwrap();
        assert!(script == shipped, "docs/completions/{file} {stale}");
    }
}

#[test]
fn every_command_has_a_man_page_its_parent_page_points_to() {
    let pages = files_in(&std::path::Path::new(ROOT).join("docs/man"));
    let help = beacond().arg("--help").assert().success();
    let help = String::from_utf8_lossy(&help.get_output().stdout).into_owned();
    let commands: Vec<&str> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        // A command's line starts two spaces in; its wrapped description further.
        .filter_map(|l| l.strip_prefix("  ").filter(|l| !l.starts_with(' ')))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() > 10, "{help}");
    for c in &commands {
        assert!(
            pages.contains_key(&format!("beacond-{c}.1")),
            "no page for {c}"
        );
    }
    for name in pages.keys() {
        let stem = name.trim_end_matches(".1");
        if stem == "beacond" {
            continue;
        }
        let parent = stem.rsplit_once('-').map(|(p, _)| p).unwrap();
        // beacond-check-config's parent is beacond, not beacond-check.
        let parent = if pages.contains_key(&format!("{parent}.1")) {
            parent
        } else {
            "beacond"
        };
        let escaped = stem.replace('-', "\\-");
        assert!(
            pages[&format!("{parent}.1")].contains(&format!("{escaped}(1)")),
            "{parent}(1) does not point to {stem}(1)"
        );
    }
    // What --help has no room for: where the files are, what the signals and exit codes mean.
    let main = &pages["beacond.1"];
    for needle in [
        ".SH FILES",
        "/etc/beacond/beacond.toml",
        "/var/lib/beacond/spool",
        ".SH SIGNALS",
        "SIGHUP",
        ".SH \"EXIT STATUS\"",
        "BEACOND_CONFIG",
    ] {
        assert!(main.contains(needle), "beacond.1 lacks {needle}");
    }
}

#[test]
fn the_man_pages_render_without_warnings() {
    for name in files_in(&std::path::Path::new(ROOT).join("docs/man")).keys() {
        // -k runs preconv first, as man(1) does, so UTF-8 in help text is fine.
        let out = StdCommand::new("groff")
            .args(["-k", "-man", "-ww", "-z", "-Tutf8"])
            .arg(format!("{ROOT}/docs/man/{name}"))
            .output()
            .expect("groff (scripts/test installs groff-base)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What bash offers after `words` (the last one being completed), with the packaged script.
fn bash_completes(words: &[&str]) -> Vec<String> {
    let script = format!(
        "source {ROOT}/docs/completions/beacond.bash\n\
         COMP_WORDS=({words})\n\
         COMP_CWORD={cword}\n\
         _beacond beacond {cur} {prev}\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words = words.join(" "),
        cword = words.len() - 1,
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = StdCommand::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    common::assert_success(&out);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_commands_options_and_their_values() {
    assert_eq!(bash_completes(&["beacond", "che"]), ["check-config"]);
    assert_eq!(
        bash_completes(&["beacond", "simulate", "--fi"]),
        ["--filter"]
    );
    assert_eq!(
        bash_completes(&["beacond", "simulate", "--filter", "k"]),
        ["kalman_trend", "kalman"]
    );
    assert_eq!(bash_completes(&["beacond", "cache", "ex"]), ["export"]);
}
