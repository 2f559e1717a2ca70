//! The platform contract against a real Mosquitto broker, started by the tests on free loopback ports:
//! topics and envelopes, retained status and Last Will, and no accepted event lost through a broker
//! outage or a `kill -9` of the daemon.
//!
//! Needs `mosquitto` on the PATH (scripts/test installs Debian's package).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{free_port, signal, start_daemon, Broker, Cable, Subscriber};

use beacond::pipeline::Core;
use beacond::presence::{Engine, EngineParams};
use beacond::scan::sim::{Scenario, Simulation};
use beacond::sink::{render, Record};
use serde_json::Value;

const ZONES: &str = "[[zones]]\nid = \"window\"\nhub = \"hub-window\"\nenter_rssi = -75\nexit_rssi = -84\n\
                     min_enter_s = 1.0\n[[zones]]\nid = \"rails\"\nhub = \"hub-rails\"\nenter_rssi = -75\n\
                     exit_rssi = -84\nmin_enter_s = 1.0\n";

fn daemon_config(dir: &Path, store: &str, url: &str, speed: f64) -> PathBuf {
    let p = dir.join(format!("{store}.toml"));
    std::fs::write(
        &p,
        format!(
            "[hub]\nstore_id = \"{store}\"\nhub_id = \"hub-window\"\ndata_dir = {:?}\n\
             [scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\nspeed = {speed}\n\
             [mqtt]\nurl = \"{url}\"\nkeep_alive_s = 5\n{ZONES}",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    p
}

/// The presence events the daemon's pipeline produces for the boutique with these zones: the
/// simulator and the engine are deterministic, so this is what must arrive.
fn expected_events() -> Vec<(String, String, String, String)> {
    let sc = Scenario::load("builtin:boutique").unwrap();
    let cfg = beacond::config::Config::parse(&format!("[hub]\nhub_id = \"hub-window\"\n{ZONES}"))
        .unwrap();
    let mut sim = Simulation::new(sc);
    let engine = Engine::new(
        &cfg.zones,
        EngineParams::from_config(&cfg.presence),
        "hub-window",
    );
    let mut core = Core::new(engine, sim.directory().clone(), sim.hub_names(), 1);
    let mut events = Vec::new();
    let mut out = Vec::new();
    while let Some(a) = sim.next_advert() {
        core.handle_advert(&a, &mut events);
        for e in events.drain(..) {
            if let Record::Presence(p) = render(&core, &e) {
                out.push((
                    p.customer_id.unwrap(),
                    p.event.to_owned(),
                    p.zone,
                    p.at.to_rfc3339(),
                ));
            }
        }
    }
    out
}

fn key(v: &Value) -> (String, String, String, String) {
    (
        v["customer_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_owned(),
        v["event"]
            .as_str()
            .unwrap_or_else(|| panic!("no event: {v}"))
            .to_owned(),
        v["zone"].as_str().unwrap().to_owned(),
        v["at"].as_str().unwrap().to_owned(),
    )
}

fn presence_on(
    msgs: &[(String, Value, bool)],
    store: &str,
) -> Vec<(String, String, String, String)> {
    msgs.iter()
        .filter(|(t, _, _)| t == &format!("beacond/{store}/hub-window/presence"))
        .map(|(_, v, _)| key(v))
        .collect()
}

/// Waits until presence events of `store` from after now arrive: by then the backlog has gone
/// through (the spool sends in order). Simulated time runs 60× the wall clock since `started`.
fn wait_for_events_after_now(sub: &Subscriber, store: &str, started: Instant, what: &str) {
    let after = format!(
        "2026-01-05T09:{:02}:00.000Z",
        (started.elapsed().as_secs() + 5).min(59)
    );
    sub.wait_for(what, Duration::from_secs(90), |m| {
        presence_on(m, store).iter().any(|e| e.3 > after)
    });
}

/// Every presence event the pipeline produced up to the last one received has arrived, duplicates
/// allowed.
fn assert_nothing_lost(sub: &Subscriber, store: &str, what: &str) {
    let got: BTreeSet<_> = presence_on(&sub.messages(), store).into_iter().collect();
    let last = got.iter().map(|e| e.3.clone()).max().unwrap();
    let missing: Vec<_> = expected_events()
        .into_iter()
        .filter(|e| e.3 <= last && !got.contains(e))
        .collect();
    assert!(got.len() > 20, "{}", got.len());
    assert!(missing.is_empty(), "{what}: {missing:?}");
    assert_numbered_without_gaps(sub, store);
}

/// What the platform checks (docs/mqtt.md, "Finding a gap"): in each stream, the presence numbers
/// received run from 0 to the highest without a hole, duplicates allowed. Returns the streams.
fn assert_numbered_without_gaps(sub: &Subscriber, store: &str) -> usize {
    let mut streams: std::collections::BTreeMap<String, BTreeSet<u64>> = Default::default();
    for (t, v, _) in sub.messages() {
        if t == format!("beacond/{store}/hub-window/presence") {
            let stream = v["stream"].as_str().expect("a stream").to_owned();
            streams
                .entry(stream)
                .or_default()
                .insert(v["seq"].as_u64().expect("a seq"));
        }
    }
    for (stream, seqs) in &streams {
        let max = *seqs.last().unwrap();
        let holes: Vec<u64> = (0..=max).filter(|n| !seqs.contains(n)).collect();
        assert!(holes.is_empty(), "stream {stream} is missing {holes:?}");
    }
    streams.len()
}

#[test]
fn events_follow_the_contract_and_status_is_retained_with_a_last_will() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform-1", "beacond/#", true);
    let cfg = daemon_config(dir.path(), "s1", &broker.url(), 200.0);
    let mut daemon = start_daemon(&cfg);
    sub.wait_for("presence events", Duration::from_secs(30), |m| {
        m.iter()
            .filter(|(t, _, _)| t.ends_with("/presence"))
            .count()
            >= 5
    });
    for (topic, v, _) in sub.messages() {
        assert!(topic.starts_with("beacond/s1/hub-window/"), "{topic}");
        if topic.ends_with("/presence") {
            assert_eq!(v["schema"], 1);
            assert_eq!(v["store"], "s1");
            assert_eq!(v["hub"], "hub-window");
            let id = uuid::Uuid::parse_str(v["event_id"].as_str().unwrap()).unwrap();
            assert_eq!(id.get_version_num(), 7, "event ids are UUIDv7 (sortable)");
            assert!(v["customer_id"].as_str().unwrap().starts_with("cust-"));
            for ts in ["at", "entered_at", "first_seen", "last_seen"] {
                let t = v[ts].as_str().unwrap();
                assert!(
                    chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with('Z'),
                    "{ts}={t}"
                );
            }
        }
    }
    // A platform service that connects later still learns the hub is online: the status is retained.
    let late = Subscriber::start(broker.port, "platform-late", "beacond/+/+/status", true);
    late.wait_for("retained online status", Duration::from_secs(10), |m| {
        m.iter()
            .any(|(_, v, retained)| *retained && v["state"] == "online" && v["version"].is_string())
    });
    // kill -9: no goodbye, so the broker publishes the Last Will.
    daemon.kill().unwrap();
    let _ = daemon.wait();
    late.wait_for("Last Will offline", Duration::from_secs(20), |m| {
        m.iter()
            .any(|(_, v, _)| v["state"] == "offline" && v["reason"] == "connection lost")
    });
}

#[test]
fn a_clean_shutdown_says_offline_itself() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform-2", "beacond/+/+/status", true);
    let cfg = daemon_config(dir.path(), "s2", &broker.url(), 50.0);
    let daemon = start_daemon(&cfg);
    sub.wait_for("online", Duration::from_secs(20), |m| {
        m.iter().any(|(_, v, _)| v["state"] == "online")
    });
    signal(&daemon, "-TERM");
    let mut daemon = daemon;
    assert!(daemon.wait().unwrap().success());
    sub.wait_for("offline on shutdown", Duration::from_secs(10), |m| {
        m.iter()
            .any(|(_, v, _)| v["state"] == "offline" && v["reason"] == "shutdown")
    });
    // And it stays the hub's last word: no Last Will over it (the hub reads its own status, and
    // a connection closed with that echo unread would be reset, which a broker takes for a crash).
    let late = Subscriber::start(broker.port, "platform-2-late", "beacond/+/+/status", true);
    late.wait_for("the retained status", Duration::from_secs(10), |m| {
        !m.is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let retained: Vec<Value> = late.messages().into_iter().map(|m| m.1).collect();
    assert_eq!(retained.len(), 1, "{retained:?}");
    assert_eq!(retained[0]["reason"], "shutdown", "{retained:?}");
}

/// With the broker up, the spool costs the SD card next to nothing: a message the broker
/// acknowledges before its write is due (200 ms) is never written. The hub's own stats say how
/// many were written against how many were acknowledged.
#[test]
fn with_the_broker_up_acknowledged_messages_are_not_written_to_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform-7", "beacond/+/+/stats", true);
    let cfg = daemon_config(dir.path(), "s5", &broker.url(), 200.0);
    let mut daemon = start_daemon(&cfg);
    let stats = |m: &[(String, Value, bool)]| -> Option<(u64, u64)> {
        m.iter().rev().find_map(|(_, v, _)| {
            let acked = v["mqtt"]["acknowledged"].as_u64()?;
            Some((acked, v["spool"]["written"].as_u64()?))
        })
    };
    sub.wait_for(
        "stats after 200 acknowledged messages",
        Duration::from_secs(60),
        |m| stats(m).is_some_and(|(acked, _)| acked >= 200),
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    let (acked, written) = stats(&sub.messages()).unwrap();
    // Loopback acknowledges in well under a millisecond; a loaded machine may let a few wait
    // past 200 ms, which is why this is not zero.
    assert!(
        written * 4 < acked,
        "{written} of {acked} acknowledged messages were written to the card"
    );
}

#[test]
fn every_event_survives_a_broker_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform-3", "beacond/+/+/presence", false);
    // The daemon reaches the broker through a cable the test can pull: see below.
    let cable = Cable::to(broker.port);
    // 60× real time: a simulated minute per second.
    let cfg = daemon_config(dir.path(), "s3", &cable.url(), 60.0);
    let mut daemon = start_daemon(&cfg);
    let started = Instant::now();
    sub.wait_for("first events", Duration::from_secs(20), |m| !m.is_empty());
    // The product's bar: a 30 s outage while events flow, here the broker restarting.
    cable.cut();
    broker.stop();
    std::thread::sleep(Duration::from_secs(30));
    let subscribed = sub.subscriptions();
    broker.restart();
    // Mosquitto (2.0.11) queues nothing for a persistent session restored from its persistence file
    // until that client is back, so what the hub sends first would be acknowledged to it and
    // delivered to nobody (docs/mqtt.md). The platform's subscriber comes back first.
    sub.wait_resubscribed(subscribed);
    cable.mend();
    wait_for_events_after_now(&sub, "s3", started, "events from after the outage");
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_nothing_lost(&sub, "s3", "lost in the outage");
}

/// A store's uplink that keeps dropping, each time while the hub is sending its backlog, some of
/// the times while it is writing it: the hub reconnects at once each time and still loses nothing.
#[test]
fn every_event_survives_a_flapping_uplink() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform-6", "beacond/+/+/presence", false);
    let cable = Cable::to(broker.port);
    let cfg = daemon_config(dir.path(), "flap", &cable.url(), 60.0);
    let log = dir.path().join("daemon.log");
    let mut daemon = common::start_daemon_logging(&cfg, Some(&log));
    let started = Instant::now();
    sub.wait_for("first events", Duration::from_secs(20), |m| !m.is_empty());
    // Seeded: a failure can be run again as it was.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    for _ in 0..10 {
        cable.cut();
        // Long enough for a backlog of a few dozen messages.
        std::thread::sleep(Duration::from_millis(rng.random_range(800..2000)));
        // Four connections in a row break, the next one holds. A break right after CONNACK catches
        // the hub writing (see `Break::AfterConnAck`); the break after it comes part-way through
        // the backlog, which is where a connection that mistook which PUBACK is whose loses one.
        let breaks: Vec<common::Break> = (0..2)
            .flat_map(|_| {
                [
                    common::Break::AfterConnAck,
                    common::Break::AfterSent(rng.random_range(300..3000)),
                ]
            })
            .collect();
        cable.mend_breaking(&breaks);
        std::thread::sleep(Duration::from_millis(rng.random_range(2500..4000)));
    }
    wait_for_events_after_now(&sub, "flap", started, "events from after the flapping");
    let _ = daemon.kill();
    let _ = daemon.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // Shown only if the test fails.
    eprintln!("daemon log:\n{text}");
    let connects = text.matches("connected to the MQTT broker").count();
    assert!(
        connects >= 20,
        "the uplink really dropped: {connects} connections"
    );
    assert_nothing_lost(&sub, "flap", "lost on a flapping uplink");
    let stale = text
        .matches("dropped publishes the failed connection never finished writing")
        .count();
    // What makes this test worth running: the breaks right after CONNACK catch the hub writing
    // (about 15 times a run). With what those connections buffered kept (the bug 3103f32 fixed)
    // and the QoS mismatch check off, two to four events are lost above on every run tried.
    assert!(
        stale >= 1,
        "no break caught the hub part-way through writing a publish"
    );
}

#[test]
fn accepted_events_survive_repeated_kill_9_and_are_sent_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform-4", "beacond/+/+/presence", false);
    // Runs with the broker unreachable (wrong port), each killed with -9 under load, all on the same
    // data directory: everything accepted stays in the spool, whatever the state of sled at the kill.
    let dead = format!("mqtt://127.0.0.1:{}", free_port());
    let first = daemon_config(dir.path(), "crash", &dead, 300.0);
    for pause in [5, 2, 3] {
        let mut daemon = start_daemon(&first);
        std::thread::sleep(Duration::from_secs(pause));
        daemon.kill().unwrap();
        let _ = daemon.wait();
    }
    // Second run, same data directory, reachable broker, another store id so that what arrives on the
    // first store's topics can only have come from the spool.
    let second = daemon_config(dir.path(), "after", &broker.url(), 300.0);
    let mut daemon = start_daemon(&second);
    sub.wait_for("spooled events", Duration::from_secs(30), |m| {
        !presence_on(m, "crash").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    let _ = daemon.kill();
    let _ = daemon.wait();
    // Each run replays the scenario from its start, so what arrived is, per run, a gap-free prefix of
    // what the pipeline produces: together, a gap-free prefix of it too.
    let mut got = presence_on(&sub.messages(), "crash");
    got.sort_by(|a, b| a.3.cmp(&b.3));
    got.dedup();
    let expected = expected_events();
    assert!(got.len() >= 10, "only {} spooled events arrived", got.len());
    let got_set: BTreeSet<_> = got.iter().cloned().collect();
    let last = got.last().unwrap().3.clone();
    let missing: Vec<_> = expected
        .iter()
        .filter(|e| e.3 <= last && !got_set.contains(*e))
        .collect();
    assert!(missing.is_empty(), "gaps after the crash: {missing:?}");
    // Each run numbered what it accepted in a stream of its own, and each arrived without a hole.
    let streams = assert_numbered_without_gaps(&sub, "crash");
    assert!((2..=3).contains(&streams), "{streams} runs' streams");
}

/// A platform scales out with MQTT 5 shared subscriptions: two consumers in one share group split the
/// hub's presence events between them, and together see every one.
#[test]
fn shared_subscriptions_split_the_stream_across_consumers() {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let counts: Vec<std::sync::Arc<std::sync::Mutex<Vec<String>>>> =
        (0..2).map(|_| Default::default()).collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for (i, sink) in counts.iter().enumerate() {
        let sink = sink.clone();
        let ready = ready_tx.clone();
        let opts = Options5::new(format!("consumer-{i}"), "127.0.0.1", broker.port);
        rt.spawn(async move {
            let (client, mut ev) = Client5::new(opts, 100);
            client
                .subscribe(
                    "$share/platform/beacond/+/+/presence",
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                )
                .await
                .unwrap();
            while let Ok(e) = ev.poll().await {
                match e {
                    Event5::Incoming(P5::SubAck(_)) => {
                        let _ = ready.send(());
                    }
                    Event5::Incoming(P5::Publish(p)) => {
                        let v: Value = serde_json::from_slice(&p.payload).unwrap();
                        sink.lock()
                            .unwrap()
                            .push(v["event_id"].as_str().unwrap().to_owned());
                    }
                    _ => {}
                }
            }
        });
    }
    for _ in 0..2 {
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscribed");
    }
    let all = Subscriber::start(broker.port, "audit", "beacond/+/+/presence", true);
    let cfg = daemon_config(dir.path(), "shared", &broker.url(), 300.0);
    let mut daemon = start_daemon(&cfg);
    all.wait_for("40 events", Duration::from_secs(30), |m| m.len() >= 40);
    std::thread::sleep(Duration::from_secs(1));
    let _ = daemon.kill();
    let _ = daemon.wait();
    std::thread::sleep(Duration::from_millis(500));
    let a = counts[0].lock().unwrap().clone();
    let b = counts[1].lock().unwrap().clone();
    let everything: BTreeSet<String> = all
        .messages()
        .iter()
        .map(|(_, v, _)| v["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both consumers get a share: {} / {}",
        a.len(),
        b.len()
    );
    let shared: BTreeSet<String> = a.iter().chain(b.iter()).cloned().collect();
    assert_eq!(
        a.len() + b.len(),
        shared.len(),
        "a message went to both consumers"
    );
    assert_eq!(
        shared, everything,
        "the share group together saw every event"
    );
}

/// A spool that will not open is moved aside: the daemon runs anyway and says so in its retained
/// status, where store IT and the platform see it.
#[test]
fn a_broken_spool_is_moved_aside_and_reported_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/spool"), b"not a sled database").unwrap();
    let cfg = daemon_config(dir.path(), "broken", &broker.url(), 50.0);
    let mut daemon = start_daemon(&cfg);
    let sub = Subscriber::start(broker.port, "it-desk", "beacond/broken/+/status", true);
    sub.wait_for("a status with the warning", Duration::from_secs(20), |m| {
        m.iter().any(|(_, v, _)| {
            v["state"] == "online"
                && v["warnings"][0]
                    .as_str()
                    .is_some_and(|w| w.contains("spool would not open"))
        })
    });
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon keeps running"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    let moved = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("spool.broken-"));
    assert!(moved, "the old spool is kept aside for inspection");
}

/// The spool on a real, tiny filesystem (a 32 KiB tmpfs in a mount namespace of the daemon's own,
/// so the test needs no root): with the broker up it keeps within the space by starting segments
/// and deleting acknowledged ones; with the uplink down the card fills, the daemon holds events in
/// memory and says so, and when the uplink is back everything arrives, nothing lost.
#[test]
fn a_full_card_holds_events_in_memory_and_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform-5", "beacond/+/+/presence", false);
    let status = Subscriber::start(broker.port, "it-desk-5", "beacond/full/+/status", false);
    let stats = Subscriber::start(broker.port, "stats-5", "beacond/full/+/stats", false);
    // A dead uplink rather than a broker restart: see `every_event_survives_a_broker_outage`.
    let cable = Cable::to(broker.port);
    let cfg = daemon_config(dir.path(), "full", &cable.url(), 60.0);
    let spool = dir.path().join("data/spool");
    std::fs::create_dir_all(&spool).unwrap();
    let log = dir.path().join("daemon.log");
    let mut daemon = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg("mount -t tmpfs -o size=32k tmpfs \"$1\" && shift && exec \"$@\"")
        .arg("sh")
        .arg(&spool)
        .arg(assert_cmd::cargo::cargo_bin("beacond"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "beacond=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("unshare (util-linux) runs the daemon in its own mount namespace");
    let started = Instant::now();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    sub.wait_for("first events", Duration::from_secs(20), |m| !m.is_empty());
    // The platform is told how much room the card has: the tmpfs's, not the test machine's disk.
    stats.wait_for(
        "stats with the card's free space",
        Duration::from_secs(20),
        |m| {
            m.iter().any(|(_, v, _)| {
                v["type"] == "stats"
                    && v["spool"]["disk_free_bytes"]
                        .as_u64()
                        .is_some_and(|f| f <= 32 << 10)
            })
        },
    );
    // With the broker up, ten seconds write several times the filesystem's size.
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        !log_text().contains("cannot write the spool"),
        "acknowledged segments must make room:\n{}",
        log_text()
    );
    cable.cut();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log_text().contains("cannot write the spool to disk") {
        assert!(
            Instant::now() < deadline,
            "the card never filled:\n{}",
            log_text()
        );
        assert!(daemon.try_wait().unwrap().is_none(), "{}", log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Held in memory for a while, then the uplink is back.
    std::thread::sleep(Duration::from_secs(5));
    cable.mend();
    wait_for_events_after_now(&sub, "full", started, "events from after the card filled");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_text().contains("the spool writes to disk again") {
        assert!(Instant::now() < deadline, "{}", log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    let warned = |v: &Value| {
        v["warnings"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w.as_str().unwrap_or("").contains("cannot write to disk"))
        })
    };
    // Store IT saw the warning in the retained status. (Whether it clears is not asserted here: a
    // 32 KiB card fills again within moments of taking the backlog; `DiskState` has unit tests.)
    status.wait_for("the disk warning", Duration::from_secs(20), |m| {
        m.iter().any(|(_, v, _)| warned(v))
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    // Shown only if the test fails.
    eprintln!("daemon log:\n{}", log_text());
    assert_nothing_lost(&sub, "full", "lost on a full card");
    let statuses: Vec<Value> = status.messages().into_iter().map(|(_, v, _)| v).collect();
    // 32 KiB is far less than the default spool_max_bytes: said before the card filled.
    assert!(
        statuses.iter().any(|v| v["warnings"]
            .to_string()
            .contains("less than the spool may need")),
        "{statuses:?}"
    );
}

/// Two hubs with one hub_id (a copied SD card): with the same client id the broker lets one on
/// at a time and they throw each other off. Each finds the other from the hub's own retained
/// status, says so in its log and in the status the platform sees, and keeps running.
#[test]
fn two_hubs_sharing_a_hub_id_each_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform-twin", "beacond/s9/+/status", true);
    let mut daemons = Vec::new();
    let mut logs = Vec::new();
    for name in ["a", "b"] {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        let cfg = daemon_config(&home, "s9", &broker.url(), 50.0);
        let log = home.join("daemon.log");
        daemons.push(common::start_daemon_logging(&cfg, Some(&log)));
        logs.push(log);
        // The second starts after the first is on the broker, as the copied card's hub would.
        sub.wait_for("the first hub online", Duration::from_secs(20), |m| {
            m.iter().any(|(_, v, _)| v["state"] == "online")
        });
    }
    let said = "another beacond publishes as store s9 hub hub-window";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let texts: Vec<String> = logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect();
        if texts.iter().all(|t| t.contains(said)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not both found the other:\n{texts:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sub.wait_for("the warning in the status", Duration::from_secs(10), |m| {
        m.iter().any(|(t, v, _)| {
            t == "beacond/s9/hub-window/status"
                && v["warnings"].as_array().is_some_and(|w| {
                    w.iter()
                        .any(|w| w.as_str().is_some_and(|w| w.contains("share this hub_id")))
                })
        })
    });
    for d in &mut daemons {
        assert!(d.try_wait().unwrap().is_none(), "both keep running");
        let _ = d.kill();
        let _ = d.wait();
    }

    // One hub again, killed and restarted: the statuses and Last Wills of the dead runs (the
    // twins' among them) are not mistaken for another hub.
    let cfg = daemon_config(&dir.path().join("a"), "s9", &broker.url(), 50.0);
    for run in 0..3 {
        let log = dir.path().join(format!("alone-{run}.log"));
        let mut daemon = common::start_daemon_logging(&cfg, Some(&log));
        let seen = sub.messages().len();
        sub.wait_for("online again", Duration::from_secs(20), |m| {
            m[seen..].iter().any(|(_, v, _)| v["state"] == "online")
        });
        std::thread::sleep(Duration::from_secs(2));
        let _ = daemon.kill();
        let _ = daemon.wait();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("another beacond"), "run {run}:\n{text}");
    }
}
