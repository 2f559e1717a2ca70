//! Hubs sharing observations (`[peers]`) on a real Mosquitto broker: the simulated boutique run by
//! one daemon per hub, each hearing only its own hub's radio (`scan.sim_hub`), as a store with a
//! beacond on every hub is.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

const HUBS: [&str; 3] = ["window", "rails", "fitting"];

/// Hub `hub`'s config: the boutique's three zones, hearing only its own radio, sharing with the
/// other two hubs when `share`.
fn config(
    dir: &Path,
    url: &str,
    hub: &str,
    share: bool,
    health: Option<u16>,
) -> std::path::PathBuf {
    let peers: Vec<String> = HUBS
        .iter()
        .filter(|h| **h != hub)
        .map(|h| format!("\"hub-{h}\""))
        .collect();
    let mut text = format!(
        "[hub]\nstore_id = \"s\"\nhub_id = \"hub-{hub}\"\ndata_dir = {:?}\n\
         [scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\nsim_hub = \"hub-{hub}\"\n\
         speed = 20.0\n\
         [mqtt]\nurl = \"{url}\"\nstats_interval_s = 30\n",
        dir.join(format!("data-{hub}")).display().to_string()
    );
    if share {
        // Daemons started one after another run their simulated stores a little apart.
        text.push_str(&format!(
            "[peers]\nhubs = [{}]\nmax_lag_ms = 5000\n",
            peers.join(", ")
        ));
    }
    if let Some(port) = health {
        text.push_str(&format!("[health]\nlisten = \"127.0.0.1:{port}\"\n"));
    }
    for z in HUBS {
        text.push_str(&format!(
            "[[zones]]\nid = \"{z}\"\nhub = \"hub-{z}\"\nenter_rssi = -75\nexit_rssi = -84\n"
        ));
    }
    let path = dir.join(format!("{hub}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn presence(msgs: &[(String, Value, bool)]) -> Vec<(String, Value)> {
    msgs.iter()
        .filter(|(t, _, _)| t.ends_with("/presence"))
        .map(|(t, v, _)| (t.split('/').nth(2).unwrap().to_owned(), v.clone()))
        .collect()
}

fn moved_exits(msgs: &[(String, Value, bool)]) -> usize {
    presence(msgs)
        .iter()
        .filter(|(_, v)| v["event"] == "exit" && v["reason"] == "moved")
        .count()
}

#[test]
fn hubs_that_share_observations_hand_customers_over_and_report_only_their_own_zones() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start(dir.path());
    let sub = common::Subscriber::start(broker.port, "platform", "beacond/s/#", true);
    // The rails hub serves `beacond status`.
    let health = common::free_port();
    let mut daemons: Vec<_> = HUBS
        .iter()
        .map(|h| {
            let port = (*h == "rails").then_some(health);
            let cfg = config(dir.path(), &broker.url(), h, true, port);
            let log = dir.path().join(format!("{h}.log"));
            (common::start_daemon_logging(&cfg, Some(&log)), log)
        })
        .collect();
    let logs = || {
        daemons
            .iter()
            .map(|(_, l)| std::fs::read_to_string(l).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    // A visit ended because the customer went to another hub's zone: only the other hub hears
    // them there, so only its shared observations can say so.
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    while moved_exits(&sub.messages()) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no customer handed over between hubs; presence: {:?}\nlogs:\n{}",
            presence(&sub.messages()),
            logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The next stats carry the peers' counters.
    sub.wait_for("stats with peers", Duration::from_secs(60), |m| {
        m.iter()
            .filter(|(t, v, _)| t.ends_with("/stats") && v.get("peers").is_some())
            .count()
            >= 3
    });
    // What a field engineer sees on the hub.
    let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("beacond"))
        .args(["status", "--config"])
        .arg(dir.path().join("rails.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("peers: "))
        .unwrap_or_else(|| panic!("no peers line in:\n{text}"));
    let used: u64 = line
        .split(", ")
        .nth(1)
        .and_then(|p| p.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(used > 0, "{line}");
    // A peer that stops: the others say so in their retained status until it is back.
    let (fitting, _) = &mut daemons[2];
    common::signal(fitting, "-TERM");
    assert!(fitting.wait().unwrap().success());
    let warns_of_fitting = |m: &(String, Value, bool)| {
        m.0 == "beacond/s/hub-window/status"
            && m.1["warnings"].as_array().is_some_and(|w| {
                w.iter().any(|w| {
                    w.as_str().unwrap_or("").starts_with(
                        "peer hub(s) offline: hub-fitting (shutdown); customers near them",
                    )
                })
            })
    };
    sub.wait_for(
        "hub-window's status naming hub-fitting",
        Duration::from_secs(20),
        |m| m.iter().any(warns_of_fitting),
    );
    for (c, _) in &mut daemons[..2] {
        common::signal(c, "-TERM");
        assert!(c.wait().unwrap().success());
    }
    let msgs = sub.messages();

    // Each hub reports its own zone and no other: the peers report theirs.
    let reported = presence(&msgs);
    assert!(!reported.is_empty());
    for (hub, v) in &reported {
        assert_eq!(format!("hub-{}", v["zone"].as_str().unwrap()), *hub, "{v}");
    }

    // What went between the hubs: only customers who opted in (or tags), each batch from the
    // hub its topic names, in the contract's shape.
    let doc: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/asyncapi.yaml"))
            .unwrap(),
    )
    .unwrap();
    let schema = serde_json::json!({
        "$ref": "#/components/schemas/observations",
        "components": doc["components"],
    });
    let validator = jsonschema::validator_for(&schema).unwrap();
    let sim = beacond::scan::sim::Simulation::new(
        beacond::scan::sim::Scenario::load("builtin:boutique").unwrap(),
    );
    let customers: std::collections::HashSet<&str> = sim.directory().customer_ids().collect();
    let mut shared = 0;
    for (topic, v, retained) in msgs.iter().filter(|(t, _, _)| t.ends_with("/observations")) {
        assert!(!retained);
        let errors: Vec<String> = validator.iter_errors(v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{v}");
        assert_eq!(topic.split('/').nth(2).unwrap(), v["hub"], "{v}");
        for o in v["obs"].as_array().unwrap() {
            let id = o["customer_id"]
                .as_str()
                .expect("only customers in the boutique");
            assert!(customers.contains(id), "{o}");
            shared += 1;
        }
    }
    assert!(shared > 0);
    for hub in HUBS {
        let stats = msgs
            .iter()
            .rev()
            .find(|(t, v, _)| {
                *t == format!("beacond/s/hub-{hub}/stats") && v.get("peers").is_some()
            })
            .map(|(_, v, _)| v["peers"].clone())
            .unwrap_or_else(|| panic!("no stats with peers from hub-{hub}"));
        assert!(stats["shared"].as_u64().unwrap() > 0, "{hub}: {stats}");
        assert!(stats["applied"].as_u64().unwrap() > 0, "{hub}: {stats}");
        // Peers' customers come from the same scenario: every one is known here too.
        assert_eq!(stats["unknown"], 0, "{hub}: {stats}");
    }
}

/// A peer whose clock is far behind: every observation it sends is too late to use, and the hub
/// says which peer, in its log and its retained status.
#[test]
fn a_peer_whose_observations_come_too_late_is_named_in_the_status() {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start(dir.path());
    let sub =
        common::Subscriber::start(broker.port, "platform", "beacond/s/hub-rails/status", true);
    // hub-rails shares with hub-window, whose daemon is a test client with a clock from 1970.
    let text = std::fs::read_to_string(config(dir.path(), &broker.url(), "rails", true, None))
        .unwrap()
        .replace(
            "hubs = [\"hub-window\", \"hub-fitting\"]",
            "hubs = [\"hub-window\"]",
        );
    let cfg = dir.path().join("rails-late.toml");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.path().join("rails.log");
    let mut daemon = common::start_daemon_logging(&cfg, Some(&log));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = broker.port;
    rt.spawn(async move {
        let (client, mut ev) = AsyncClient::new(MqttOptions::new("late-peer", "127.0.0.1", port), 16);
        tokio::spawn(async move { while ev.poll().await.is_ok() {} });
        for i in 0u64.. {
            let batch = format!(
                r#"{{"schema":1,"hub":"hub-window","obs":[{{"t":{},"customer_id":"cust-00001","rssi":-60}}]}}"#,
                1000 + i
            );
            let _ = client
                .publish("beacond/s/hub-window/observations", QoS::AtMostOnce, false, batch)
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let names_the_late_peer = |m: &(String, Value, bool)| {
        m.1["warnings"].as_array().is_some_and(|w| {
            w.iter().any(|w| {
                let w = w.as_str().unwrap_or("");
                w.contains(
                    "observations from peer hub hub-window in the last minute came too late to use",
                ) && w.contains("check NTP on both hubs")
            })
        })
    };
    sub.wait_for(
        "hub-rails's status naming the late peer",
        Duration::from_secs(60),
        |m| m.iter().any(names_the_late_peer),
    );
    common::signal(&daemon, "-TERM");
    assert!(daemon.wait().unwrap().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("came too late to use"), "{logged}");
}
