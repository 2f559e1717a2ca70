//! `beacond doctor` against real parts: a mock BlueZ on a private system bus, a real Mosquitto
//! with a password file, a data directory on disk, and the daemon itself running next to it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::bluez::MockBluez;
use common::{Broker, Subscriber};
use serde_json::Value;

/// A hub's config logging in as `hub` with the password from its credentials.
fn config(dir: &Path, broker: &Broker, data_dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("beacond.toml");
    std::fs::write(
        &p,
        format!(
            "[hub]\nstore_id = \"s1\"\nhub_id = \"h1\"\ndata_dir = {:?}\n\
             [mqtt]\nurl = \"{}\"\nkeep_alive_s = 5\n{extra}\n",
            data_dir.display().to_string(),
            broker.url()
        ),
    )
    .unwrap();
    p
}

const LOGIN: &str = "username = \"hub\"\npassword_file = \"mqtt-password\"";

/// Runs `beacond doctor --json` as systemd would give it its credentials; (exit code, checks).
fn doctor(config: &Path, bus: &MockBluez, creds: &Path) -> (i32, Vec<(String, String, String)>) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("beacond"))
        .args(["doctor", "--json", "--config"])
        .arg(config)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .env("CREDENTIALS_DIRECTORY", creds)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let checks = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_owned();
            (s("check"), s("status"), s("detail"))
        })
        .collect();
    assert_eq!(v["ok"], out.status.code() == Some(0));
    (out.status.code().unwrap(), checks)
}

fn finding<'a>(checks: &'a [(String, String, String)], name: &str) -> (&'a str, &'a str) {
    let c = checks
        .iter()
        .find(|c| c.0 == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:?}"));
    (c.1.as_str(), c.2.as_str())
}

fn credentials(dir: &Path, password: &str) -> PathBuf {
    let creds = dir.join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("mqtt-password"), format!("{password}\n")).unwrap();
    creds
}

#[test]
fn a_healthy_hub_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let bus = MockBluez::start(dir.path());
    bus.py("add_adapter('hci0')");
    let broker = Broker::with_password(dir.path(), "hub", "s3cret");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let key = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])
            .verifying_key()
            .to_bytes(),
    );
    let cfg = config(
        dir.path(),
        &broker,
        &data,
        &format!(
            "{LOGIN}\n[identity]\nplatform_public_key = \"{key}\"\n\
             [health]\nlisten = \"127.0.0.1:{}\"\n[[zones]]\nid = \"door\"",
            common::free_port()
        ),
    );
    let (code, checks) = doctor(&cfg, &bus, &credentials(dir.path(), "s3cret"));
    assert_eq!(code, 0, "{checks:#?}");
    // The clock is this machine's: a test VM's kernel may say no NTP client keeps it.
    for c in checks.iter().filter(|c| c.0 != "clock") {
        assert_eq!(c.1, "ok", "{c:?}");
    }
    assert!(finding(&checks, "bluetooth").1.contains("scans with hci0"));
    assert!(finding(&checks, "mqtt")
        .1
        .contains(&format!("logged in to 127.0.0.1:{} as hub", broker.port)));
    assert!(finding(&checks, "data_dir").1.contains("is writable"));
    assert!(finding(&checks, "hub_id")
        .1
        .contains("no other hub uses this hub_id"));
    assert!(finding(&checks, "health")
        .1
        .contains("is free for the endpoint"));
    assert_eq!(
        finding(&checks, "zones").1,
        "every zone is measured by a hub the source hears (h1)"
    );
    // It only looked: nothing was left in the data directory.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
}

#[test]
fn each_failure_is_named_with_what_to_do_and_nothing_is_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut bus = MockBluez::start(dir.path());
    bus.py("add_adapter('hci0')");
    bus.py("props('/org/bluez/hci0').Set('org.bluez.Adapter1', 'Powered', False)");
    let broker = Broker::with_password(dir.path(), "hub", "s3cret");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    // Another program on the health endpoint's port: the daemon would not start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = config(
        dir.path(),
        &broker,
        &file,
        &format!(
            "{LOGIN}\n[health]\nlisten = \"{}\"\n[[zones]]\nid = \"deli\"\nhub = \"h2\"",
            taken.local_addr().unwrap()
        ),
    );
    let creds = credentials(dir.path(), "wrong");

    let (code, checks) = doctor(&cfg, &bus, &creds);
    assert_eq!(code, 1, "{checks:#?}");
    let (status, detail) = finding(&checks, "mqtt");
    assert_eq!(status, "fail");
    assert!(detail.contains("broker refused the login"), "{detail}");
    let (status, detail) = finding(&checks, "data_dir");
    assert_eq!(status, "fail");
    assert!(detail.contains("is not a directory"), "{detail}");
    // An adapter that is off is a warning (the daemon powers it on), and doctor leaves it off.
    let (status, detail) = finding(&checks, "bluetooth");
    assert_eq!(status, "warn");
    assert!(detail.contains("hci0 is off"), "{detail}");
    let powered = bus.py("print(props('/org/bluez/hci0').Get('org.bluez.Adapter1', 'Powered'))");
    assert_eq!(powered.trim(), "0");
    let (status, detail) = finding(&checks, "health");
    assert_eq!(status, "fail");
    assert!(detail.contains("the daemon would not start"), "{detail}");
    let (status, detail) = finding(&checks, "sync");
    assert_eq!(status, "warn");
    assert!(detail.contains("platform_public_key"), "{detail}");
    // A zone copied from another hub's config: this hub's radio never measures it.
    let (status, detail) = finding(&checks, "zones");
    assert_eq!(status, "warn");
    assert!(
        detail.starts_with("zones[0].hub: zone \"deli\" is measured by hub h2, but this hub (h1) hears only its own radio"),
        "{detail}"
    );

    // bluetoothd gone, and the broker too.
    bus.stop_mock();
    drop(broker);
    let (code, checks) = doctor(&cfg, &bus, &creds);
    assert_eq!(code, 1);
    let (status, detail) = finding(&checks, "bluetooth");
    assert_eq!(status, "fail");
    assert!(detail.contains("systemctl start bluetooth"), "{detail}");
    let (status, detail) = finding(&checks, "mqtt");
    assert_eq!(status, "fail");
    assert!(detail.contains("is the broker running there"), "{detail}");
}

#[test]
fn a_bad_config_is_reported_as_check_config_does() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("beacond.toml");
    std::fs::write(&cfg, "[[zones]]\nid = \"a\"\nenter_rsi = -70\n").unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("beacond"))
        .args(["doctor", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zones[0].enter_rsi"), "{err}");
}

/// Next to a running daemon: doctor sees it, logs in beside it, and the platform never sees the hub
/// go offline (no Last Will, no session taken over).
#[test]
fn running_next_to_the_daemon_disturbs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bus = MockBluez::start(dir.path());
    bus.py("add_adapter('hci0')");
    // Anonymous, so the platform's subscriber gets in too.
    let broker = Broker::start(dir.path());
    let data = dir.path().join("data");
    let cfg = config(
        dir.path(),
        &broker,
        &data,
        &format!("[health]\nlisten = \"127.0.0.1:{}\"", common::free_port()),
    );
    let creds = credentials(dir.path(), "unused");
    let sub = Subscriber::start(broker.port, "platform", "beacond/s1/h1/status", true);
    let log = dir.path().join("daemon.log");
    let mut daemon = Command::new(assert_cmd::cargo::cargo_bin("beacond"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let online = |m: &(String, Value, bool)| m.1["state"] == "online";
    sub.wait_for(
        "the daemon's online status",
        Duration::from_secs(20),
        |msgs| msgs.iter().any(online),
    );

    let (code, checks) = doctor(&cfg, &bus, &creds);
    let (_, detail) = finding(&checks, "daemon");
    assert!(detail.contains("a beacond daemon is running"), "{detail}");
    assert_eq!(finding(&checks, "mqtt").0, "ok", "{checks:#?}");
    // It asks the running daemon how it is.
    assert!(
        finding(&checks, "health")
            .1
            .starts_with("the daemon answers on"),
        "{checks:#?}"
    );
    assert_eq!(code, 0, "{checks:#?}");
    assert_eq!(finding(&checks, "hub_id").0, "ok", "{checks:#?}");
    // The same hub id set up on a second hub (a copied card: another data directory here),
    // before its daemon is started: doctor finds the first one online.
    let second = dir.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let copy = config(&second, &broker, &second.join("data"), "");
    let (code, checks) = doctor(&copy, &bus, &creds);
    let (status, detail) = finding(&checks, "hub_id");
    assert_eq!(status, "warn", "{checks:#?}");
    assert!(
        detail.contains("store s1 hub h1 is online") && detail.contains("its own [hub] hub_id"),
        "{detail}"
    );
    assert_eq!(code, 0, "a warning, not a failure: {checks:#?}");
    // A neighbouring hub sharing with h1 and with a misspelt peer: doctor names the one the broker
    // has never heard of.
    let neighbour = dir.path().join("neighbour");
    std::fs::create_dir(&neighbour).unwrap();
    let h2 = neighbour.join("beacond.toml");
    std::fs::write(
        &h2,
        std::fs::read_to_string(config(&neighbour, &broker, &neighbour.join("data"), ""))
            .unwrap()
            .replace("hub_id = \"h1\"", "hub_id = \"h2\"")
            + "[peers]\nhubs = [\"h1\", \"hub-1\"]\n",
    )
    .unwrap();
    let (code, checks) = doctor(&h2, &bus, &creds);
    let (status, detail) = finding(&checks, "peers");
    assert_eq!(status, "warn", "{checks:#?}");
    assert_eq!(
        detail,
        "hub-1 has never published on this broker: check the name against that hub's [hub] \
         hub_id and store_id; online: h1"
    );
    assert_eq!(code, 0, "a warning, not a failure: {checks:#?}");
    // Give a Last Will or a taken-over session time to show.
    std::thread::sleep(Duration::from_secs(2));
    let states: Vec<Value> = sub
        .messages()
        .iter()
        .map(|m| m.1["state"].clone())
        .collect();
    assert!(states.iter().all(|s| s == "online"), "{states:?}");
    assert!(daemon.try_wait().unwrap().is_none());
    let _ = daemon.kill();
    let _ = daemon.wait();
}
