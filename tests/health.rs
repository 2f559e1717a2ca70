//! systemd notifications, the health endpoint and `beacond status`, on the daemon binary: READY and
//! watchdog pings while the pipeline makes progress, no pings once the source is stuck.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, port: u16, speed: f64) -> std::path::PathBuf {
    let p = dir.join("beacond.toml");
    std::fs::write(
        &p,
        format!(
            "[hub]\nhub_id = \"hub-window\"\ndata_dir = {:?}\n\
             [scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\nspeed = {speed}\nwatchdog_s = 2\n\
             [mqtt]\nenabled = false\nstats_interval_s = 1\n\
             [presence]\nheadcount_interval_s = 10\n\
             [health]\nlisten = \"127.0.0.1:{port}\"\n\
             [[zones]]\nid = \"window\"\nenter_rssi = -75\nexit_rssi = -84\n",
            dir.join("data").display().to_string()
        ),
    )
    .unwrap();
    p
}

/// `beacond run` on `cfg`, quietly.
fn daemon(cfg: &Path) -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("beacond"));
    c.args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The daemon as systemd runs it: a notify socket and a 1 s watchdog.
fn start(cfg: &Path, socket: &Path) -> Child {
    daemon(cfg)
        .env("NOTIFY_SOCKET", socket)
        .env("WATCHDOG_USEC", "1000000")
        .spawn()
        .unwrap()
}

/// The daemon with no one to notify.
fn start_plain(cfg: &Path) -> Running {
    Running(daemon(cfg).spawn().unwrap())
}

/// Every notification received within `d`.
fn receive(sock: &UnixDatagram, d: Duration) -> Vec<String> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

fn get(port: u16, path: &str) -> (u16, String) {
    match ureq::get(&format!("http://127.0.0.1:{port}{path}")).call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap()),
        Err(ureq::Error::StatusCode(code)) => (code, String::new()),
        Err(e) => panic!("{e}"),
    }
}

fn status(cfg: &Path) -> std::process::Output {
    Command::new(assert_cmd::cargo::cargo_bin("beacond"))
        .args(["status", "--config"])
        .arg(cfg)
        .output()
        .unwrap()
}

#[test]
fn a_running_pipeline_is_ready_pinged_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let sock = UnixDatagram::bind(&socket).unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port, 5.0);
    let mut d = start(&cfg, &socket);
    let got = receive(&sock, Duration::from_secs(5));
    assert!(got.iter().any(|m| m.contains("READY=1")), "{got:?}");
    let pings = got.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 4, "a ping every half period: {got:?}");
    let last = got.last().unwrap();
    assert!(
        last.contains("STATUS=") && last.contains("adverts/s"),
        "{last}"
    );

    let (code, metrics) = get(port, "/metrics");
    assert_eq!(code, 200);
    for m in [
        "beacond_adverts_total{source=\"sim\"}",
        "beacond_tracked_identities",
        "beacond_zone_headcount{zone=\"window\"}",
        "beacond_healthy 1",
        // 25 simulated seconds: no visit long enough to learn from yet.
        "beacond_exit_margin_db{hub=\"hub-window\"} 8.0",
        "beacond_exit_margin_visits{hub=\"hub-window\"} 0",
    ] {
        assert!(metrics.contains(m), "{m} missing:\n{metrics}");
    }
    assert_eq!(get(port, "/healthz"), (200, "ok\n".into()));
    let out = status(&cfg);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("healthy") && text.contains("source sim"),
        "{text}"
    );
    assert!(
        text.contains("exit margin:\n  hub-window 8.0 dB (exit_margin_db until it has learned from 20 visits: 0 so far)\n"),
        "{text}"
    );

    Command::new("kill")
        .args(["-TERM", &d.id().to_string()])
        .status()
        .unwrap();
    let got = receive(&sock, Duration::from_secs(2));
    assert!(got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
    assert!(d.wait().unwrap().success());
}

#[test]
fn a_stuck_source_stops_the_watchdog_pings_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let sock = UnixDatagram::bind(&socket).unwrap();
    let port = free_port();
    // So slow that the first advert is minutes away: the source is stuck as far as anyone can tell.
    let cfg = config(dir.path(), port, 0.0001);
    let mut d = start(&cfg, &socket);
    // Healthy for 3 × watchdog_s = 6 s, then no more pings.
    let first = receive(&sock, Duration::from_secs(8));
    assert!(first.iter().any(|m| m.contains("READY=1")));
    let later = receive(&sock, Duration::from_secs(3));
    assert!(!later.is_empty(), "status lines go on");
    assert!(
        later.iter().all(|m| !m.contains("WATCHDOG=1")),
        "pinged while stuck: {later:?}"
    );
    assert!(later
        .last()
        .unwrap()
        .contains("UNHEALTHY: no advertisement for"));
    let (code, body) = get(port, "/healthz");
    assert_eq!(code, 503, "{body}");
    let out = status(&cfg);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("UNHEALTHY: no advertisement for"));
    let _ = d.kill();
    let _ = d.wait();
}

#[test]
fn status_says_what_to_do_when_it_cannot_ask() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), free_port(), 1.0);
    let out = status(&cfg);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is beacond running"));
}

/// One hub's exit margin as `/status` reports it: hub, visits, learned.
type Margin = (String, u64, bool);

/// The exit margins `/status` reports, by hub.
fn margins(port: u16) -> Vec<Margin> {
    // Nothing yet while the daemon is still starting.
    let Ok(mut r) = ureq::get(&format!("http://127.0.0.1:{port}/status")).call() else {
        return Vec::new();
    };
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["exit_margins"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["hub"].as_str().unwrap().to_owned(),
                        m["visits"].as_u64().unwrap(),
                        m["learned"].as_bool().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A daemon that is killed if the test fails before it is stopped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops it as systemd does, and checks it stopped cleanly.
fn stop(mut d: Running) {
    Command::new("kill")
        .args(["-TERM", &d.0.id().to_string()])
        .status()
        .unwrap();
    assert!(d.0.wait().unwrap().success());
}

#[test]
fn what_the_hubs_learned_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    // The simulated supermarket, fast: its eight hubs learn their margins in simulated minutes.
    let write = |speed: f64| {
        let mut cfg = beacond::scan::sim::Scenario::load("builtin:supermarket")
            .unwrap()
            .as_config();
        cfg.scan.source = beacond::config::SourceKind::Sim;
        cfg.scan.sim_scenario = "builtin:supermarket".into();
        cfg.scan.speed = speed;
        cfg.hub.data_dir = data.clone();
        cfg.mqtt.enabled = false;
        cfg.mqtt.stats_interval_s = 1;
        cfg.health.listen = Some(format!("127.0.0.1:{port}"));
        let p = dir.path().join("beacond.toml");
        std::fs::write(&p, toml::to_string(&cfg).unwrap()).unwrap();
        p
    };
    let d = start_plain(&write(200.0));
    let wait_for = |pred: &dyn Fn(&[Margin]) -> bool| {
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let m = if Instant::now() < end {
                margins(port)
            } else {
                panic!("timed out: {:?}", margins(port))
            };
            if pred(&m) {
                return m;
            }
        }
    };
    wait_for(&|m| m.len() == 8 && m.iter().filter(|h| h.2).count() >= 2);
    stop(d);

    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("learned.json")).unwrap()).unwrap();
    let mut saved: Vec<Margin> = file["exit_margins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let n = h["sags_db"].as_array().unwrap().len() as u64;
            (h["hub"].as_str().unwrap().to_owned(), n, n >= 20)
        })
        .collect();
    assert!(saved.iter().filter(|h| h.2).count() >= 2, "{saved:?}");

    // Started again in real time: no visit of 30 s can have ended yet, so whatever the hubs know
    // came from the file, and hubs with 20 sags use their learned margin at once.
    let d = start_plain(&write(1.0));
    let mut after = wait_for(&|m| m.len() == 8);
    after.retain(|h| h.1 > 0);
    saved.sort();
    after.sort();
    assert_eq!(after, saved);
    stop(d);
}
