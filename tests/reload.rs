//! `systemctl reload` (SIGHUP) on the daemon binary: a valid config applies zones at once without a
//! restart, an invalid one is rejected with file:line:col and the old one stays.

mod common;

use std::path::Path;
use std::time::Duration;

use beacond::pipeline::Core;
use beacond::presence::{Engine, EngineParams, Event};
use beacond::scan::sim::{Scenario, Simulation};
use beacond::sink::{render, Record};
use common::bluez::wait_until;
use common::signal;
use serde_json::Value;

const ZONES: &str = "[[zones]]\nid = \"window\"\nhub = \"hub-window\"\nenter_rssi = -75\nexit_rssi = -84\nmin_enter_s = 1.0\n\
                     [[zones]]\nid = \"rails\"\nhub = \"hub-rails\"\nenter_rssi = -75\nexit_rssi = -84\nmin_enter_s = 1.0\n";

fn write_config(path: &Path, data: &Path, zones: &str) {
    std::fs::write(
        path,
        format!(
            "[hub]\nstore_id = \"s\"\nhub_id = \"hub-window\"\ndata_dir = {:?}\n\
             [scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\nspeed = 30.0\n\
             [mqtt]\nenabled = false\n{zones}",
            data.display().to_string()
        ),
    )
    .unwrap();
}

fn presence_in(records: &[Value], zone: &str) -> usize {
    records
        .iter()
        .filter(|v| v["type"] == "presence" && v["zone"] == zone)
        .count()
}

#[test]
fn sighup_applies_a_valid_config_and_rejects_an_invalid_one_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("beacond.toml");
    write_config(&cfg, &dir.path().join("data"), ZONES);
    let log = dir.path().join("daemon.log");
    let (mut child, lines) =
        common::start_daemon_collecting(&cfg, Some(&log), Some("beacond=info"));
    let presence = |zone: &str| presence_in(&lines.lock().unwrap(), zone);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !(presence("window") > 0 && presence("rails") > 0) {
        // Say what the daemon did, so a failure here can be diagnosed from CI's output alone.
        assert!(
            std::time::Instant::now() < deadline,
            "no presence in both zones: {} records, running: {}, log:\n{}",
            lines.lock().unwrap().len(),
            child.try_wait().unwrap().is_none(),
            log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // An invalid config: rejected, named by line and column, and the daemon goes on.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("enter_rssi = -75", "enter_rssi = 75"),
    )
    .unwrap();
    signal(&child, "-HUP");
    wait_until("the rejection", Duration::from_secs(10), || {
        log_text().contains("config reload rejected")
    });
    assert!(
        log_text().contains("beacond.toml:14:1: zones[0].enter_rssi: 75 dBm is out of range"),
        "{}",
        log_text()
    );
    let before = lines.lock().unwrap().len();
    wait_until(
        "records after the rejection",
        Duration::from_secs(30),
        || lines.lock().unwrap().len() > before + 5,
    );
    assert!(child.try_wait().unwrap().is_none());

    // A valid config without the rails zone: applied in place; rails visits end as reconfigured and
    // no new rails events follow, while the window zone goes on.
    write_config(
        &cfg,
        &dir.path().join("data"),
        &ZONES[..ZONES.find("[[zones]]\nid = \"rails\"").unwrap()],
    );
    let mark = lines.lock().unwrap().len();
    signal(&child, "-HUP");
    wait_until("the reload", Duration::from_secs(10), || {
        log_text().contains("config reloaded")
    });
    let window_before = presence("window");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while presence("window") <= window_before + 2 {
        // Say what the daemon did, so a failure here can be diagnosed from CI's output alone.
        let records = lines.lock().unwrap();
        assert!(
            std::time::Instant::now() < deadline,
            "window events after the reload: {} before, {} now; {} records ({} since the reload), \
             running: {}; last records: {:?}\nlog:\n{}",
            window_before,
            presence_in(&records, "window"),
            records.len(),
            records.len() - mark,
            child.try_wait().unwrap().is_none(),
            &records[records.len().saturating_sub(5)..],
            log_text()
        );
        drop(records);
        std::thread::sleep(Duration::from_millis(200));
    }
    let after: Vec<Value> = lines.lock().unwrap()[mark..].to_vec();
    for v in after.iter().filter(|v| v["zone"] == "rails") {
        assert_eq!(v["event"], "exit", "{v}");
        assert_eq!(v["reason"], "reconfigured", "{v}");
    }
    let headcount = after
        .iter()
        .rev()
        .find(|v| v["type"] == "headcount")
        .expect("a headcount after the reload");
    let zones: Vec<&str> = headcount["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["zone"].as_str().unwrap())
        .collect();
    assert_eq!(zones, vec!["window"]);
    assert!(
        child.try_wait().unwrap().is_none(),
        "reload is not a restart"
    );
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

#[test]
fn sighup_applies_scan_filters_and_the_log_level_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("beacond.toml");
    let data = dir.path().join("data");
    let base = |extra: &str| {
        format!(
            "[hub]\nstore_id = \"s\"\nhub_id = \"hub-window\"\ndata_dir = {:?}\n\
             [scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\nspeed = 30.0\n{extra}\
             [mqtt]\nenabled = false\nstats_interval_s = 5\n{ZONES}",
            data.display().to_string()
        )
    };
    std::fs::write(&cfg, base("[log]\nlevel = \"warn\"\n")).unwrap();
    let log = dir.path().join("daemon.log");
    let (mut child, lines) = common::start_daemon_collecting(&cfg, Some(&log), None);
    let last_scan = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|v| v["type"] == "stats")
            .map(|v| v["scan"].clone())
    };
    wait_until("stats", Duration::from_secs(30), || last_scan().is_some());
    assert_eq!(last_scan().unwrap()["filtered_rssi"], 0);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !log_text().contains("INFO"),
        "info lines at level warn: {}",
        log_text()
    );

    std::fs::write(
        &cfg,
        base("[scan.filters]\nmin_rssi = -70\n[log]\nlevel = \"info\"\n"),
    )
    .unwrap();
    signal(&child, "-HUP");
    // The new level shows the reload's own info lines; the new floor drops weak adverts at once.
    wait_until("info lines", Duration::from_secs(10), || {
        log_text().contains("config reloaded")
    });
    assert!(log_text().contains("scan filters reloaded"));
    assert!(
        !log_text().contains("take effect at the next restart"),
        "{}",
        log_text()
    );
    wait_until(
        "adverts filtered by the new floor",
        Duration::from_secs(30),
        || last_scan().is_some_and(|s| s["filtered_rssi"].as_u64() > Some(10)),
    );
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

/// The daemon's reload sequence on the sans-IO core, at the moment that matters: a customer is in
/// the zone the new config drops. Their exit must be named after the zone they were in; the zone's
/// index means nothing once the new zones are in place (rendering it after the swap once crashed the
/// daemon: "index out of bounds: the len is 1 but the index is 1").
#[test]
fn a_reload_that_drops_a_zone_names_the_visits_it_ends() {
    let mut sim = Simulation::new(Scenario::load("builtin:boutique").unwrap());
    let cfg = sim.scenario().as_config();
    let engine = Engine::new(
        &cfg.zones,
        EngineParams::from_config(&cfg.presence),
        &cfg.hub.hub_id,
    );
    let mut core = Core::new(engine, sim.directory().clone(), sim.hub_names(), 1);
    let dropped = cfg.zones.last().unwrap().id.clone();
    let mut events = Vec::new();
    // Run until someone enters the last zone.
    let now = loop {
        let a = sim.next_advert().expect("someone enters the last zone");
        core.handle_advert(&a, &mut events);
        let entered = events.iter().any(|e| {
            matches!(render(&core, e), Record::Presence(p) if p.event == "enter" && p.zone == dropped)
        });
        events.clear();
        if entered {
            break a.at;
        }
    };
    let mut new_cfg = cfg.clone();
    new_cfg.zones.pop();

    let mut ended = Vec::new();
    core.end_visits_in_dropped_zones(&new_cfg, now, &mut ended);
    let named: Vec<(String, Option<&str>)> = ended
        .iter()
        .filter_map(|e| match render(&core, e) {
            Record::Presence(p) => Some((p.zone, p.reason)),
            _ => None,
        })
        .collect();
    assert!(!named.is_empty());
    assert!(named
        .iter()
        .all(|(z, r)| *z == dropped && *r == Some("reconfigured")));
    core.reconfigure(&new_cfg, now, &mut events);
    assert!(
        !events.iter().any(|e| matches!(e, Event::Visit(_))),
        "the swap ended visits again: {events:?}"
    );
    // Everything after the swap renders against the new zones.
    for _ in 0..20_000 {
        let Some(a) = sim.next_advert() else { break };
        core.handle_advert(&a, &mut events);
        for e in events.drain(..) {
            if let Record::Presence(p) = render(&core, &e) {
                assert_ne!(p.zone, dropped);
            }
        }
    }
}

#[test]
fn a_zone_no_hub_hears_is_logged_and_shown_in_the_status_until_a_reload_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start(dir.path());
    let sub = common::Subscriber::start(broker.port, "platform", "beacond/+/+/status", true);
    let cfg = dir.path().join("beacond.toml");
    let data = dir.path().join("data");
    // The boutique's hubs are window, rails and fitting: a zone pasted from a hub "hub-till" is
    // measured by none of them.
    let ghost = "[[zones]]\nid = \"till\"\nhub = \"hub-till\"\n";
    let write = |zones: &str| {
        write_config(&cfg, &data, zones);
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            "[mqtt]\nenabled = false\n",
            &format!("[mqtt]\nurl = {:?}\n", broker.url()),
        );
        std::fs::write(&cfg, text).unwrap();
    };
    write(&format!("{ZONES}{ghost}"));
    let log = dir.path().join("daemon.log");
    let mut child = common::start_daemon_logging(&cfg, Some(&log));
    let last_status = |m: &[(String, Value, bool)]| {
        m.iter()
            .rev()
            .find(|(t, _, _)| t.ends_with("/status"))
            .map(|(_, v, _)| v.clone())
            .unwrap_or_default()
    };
    let warned = |v: &Value| {
        v["warnings"].as_array().is_some_and(|w| {
            w.iter().any(|s| {
                s.as_str().unwrap().starts_with(
                    "zone(s) till are measured by a hub this hub does not hear: nobody is ever seen in them",
                )
            })
        })
    };
    sub.wait_for("the warning in the status", Duration::from_secs(30), |m| {
        let v = last_status(m);
        v["state"] == "online" && warned(&v)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            "zones[2].hub: zone \"till\" is measured by hub hub-till, but the simulated store \
             builtin:boutique has hubs hub-window, hub-rails, hub-fitting"
        ),
        "{text}"
    );

    // Fixed by a reload: the warning goes, the hub stays online.
    write(ZONES);
    signal(&child, "-HUP");
    sub.wait_for("the warning withdrawn", Duration::from_secs(20), |m| {
        let v = last_status(m);
        v["state"] == "online" && !warned(&v)
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "reload is not a restart"
    );
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}
