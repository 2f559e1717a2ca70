//! Customer sync against a real Mosquitto broker and the daemon binary: signed snapshots and deltas,
//! rejected batches, gap requests, resuming after a restart, and opt-out purging presence state and
//! the spool. The platform is played with the reference publisher (`beacond::identity::publish`).
//!
//! Needs `mosquitto` on the PATH (scripts/test installs Debian's package).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{signal, start_daemon, Broker, Subscriber};

use beacond::identity::publish;
use beacond::identity::sync::sign;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

const STORE: &str = "s1";

fn platform_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn config(dir: &Path, url: &str, speed: f64) -> PathBuf {
    let p = dir.join("beacond.toml");
    std::fs::write(
        &p,
        format!(
            "[hub]\nstore_id = \"{STORE}\"\nhub_id = \"hub-window\"\ndata_dir = {:?}\n\
             [scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\nspeed = {speed}\n\
             [mqtt]\nurl = \"{url}\"\nkeep_alive_s = 5\nstats_interval_s = 5\n\
             [identity]\nplatform_public_key = \"{}\"\n\
             [[zones]]\nid = \"window\"\nhub = \"hub-window\"\nenter_rssi = -75\nexit_rssi = -84\nmin_enter_s = 1.0\n\
             [[zones]]\nid = \"rails\"\nhub = \"hub-rails\"\nenter_rssi = -75\nexit_rssi = -84\nmin_enter_s = 1.0\n",
            dir.join("data").display().to_string(),
            hex::encode(platform_key().verifying_key().to_bytes()),
        ),
    )
    .unwrap();
    p
}

fn send(broker: &Broker, payloads: Vec<Vec<u8>>) {
    broker.publish_sync(STORE, payloads);
}

fn batch(body: Value) -> Vec<Vec<u8>> {
    publish::prepare(&platform_key(), &body.to_string(), "test", 2).unwrap()
}

fn requests(msgs: &[(String, Value, bool)]) -> Vec<u64> {
    msgs.iter()
        .filter(|(t, _, _)| t == &format!("beacond/{STORE}/hub-window/sync/request"))
        .map(|(_, v, _)| v["from_seq"].as_u64().unwrap())
        .collect()
}

fn last_sync(msgs: &[(String, Value, bool)]) -> Option<Value> {
    common::last_stats(msgs, "sync")
}

fn customers(ids: &[&str]) -> Vec<Value> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| {
            json!({"id": id, "segments": ["club"],
                   "beacons": [format!("ibeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6:7:{i}")]})
        })
        .collect()
}

#[test]
fn snapshot_deltas_rejections_gaps_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform", &format!("beacond/{STORE}/#"), true);
    let cfg = config(dir.path(), &broker.url(), 5.0);
    let mut daemon = start_daemon(&cfg);

    // An empty cache asks for everything on connect.
    sub.wait_for("initial request", Duration::from_secs(20), |m| {
        requests(m).contains(&1)
    });

    // A snapshot at seq 10 in three chunks (chunk size 2), then a delta.
    send(
        &broker,
        batch(json!({"v":1,"store":STORE,"seq":10,"type":"snapshot",
                     "customers": customers(&["c-1","c-2","c-3","c-4","c-5"])})),
    );
    let delta11 = batch(json!({"v":1,"store":STORE,"seq":11,"type":"delta",
        "upsert":[{"id":"c-6"},{"id":"c-1","opted_in":false}],"delete":["c-2"]}));
    send(&broker, delta11.clone());

    // Rejected, each for its reason, changing nothing.
    let body12 = json!({"v":1,"store":STORE,"seq":12,"type":"delta","delete":["c-3"]}).to_string();
    let mut tampered = sign(&platform_key(), body12.as_bytes());
    let n = tampered.len();
    tampered[n - 5] ^= 0x01;
    let other_store = batch(json!({"v":1,"store":"s2","seq":12,"type":"delta","delete":["c-3"]}));
    let mut bad = vec![body12.clone().into_bytes(), tampered];
    bad.extend(other_store);
    bad.extend(delta11);
    send(&broker, bad);

    sub.wait_for("sync counters in stats", Duration::from_secs(30), |m| {
        last_sync(m).is_some_and(|s| {
            s["seq"] == 11
                && s["customers"] == 4
                && s["unsigned"] == 1
                && s["bad_signature"] == 1
                && s["wrong_store"] == 1
                && s["replayed"] == 1
        })
    });

    // A gap: 14 arrives after 11, the hub asks for 12.
    send(
        &broker,
        batch(json!({"v":1,"store":STORE,"seq":14,"type":"delta","delete":["c-4"]})),
    );
    sub.wait_for("gap request", Duration::from_secs(20), |m| {
        requests(m).contains(&12)
    });

    signal(&daemon, "-TERM");
    let _ = daemon.wait();

    // What the hub stored: the snapshot and delta 11, not the rejected or held-back batches.
    {
        let (cache, _) =
            beacond::identity::cache::Cache::open(&dir.path().join("data/customers"), 1 << 20)
                .unwrap();
        let st = cache.stats().unwrap();
        assert_eq!((st.seq, st.customers), (11, 4));
        let ids: Vec<String> = cache.iter().map(|c| c.unwrap().id).collect();
        assert_eq!(ids, ["c-3", "c-4", "c-5", "c-6"]);
        assert_eq!(cache.get("c-5").unwrap().unwrap().segments, ["club"]);
    }

    // A restart resumes from the stored sequence.
    let before = requests(&sub.messages()).len();
    daemon = start_daemon(&cfg);
    sub.wait_for("request after restart", Duration::from_secs(20), |m| {
        requests(m).len() > before && *requests(m).last().unwrap() == 12
    });
    send(
        &broker,
        batch(json!({"v":1,"store":STORE,"seq":12,"type":"delta","delete":["c-3"]})),
    );
    sub.wait_for("delta 12 applied", Duration::from_secs(30), |m| {
        last_sync(m).is_some_and(|s| s["seq"] == 12 && s["customers"] == 3)
    });
    signal(&daemon, "-TERM");
    let _ = daemon.wait();
}

/// The records the daemon's pipeline makes of the boutique with the test zones (deterministic), in
/// order, until `enough` says so.
fn boutique_records(
    cfg: &beacond::config::Config,
    enough: impl Fn(&[beacond::sink::Record]) -> bool,
) -> Vec<beacond::sink::Record> {
    use beacond::pipeline::Core;
    use beacond::presence::{Engine, EngineParams};
    use beacond::scan::sim::{Scenario, Simulation};
    let mut sim = Simulation::new(Scenario::load("builtin:boutique").unwrap());
    let engine = Engine::new(
        &cfg.zones,
        EngineParams::from_config(&cfg.presence),
        "hub-window",
    );
    let mut core = Core::new(engine, sim.directory().clone(), sim.hub_names(), 1);
    let (mut out, mut events) = (Vec::new(), Vec::new());
    while let Some(a) = sim.next_advert() {
        core.handle_advert(&a, &mut events);
        out.extend(events.drain(..).map(|e| beacond::sink::render(&core, &e)));
        if enough(&out) {
            break;
        }
    }
    out
}

/// A customer of the boutique who appears early and keeps producing events long after their first,
/// so their silence after an opt-out means something.
fn busiest_customer() -> String {
    use beacond::sink::Record;
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        beacond::config::Config::load(&config(dir.path(), "mqtt://127.0.0.1:1", 1.0)).unwrap();
    let mut counts = std::collections::BTreeMap::<String, (usize, usize)>::new();
    let mut n = 0;
    for r in boutique_records(&cfg, |_| false) {
        if let Record::Presence(p) = r {
            n += 1;
            counts.entry(p.customer_id.unwrap()).or_insert((n, 0)).1 += 1;
        }
    }
    counts
        .into_iter()
        .filter(|(_, (_, count))| *count >= 6)
        .min_by_key(|(_, (first, _))| *first)
        .unwrap()
        .0
}

/// Whether a message is a presence event naming `victim`.
fn names(victim: &str) -> impl Fn(&(String, Value, bool)) -> bool + '_ {
    move |(t, v, _)| t.ends_with("/presence") && v["customer_id"] == victim
}

/// Waits for `others` presence events of other customers from message `from(messages)` on (the
/// pipeline goes on), then asserts that none since then named `victim`.
fn assert_silenced_from(
    sub: &Subscriber,
    victim: &str,
    from: impl Fn(&[(String, Value, bool)]) -> usize,
    others: usize,
) {
    sub.wait_for("other customers' events", Duration::from_secs(60), |m| {
        m[from(m)..]
            .iter()
            .filter(|(t, v, _)| t.ends_with("/presence") && v["customer_id"] != victim)
            .count()
            >= others
    });
    let msgs = sub.messages();
    let after: Vec<_> = msgs[from(&msgs)..]
        .iter()
        .filter(|m| names(victim)(m))
        .collect();
    assert!(after.is_empty(), "events after the opt-out: {after:?}");
}

#[test]
fn an_opt_out_silences_the_customer_at_once() {
    let victim = busiest_customer();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform", &format!("beacond/{STORE}/#"), true);
    let cfg = config(dir.path(), &broker.url(), 20.0);
    let mut daemon = start_daemon(&cfg);
    let is_victim = names(&victim);
    sub.wait_for(
        "the customer's first event",
        Duration::from_secs(120),
        |m| m.iter().any(&is_victim),
    );
    send(
        &broker,
        batch(json!({"v":1,"store":STORE,"seq":1,"type":"delta",
                     "upsert":[{"id": victim, "opted_in": false}]})),
    );
    // Stats are published in order with presence events: once a stats message shows the opt-out
    // applied, no later message may name the customer.
    sub.wait_for("opt-out applied", Duration::from_secs(30), |m| {
        last_sync(m).is_some_and(|s| s["seq"] == 1)
    });
    let applied_at = |m: &[(String, Value, bool)]| {
        m.iter()
            .position(|(t, v, _)| t.ends_with("/stats") && v["sync"]["seq"] == 1)
            .unwrap()
    };
    assert_silenced_from(&sub, &victim, applied_at, 3);
    signal(&daemon, "-TERM");
    let _ = daemon.wait();
    drop(daemon);
}

#[test]
fn an_opt_out_removes_unsent_events_from_the_spool() {
    use beacond::sink::mqtt::{run, Health, Settings};
    use beacond::sink::spool::Spool;
    use beacond::sink::Record;
    // No broker: everything stays in the spool.
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        beacond::config::Config::load(&config(dir.path(), "mqtt://127.0.0.1:9", 1.0)).unwrap();
    let settings = Settings::from_config(&cfg, "test".into()).unwrap();
    let records = boutique_records(&cfg, |out| out.len() > 60);
    let customer_of = |r: &Record| match r {
        Record::Presence(p) => p.customer_id.clone(),
        _ => None,
    };
    let victim = records.iter().find_map(customer_of).unwrap();
    let others = records
        .iter()
        .filter(|r| customer_of(r).is_some_and(|c| c != victim))
        .count();
    assert!(others > 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let spool_dir = dir.path().join("spool");
    rt.block_on(async {
        let (spool, _) = Spool::open(&spool_dir, 1 << 24).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let (_trigger, shutdown) = beacond::shutdown::channel();
        let health = std::sync::Arc::new(std::sync::Mutex::new(Health::default()));
        let task = tokio::spawn(run(
            settings,
            spool,
            rx,
            health,
            Default::default(),
            shutdown,
        ));
        let (first, second) = records.split_at(records.len() / 2);
        for r in first {
            tx.send(r.clone()).await.unwrap();
        }
        // Let the first half reach the spool, so the purge has to remove stored messages too.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for r in second {
            tx.send(r.clone()).await.unwrap();
        }
        tx.send(Record::Purge(vec![victim.clone()])).await.unwrap();
        drop(tx);
        task.await.unwrap();
    });
    let (spool, _) = Spool::open(&spool_dir, 1 << 24).unwrap();
    let left = spool.batch_from(0, 10_000).unwrap();
    let named: Vec<Option<String>> = left.iter().map(|e| e.message.customer.clone()).collect();
    assert!(!named.iter().any(|c| c.as_deref() == Some(victim.as_str())));
    assert_eq!(named.iter().filter(|c| c.is_some()).count(), others);
}

#[test]
fn a_cache_that_will_not_open_is_moved_aside_reported_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform", &format!("beacond/{STORE}/#"), true);
    let broken = dir.path().join("data/customers");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("conf"), b"not a sled config").unwrap();
    std::fs::write(broken.join("db"), vec![0xffu8; 4096]).unwrap();
    let cfg = config(dir.path(), &broker.url(), 5.0);
    let mut daemon = start_daemon(&cfg);
    sub.wait_for(
        "warning in the status and a full request",
        Duration::from_secs(20),
        |m| {
            m.iter().any(|(t, v, _)| {
                t.ends_with("/status")
                    && v["warnings"].as_array().is_some_and(|w| {
                        w.iter()
                            .any(|s| s.as_str().unwrap().contains("customer cache"))
                    })
            }) && requests(m).contains(&1)
        },
    );
    send(
        &broker,
        batch(
            json!({"v":1,"store":STORE,"seq":3,"type":"snapshot","customers": customers(&["c-1"])}),
        ),
    );
    sub.wait_for("rebuilt", Duration::from_secs(30), |m| {
        last_sync(m).is_some_and(|s| s["seq"] == 3 && s["customers"] == 1)
    });
    signal(&daemon, "-TERM");
    let _ = daemon.wait();
    assert!(std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("customers.broken-")));
}

/// An opt-out that arrives when the card cannot write (the data directory is a full 1 MiB tmpfs,
/// in a mount namespace of the daemon's own) still silences the customer at once: the cache
/// cannot record it, so the hub asks for the batch again, but nothing identifies them meanwhile.
#[test]
fn an_opt_out_on_a_full_card_silences_the_customer_all_the_same() {
    let victim = busiest_customer();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let sub = Subscriber::start(broker.port, "platform", &format!("beacond/{STORE}/#"), true);
    let cfg = config(dir.path(), &broker.url(), 20.0);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let out = dir.path();
    let log = out.join("daemon.log");
    let bin = assert_cmd::cargo::cargo_bin("beacond");
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs {data:?} || exit 99
         RUST_LOG=beacond=info {bin:?} run --config {cfg:?} >/dev/null 2>{log:?} & pid=$!
         while [ ! -e {out:?}/fill ]; do sleep 0.1; done
         dd if=/dev/zero of={data:?}/filler bs=4k 2>/dev/null; touch {out:?}/filled
         while [ ! -e {out:?}/stop ]; do sleep 0.1; done
         kill $pid; wait $pid"
    );
    let mut ns = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .spawn()
        .expect("unshare (util-linux)");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let is_victim = names(&victim);
    sub.wait_for(
        "the customer's first event",
        Duration::from_secs(120),
        |m| m.iter().any(&is_victim),
    );
    std::fs::write(out.join("fill"), b"").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !out.join("filled").exists() {
        assert!(std::time::Instant::now() < deadline, "{}", log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    send(
        &broker,
        batch(json!({"v":1,"store":STORE,"seq":1,"type":"delta",
                     "upsert":[{"id": victim, "opted_in": false}]})),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !log_text().contains("cannot write customer sync to the cache") {
        assert!(
            std::time::Instant::now() < deadline,
            "the cache took the write on a full card?\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The core has the opt-out a moment after the log line; what it made before has been sent
    // well within this (the broker is on loopback and the spool holds in memory).
    std::thread::sleep(Duration::from_secs(5));
    let from = sub.messages().len();
    assert_silenced_from(&sub, &victim, |_| from, 10);
    std::fs::write(out.join("stop"), b"").unwrap();
    let _ = ns.wait();
}
