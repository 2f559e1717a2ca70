//! The field engineer's tools through the binary: `scan`, `record` → `replay`, and `calibrate`.

mod common;

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

fn beacond() -> Command {
    Command::cargo_bin("beacond").unwrap()
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn scan_runs_without_a_config_on_the_simulated_store_and_streams_json() {
    let out = beacond()
        .args(["scan", "--source", "sim", "--scenario", "supermarket"])
        .args(["--speed", "20", "--duration", "3", "--json"])
        .env_remove("BEACOND_CONFIG")
        .output()
        .unwrap();
    common::assert_success(&out);
    let rows = json_lines(&out.stdout);
    assert!(rows.len() > 10);
    for r in &rows {
        for key in [
            "id",
            "kind",
            "rssi",
            "distance_m",
            "adverts_per_s",
            "last_seen",
            "frames",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
    }
    // Customers by name, anonymous devices by handle only, fixed beacons by their id.
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    for k in ["customer", "anonymous", "fixed"] {
        assert!(kinds.contains(&k), "no {k} row");
    }
    let customer = rows.iter().find(|r| r["kind"] == "customer").unwrap();
    assert!(customer["id"].as_str().unwrap().starts_with("customer "));
    // A decoded beacon's fields are named as `beacond decode` names them.
    let frame = rows
        .iter()
        .filter(|r| r["kind"] == "fixed")
        .flat_map(|r| r["frames"].as_array().unwrap())
        .find(|f| f["type"] == "ibeacon")
        .expect("an iBeacon frame");
    for key in ["uuid", "major", "minor", "measured_power"] {
        assert!(frame.get(key).is_some(), "{key} missing in {frame}");
    }
    // The zone the engine assigns shows up once shoppers settle.
    assert!(rows.iter().any(|r| r["zone"].is_string()));
    // Sorted and filtered table.
    let out = beacond()
        .args([
            "scan",
            "--source",
            "sim",
            "--scenario",
            "supermarket",
            "--speed",
            "20",
        ])
        .args(["--duration", "2", "--match", "customer", "--sort", "id"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let table = text.split("beacond scan —").last().unwrap();
    let ids: Vec<&str> = table
        .lines()
        .skip(2)
        .filter(|l| !l.is_empty())
        .map(|l| l.split("  ").next().unwrap().trim())
        .collect();
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|i| i.starts_with("customer ")), "{ids:?}");
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
}

#[test]
fn a_recording_replays_through_the_whole_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("store.jsonl");
    let out = beacond()
        .args(["record"])
        .arg(&rec)
        .args([
            "--source",
            "sim",
            "--scenario",
            "boutique",
            "--speed",
            "100",
            "--duration",
            "3",
        ])
        .output()
        .unwrap();
    common::assert_success(&out);
    let lines = std::fs::read_to_string(&rec).unwrap();
    let n = lines.lines().count() - 1;
    assert!(n > 500, "{n} adverts recorded");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{n} adverts written")));

    // The boutique's zones and hubs, played from the recording at 200× through `beacond run`.
    let scenario = beacond::scan::sim::Scenario::load("builtin:boutique").unwrap();
    let mut cfg = scenario.as_config();
    cfg.scan.source = beacond::config::SourceKind::Replay;
    cfg.scan.replay_file = Some(rec.clone());
    cfg.scan.speed = 200.0;
    cfg.mqtt.stats_interval_s = 5;
    cfg.hub.data_dir = dir.path().join("data");
    let cfg_path = dir.path().join("replay.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg).unwrap()).unwrap();
    let out = beacond()
        .args(["run", "--config"])
        .arg(&cfg_path)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    common::assert_success(&out);
    let records = json_lines(&out.stdout);
    let stats: Vec<&Value> = records.iter().filter(|r| r["type"] == "stats").collect();
    assert!(!stats.is_empty());
    let adverts: u64 = stats.iter().map(|s| s["adverts"].as_u64().unwrap()).sum();
    assert!(
        adverts as f64 > n as f64 * 0.8,
        "{adverts} of {n} adverts reached the core"
    );
    assert!(stats.last().unwrap()["scan"]["adverts"].as_u64().unwrap() as usize <= n);
    // The replayed shoppers fill the zones.
    assert!(records.iter().any(|r| r["type"] == "headcount"
        && r["zones"]
            .as_array()
            .unwrap()
            .iter()
            .any(|z| z["anonymous"].as_u64() > Some(0))));

    // A broken line is named by file and line, and the run fails.
    let mut bad = lines.clone();
    bad.push_str("{\"at\": 1, \"addr\": \"zz\", \"rssi\": -50}\n");
    std::fs::write(&rec, bad).unwrap();
    let out = beacond()
        .args(["scan", "--source", "replay", "--replay"])
        .arg(&rec)
        .args(["--speed", "1000", "--json"])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "store.jsonl:{}: addr \"zz\" is not 12 hex digits",
            n + 2
        )),
        "{err}"
    );
}

/// A recording of a reference beacon held 10 s at 1 m, 10 s at the edge and 10 s outside, with a
/// weaker stranger around all along.
fn calibration_recording(path: &Path) {
    let mut s = String::from(
        "{\"beacond_recording\":1,\"started\":\"2026-11-25T09:00:00.000Z\",\"hubs\":[\"hub-1\"],\"source\":\"bluez\"}\n",
    );
    let reference = "1aff4c000215e2c56db5dffb48d2b060d0f5a71096e000010002c5";
    let t0 = 1_795_597_200_000u64;
    for i in 0..300u64 {
        let base = match i / 100 {
            0 => -59,
            1 => -72,
            _ => -88,
        };
        let jitter = [0, 2, -2, 1, -1, 3, -3, 0, 1, -1][(i % 10) as usize];
        s.push_str(&format!(
            "{{\"at\":{},\"addr\":\"c00000000001\",\"rssi\":{},\"data\":\"{reference}\"}}\n",
            t0 + i * 100,
            base + jitter
        ));
        s.push_str(&format!(
            "{{\"at\":{},\"addr\":\"c00000000002\",\"rssi\":-95,\"data\":\"\"}}\n",
            t0 + i * 100 + 50
        ));
    }
    std::fs::write(path, s).unwrap();
}

#[test]
fn calibrate_suggests_zone_values_and_writes_them_keeping_comments() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("cal.jsonl");
    calibration_recording(&rec);
    let cfg = dir.path().join("beacond.toml");
    std::fs::write(
        &cfg,
        format!(
            "# Store 12, hub at the entrance\n[hub]\nstore_id = \"store-12\"\nhub_id = \"hub-1\"\ndata_dir = {:?}\n\n\
             [[zones]]\nid = \"entrance\" # by the doors\nhub = \"hub-1\"\nenter_rssi = -70\nexit_rssi = -80\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let out = beacond()
        .args(["calibrate", "--zone", "entrance", "--config"])
        .arg(&cfg)
        .args(["--source", "replay", "--replay"])
        .arg(&rec)
        .args([
            "--speed",
            "100",
            "--seconds",
            "10",
            "--edge-m",
            "4",
            "--write",
        ])
        .write_stdin("\n\n\n")
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Reference device: ibeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0:1:2"),
        "{text}"
    );
    assert!(
        text.contains("measured_power = -59: the median of 100 readings at 1 m"),
        "{text}"
    );
    assert!(text.contains("enter_rssi = -72"), "{text}");
    assert!(text.contains("Wrote zone \"entrance\""), "{text}");
    let written = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        written.contains("# Store 12, hub at the entrance") && written.contains("# by the doors")
    );
    let parsed = beacond::config::Config::load(&cfg).unwrap();
    let z = &parsed.zones[0];
    assert_eq!((z.measured_power, z.enter_rssi), (Some(-59), -72));
    assert!(
        z.exit_rssi <= -76 && z.exit_rssi >= -84,
        "exit {}",
        z.exit_rssi
    );
    assert!(z
        .path_loss_exponent
        .is_some_and(|n| (2.0..2.4).contains(&n)));
    beacond()
        .args(["check-config"])
        .arg(&cfg)
        .assert()
        .success();

    // Too short a phase is refused with what to do.
    let out = beacond()
        .args(["calibrate", "--zone", "entrance", "--config"])
        .arg(&cfg)
        .args(["--source", "replay", "--replay"])
        .arg(&rec)
        .args(["--speed", "100", "--seconds", "0.5", "--yes"])
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need at least 10"));
    // An unknown zone is named.
    let out = beacond()
        .args(["calibrate", "--zone", "cafe", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no zone \"cafe\" in the config; zones: entrance"));
}
