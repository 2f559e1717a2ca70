//! `beacond support-bundle` next to a running daemon publishing to a real Mosquitto: what the
//! bundle holds, and that nothing in it names a customer or a device.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use beacond::config::Config;
use common::Broker;

/// Stand-ins for systemd's tools on a machine without systemd: `journalctl` prints what a
/// library or BlueZ might have logged with device addresses in it (and records how it was
/// asked), `systemctl show` a running service.
fn fake_systemd(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = |name: &str, body: &str| {
        let p = bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(
        "journalctl",
        &format!(
            "echo \"$@\" > {:?}\n\
             echo '2026-12-07T08:00:00+0000 hub beacond[1]: INFO beacond::daemon: started'\n\
             echo '2026-12-07T08:00:01+0000 hub beacond[1]: DEBUG could not remove a device \
             object /org/bluez/hci0/dev_C0_FF_EE_12_34_56'\n\
             echo '2026-12-07T08:00:02+0000 hub beacond[1]: WARN btleplug: peripheral \
             C0:FF:EE:12:34:57 vanished, anon-bc49b5'",
            dir.join("journalctl.args")
        ),
    );
    script(
        "systemctl",
        "echo Id=beacond.service\necho ActiveState=active\necho NRestarts=0",
    );
    bin
}

/// Runs `beacond support-bundle ARGS… --config CONFIG` in `cwd` with the stand-ins in `bin`
/// first on the PATH.
fn support_bundle(args: &[&str], config: &Path, bin: &Path, cwd: &Path) -> std::process::Output {
    Command::new(assert_cmd::cargo::cargo_bin("beacond"))
        .arg("support-bundle")
        .args(args)
        .arg("--config")
        .arg(config)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// Every file of the bundle at `path`, by its name inside the bundle's directory.
fn unpack(path: &Path) -> (String, BTreeMap<String, String>) {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(path).unwrap(),
    ));
    let mut dirs = Vec::new();
    let mut files = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let (dir, file) = name.split_once('/').unwrap();
        dirs.push(dir.to_owned());
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        files.insert(file.to_owned(), text);
    }
    dirs.dedup();
    assert_eq!(dirs.len(), 1, "one directory in the bundle: {dirs:?}");
    (dirs.remove(0), files)
}

#[test]
fn a_bundle_holds_what_support_needs_and_nothing_that_names_a_person() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let health = format!("127.0.0.1:{}", common::free_port());
    let data_dir = dir.path().join("data");
    let cfg_path = dir.path().join("beacond.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[hub]\nstore_id = \"s1\"\nhub_id = \"hub-window\"\ndata_dir = {:?}\n\
             [scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\nspeed = 200.0\n\
             [mqtt]\nurl = \"{}\"\nkeep_alive_s = 5\n[health]\nlisten = \"{health}\"\n\
             [[zones]]\nid = \"window\"\nenter_rssi = -75\nexit_rssi = -84\nmin_enter_s = 1.0\n",
            data_dir.display().to_string(),
            broker.url()
        ),
    )
    .unwrap();
    // Everything the hub publishes, from the start: the customer ids the bundle must not hold.
    let sub = common::Subscriber::start(broker.port, "support-watch", "beacond/#", true);
    let log = dir.path().join("daemon.log");
    let mut daemon = common::start_daemon_logging(&cfg_path, Some(&log));
    // Until customers have been seen and published: then the spool, the offer caps and the
    // published events all hold customer ids the bundle must not.
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sub.wait_for("a customer's event", Duration::from_secs(60), |m| {
            m.iter().any(|(_, v, _)| v["customer_id"].is_string())
        })
    }));
    assert!(
        waited.is_ok(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let bin = fake_systemd(dir.path());
    let out_path = dir.path().join("bundle.tar.gz");
    let output = out_path.to_str().unwrap();
    let out = support_bundle(
        &["--since", "2 days ago", "--output", output],
        &cfg_path,
        &bin,
        dir.path(),
    );
    common::assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("wrote {}", out_path.display())),
        "{stdout}"
    );
    let (name, files) = unpack(&out_path);
    assert!(name.starts_with("beacond-support-s1-hub-window-"), "{name}");
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    for expected in [
        "README.txt",
        "system.txt",
        "config.toml",
        "config-check.txt",
        "doctor.json",
        "status.json",
        "metrics.txt",
        "data-dir.txt",
        "service.txt",
        "journal.txt",
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
    // learned.json appears once a hub has learned; nothing else may.
    assert!(names.len() <= 11, "{names:?}");

    // The config is the effective one, and reads back to what the daemon runs.
    let cfg = Config::load(&cfg_path).unwrap();
    assert_eq!(
        Config::parse(&files["config.toml"]).unwrap(),
        cfg.effective()
    );
    assert!(files["config-check.txt"].contains(": OK"));
    let doctor: serde_json::Value = serde_json::from_str(&files["doctor.json"]).unwrap();
    let mqtt = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "mqtt")
        .unwrap();
    assert_eq!(mqtt["status"], "ok", "{doctor}");
    let status: serde_json::Value = serde_json::from_str(&files["status.json"]).unwrap();
    assert!(status["adverts_total"].as_u64().unwrap() > 0, "{status}");
    assert!(
        files["metrics.txt"].contains("beacond_"),
        "{}",
        files["metrics.txt"]
    );
    assert!(files["system.txt"].contains("beacond 0.1.0"));
    assert!(files["system.txt"].contains("hub: s1/hub-window"));
    assert!(files["service.txt"].contains("ActiveState=active"));
    // The data directory by name and size only: the spool is listed, its contents are not there.
    assert!(
        files["data-dir.txt"].contains("spool"),
        "{}",
        files["data-dir.txt"]
    );

    // The journal was asked for the daemon's unit and the period given, and came back masked.
    let args = std::fs::read_to_string(dir.path().join("journalctl.args")).unwrap();
    assert!(args.contains("--unit=beacond"), "{args}");
    assert!(args.contains("--since=2 days ago"), "{args}");
    let journal = &files["journal.txt"];
    assert!(journal.contains("dev_XX_XX_XX_XX_XX_XX"), "{journal}");
    assert!(
        journal.contains("peripheral XX:XX:XX:XX:XX:XX vanished, anon-xxxxxx"),
        "{journal}"
    );
    assert!(files["README.txt"].contains("3 device address(es) or handle(s) masked"));

    // Nothing names a person: no device address, no anonymous handle, and none of the customer
    // ids the daemon has published by now.
    let published: Vec<String> = sub
        .messages()
        .iter()
        .filter_map(|(_, v, _)| v["customer_id"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !published.is_empty(),
        "no customer was published before the bundle"
    );
    for (file, text) in &files {
        for needle in ["C0_FF_EE", "C0:FF:EE", "anon-bc49b5"] {
            assert!(!text.contains(needle), "{needle} in {file}");
        }
        for id in &published {
            assert!(!text.contains(id.as_str()), "customer {id} in {file}");
        }
    }
    let _ = daemon.kill();
    let _ = daemon.wait();

    // A second bundle never replaces the first.
    let again = support_bundle(
        &["--no-doctor", "--output", output],
        &cfg_path,
        &bin,
        dir.path(),
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

/// A hub whose config does not load is one that most needs support: the bundle still comes,
/// with the file as it is and why it does not load.
#[test]
fn a_config_that_does_not_load_is_bundled_with_its_problems() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("beacond.toml");
    // A password written where it does not belong is one more reason the file does not load.
    let text = "[hub]\nstore_id = \"s1\"\n[mqtt]\npassword = \"hunter2\"\n\
                [[zones]]\nid = \"till\"\nenter_rsi = -70\n";
    std::fs::write(&cfg_path, text).unwrap();
    let bin = fake_systemd(dir.path());
    let out = support_bundle(&[], &cfg_path, &bin, dir.path());
    common::assert_success(&out);
    let bundle = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("beacond-support-unknown-unknown-")
        })
        .expect("the bundle in the current directory");
    let (_, files) = unpack(&bundle);
    assert_eq!(
        files["config.toml"],
        text.replace("\"hunter2\"", "\"(masked)\"")
    );
    assert!(files.values().all(|f| !f.contains("hunter2")));
    assert!(
        files["config-check.txt"].contains("zones[0].enter_rsi: unknown key")
            && files["config-check.txt"].contains("mqtt.password: unknown key"),
        "{}",
        files["config-check.txt"]
    );
    assert!(files["config-check.txt"].contains("2 problem(s) found"));
    assert!(!files.contains_key("doctor.json"));
    assert!(files.contains_key("journal.txt"));
}
