//! The `bluez` source against a mock BlueZ on a private D-Bus system bus (python-dbusmock's `bluez5`
//! template), with the daemon binary and a real Mosquitto: what the mock's devices advertise must come
//! out as presence events, and the source must survive what real BlueZ does to it over months.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use beacond::identity::{publish, token};
use common::bluez::{wait_until, MockBluez};
use common::{signal, Broker, Subscriber};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

const STORE: &str = "store-9";
const HUB: &str = "hub-1";
const APP_UUID: &str = "6b1f3e2a-5c4d-4e8f-9a0b-1c2d3e4f5a6b";
const IBEACON_UUID: &str = "e2c56db5-dffb-48d2-b060-d0f5a71096e0";
const APP_KEY: [u8; 32] = [0x42; 32];

fn platform_key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn config(dir: &Path, url: &str, watchdog_s: u64, extra_scan: &str) -> PathBuf {
    let p = dir.join("beacond.toml");
    std::fs::write(
        &p,
        format!(
            "[hub]\nstore_id = \"{STORE}\"\nhub_id = \"{HUB}\"\ndata_dir = {:?}\n\
             [scan]\nsource = \"bluez\"\nwatchdog_s = {watchdog_s}\n{extra_scan}\n\
             [mqtt]\nurl = \"{url}\"\nkeep_alive_s = 5\nstats_interval_s = 1\n\
             [identity]\nplatform_public_key = \"{}\"\napp_service_uuid = \"{APP_UUID}\"\ntoken_epoch_s = 900\n\
             [[zones]]\nid = \"entrance\"\nhub = \"{HUB}\"\nenter_rssi = -75\nexit_rssi = -85\n\
             min_enter_s = 0.5\nabsence_timeout_s = 3.0\n",
            dir.join("data").display().to_string(),
            hex::encode(platform_key().verifying_key().to_bytes()),
        ),
    )
    .unwrap();
    p
}

fn daemon(config: &Path, bus: &MockBluez, log: &Path) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("beacond"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "beacond=debug")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .unwrap()
}

fn last_scan(msgs: &[(String, Value, bool)]) -> Option<Value> {
    common::last_stats(msgs, "scan")
}

fn scan_counter(sub: &Subscriber, name: &str) -> u64 {
    last_scan(&sub.messages())
        .and_then(|s| s[name].as_u64())
        .unwrap_or(0)
}

fn presence(msgs: &[(String, Value, bool)]) -> Vec<Value> {
    msgs.iter()
        .filter(|(t, _, _)| t.ends_with("/presence"))
        .map(|(_, v, _)| v.clone())
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The app's service data for a customer with `APP_KEY` right now.
fn app_token_hex() -> String {
    let now = unix_now();
    let day_key = token::day_key(&APP_KEY, token::day_of(now));
    let t = token::token(&day_key, token::epoch_of(now, 900), 900);
    hex::encode(token::service_data(&t))
}

fn sync_customers(broker: &Broker) {
    let body = json!({"v": 1, "store": STORE, "seq": 1, "type": "snapshot", "customers": [
        {"id": "c-fob", "beacons": [format!("ibeacon:{IBEACON_UUID}:1:2")]},
        {"id": "c-edd", "beacons": ["eddystone:edd1ebeac04e5defa017:0123456789ab"]},
        {"id": "c-app", "app_key": hex::encode(APP_KEY)},
    ]});
    let payloads = publish::prepare(&platform_key(), &body.to_string(), "test", 10).unwrap();
    broker.publish_sync(STORE, payloads);
}

/// A background driver: the three customers' devices advertise every 100 ms with a varying RSSI.
const THREE_DEVICES: &str = r#"
fob = add_device('hci0', 'F0:0B:00:00:00:01')
set_mfr(fob, 0x004C, '0215e2c56db5dffb48d2b060d0f5a71096e000010002c5')
edd = add_device('hci0', 'ED:D0:00:00:00:02')
set_sd(edd, '0000feaa-0000-1000-8000-00805f9b34fb', '00e2edd1ebeac04e5defa0170123456789ab0000')
app = add_device('hci0', '4A:00:00:00:00:03')
set_sd(app, '6b1f3e2a-5c4d-4e8f-9a0b-1c2d3e4f5a6b', sys.argv[1])
i = 0
while True:
    for p in (fob, edd, app):
        set_rssi(p, -60 - (i % 2))
    i += 1
    time.sleep(0.1)
"#;

#[test]
fn beacons_and_app_tokens_heard_through_bluez_become_presence_events() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform", &format!("beacond/{STORE}/#"), true);
    let mut bus = MockBluez::start(dir.path());
    bus.py("add_adapter('hci0')");
    let cfg = config(dir.path(), &broker.url(), 90, "");
    let mut d = daemon(&cfg, &bus, &dir.path().join("daemon.log"));
    sub.wait_for("the hub's first stats", Duration::from_secs(20), |m| {
        last_scan(m).is_some()
    });
    sync_customers(&broker);
    sub.wait_for("the customers synced", Duration::from_secs(20), |m| {
        m.iter()
            .any(|(t, v, _)| t.ends_with("/stats") && v["sync"]["customers"] == 3)
    });
    assert_eq!(
        bus.py("print(adapter_prop('hci0', 'Discovering'))").trim(),
        "1"
    );
    let token = app_token_hex();
    bus.py_background(&THREE_DEVICES.replace("sys.argv[1]", &format!("{token:?}")));
    sub.wait_for("enter events of all three", Duration::from_secs(30), |m| {
        let p = presence(m);
        ["c-fob", "c-edd", "c-app"].iter().all(|c| {
            p.iter()
                .any(|e| e["event"] == "enter" && e["customer_id"] == *c)
        })
    });
    // Stats go out every second and the enters come 0.5 s after the first adverts, so the newest
    // stats message may predate them: wait for one that counts them.
    sub.wait_for("stats counting the adverts", Duration::from_secs(10), |m| {
        last_scan(m)
            .and_then(|s| s["adverts"].as_u64())
            .unwrap_or(0)
            > 10
    });

    // Let the smoothed RSSI settle on what the devices send.
    std::thread::sleep(Duration::from_secs(3));
    // The devices go quiet: they leave the zone, and the hub removes BlueZ's objects for them.
    bus.stop_drivers();
    sub.wait_for("exit events", Duration::from_secs(20), |m| {
        presence(m).iter().filter(|e| e["event"] == "exit").count() >= 3
    });
    // The smoothed RSSI converged on what the mock sent (-60/-61) from BlueZ's initial -79.
    for e in presence(&sub.messages())
        .iter()
        .filter(|e| e["event"] == "exit")
    {
        let rssi = e["rssi"].as_f64().unwrap();
        assert!(
            (-62.0..=-59.0).contains(&rssi),
            "RSSI as the mock sent it: {e}"
        );
    }
    wait_until(
        "the device objects removed",
        Duration::from_secs(40),
        || bus.devices().is_empty(),
    );
    sub.wait_for("removals counted", Duration::from_secs(5), |m| {
        last_scan(m).is_some_and(|s| s["devices_removed"].as_u64() >= Some(3))
    });
    // A device BlueZ drops by itself is simply gone too; the daemon keeps running.
    let p = bus.py("p = add_device('hci0', '11:22:33:44:55:66')\nset_rssi(p, -50)\nprint(p)");
    bus.py(&format!("remove('hci0', {:?})", p.trim()));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        d.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );
    signal(&d, "-TERM");
    assert!(d.wait().unwrap().success());
}

#[test]
fn bluetoothd_going_away_and_adapters_coming_and_going_are_survived() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform", &format!("beacond/{STORE}/#"), true);
    // No adapter at first.
    let mut bus = MockBluez::start(dir.path());
    let cfg = config(dir.path(), &broker.url(), 90, "");
    let log = dir.path().join("daemon.log");
    let mut d = daemon(&cfg, &bus, &log);
    wait_until(
        "a clear message about the adapter",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("no Bluetooth adapter found (adapters: none); plug one in")
        },
    );
    sub.wait_for(
        "the missing adapter counted",
        Duration::from_secs(10),
        |m| last_scan(m).is_some_and(|s| s["adapter_missing"].as_u64() >= Some(1)),
    );
    assert!(
        d.try_wait().unwrap().is_none(),
        "a missing adapter is not a crash"
    );

    let advertise = "p = add_device('hci0', 'F0:0B:00:00:00:01')\n\
        set_mfr(p, 0x004C, '0215e2c56db5dffb48d2b060d0f5a71096e000010002c5')\n\
        while True:\n    set_rssi(p, -60)\n    time.sleep(0.1)\n    set_rssi(p, -61)\n    time.sleep(0.1)\n";
    bus.py("add_adapter('hci0')");
    bus.py_background(advertise);
    sub.wait_for(
        "adverts once the adapter is there",
        Duration::from_secs(40),
        |m| last_scan(m).is_some_and(|s| s["adverts"].as_u64() > Some(5) && s["sessions"] == 1),
    );

    // bluetoothd dies and comes back with discovery off: the daemon starts it again by itself.
    bus.stop_drivers();
    bus.stop_mock();
    std::thread::sleep(Duration::from_secs(3));
    bus.start_mock();
    bus.py("add_adapter('hci0')");
    bus.py_background(advertise);
    sub.wait_for(
        "a second session hearing adverts",
        Duration::from_secs(60),
        |m| last_scan(m).is_some_and(|s| s["sessions"] == 2),
    );
    let before = scan_counter(&sub, "adverts");
    sub.wait_for("adverts after the restart", Duration::from_secs(20), |m| {
        last_scan(m).is_some_and(|s| s["adverts"].as_u64() > Some(before + 5))
    });
    assert_eq!(
        bus.py("print(adapter_prop('hci0', 'Discovering'))").trim(),
        "1"
    );

    // The USB dongle is unplugged, then plugged in again.
    bus.stop_drivers();
    bus.py("mock().RemoveAdapterWithDevices('hci0')");
    wait_until("the unplug noticed", Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("adapter hci0 disappeared")
    });
    bus.py("add_adapter('hci0')");
    bus.py_background(advertise);
    sub.wait_for(
        "a third session after the replug",
        Duration::from_secs(60),
        |m| last_scan(m).is_some_and(|s| s["sessions"] == 3),
    );
    let before = scan_counter(&sub, "adverts");
    sub.wait_for("adverts after the replug", Duration::from_secs(20), |m| {
        last_scan(m).is_some_and(|s| s["adverts"].as_u64() > Some(before + 5))
    });
    assert!(d.try_wait().unwrap().is_none());
    signal(&d, "-TERM");
    assert!(d.wait().unwrap().success());
}

#[test]
fn the_watchdog_restarts_discovery_then_power_cycles_then_exits_for_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform", &format!("beacond/{STORE}/#"), true);
    let bus = MockBluez::start(dir.path());
    bus.py("add_adapter('hci0')");
    let cfg = config(dir.path(), &broker.url(), 2, "");
    let log = dir.path().join("daemon.log");
    let mut d = daemon(&cfg, &bus, &log);
    sub.wait_for("a discovery restart", Duration::from_secs(20), |m| {
        last_scan(m).is_some_and(|s| s["watchdog_restarts"] == 1)
    });
    sub.wait_for("a power cycle", Duration::from_secs(20), |m| {
        last_scan(m).is_some_and(|s| s["watchdog_power_cycles"] == 1)
    });
    // Nothing helps: the daemon exits non-zero so systemd restarts it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = d.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not give up"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!status.success());
    // Discovery was started by the session, by the restart and after the power cycle.
    assert!(bus.calls("/org/bluez/hci0", "StartDiscovery") >= 3);
    assert!(bus.calls("/org/bluez/hci0", "StopDiscovery") >= 2);
    let text = std::fs::read_to_string(&log).unwrap();
    for line in [
        "no advertisement heard; restarting discovery",
        "power-cycling the adapter",
        "exiting so that systemd restarts beacond",
    ] {
        assert!(text.contains(line), "log lacks {line:?}:\n{text}");
    }
}

#[test]
fn filters_drop_and_count_before_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform", &format!("beacond/{STORE}/#"), true);
    let mut bus = MockBluez::start(dir.path());
    bus.py("add_adapter('hci0')");
    let cfg = config(
        dir.path(),
        &broker.url(),
        90,
        "[scan.filters]\ncompany_ids = [0x004C]\nmin_rssi = -70\n",
    );
    let mut d = daemon(&cfg, &bus, &dir.path().join("daemon.log"));
    bus.py_background(
        "a = add_device('hci0', 'F0:0B:00:00:00:01')\n\
         set_mfr(a, 0x004C, '0215e2c56db5dffb48d2b060d0f5a71096e000010002c5')\n\
         b = add_device('hci0', 'AB:00:00:00:00:02')\n\
         set_mfr(b, 0x0059, '0102')\n\
         c = add_device('hci0', 'FA:00:00:00:00:03')\n\
         set_mfr(c, 0x004C, '0215e2c56db5dffb48d2b060d0f5a71096e000010003c5')\n\
         while True:\n    for p, r in ((a, -60), (b, -60), (c, -90)):\n        set_rssi(p, r)\n        set_rssi(p, r - 1)\n    time.sleep(0.1)\n",
    );
    sub.wait_for("filtered counts", Duration::from_secs(30), |m| {
        last_scan(m).is_some_and(|s| {
            s["filtered_rssi"].as_u64() > Some(10)
                && s["filtered_unlisted"].as_u64() > Some(10)
                && s["adverts"].as_u64() > Some(10)
        })
    });
    // Only the listed, strong device reached the pipeline.
    let stats: Vec<Value> = sub
        .messages()
        .into_iter()
        .filter(|(t, v, _)| t.ends_with("/stats") && v.get("adverts").is_some())
        .map(|(_, v, _)| v)
        .collect();
    assert!(!stats.is_empty());
    assert!(stats.iter().all(|v| v["tracked"].as_u64() <= Some(1)));
    signal(&d, "-TERM");
    assert!(d.wait().unwrap().success());
}

#[test]
fn scan_with_no_config_shows_what_the_adapter_hears() {
    let dir = tempfile::tempdir().unwrap();
    let mut bus = MockBluez::start(dir.path());
    bus.py("add_adapter('hci0')");
    bus.py_background(
        "p = add_device('hci0', 'F0:0B:00:00:00:01')\n\
         set_mfr(p, 0x004C, '0215e2c56db5dffb48d2b060d0f5a71096e000010002c5')\n\
         q = add_device('hci0', '7A:00:00:00:00:02')\n\
         set_mfr(q, 0x0006, '01092022')\n\
         while True:\n    set_rssi(p, -60)\n    set_rssi(q, -80)\n    time.sleep(0.1)\n    set_rssi(p, -61)\n    set_rssi(q, -81)\n    time.sleep(0.1)\n",
    );
    let out = Command::new(assert_cmd::cargo::cargo_bin("beacond"))
        .args(["scan", "--json", "--duration", "4"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .env_remove("BEACOND_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    common::assert_success(&out);
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let beacon = rows
        .iter()
        .rev()
        .find(|r| r["id"] == format!("ibeacon:{IBEACON_UUID}:1:2"))
        .expect("the iBeacon by its decoded id");
    assert_eq!(beacon["kind"], "beacon");
    assert_eq!(beacon["frames"][0]["major"], 1);
    assert!([-60, -61].contains(&beacon["rssi"].as_i64().unwrap()));
    assert!(beacon["adverts_per_s"].as_f64().unwrap() > 2.0);
    // The other device is anonymous: a handle, never its address.
    let anon = rows.iter().find(|r| r["kind"] == "anonymous").unwrap();
    assert!(anon["id"].as_str().unwrap().starts_with("anon-"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("7A:00"));
}
