//! End-to-end load generator for the MQTT sink: how fast the spool accepts events, how many bytes it
//! writes to disk per event (SD card wear), how fast a backlog drains to a local Mosquitto after an
//! outage, and how long a steady trickle of events takes from the sink to a subscriber. Needs
//! `mosquitto` (scripts/test installs it).
//!
//! Run: `cargo bench --bench mqtt_load` (EVENTS=100000 by default). Results go in docs/PERFORMANCE.md.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beacond::config::Config;
use beacond::sink::mqtt::{Health, Settings};
use beacond::sink::spool::{Message, Priority, Spool};
use beacond::sink::{PresenceRecord, Record};
use beacond::time::Timestamp;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[path = "support/disk.rs"]
mod disk;
use disk::device_bytes;

fn write_bytes() -> u64 {
    disk::write_bytes("self")
}

fn record(i: u64) -> Record {
    let t = Timestamp(1_767_603_600_000 + i * 100);
    Record::Presence(PresenceRecord {
        event: "enter",
        customer_id: Some(format!("cust-{:05}", i % 5000)),
        tag_id: None,
        zone: "produce".into(),
        at: t,
        entered_at: t,
        first_seen: t,
        last_seen: t,
        rssi: -68.4,
        distance_m: 2.61,
        dwell_s: None,
        duration_s: None,
        reason: None,
    })
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: only run for real.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events: u64 = env_or("EVENTS", 100_000);
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut broker = Command::new("mosquitto")
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto");
    std::thread::sleep(Duration::from_millis(300));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut cfg = Config::default();
        cfg.mqtt.url = format!("mqtt://127.0.0.1:{port}");
        cfg.mqtt.enabled = true;
        let settings = Settings::from_config(&cfg, "bench".into()).unwrap();
        let mut seq = beacond::sink::mqtt::Sequence::new();
        let msgs: Vec<Message> = (0..events)
            .map(|i| settings.message(&record(i), &mut seq).unwrap())
            .collect();
        let payload_bytes: usize = msgs.iter().map(|m| m.payload.len()).sum();

        // 1. Accept: the backlog an outage leaves, in the batches the sink writes (up to 512).
        let (mut spool, _) =
            Spool::open(&dir.path().join("spool"), 1 << 30).unwrap();
        let before = write_bytes();
        let t = Instant::now();
        for chunk in msgs.chunks(512) {
            spool.append(chunk.to_vec()).await;
        }
        let accept = t.elapsed();
        let written = write_bytes() - before;
        println!(
            "spool accept: {events} events in {:.3} s = {:.0} events/s; {} bytes written = {:.0} bytes/event (payload {:.0} bytes/event)",
            accept.as_secs_f64(),
            events as f64 / accept.as_secs_f64(),
            written,
            written as f64 / events as f64,
            payload_bytes as f64 / events as f64
        );
        assert_eq!(spool.depth(), events);
        let _ = Priority::Presence;

        // 2. Drain: the broker is back; a subscriber counts what arrives.
        let got = Arc::new(AtomicU64::new(0));
        let counter = got.clone();
        // When each presence event reached the platform's subscriber, for the trickle's latency.
        let arrivals = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let arrived = arrivals.clone();
        let mut opts = MqttOptions::new("bench-sub", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (sub, mut ev) = AsyncClient::new(opts, 100);
        sub.subscribe("beacond/#", QoS::AtMostOnce).await.unwrap();
        tokio::spawn(async move {
            while let Ok(e) = ev.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = e {
                    if p.topic.ends_with("/presence") {
                        counter.fetch_add(1, Ordering::Relaxed);
                        arrived.lock().unwrap().push(Instant::now());
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Record>(1);
        let (trigger, shutdown) = beacond::shutdown::channel();
        let health = Arc::new(Mutex::new(Health::default()));
        let t = Instant::now();
        let sink = tokio::spawn(beacond::sink::mqtt::run(settings, spool, rx, health, Default::default(), shutdown));
        while got.load(Ordering::Relaxed) < events {
            assert!(t.elapsed() < Duration::from_secs(300), "drain stalled at {}", got.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drain = t.elapsed();
        println!(
            "drain to mosquitto: {events} events in {:.3} s = {:.0} events/s",
            drain.as_secs_f64(),
            events as f64 / drain.as_secs_f64()
        );

        // 3. Trickle: a steady rate (TRICKLE_PER_S, default 200 events/s, a very busy store; a
        // supermarket's simulated hour makes about 1 event/s) through the sink's own ingest, which
        // gathers records for a moment before each synced write; what matters is bytes per event,
        // as the process writes them and as the disk receives them (journal included).
        let per_s: u64 = env_or("TRICKLE_PER_S", 200).max(1);
        let trickle: u64 = env_or("TRICKLE_EVENTS", 1000).max(1);
        // Let the kernel write back what the phases above left, so the disk counter sees the trickle.
        tokio::time::sleep(Duration::from_secs(env_or("SETTLE_S", 5))).await;
        let (before, device_before) = (write_bytes(), device_bytes());
        let mut sent = Vec::with_capacity(trickle as usize);
        for i in 0..trickle {
            sent.push(Instant::now());
            tx.send(record(events + i)).await.unwrap();
            tokio::time::sleep(Duration::from_micros(1_000_000 / per_s)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let written = write_bytes() - before;
        let device = device_bytes() - device_before;
        println!(
            "trickle at {per_s} events/s: {written} bytes written for {trickle} events = {:.0} bytes/event; disk received {device} bytes = {:.0} bytes/event",
            written as f64 / trickle as f64,
            device as f64 / trickle as f64
        );
        // From the pipeline's hand-off to the platform's subscriber: events arrive in order, so the
        // n-th of the trickle's arrivals is its n-th event.
        let mut ms: Vec<f64> = arrivals.lock().unwrap()[events as usize..]
            .iter()
            .zip(&sent)
            .map(|(got, sent)| got.duration_since(*sent).as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        println!(
            "trickle latency, sink to subscriber ({} events): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
        drop(tx);
        trigger.fire();
        let _ = sink.await;
    });
    let _ = broker.kill();
    let _ = broker.wait();
}
