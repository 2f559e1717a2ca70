//! Health for store IT and systemd: the progress the pipeline makes, the systemd notifications
//! (READY, STATUS, WATCHDOG only while advertisements and the MQTT loop both make progress,
//! STOPPING), and an optional local HTTP endpoint with Prometheus metrics, `/healthz` and `/status`
//! (what `beacond status` prints).
//!
//! The decision whether the daemon is healthy ([`Progress::check`]) is pure: it takes `now`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::sink::Record;
use crate::time::Timestamp;

/// The MQTT loop iterates at least every keep-alive and every backoff step (at most 60 s); this much
/// longer without an iteration means it is stuck.
const MQTT_STALE_MS: u64 = 180_000;

/// Heartbeats of the stages, shared by reference.
#[derive(Debug)]
pub struct Progress {
    /// Wall-clock ms of the last advert the core handled.
    pub last_advert: AtomicU64,
    /// Wall-clock ms of the MQTT loop's last iteration.
    pub last_mqtt: AtomicU64,
    /// Whether MQTT is on at all.
    pub mqtt_enabled: AtomicBool,
    /// Whether the MQTT connection is up.
    pub mqtt_connected: AtomicBool,
    /// Silence (ms) after which the pipeline counts as wedged.
    pub advert_stale_ms: u64,
    started: u64,
}

impl Progress {
    /// Heartbeats starting now; adverts may be silent for `advert_stale_s`.
    pub fn new(advert_stale_s: u64) -> Arc<Progress> {
        let now = Timestamp::now().0;
        Arc::new(Progress {
            last_advert: AtomicU64::new(now),
            last_mqtt: AtomicU64::new(now),
            mqtt_enabled: AtomicBool::new(false),
            mqtt_connected: AtomicBool::new(false),
            advert_stale_ms: advert_stale_s * 1000,
            started: now,
        })
    }

    /// The core handled an advert.
    pub fn advert(&self) {
        self.last_advert
            .store(Timestamp::now().0, Ordering::Relaxed);
    }

    /// The MQTT loop went round.
    pub fn mqtt(&self, connected: bool) {
        self.last_mqtt.store(Timestamp::now().0, Ordering::Relaxed);
        self.mqtt_connected.store(connected, Ordering::Relaxed);
    }

    /// Healthy at `now`, or why not.
    pub fn check(&self, now: Timestamp) -> Result<(), String> {
        let advert = self.last_advert.load(Ordering::Relaxed);
        let silent = now.0.saturating_sub(advert);
        if silent > self.advert_stale_ms {
            return Err(format!(
                "no advertisement for {} s (the pipeline or the radio is stuck)",
                silent / 1000
            ));
        }
        if self.mqtt_enabled.load(Ordering::Relaxed) {
            let stuck = now.0.saturating_sub(self.last_mqtt.load(Ordering::Relaxed));
            if stuck > MQTT_STALE_MS {
                return Err(format!("the MQTT loop has not run for {} s", stuck / 1000));
            }
        }
        Ok(())
    }

    /// Seconds since start.
    pub fn uptime_s(&self, now: Timestamp) -> u64 {
        now.0.saturating_sub(self.started) / 1000
    }
}

/// What the hub reports about itself: the last stats and headcounts, plus live state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Adverts handled since start, by source.
    pub adverts_total: u64,
    /// The source's kind.
    pub source: String,
    /// Decode errors since start.
    pub decode_errors_total: u64,
    /// Adverts per second over the last stats interval.
    pub adverts_per_s: f64,
    /// Identities tracked.
    pub tracked: u64,
    /// Of which anonymous.
    pub tracked_anonymous: u64,
    /// Per zone: devices in the last headcount interval (anonymous + known).
    pub zones: BTreeMap<String, u64>,
    /// Customer sync: applied sequence and customers.
    pub sync_seq: Option<u64>,
    /// Customers in the cache.
    pub customers: Option<u64>,
    /// The scan source's counters.
    pub scan: Option<crate::scan::bluez::tracker::ScanCounters>,
    /// Sharing with peer hubs, when `[peers]` lists any.
    pub peers: Option<crate::sink::PeerCounters>,
    /// Offers fired since start.
    pub offers_total: u64,
    /// Per hub with zones: the exit margin its visits use, and whether it is learned yet.
    pub exit_margins: Vec<crate::presence::HubExitMargin>,
    /// Spool depth and drops, MQTT state (when MQTT is on).
    pub mqtt: Option<MqttSnapshot>,
}

/// The MQTT sink's state.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MqttSnapshot {
    /// Connected now.
    pub connected: bool,
    /// Reconnects since start.
    pub reconnects: u64,
    /// Messages acknowledged since start.
    pub acknowledged: u64,
    /// Messages waiting in the spool.
    pub spool_depth: u64,
    /// Messages dropped because the spool was full, by class.
    pub spool_dropped: BTreeMap<String, u64>,
    /// Of the waiting messages, those held in memory because the card refuses writes.
    pub spool_held: u64,
    /// Messages the spool wrote to the card since start (the others were acknowledged first).
    pub spool_written: u64,
    /// Why the card refuses the spool's writes, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_write_error: Option<String>,
    /// Bytes free on the card that holds the spool.
    pub disk_free_bytes: Option<u64>,
    /// Less free space than the spool may need.
    pub disk_low: bool,
    /// When the first of the TLS certificates expires, ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_not_after_ms: Option<i64>,
    /// Within a month of that, or after it: what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_warning: Option<String>,
    /// Another daemon publishes as this hub (a shared `hub_id`): what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twin_warning: Option<String>,
}

/// The shared health state.
#[derive(Clone)]
pub struct Health {
    /// Heartbeats.
    pub progress: Arc<Progress>,
    /// The last figures.
    pub snapshot: Arc<Mutex<Snapshot>>,
    /// The MQTT sink's live health, when MQTT is on.
    pub mqtt: Option<Arc<Mutex<crate::sink::mqtt::Health>>>,
}

impl Health {
    /// Healthy at `now`, or why not (adverts flowing, and the MQTT loop going round when it is on).
    pub fn check(&self, now: Timestamp) -> Result<(), String> {
        if let Some(m) = &self.mqtt {
            let h = m.lock().expect("health lock");
            self.progress
                .last_mqtt
                .store(h.last_loop_ms, Ordering::Relaxed);
            self.progress
                .mqtt_connected
                .store(h.connected, Ordering::Relaxed);
        }
        self.progress.check(now)
    }

    /// Folds a pipeline record into the snapshot (the tee sees every record).
    pub fn observe(&self, r: &Record) {
        let mut s = self.snapshot.lock().expect("snapshot lock");
        match r {
            Record::Stats(st) => {
                s.adverts_total += st.adverts;
                s.decode_errors_total += st.decode_errors;
                s.adverts_per_s = st.adverts_per_s;
                s.tracked = st.tracked;
                s.tracked_anonymous = st.tracked_anonymous;
                if let Some(sync) = &st.sync {
                    s.sync_seq = Some(sync.seq);
                    s.customers = Some(sync.customers);
                }
                s.scan = st.scan;
                s.peers = st.peers;
                s.exit_margins = st.exit_margins.clone();
            }
            Record::Headcount(h) => {
                s.zones = h
                    .zones
                    .iter()
                    .map(|z| (z.zone.clone(), u64::from(z.anonymous) + u64::from(z.known)))
                    .collect();
            }
            Record::Offer(_) => s.offers_total += 1,
            _ => {}
        }
    }

    /// The snapshot with the MQTT sink's live state.
    pub fn current(&self) -> Snapshot {
        let mut s = self.snapshot.lock().expect("snapshot lock").clone();
        if let Some(m) = &self.mqtt {
            let h = m.lock().expect("health lock").clone();
            s.mqtt = Some(MqttSnapshot {
                connected: h.connected,
                reconnects: h.reconnects,
                acknowledged: h.acknowledged,
                spool_depth: h.spool_depth,
                spool_dropped: h.spool_dropped.clone(),
                spool_held: h.spool_held,
                spool_written: h.spool_written,
                spool_write_error: h.spool_write_error.clone(),
                disk_free_bytes: h.disk_free_bytes,
                disk_low: h.disk_low,
                tls_not_after_ms: h.tls_not_after_ms,
                tls_warning: h.tls_warning.clone(),
                twin_warning: h.twin_warning.clone(),
            });
        }
        s
    }

    /// One line for systemd's STATUS= (shown by `systemctl status`).
    pub fn status_line(&self, now: Timestamp) -> String {
        let s = self.current();
        let mut line = format!("{:.1} adverts/s, {} tracked", s.adverts_per_s, s.tracked);
        if let Some(m) = &s.mqtt {
            line.push_str(&format!(
                ", MQTT {}, spool {}",
                if m.connected {
                    "connected"
                } else {
                    "disconnected"
                },
                m.spool_depth
            ));
            if m.spool_write_error.is_some() {
                line.push_str(&format!(
                    " — DISK WRITES FAILING, {} held in memory",
                    m.spool_held
                ));
            } else if m.disk_low {
                line.push_str(&format!(
                    " — LOW DISK: {} MiB free",
                    m.disk_free_bytes.unwrap_or(0) >> 20
                ));
            }
            if m.tls_warning.is_some() {
                line.push_str(" — TLS CERTIFICATE EXPIRES SOON (beacond status)");
            }
            if m.twin_warning.is_some() {
                line.push_str(" — ANOTHER HUB PUBLISHES AS THIS ONE (beacond status)");
            }
        }
        if let Err(why) = self.check(now) {
            line.push_str(&format!(" — UNHEALTHY: {why}"));
        }
        line
    }

    /// The Prometheus text exposition of the current state.
    pub fn metrics(&self, now: Timestamp) -> String {
        use prometheus_client::encoding::text::encode;
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::gauge::Gauge;
        use prometheus_client::registry::Registry;
        let s = self.current();
        let mut reg = Registry::with_prefix("beacond");
        let counter = |reg: &mut Registry, name: &str, help: &str, v: u64| {
            let c: Counter = Counter::default();
            c.inc_by(v);
            reg.register(name, help, c);
        };
        let gauge = |reg: &mut Registry, name: &str, help: &str, v: i64| {
            let g: Gauge = Gauge::default();
            g.set(v);
            reg.register(name, help, g);
        };
        let adverts = Family::<Vec<(String, String)>, Counter>::default();
        adverts
            .get_or_create(&vec![("source".into(), s.source.clone())])
            .inc_by(s.adverts_total);
        reg.register("adverts", "Adverts handled by the pipeline", adverts);
        counter(
            &mut reg,
            "decode_errors",
            "Adverts that did not decode",
            s.decode_errors_total,
        );
        gauge(
            &mut reg,
            "tracked_identities",
            "Identities the presence engine tracks",
            s.tracked as i64,
        );
        gauge(
            &mut reg,
            "tracked_anonymous",
            "Anonymous devices tracked",
            s.tracked_anonymous as i64,
        );
        let zones = Family::<Vec<(String, String)>, Gauge>::default();
        for (z, n) in &s.zones {
            zones
                .get_or_create(&vec![("zone".into(), z.clone())])
                .set(*n as i64);
        }
        reg.register(
            "zone_headcount",
            "Devices per zone in the last headcount interval",
            zones,
        );
        counter(&mut reg, "offers", "Offer triggers fired", s.offers_total);
        let margins = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
        let learned_from = Family::<Vec<(String, String)>, Gauge>::default();
        for m in &s.exit_margins {
            let hub = vec![("hub".into(), m.hub.clone())];
            margins.get_or_create(&hub).set(m.margin_db);
            learned_from.get_or_create(&hub).set(i64::from(m.visits));
        }
        reg.register(
            "exit_margin_db",
            "The exit margin a hub's visits use, dB (learned, or exit_margin_db while learning)",
            margins,
        );
        reg.register(
            "exit_margin_visits",
            "Visits a hub has learned its exit margin from (the last 64)",
            learned_from,
        );
        if let Some(seq) = s.sync_seq {
            gauge(
                &mut reg,
                "sync_seq",
                "Last applied customer sync sequence",
                seq as i64,
            );
        }
        if let Some(c) = s.customers {
            gauge(
                &mut reg,
                "customers",
                "Customers in the local cache",
                c as i64,
            );
        }
        if let Some(sc) = &s.scan {
            counter(
                &mut reg,
                "scan_filtered",
                "Adverts dropped by [scan.filters]",
                sc.filtered_rssi + sc.filtered_unlisted,
            );
            counter(
                &mut reg,
                "watchdog_restarts",
                "Discovery restarts by the scan watchdog",
                sc.watchdog_restarts,
            );
            counter(
                &mut reg,
                "watchdog_power_cycles",
                "Adapter power cycles by the scan watchdog",
                sc.watchdog_power_cycles,
            );
            counter(
                &mut reg,
                "bluez_devices_removed",
                "Quiet device objects removed from BlueZ",
                sc.devices_removed,
            );
        }
        if let Some(p) = &s.peers {
            let obs = Family::<Vec<(String, String)>, Counter>::default();
            for (outcome, n) in [
                ("shared", p.shared),
                ("applied", p.applied),
                ("late", p.late),
                ("unknown", p.unknown),
            ] {
                obs.get_or_create(&vec![("outcome".into(), outcome.into())])
                    .inc_by(n);
            }
            reg.register(
                "peer_observations",
                "Observations shared with peer hubs, and peers' observations by what became of them",
                obs,
            );
        }
        if let Some(m) = &s.mqtt {
            gauge(
                &mut reg,
                "mqtt_connected",
                "1 when connected to the broker",
                i64::from(m.connected),
            );
            counter(
                &mut reg,
                "mqtt_reconnects",
                "Reconnects to the broker",
                m.reconnects,
            );
            counter(
                &mut reg,
                "mqtt_acknowledged",
                "Messages the broker acknowledged",
                m.acknowledged,
            );
            gauge(
                &mut reg,
                "spool_depth",
                "Messages waiting in the spool",
                m.spool_depth as i64,
            );
            if let Some(free) = m.disk_free_bytes {
                gauge(
                    &mut reg,
                    "disk_free_bytes",
                    "Bytes free on the card that holds the spool",
                    free as i64,
                );
            }
            if let Some(t) = m.tls_not_after_ms {
                gauge(
                    &mut reg,
                    "tls_certificate_expiry_timestamp_seconds",
                    "When the first of the TLS certificates (mqtt.client_cert, mqtt.ca_file) expires",
                    t / 1000,
                );
            }
            gauge(
                &mut reg,
                "duplicate_hub",
                "1 while another beacond publishes as this hub (two hubs share its hub_id), else 0",
                i64::from(m.twin_warning.is_some()),
            );
            gauge(
                &mut reg,
                "spool_held",
                "Waiting messages held in memory because the disk refuses the spool's writes",
                m.spool_held as i64,
            );
            counter(
                &mut reg,
                "spool_written",
                "Messages the spool wrote to the card; the others were acknowledged before their write was due",
                m.spool_written,
            );
            let dropped = Family::<Vec<(String, String)>, Counter>::default();
            for (class, n) in &m.spool_dropped {
                dropped
                    .get_or_create(&vec![("class".into(), class.clone())])
                    .inc_by(*n);
            }
            reg.register(
                "spool_dropped",
                "Messages dropped because the spool was full",
                dropped,
            );
        }
        gauge(
            &mut reg,
            "healthy",
            "1 when adverts and the MQTT loop make progress",
            i64::from(self.check(now).is_ok()),
        );
        gauge(
            &mut reg,
            "uptime_seconds",
            "Seconds since start",
            self.progress.uptime_s(now) as i64,
        );
        let mut out = String::new();
        let _ = encode(&mut out, &reg);
        out
    }
}

/// Tells systemd how the daemon is doing until `shutdown`: READY now, a STATUS line and — only while
/// healthy — a WATCHDOG ping every half watchdog period, STOPPING at the end. Outside systemd
/// (`NOTIFY_SOCKET` unset) it does nothing.
pub async fn notify_systemd(health: Health, mut shutdown: crate::shutdown::Shutdown) {
    use sd_notify::NotifyState;
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("starting")]);
    let period = sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .unwrap_or(Duration::from_secs(10))
        .max(Duration::from_millis(200));
    let mut tick = tokio::time::interval(period);
    let mut was_healthy = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => {
                stopping();
                return;
            }
        }
        let now = Timestamp::now();
        let line = health.status_line(now);
        match health.check(now) {
            Ok(()) => {
                let _ = sd_notify::notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
                was_healthy = true;
            }
            Err(why) => {
                // No ping: if this lasts, systemd restarts us — which is the point.
                if was_healthy {
                    tracing::error!(reason = %why, "not pinging the systemd watchdog");
                }
                was_healthy = false;
                let _ = sd_notify::notify(&[NotifyState::Status(&line)]);
            }
        }
    }
}

/// Tells systemd the daemon is stopping (outside systemd: nothing). Sent when shutdown begins, from
/// the signal handler itself: a task might not get to run before the process exits.
pub fn stopping() {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping"),
    ]);
}

/// Asks the daemon serving on `addr` for its `/status` (blocking, at most 5 s): what `beacond
/// status` prints and `beacond doctor` judges. `Err` says what went wrong, naming the URL.
pub fn ask(addr: &str) -> Result<serde_json::Value, String> {
    let body = get(addr, "/status")?;
    serde_json::from_str(&body)
        .map_err(|e| format!("http://{addr}/status answered, but not as beacond: {e}"))
}

/// The body the endpoint on `addr` serves at `path` (`/status`, `/metrics`), whatever its HTTP
/// status: an unhealthy daemon answers with its reasons, and they are what the caller wants.
pub fn get(addr: &str, path: &str) -> Result<String, String> {
    let url = format!("http://{addr}{path}");
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    agent
        .get(&url)
        .call()
        .map_err(|e| format!("cannot ask the daemon at {url}: {e}"))?
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))
}

/// Serves `/metrics`, `/healthz` and `/status` on `addr` (a loopback address: the endpoint has no
/// authentication) on its own thread until the process ends.
pub fn serve(addr: &str, health: Health) -> std::io::Result<std::net::SocketAddr> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("not an IP listener"))?;
    std::thread::Builder::new()
        .name("beacond-health".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let now = Timestamp::now();
                let (code, body, ctype) = match req.url() {
                    "/metrics" => (200, health.metrics(now), "text/plain; version=0.0.4"),
                    "/healthz" => match health.check(now) {
                        Ok(()) => (200, "ok\n".to_owned(), "text/plain"),
                        Err(why) => (503, format!("unhealthy: {why}\n"), "text/plain"),
                    },
                    "/status" => {
                        let mut v = serde_json::to_value(health.current()).unwrap_or_default();
                        v["healthy"] = health.check(now).is_ok().into();
                        if let Err(why) = health.check(now) {
                            v["unhealthy_reason"] = why.into();
                        }
                        v["uptime_s"] = health.progress.uptime_s(now).into();
                        v["version"] = env!("CARGO_PKG_VERSION").into();
                        (200, v.to_string(), "application/json")
                    }
                    _ => (
                        404,
                        "try /metrics, /healthz or /status\n".to_owned(),
                        "text/plain",
                    ),
                };
                let header =
                    tiny_http::Header::from_bytes("Content-Type", ctype).expect("valid header");
                let _ = req.respond(
                    tiny_http::Response::from_string(body)
                        .with_status_code(code)
                        .with_header(header),
                );
            }
        })?;
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Health with an MQTT sink in state `sink`, connected and going round now.
    fn with_sink(sink: crate::sink::mqtt::Health) -> Health {
        Health {
            progress: Progress::new(30),
            snapshot: Default::default(),
            mqtt: Some(Arc::new(Mutex::new(crate::sink::mqtt::Health {
                connected: true,
                last_loop_ms: Timestamp::now().0,
                ..sink
            }))),
        }
    }

    #[test]
    fn healthy_only_while_adverts_and_the_mqtt_loop_make_progress() {
        let p = Progress::new(30);
        let t0 = p.last_advert.load(Ordering::Relaxed);
        assert!(p.check(Timestamp(t0 + 29_000)).is_ok());
        let e = p.check(Timestamp(t0 + 31_000)).unwrap_err();
        assert!(e.starts_with("no advertisement for 31 s"), "{e}");
        // MQTT only counts when it is on.
        p.mqtt_enabled.store(true, Ordering::Relaxed);
        p.last_advert.store(t0 + 200_000, Ordering::Relaxed);
        let e = p.check(Timestamp(t0 + 200_000)).unwrap_err();
        assert!(e.starts_with("the MQTT loop has not run"), "{e}");
        p.last_mqtt.store(t0 + 199_000, Ordering::Relaxed);
        assert!(p.check(Timestamp(t0 + 200_000)).is_ok());
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let h = Health {
            progress: Progress::new(30),
            snapshot: Default::default(),
            mqtt: None,
        };
        {
            let mut s = h.snapshot.lock().unwrap();
            s.source = "sim".into();
            s.adverts_total = 1234;
            s.zones.insert("wine".into(), 3);
        }
        let m = h.metrics(Timestamp::now());
        assert!(
            m.contains("beacond_adverts_total{source=\"sim\"} 1234"),
            "{m}"
        );
        assert!(m.contains("beacond_zone_headcount{zone=\"wine\"} 3"), "{m}");
        assert!(m.contains("beacond_healthy 1"), "{m}");
        assert!(m.ends_with("# EOF\n"));
        // Sharing with peers shows only when the hub shares.
        assert!(!m.contains("peer_observations"), "{m}");
        h.snapshot.lock().unwrap().peers = Some(crate::sink::PeerCounters {
            shared: 10,
            applied: 20,
            late: 2,
            unknown: 1,
        });
        let m = h.metrics(Timestamp::now());
        for line in [
            "beacond_peer_observations_total{outcome=\"shared\"} 10",
            "beacond_peer_observations_total{outcome=\"applied\"} 20",
            "beacond_peer_observations_total{outcome=\"late\"} 2",
            "beacond_peer_observations_total{outcome=\"unknown\"} 1",
        ] {
            assert!(m.contains(line), "{m}");
        }
    }

    #[test]
    fn a_disk_that_refuses_the_spool_shows_but_is_not_unhealthy() {
        let h = with_sink(crate::sink::mqtt::Health {
            spool_depth: 12,
            spool_held: 5,
            spool_written: 40,
            spool_write_error: Some("No space left on device (os error 28)".into()),
            ..Default::default()
        });
        h.progress.mqtt_enabled.store(true, Ordering::Relaxed);
        let now = Timestamp::now();
        // Restarting would lose what is held in memory: the watchdog must keep being fed.
        assert!(h.check(now).is_ok());
        let line = h.status_line(now);
        assert!(
            line.ends_with("spool 12 — DISK WRITES FAILING, 5 held in memory"),
            "{line}"
        );
        assert!(h.metrics(now).contains("beacond_spool_held 5"));
        assert!(h.metrics(now).contains("beacond_spool_written_total 40"));
        {
            let mut m = h.mqtt.as_ref().unwrap().lock().unwrap();
            m.spool_write_error = None;
            m.disk_low = true;
            m.disk_free_bytes = Some(3 << 20);
        }
        let line = h.status_line(now);
        assert!(line.ends_with("spool 12 — LOW DISK: 3 MiB free"), "{line}");
        assert!(h.metrics(now).contains("beacond_disk_free_bytes 3145728"));
    }

    #[test]
    fn a_certificate_that_expires_soon_shows_and_its_date_is_a_metric() {
        let h = with_sink(crate::sink::mqtt::Health {
            tls_not_after_ms: Some(1_800_000_000_000),
            ..Default::default()
        });
        let now = Timestamp::now();
        // Monitoring alerts on the date; the status line waits for the month before it.
        assert!(h
            .metrics(now)
            .contains("beacond_tls_certificate_expiry_timestamp_seconds 1800000000"));
        assert!(!h.status_line(now).contains("CERTIFICATE"));
        h.mqtt.as_ref().unwrap().lock().unwrap().tls_warning =
            Some("mqtt.client_cert x expires on 2027-01-15".into());
        assert!(h.status_line(now).contains("TLS CERTIFICATE EXPIRES SOON"));
        // Expiring is not unhealthy: the hub still works, and restarting would not help.
        assert!(h.check(now).is_ok());
        let json = serde_json::to_value(h.current()).unwrap();
        assert_eq!(
            json["mqtt"]["tls_warning"],
            "mqtt.client_cert x expires on 2027-01-15"
        );
    }

    #[test]
    fn another_hub_publishing_as_this_one_shows_everywhere_store_it_looks() {
        let h = with_sink(Default::default());
        let now = Timestamp::now();
        assert!(h.metrics(now).contains("beacond_duplicate_hub 0"));
        assert!(!h.status_line(now).contains("ANOTHER HUB"));
        h.mqtt.as_ref().unwrap().lock().unwrap().twin_warning =
            Some("another beacond publishes as store s1 hub h1".into());
        assert!(h.metrics(now).contains("beacond_duplicate_hub 1"));
        assert!(h
            .status_line(now)
            .contains("ANOTHER HUB PUBLISHES AS THIS ONE"));
        let json = serde_json::to_value(h.current()).unwrap();
        assert_eq!(
            json["mqtt"]["twin_warning"],
            "another beacond publishes as store s1 hub h1"
        );
    }

    #[test]
    fn each_hubs_exit_margin_shows_whether_it_is_learned() {
        use crate::presence::HubExitMargin;
        let hub = |id: &str, visits, margin_db, learned, adaptive| HubExitMargin {
            hub: id.into(),
            visits,
            margin_db,
            learned,
            adaptive,
        };
        let h = Health {
            progress: Progress::new(30),
            snapshot: Default::default(),
            mqtt: None,
        };
        h.snapshot.lock().unwrap().exit_margins = vec![
            hub("hub-deli", 64, 4.75, true, true),
            hub("hub-wine", 7, 8.0, false, true),
        ];
        let m = h.metrics(Timestamp::now());
        for line in [
            "beacond_exit_margin_db{hub=\"hub-deli\"} 4.75",
            "beacond_exit_margin_db{hub=\"hub-wine\"} 8.0",
            "beacond_exit_margin_visits{hub=\"hub-deli\"} 64",
            "beacond_exit_margin_visits{hub=\"hub-wine\"} 7",
        ] {
            assert!(m.contains(line), "{line} missing:\n{m}");
        }
        let status = serde_json::to_value(h.current()).unwrap();
        assert_eq!(status["exit_margins"][0]["margin_db"], 4.75);
        let text: Vec<String> = h
            .current()
            .exit_margins
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            text,
            [
                "hub-deli 4.8 dB (learned from 64 visits)",
                "hub-wine 8.0 dB (exit_margin_db until it has learned from 20 visits: 7 so far)"
            ]
        );
        assert_eq!(
            hub("hub-deli", 0, 8.0, false, false).to_string(),
            "hub-deli 8.0 dB (exit_margin_db; adaptive_exit_margin = false)"
        );
    }
}
