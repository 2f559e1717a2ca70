//! Offers through the daemon binary: triggers on the offers topic of a real Mosquitto, caps that
//! survive a restart with the same data directory, and reload of the rules.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::bluez::wait_until;
use common::{signal, Broker, Subscriber};
use serde_json::Value;

/// The supermarket scenario with its offers, as a hub config for `beacond run`.
fn config(dir: &Path, mqtt: Option<&str>, speed: f64) -> std::path::PathBuf {
    let sc = beacond::scan::sim::Scenario::load("builtin:supermarket").unwrap();
    let mut cfg = sc.as_config();
    cfg.scan.source = beacond::config::SourceKind::Sim;
    cfg.scan.sim_scenario = "builtin:supermarket".into();
    cfg.scan.speed = speed;
    cfg.hub.data_dir = dir.join("data");
    if let Some(url) = mqtt {
        cfg.mqtt.enabled = true;
        cfg.mqtt.url = url.into();
        cfg.mqtt.stats_interval_s = 5;
    }
    let p = dir.join("beacond.toml");
    std::fs::write(&p, toml::to_string(&cfg).unwrap()).unwrap();
    p
}

/// Runs the daemon with stdout records collected.
fn start(cfg: &Path) -> (Child, Arc<Mutex<Vec<Value>>>) {
    common::start_daemon_collecting(cfg, None, None)
}

fn offers(lines: &Arc<Mutex<Vec<Value>>>) -> Vec<Value> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "offer")
        .cloned()
        .collect()
}

fn ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v["at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[test]
fn caps_survive_a_restart_with_the_same_data_directory() {
    caps_survive("-TERM");
}

/// A crash gives the daemon no chance to flush on the way out: every offer that left must already
/// have its caps on disk (only the entry history waits for a periodic flush).
#[test]
fn caps_of_every_offer_that_left_survive_a_kill() {
    caps_survive("-KILL");
}

/// Entry history (each customer's store visit, written on every enter) is gathered between offers
/// and written at the pipeline's periodic tick (the stats record), not an fsync per enter: after a
/// crash, every customer who entered before the last tick still has a store visit on disk. No offer
/// here can fire, so no trigger's write carries them.
#[test]
fn entry_history_survives_a_crash_without_a_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), None, 120.0);
    let mut cfg = beacond::config::Config::load(&path).unwrap();
    for o in &mut cfg.offers {
        o.segments_include = vec!["nobody-has-this".into()];
    }
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    let (mut daemon, lines) = start(&path);
    wait_until("entries and three ticks", Duration::from_secs(60), || {
        let l = lines.lock().unwrap();
        l.iter().filter(|v| v["type"] == "stats").count() >= 3
            && l.iter().filter(|v| v["event"] == "enter").count() >= 20
    });
    signal(&daemon, "-KILL");
    daemon.wait().unwrap();
    assert!(offers(&lines).is_empty());

    let records = lines.lock().unwrap().clone();
    let at = |v: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(v[field].as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let tick = records
        .iter()
        .filter(|v| v["type"] == "stats")
        .map(|v| at(v, "end"))
        .max()
        .expect("a stats record before the kill");
    let entered: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|v| v["type"] == "presence" && v["event"] == "enter" && at(v, "at") <= tick)
        .filter_map(|v| v["customer_id"].as_str())
        .collect();
    assert!(!entered.is_empty());
    let (store, _) = beacond::offers::store::Store::open(&dir.path().join("data/offers")).unwrap();
    let saved = store.load().unwrap();
    let lost: Vec<_> = entered
        .iter()
        .filter(|c| !saved.visits.contains_key(**c))
        .collect();
    assert!(lost.is_empty(), "entries lost by the kill: {lost:?}");
}

/// Stops a daemon with `stop` once it has fired offers, starts it again on the same data directory
/// and the same simulated morning, and finds no offer repeated within its cooldown.
fn caps_survive(stop: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), None, 120.0);
    let cooldowns: HashMap<String, i64> = beacond::config::Config::load(&cfg)
        .unwrap()
        .offers
        .iter()
        .map(|o| (o.id.clone(), o.cooldown_s as i64 * 1000))
        .collect();

    let (first, lines) = start(&cfg);
    wait_until("offers in the first run", Duration::from_secs(60), || {
        offers(&lines).len() >= 20
    });
    signal(&first, stop);
    let mut first = first;
    let status = first.wait().unwrap();
    assert!(status.success() || stop == "-KILL", "{status}");
    let before = offers(&lines);

    // The simulated store replays the same morning: the same customers reach the same zones at
    // the same simulated times, so every offer they got in the first run is still cooling down.
    let (mut second, lines) = start(&cfg);
    let covered = ms(before.last().unwrap());
    wait_until(
        "the second run past the first's last offer",
        Duration::from_secs(90),
        || {
            lines.lock().unwrap().iter().any(|v| {
                v["type"] == "headcount"
                    && v["end"].as_str().is_some_and(|e| {
                        chrono::DateTime::parse_from_rfc3339(e)
                            .unwrap()
                            .timestamp_millis()
                            > covered
                    })
            })
        },
    );
    signal(&second, "-TERM");
    assert!(second.wait().unwrap().success());
    let after = offers(&lines);
    let mut last: HashMap<(String, String), i64> = HashMap::new();
    for o in &before {
        last.insert(
            (
                o["offer_id"].as_str().unwrap().into(),
                o["customer_id"].as_str().unwrap().into(),
            ),
            ms(o),
        );
    }
    let mut repeats = Vec::new();
    for o in &after {
        let key = (
            o["offer_id"].as_str().unwrap().to_owned(),
            o["customer_id"].as_str().unwrap().to_owned(),
        );
        if let Some(t) = last.get(&key) {
            if ms(o) < t + cooldowns[&key.0] {
                repeats.push(o.clone());
            }
        }
    }
    assert!(
        repeats.is_empty(),
        "fired again within cooldown after a restart: {repeats:?}"
    );
    // The second run did fire offers, to pairs the first run had not served.
    assert!(!after.is_empty());
}

#[test]
fn triggers_go_to_the_offers_topic_through_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform", "beacond/#", true);
    let cfg = config(dir.path(), Some(&broker.url()), 60.0);
    let mut d = common::start_daemon(&cfg);
    sub.wait_for("offer triggers", Duration::from_secs(60), |m| {
        m.iter().filter(|(t, _, _)| t.ends_with("/offers")).count() >= 3
    });
    signal(&d, "-TERM");
    assert!(d.wait().unwrap().success());
    for (topic, v, retained) in sub
        .messages()
        .iter()
        .filter(|(t, _, _)| t.ends_with("/offers"))
    {
        assert!(!retained);
        assert_eq!(
            topic,
            &format!(
                "beacond/{}/{}/offers",
                v["store"].as_str().unwrap(),
                v["hub"].as_str().unwrap()
            )
        );
        assert_eq!(v["type"], "offer");
        for key in [
            "event_id",
            "offer_id",
            "customer_id",
            "zone",
            "at",
            "cause",
            "reason",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["reason"]["rule"], v["offer_id"]);
        assert!(["enter", "dwell", "exit"].contains(&v["cause"]["event"].as_str().unwrap()));
    }
}

#[test]
fn reload_changes_the_rules_and_a_rejected_reload_shows_in_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform", "beacond/#", true);
    let cfg = config(dir.path(), Some(&broker.url()), 30.0);
    let mut d = common::start_daemon(&cfg);
    let offers_of = |m: &[(String, Value, bool)], id: &str| {
        m.iter()
            .filter(|(t, v, _)| t.ends_with("/offers") && v["offer_id"] == id)
            .count()
    };
    sub.wait_for("fresh-bread offers", Duration::from_secs(60), |m| {
        offers_of(m, "fresh-bread") >= 2
    });
    let last_status = |m: &[(String, Value, bool)]| {
        m.iter()
            .rev()
            .find(|(t, _, _)| t.ends_with("/status"))
            .map(|(_, v, _)| v.clone())
            .unwrap()
    };

    // A bad rule: rejected, and the platform sees why in the retained status.
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace("hours = \"11:30-14:00\"", "hours = \"11:30-25:00\""),
    )
    .unwrap();
    signal(&d, "-HUP");
    sub.wait_for(
        "the rejection in the status",
        Duration::from_secs(20),
        |m| {
            last_status(m)["warnings"].as_array().is_some_and(|w| {
                w.iter().any(|s| {
                    let s = s.as_str().unwrap();
                    s.starts_with("config reload rejected") && s.contains("offers[2].hours")
                })
            })
        },
    );
    assert_eq!(last_status(&sub.messages())["state"], "online");

    // A good one without the bread rule: applied, the warning cleared, no bread offers after it.
    let mut without: beacond::config::Config = toml::from_str(&good).unwrap();
    without.offers.retain(|o| o.id != "fresh-bread");
    std::fs::write(&cfg, toml::to_string(&without).unwrap()).unwrap();
    signal(&d, "-HUP");
    sub.wait_for("the warning cleared", Duration::from_secs(20), |m| {
        last_status(m).get("warnings").is_none()
    });
    let bread = offers_of(&sub.messages(), "fresh-bread");
    let others = sub
        .messages()
        .iter()
        .filter(|(t, _, _)| t.ends_with("/offers"))
        .count();
    sub.wait_for(
        "more offers after the reload",
        Duration::from_secs(60),
        |m| m.iter().filter(|(t, _, _)| t.ends_with("/offers")).count() >= others + 3,
    );
    assert_eq!(offers_of(&sub.messages(), "fresh-bread"), bread);
    assert!(d.try_wait().unwrap().is_none());
    signal(&d, "-TERM");
    assert!(d.wait().unwrap().success());
}

#[test]
fn offers_explain_shows_what_fired_and_why_the_rest_did_not() {
    let out = assert_cmd::Command::cargo_bin("beacond")
        .unwrap()
        .args(["offers", "explain", "--customer", "cust-00004"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("customer cust-00004 (segments: club)"),
        "{text}"
    );
    for line in [
        "FIRES cheese-pairing",
        "FIRES fresh-bread",
        "fresh-bread              capped: cooldown until 2026-01-05T10:05:06.267Z",
        "deli-lunch               outside its hours",
        "per rule over the visit:",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    // Segments can be tried out: as under-18 the wine club never fires.
    let out = assert_cmd::Command::cargo_bin("beacond")
        .unwrap()
        .args([
            "offers",
            "explain",
            "--customer",
            "cust-00004",
            "--segments",
            "club,under-18",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("FIRES wine-club"));
    // An unknown customer is named, with what the simulated ones are called.
    let out = assert_cmd::Command::cargo_bin("beacond")
        .unwrap()
        .args(["offers", "explain", "--customer", "nobody"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("simulated customers are cust-00001"));
}

#[test]
fn reload_moves_to_a_new_broker_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let a = Broker::start(&da);
    let b = Broker::start(&db);
    let sub_a = Subscriber::start(a.port, "platform-a", "beacond/#", true);
    let sub_b = Subscriber::start(b.port, "platform-b", "beacond/#", true);
    let cfg = config(dir.path(), Some(&a.url()), 30.0);
    let mut d = common::start_daemon(&cfg);
    let status = |m: &[(String, Value, bool)]| {
        m.iter()
            .rev()
            .find(|(t, _, _)| t.ends_with("/status"))
            .map(|(_, v, _)| v.clone())
    };
    sub_a.wait_for("online on A", Duration::from_secs(30), |m| {
        status(m).is_some_and(|s| s["state"] == "online")
    });
    let started = status(&sub_a.messages()).unwrap()["started_at"].clone();

    // A password file that does not exist: the whole reload is rejected, A keeps everything.
    let good = std::fs::read_to_string(&cfg).unwrap();
    let mut bad: beacond::config::Config = toml::from_str(&good).unwrap();
    bad.mqtt.url = b.url();
    bad.mqtt.username = Some("hub".into());
    bad.mqtt.password_file = Some(dir.path().join("no-such-password"));
    std::fs::write(&cfg, toml::to_string(&bad).unwrap()).unwrap();
    signal(&d, "-HUP");
    sub_a.wait_for("the rejection on A", Duration::from_secs(20), |m| {
        status(m).is_some_and(|s| s["warnings"].to_string().contains("config reload rejected"))
    });

    let mut moved: beacond::config::Config = toml::from_str(&good).unwrap();
    moved.mqtt.url = b.url();
    std::fs::write(&cfg, toml::to_string(&moved).unwrap()).unwrap();
    signal(&d, "-HUP");
    sub_a.wait_for(
        "A told the hub left on purpose",
        Duration::from_secs(20),
        |m| status(m).is_some_and(|s| s["state"] == "offline" && s["reason"] == "reconfigured"),
    );
    sub_b.wait_for("online and events on B", Duration::from_secs(30), |m| {
        status(m).is_some_and(|s| s["state"] == "online")
            && m.iter().any(|(t, _, _)| t.ends_with("/presence"))
    });
    let on_b = status(&sub_b.messages()).unwrap();
    assert_eq!(
        on_b["started_at"], started,
        "the same process, not a restart"
    );
    assert!(on_b.get("warnings").is_none(), "{on_b}");
    assert!(d.try_wait().unwrap().is_none());
    signal(&d, "-TERM");
    assert!(d.wait().unwrap().success());
}
