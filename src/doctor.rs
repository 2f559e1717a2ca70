//! `beacond doctor`: checks a hub before (or while) the daemon runs — the config, the data
//! directory, the health endpoint, Bluetooth, the MQTT broker and its certificates, and the
//! clock — and says for each what is wrong and what to do. Store IT install hubs they will not see again for months; one command should tell them
//! everything `systemctl start beacond` would otherwise reveal one journal line at a time.
//!
//! It only looks: it powers no adapter on, creates no store, and logs in to the broker under its
//! own client id without a Last Will, so it is safe to run next to a running daemon.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, SourceKind};

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// The daemon will run, but something needs a look.
    Warn,
    /// The daemon cannot do its job until this is fixed.
    Fail,
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// What was checked: `config`, `data_dir`, `daemon`, `bluetooth` (or `source` for a replay or
    /// simulated source), `health` (with `[health] listen`), `mqtt`, `hub_id` (whether another
    /// hub is online under this one's id), `tls` (certificate dates),
    /// `sync`, `clock`.
    pub check: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found, and for a warning or failure what to do.
    pub detail: String,
}

impl Finding {
    fn new(check: &'static str, status: Status, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            status,
            detail: detail.into(),
        }
    }
}

/// How long the broker has to answer a login.
const MQTT_TIMEOUT: Duration = Duration::from_secs(10);
/// A clock before this has never been set: a Pi without a real-time clock, before NTP.
const CLOCK_FLOOR_MS: u64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z

/// `beacond doctor --json`'s object: `{"config": FILE, "ok": bool, "checks": [...]}`.
pub fn report(path: &Path, findings: &[Finding]) -> serde_json::Value {
    serde_json::json!({
        "config": path.display().to_string(),
        "ok": findings.iter().all(|f| f.status != Status::Fail),
        "checks": findings,
    })
}

/// What check-config warns about in `cfg`, loaded from `path`, which does not keep it from
/// running: zones no hub of its source hears, as `FILE:LINE:COL: warning: zones[N].hub: …`; a
/// source that cannot be read to tell, as `FILE: warning: …`.
pub fn config_warnings(cfg: &Config, path: &Path) -> Vec<String> {
    let origin = path.display();
    let heard = match crate::scan::Heard::read(cfg) {
        Ok(h) => h,
        Err(e) => return vec![format!("{origin}: warning: {e}")],
    };
    let unheard = heard.unheard_zones(cfg);
    if unheard.is_empty() {
        return Vec::new();
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    unheard
        .into_iter()
        .map(|u| {
            let p = crate::config::zone_key_problem(&text, u.index, "hub", u.message);
            format!(
                "{origin}:{}:{}: warning: {}: {}",
                p.at.line, p.at.col, p.key, p.message
            )
        })
        .collect()
}

/// What `beacond check-config` prints for `cfg`, loaded from `path`: OK, the summary, and any
/// warnings with their count.
pub fn config_accepted(cfg: &Config, path: &Path) -> String {
    let mut out = format!("{}: OK\n{}\n", path.display(), cfg.summary());
    let warnings = config_warnings(cfg, path);
    for w in &warnings {
        out.push_str(w);
        out.push('\n');
    }
    if !warnings.is_empty() {
        out.push_str(&format!("{} warning(s)\n", warnings.len()));
    }
    out
}

/// Runs every check that applies to `cfg` (already loaded and valid from `path`).
pub async fn check(cfg: &Config, path: &Path) -> Vec<Finding> {
    let mut out = vec![Finding::new(
        "config",
        Status::Ok,
        format!(
            "{}: {} zone(s), {} offer rule(s), source {}",
            path.display(),
            cfg.zones.len(),
            cfg.offers.len(),
            cfg.scan.source
        ),
    )];
    out.push(data_dir(cfg));
    let running = daemon_running(cfg);
    out.push(if running {
        Finding::new(
            "daemon",
            Status::Ok,
            "a beacond daemon is running on this data directory",
        )
    } else {
        Finding::new(
            "daemon",
            Status::Ok,
            "no daemon is running on this data directory (systemctl start beacond)",
        )
    });
    // What the running daemon says of itself, when it can be asked.
    let mut status = None;
    if let Some(addr) = &cfg.health.listen {
        let (finding, answer) = health_endpoint(addr.clone(), running).await;
        out.push(finding);
        status = answer;
    }
    out.push(source(cfg).await);
    out.extend(zones(cfg));
    if cfg.mqtt.enabled {
        match crate::sink::mqtt::probe(cfg, MQTT_TIMEOUT).await {
            Ok(probed) => {
                out.push(Finding::new("mqtt", Status::Ok, probed.how));
                out.push(hub_id(cfg, running, probed.retained_status.as_ref()));
                out.extend(peers(&probed.peer_statuses));
            }
            Err(why) => out.push(Finding::new("mqtt", Status::Fail, why)),
        }
        let loaded = status
            .as_ref()
            .and_then(|v| v["mqtt"]["tls_not_after_ms"].as_i64());
        out.extend(certificates(
            cfg,
            crate::time::Timestamp::now().0 as i64,
            loaded,
        ));
    }
    out.push(sync(cfg));
    out.push(clock(
        crate::time::Timestamp::now().0,
        kernel_clock_synced(),
    ));
    out
}

/// Whether the kernel's clock is disciplined by NTP (chrony, ntpd or systemd-timesyncd set it),
/// by a read-only `adjtimex`; `None` where the kernel will not say.
pub fn kernel_clock_synced() -> Option<bool> {
    // SAFETY: a zeroed timex with modes 0 only reads the kernel's state into the struct.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    match unsafe { libc::adjtimex(&mut tx) } {
        -1 => None,
        libc::TIME_ERROR => Some(false),
        _ => Some(true),
    }
}

fn data_dir(cfg: &Config) -> Finding {
    let dir = &cfg.hub.data_dir;
    let fail = |why: String| Finding::new("data_dir", Status::Fail, why);
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return fail(format!(
                "{} is not a directory; fix [hub] data_dir",
                dir.display()
            ))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Finding::new(
                "data_dir",
                Status::Warn,
                format!(
                    "{} does not exist yet; the daemon makes it at its first start (under systemd, \
                     StateDirectory= does)",
                    dir.display()
                ),
            )
        }
        Err(e) => return fail(format!("{}: {e}", dir.display())),
    }
    // What the daemon does at every spool write: a file written and synced to the card.
    let written = tempfile::Builder::new()
        .prefix(".doctor-")
        .tempfile_in(dir)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(&[0u8; 4096])?;
            f.as_file().sync_all()
        });
    if let Err(e) = written {
        let advice = if crate::storage::is_disk_condition_io(&e) {
            "free space on the card (df -h)"
        } else if e.kind() == std::io::ErrorKind::PermissionDenied {
            "run it with sudo, and check that the directory belongs to the beacond user"
        } else {
            "check the card (dmesg)"
        };
        return fail(format!("cannot write in {}: {e}; {advice}", dir.display()));
    }
    let free = fs2::available_space(dir).ok();
    let need = if cfg.mqtt.enabled {
        cfg.mqtt.spool_max_bytes
    } else {
        0
    };
    match free {
        Some(free) if free < need => Finding::new(
            "data_dir",
            Status::Warn,
            format!(
                "{} is writable but has {} free, less than the spool may need ([mqtt] \
                 spool_max_bytes, {}): free space or lower spool_max_bytes",
                dir.display(),
                mib(free),
                mib(need)
            ),
        ),
        Some(free) => Finding::new(
            "data_dir",
            Status::Ok,
            format!("{} is writable, {} free", dir.display(), mib(free)),
        ),
        None => Finding::new(
            "data_dir",
            Status::Ok,
            format!("{} is writable", dir.display()),
        ),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Whether a daemon has this data directory's spool open.
fn daemon_running(cfg: &Config) -> bool {
    crate::sink::spool::Spool::in_use(&cfg.hub.data_dir.join("spool"))
}

/// `[health] listen`: a running daemon should answer there and say it is healthy; before it
/// runs, the port must be free, or the daemon would not start. The endpoint's finding, and the
/// daemon's `/status` when it answered.
async fn health_endpoint(addr: String, running: bool) -> (Finding, Option<serde_json::Value>) {
    if !running {
        let finding = match std::net::TcpListener::bind(&addr) {
            Ok(_) => Finding::new(
                "health",
                Status::Ok,
                format!("{addr} is free for the endpoint"),
            ),
            Err(e) => Finding::new(
                "health",
                Status::Fail,
                format!(
                    "cannot listen on {addr} ({e}): the daemon would not start; is another \
                     program on that port (ss -ltnp)? Change [health] listen"
                ),
            ),
        };
        return (finding, None);
    }
    let asked = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || crate::health::ask(&addr)
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match asked {
        Ok(v) if v["healthy"] == true => (
            Finding::new(
                "health",
                Status::Ok,
                format!("the daemon answers on {addr}: healthy (beacond status for the details)"),
            ),
            Some(v),
        ),
        Ok(v) => (
            Finding::new(
                "health",
                Status::Fail,
                format!(
                    "the daemon answers on {addr}: UNHEALTHY: {}",
                    v["unhealthy_reason"].as_str().unwrap_or("no reason given")
                ),
            ),
            Some(v),
        ),
        Err(why) => (Finding::new("health", Status::Fail, why), None),
    }
}

async fn source(cfg: &Config) -> Finding {
    match cfg.scan.source {
        SourceKind::Bluez => bluetooth(&cfg.scan.adapter).await,
        SourceKind::Replay => match &cfg.scan.replay_file {
            Some(f) => match std::fs::File::open(f) {
                Ok(_) => Finding::new("source", Status::Ok, format!("replaying {}", f.display())),
                Err(e) => Finding::new(
                    "source",
                    Status::Fail,
                    format!("[scan] replay_file {}: {e}", f.display()),
                ),
            },
            None => Finding::new(
                "source",
                Status::Fail,
                "[scan] source = \"replay\" needs replay_file",
            ),
        },
        SourceKind::Sim => match crate::scan::sim::Scenario::load(&cfg.scan.sim_scenario) {
            Ok(_) => Finding::new(
                "source",
                Status::Warn,
                format!(
                    "the simulated store {} (a test hub: nothing is heard from the radio)",
                    cfg.scan.sim_scenario
                ),
            ),
            Err(e) => Finding::new("source", Status::Fail, e.to_string()),
        },
    }
}

/// Whether the source hears every zone's hub; nothing when the source cannot be read (the source
/// check says why).
fn zones(cfg: &Config) -> Option<Finding> {
    let heard = crate::scan::Heard::read(cfg).ok()?;
    let unheard = heard.unheard_zones(cfg);
    Some(if unheard.is_empty() {
        Finding::new(
            "zones",
            Status::Ok,
            format!(
                "every zone is measured by a hub the source hears ({})",
                heard.hubs.join(", ")
            ),
        )
    } else {
        Finding::new(
            "zones",
            Status::Warn,
            unheard
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

async fn bluetooth(wanted: &str) -> Finding {
    use crate::scan::bluez::Bus;
    let fail = |why: String| Finding::new("bluetooth", Status::Fail, why);
    let bus = match Bus::connect().await {
        Ok(b) => b,
        Err(e) => {
            return fail(format!(
                "cannot connect to the D-Bus system bus ({e}); is dbus running?"
            ))
        }
    };
    if bus.bluez_owner().await.is_none() {
        return fail(crate::scan::bluez::BLUETOOTHD_MISSING.into());
    }
    let adapters = match bus.adapters().await {
        Ok(a) => a,
        Err(e) if e.name() == Some("org.freedesktop.DBus.Error.AccessDenied") => {
            return fail(format!(
                "this user may not talk to bluetoothd ({}); the package's \
                 /usr/share/dbus-1/system.d/beacond.conf allows the beacond user and root: run it \
                 with sudo",
                e.message().unwrap_or("access denied")
            ))
        }
        Err(e) => return fail(format!("cannot list Bluetooth adapters: {e}")),
    };
    let list = if adapters.is_empty() {
        "none".to_owned()
    } else {
        adapters
            .iter()
            .map(|(n, on)| format!("{n} ({})", if *on { "on" } else { "off" }))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The daemon's choice: the named adapter, or for "auto" the first powered one, else the first.
    let pick = if wanted == "auto" {
        adapters
            .iter()
            .find(|(_, on)| *on)
            .or_else(|| adapters.first())
    } else {
        adapters.iter().find(|(n, _)| n == wanted)
    };
    match pick {
        None => fail(crate::scan::bluez::adapter_missing(wanted, &list)),
        Some((name, false)) => Finding::new(
            "bluetooth",
            Status::Warn,
            format!(
                "adapters: {list}; {name} is off: the daemon powers it on at start, and if it \
                 stays off, check rfkill list"
            ),
        ),
        Some((name, true)) => Finding::new(
            "bluetooth",
            Status::Ok,
            format!("bluetoothd is running; adapters: {list}; the daemon scans with {name}"),
        ),
    }
}

/// What the broker's retained status for this hub says: with no daemon running here, an
/// `online` one is another hub using this `hub_id` (the daemon, once started, would say so too,
/// but by then the two are throwing each other off the broker).
fn hub_id(cfg: &Config, running: bool, status: Option<&serde_json::Value>) -> Finding {
    let who = format!("store {} hub {}", cfg.hub.store_id, cfg.hub.hub_id);
    let Some(v) = status else {
        return Finding::new(
            "hub_id",
            Status::Ok,
            format!("no status for {who} on the broker yet: no other hub uses this hub_id"),
        );
    };
    let field = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    match (v["state"].as_str(), running) {
        (Some("online"), false) => Finding::new(
            "hub_id",
            Status::Warn,
            format!(
                "the broker says {who} is online (beacond {}, started {}) but no daemon runs \
                 here: another hub uses this hub_id (a copied SD card?), or a daemon here runs \
                 with another data_dir. Give each hub its own [hub] hub_id",
                field("version"),
                field("started_at")
            ),
        ),
        (Some("online"), true) => Finding::new(
            "hub_id",
            Status::Ok,
            format!(
                "the broker has {who} online (started {}), as with a daemon running here; \
                 another hub using this hub_id would show in its status (beacond status)",
                field("started_at")
            ),
        ),
        (state, _) => Finding::new(
            "hub_id",
            Status::Ok,
            format!(
                "the broker last heard {who} say {} ({}): no hub is online with this hub_id",
                state.unwrap_or("?"),
                v["reason"].as_str().unwrap_or("no reason given")
            ),
        ),
    }
}

/// Whether the `[peers]` hubs are on the broker: a peer that never published there is usually a
/// misspelt `hub_id` (or another `store_id`), and sharing with it silently does nothing.
fn peers(statuses: &[(String, Option<serde_json::Value>)]) -> Option<Finding> {
    if statuses.is_empty() {
        return None;
    }
    let mut online = Vec::new();
    let mut problems = Vec::new();
    for (hub, status) in statuses {
        match status.as_ref().map(|v| v["state"].as_str()) {
            Some(Some("online")) => online.push(hub.as_str()),
            Some(state) => problems.push(format!(
                "{hub} last said {} ({}): its zones are decided on this hub's signal alone until it is back",
                state.unwrap_or("?"),
                status.as_ref().and_then(|v| v["reason"].as_str()).unwrap_or("no reason given")
            )),
            None => problems.push(format!(
                "{hub} has never published on this broker: check the name against that hub's [hub] \
                 hub_id and store_id"
            )),
        }
    }
    let online = if online.is_empty() {
        String::new()
    } else {
        format!("online: {}", online.join(", "))
    };
    Some(if problems.is_empty() {
        Finding::new("peers", Status::Ok, online)
    } else {
        let mut detail = problems.join("; ");
        if !online.is_empty() {
            detail = format!("{detail}; {online}");
        }
        Finding::new("peers", Status::Warn, detail)
    })
}

/// The TLS certificates' dates: the one that expires first, a month ahead; and, when the
/// running daemon said which it loaded (`loaded_ms`, its first expiry), whether those are still
/// the files' (a renewed certificate is used only after a restart).
fn certificates(cfg: &Config, now_ms: i64, loaded_ms: Option<i64>) -> Option<Finding> {
    use crate::sink::certs::{self, Standing};
    let files = certs::files(&cfg.mqtt);
    if files.is_empty() {
        return None;
    }
    let mut expiries = Vec::new();
    for (key, path) in &files {
        match certs::read(key, path) {
            Ok(e) => expiries.push(e),
            Err(why) => return Some(Finding::new("tls", Status::Fail, why)),
        }
    }
    let (mut standing, mut text) = certs::judge(&expiries, now_ms)?;
    let on_disk_ms = expiries.iter().map(|e| e.not_after_ms).min()?;
    if let Some((loaded, more)) =
        loaded_ms.and_then(|l| certs::against_loaded(on_disk_ms, l, now_ms))
    {
        // Files that differ from what the daemon runs with are worth a look even when both
        // are valid: the next restart changes which certificate the broker sees.
        standing = standing.max(loaded).max(Standing::Soon);
        text = format!("{text}; {more}");
    }
    let status = match standing {
        Standing::Valid => Status::Ok,
        Standing::Soon => Status::Warn,
        Standing::Expired => Status::Fail,
    };
    Some(Finding::new("tls", status, text))
}

fn sync(cfg: &Config) -> Finding {
    match &cfg.identity.platform_public_key {
        Some(_) => Finding::new(
            "sync",
            Status::Ok,
            "identity.platform_public_key is set: signed customer sync batches are accepted",
        ),
        None => Finding::new(
            "sync",
            Status::Warn,
            "identity.platform_public_key is not set: customer sync batches will be rejected, so \
             no customer is recognised (beacons and anonymous counts still work)",
        ),
    }
}

fn clock(now_ms: u64, synced: Option<bool>) -> Finding {
    let shown = chrono::DateTime::from_timestamp_millis(now_ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{now_ms} ms"));
    if now_ms < CLOCK_FLOOR_MS {
        return Finding::new(
            "clock",
            Status::Warn,
            format!(
                "the clock reads {shown}: it has not been set (a hub without a real-time clock, \
                 before NTP). Events would carry that time; check timedatectl"
            ),
        );
    }
    match synced {
        Some(false) => Finding::new(
            "clock",
            Status::Warn,
            format!(
                "{shown}, but the kernel says no NTP client keeps it synchronised: event times \
                 and offer hours follow this clock, so it drifts with them; check timedatectl"
            ),
        ),
        Some(true) => Finding::new("clock", Status::Ok, format!("{shown}, synchronised")),
        None => Finding::new("clock", Status::Ok, shown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_never_set_or_not_synchronised_is_a_warning() {
        let f = clock(0, Some(true));
        assert_eq!(f.status, Status::Warn);
        assert!(f.detail.contains("1970-01-01"), "{f:?}");
        let f = clock(CLOCK_FLOOR_MS, Some(false));
        assert_eq!(f.status, Status::Warn);
        assert!(f.detail.contains("no NTP client"), "{f:?}");
        assert_eq!(clock(CLOCK_FLOOR_MS, Some(true)).status, Status::Ok);
        assert_eq!(clock(CLOCK_FLOOR_MS, None).status, Status::Ok);
        // This machine's answer, whatever it is, is read without an error.
        let _ = kernel_clock_synced();
    }

    #[test]
    fn a_data_dir_that_is_a_file_or_missing_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.hub.data_dir = dir.path().join("absent");
        assert_eq!(data_dir(&cfg).status, Status::Warn);
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        cfg.hub.data_dir = file;
        let f = data_dir(&cfg);
        assert_eq!(f.status, Status::Fail);
        assert!(f.detail.contains("is not a directory"), "{f:?}");
        cfg.hub.data_dir = dir.path().to_owned();
        let f = data_dir(&cfg);
        assert_eq!(f.status, Status::Ok, "{f:?}");
        // The probe file is gone again.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
