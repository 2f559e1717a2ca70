//! Endurance load generator: the whole daemon (`beacond run`, the release binary) on the simulated
//! store played again and again (`sim_repeat`), fast, publishing to a local Mosquitto, for days of
//! store time. It samples what a hub that must run for months cares about — resident memory,
//! threads, open files, the data directory on the card, what the daemon writes to the card, the
//! spool, what reached the broker — so a slow leak shows as a trend instead of an out-of-memory kill
//! in a store months later, and the card's wear per store day is measured on the whole daemon.
//!
//! Run: `cargo bench --bench endurance`. Knobs (environment): `HOURS` simulated store hours
//! (default 168, a week of an always-open store), `SPEED` (default 600× real time), `SAMPLE_S`
//! wall seconds between rows (default 30), `SCENARIO` (default supermarket). Needs `mosquitto`
//! (scripts/test installs it). Results go in docs/PERFORMANCE.md. When `SAMPLE_S × SPEED` is a
//! whole number of laps, every row is taken at the same point of the store's hour (the same
//! shoppers inside), which makes a trend easier to see.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use beacond::config::SourceKind;
use beacond::scan::sim::{Scenario, Simulation};

#[path = "support/disk.rs"]
mod disk;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A field of `/proc/PID/status`, kB.
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// User plus system CPU seconds the process has used.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The daemon's `/status` (as `beacond status` asks it), or `Null` while it cannot answer.
fn status(port: u16) -> serde_json::Value {
    ureq::get(&format!("http://127.0.0.1:{port}/status"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|body| serde_json::from_str(&body).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: only run for real.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let hours: f64 = env_or("HOURS", 168.0);
    let speed: f64 = env_or("SPEED", 600.0);
    let sample = Duration::from_secs_f64(env_or("SAMPLE_S", 30.0));
    let name: String = env_or("SCENARIO", "supermarket".to_owned());
    let spec = format!("builtin:{name}");
    let scenario = Scenario::load(&spec).expect("scenario");
    // Every lap is the same world: one lap's adverts say how far the daemon has got in store time.
    let lap_h = scenario.duration_s as f64 / 3600.0;
    let per_lap = {
        let mut sim = Simulation::new(scenario.clone());
        std::iter::from_fn(|| sim.next_advert()).count() as f64
    };

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mqtt_port, health_port) = (free_port(), free_port());
    let mut broker = Command::new("mosquitto")
        .args(["-p", &mqtt_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (scripts/test installs it)");
    std::thread::sleep(Duration::from_millis(300));

    let mut cfg = scenario.as_config();
    cfg.scan.source = SourceKind::Sim;
    cfg.scan.sim_scenario = spec;
    cfg.scan.sim_repeat = true;
    cfg.scan.speed = speed;
    cfg.hub.data_dir = data.clone();
    cfg.mqtt.enabled = true;
    cfg.mqtt.url = format!("mqtt://127.0.0.1:{mqtt_port}");
    cfg.health.listen = Some(format!("127.0.0.1:{health_port}"));
    let cfg_path = dir.path().join("beacond.toml");
    std::fs::write(&cfg_path, toml::to_string(&cfg).unwrap()).unwrap();
    let log = std::fs::File::create(dir.path().join("beacond.log")).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_beacond"))
        .arg("run")
        .arg("--config")
        .arg(&cfg_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("beacond");
    let pid = daemon.id();
    println!(
        "endurance: {name} ({per_lap:.0} adverts per {lap_h} h lap, every hub in one daemon) at {speed}× for {hours} store hours, MQTT to mosquitto on loopback"
    );
    println!(
        "{:>7} {:>8} {:>8} {:>8} {:>7} {:>5} {:>9} {:>9} {:>8} {:>7} {:>10} {:>9} {:>9} {:>9}",
        "wall_s",
        "store_h",
        "rss_MiB",
        "peak_MiB",
        "threads",
        "fds",
        "data_KiB",
        "wrote_MiB",
        "disk_MiB",
        "cpu_%",
        "acked",
        "on_card",
        "spool",
        "tracked"
    );
    let t0 = Instant::now();
    let pid_s = pid.to_string();
    // The disks' count includes everything else the machine writes: run on an otherwise idle one.
    let disk0 = disk::device_bytes();
    let mib = |b: u64| b as f64 / 1024.0 / 1024.0;
    let mut acked = 0;
    let (mut last_cpu, mut last_t) = (0.0, 0.0);
    let mut rss = Vec::new();
    let (wrote, disk, store_h) = loop {
        std::thread::sleep(sample);
        if let Some(st) = daemon.try_wait().unwrap() {
            panic!("beacond stopped on its own: {st:?}");
        }
        let s = status(health_port);
        let store_h = s["adverts_total"].as_f64().unwrap_or(0.0) / per_lap * lap_h;
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_s(pid);
        let r = proc_status_kb(pid, "VmRSS:");
        rss.push((store_h, r));
        let wrote = disk::write_bytes(&pid_s);
        let disk = disk::device_bytes() - disk0;
        acked = s["mqtt"]["acknowledged"].as_u64().unwrap_or(acked);
        println!(
            "{:>7.0} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>5} {:>9.0} {:>9.1} {:>8.1} {:>7.0} {:>10} {:>9} {:>9} {:>9}",
            wall,
            store_h,
            r as f64 / 1024.0,
            proc_status_kb(pid, "VmHWM:") as f64 / 1024.0,
            proc_status_kb(pid, "Threads:"),
            open_files(pid),
            dir_bytes(&data) as f64 / 1024.0,
            mib(wrote),
            mib(disk),
            100.0 * (cpu - last_cpu) / (wall - last_t),
            acked,
            // Of them, those the spool wrote to the card (not acknowledged within 200 ms).
            s["mqtt"]["spool_written"].as_u64().unwrap_or(0),
            s["mqtt"]["spool_depth"].as_u64().unwrap_or(0),
            s["tracked"].as_u64().unwrap_or(0),
        );
        (last_cpu, last_t) = (cpu, wall);
        if store_h >= hours {
            break (wrote, disk, store_h);
        }
    };
    let stop = Instant::now();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let st = daemon.wait().unwrap();
    println!(
        "stopped on SIGTERM in {:.2} s: {st}",
        stop.elapsed().as_secs_f64()
    );
    // A leak shows as the second half's memory above the first's; caches and tables filling up
    // show as a rise that stops. Medians, because a sample lands anywhere in the allocator's swing.
    let half = |second: bool| {
        let mut v: Vec<u64> = rss
            .iter()
            .filter(|(h, _)| (*h >= hours / 2.0) == second)
            .map(|r| r.1)
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as f64 / 1024.0
    };
    println!(
        "resident memory, median sample: {:.1} MiB in the first {:.0} store hours, {:.1} MiB in the rest",
        half(false),
        hours / 2.0,
        half(true)
    );
    // What is batched by wall time (the spool's 200 ms, sled's own flushes) covers more messages
    // at speed than in real time, so these are the least a store day costs; run with SPEED=1 for
    // what a card sees in a store.
    let per = |b: u64| {
        format!(
            "{:.1} MiB per store day, {:.0} bytes per message",
            mib(b) / store_h * 24.0,
            b as f64 / acked.max(1) as f64
        )
    };
    println!(
        "written by beacond: {}; received by the disks: {} ({acked} messages acknowledged in {store_h:.1} store hours)",
        per(wrote),
        per(disk)
    );
    let _ = broker.kill();
    let _ = broker.wait();
}
