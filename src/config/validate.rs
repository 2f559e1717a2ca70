//! Semantic checks: values in range, thresholds that make sense together, unique ids, references that
//! resolve. Each problem says what would be valid, because the reader is on a ladder in a shop.

use std::collections::HashSet;

use super::locate::{closest, KeyPath};
use super::{Config, OfferTrigger, SourceKind};

/// The RSSI range a Bluetooth controller reports, in dBm.
const RSSI_RANGE: std::ops::RangeInclusive<i16> = -127..=20;
/// Plausible calibrated power at 1 m, in dBm.
const POWER_RANGE: std::ops::RangeInclusive<i16> = -110..=0;
/// Plausible path-loss exponents: 1.6 in corridors up to about 6 through walls.
const EXPONENT_RANGE: std::ops::RangeInclusive<f64> = 1.0..=6.0;

type Problems = Vec<(KeyPath, String)>;

/// Every semantic problem in `cfg`, each with the path of the key it concerns.
pub fn validate(cfg: &Config) -> Problems {
    let mut p = Problems::new();
    hub(cfg, &mut p);
    scan(cfg, &mut p);
    zones(cfg, &mut p);
    presence(cfg, &mut p);
    mqtt(cfg, &mut p);
    identity(cfg, &mut p);
    offers(cfg, &mut p);
    offer_limits(cfg, &mut p);
    peers(cfg, &mut p);
    health(cfg, &mut p);
    log(cfg, &mut p);
    p
}

/// MQTT topic levels must not contain separators or wildcards, and ids are used as topic levels.
fn topic_level_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#' | '$') || c.is_whitespace() || c.is_control())
    {
        return Some(format!(
            "{s:?} contains {c:?}; use letters, digits, '-', '_' or '.' (it becomes an MQTT topic level)"
        ));
    }
    None
}

fn check_rssi(p: &mut Problems, path: KeyPath, v: i16) {
    if !RSSI_RANGE.contains(&v) {
        p.push((
            path,
            format!(
                "{v} dBm is out of range; RSSI is between -127 and 20 dBm (typically -100 to -30)"
            ),
        ));
    }
}

fn check_power(p: &mut Problems, path: KeyPath, v: i16) {
    if !POWER_RANGE.contains(&v) {
        p.push((
            path,
            format!("{v} dBm is not a plausible power at 1 m; use -110 to 0 (phones and beacons are about -60)"),
        ));
    }
}

fn check_exponent(p: &mut Problems, path: KeyPath, v: f64) {
    if !EXPONENT_RANGE.contains(&v) {
        p.push((
            path,
            format!("{v} is not a plausible path-loss exponent; use 1.0 to 6.0 (shops: about 2.2)"),
        ));
    }
}

fn check_positive(p: &mut Problems, path: KeyPath, v: f64, what: &str) {
    if !(v.is_finite() && v > 0.0) {
        p.push((path, format!("{v} must be a positive number of {what}")));
    }
}

fn uuid_problem(s: &str) -> Option<String> {
    uuid::Uuid::parse_str(s).err().map(|e| {
        format!("{s:?} is not a UUID ({e}); write it like \"e2c56db5-dffb-48d2-b060-d0f5a71096e0\"")
    })
}

fn hub(cfg: &Config, p: &mut Problems) {
    let path = KeyPath::key("hub");
    for (key, v) in [("store_id", &cfg.hub.store_id), ("hub_id", &cfg.hub.hub_id)] {
        if let Some(m) = topic_level_problem(v) {
            p.push((path.join(key), m));
        }
    }
    if cfg.hub.data_dir.as_os_str().is_empty() {
        p.push((
            path.join("data_dir"),
            "must not be empty; use a writable directory such as \"/var/lib/beacond\"".into(),
        ));
    }
    if cfg.hub.timezone.parse::<chrono_tz::Tz>().is_err() {
        p.push((
            path.join("timezone"),
            format!(
                "{:?} is not an IANA time zone; use a name like \"Europe/London\" or \"UTC\"",
                cfg.hub.timezone
            ),
        ));
    }
}

fn scan(cfg: &Config, p: &mut Problems) {
    let path = KeyPath::key("scan");
    let s = &cfg.scan;
    let a = s.adapter.as_str();
    let numbered = a
        .strip_prefix("hci")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if a != "auto" && !numbered {
        p.push((
            path.join("adapter"),
            format!("{a:?} is not an adapter; use \"auto\" or a name like \"hci0\""),
        ));
    }
    // Below 10 s a quiet store at night would restart discovery for nothing; the lower bound is
    // lower still so the watchdog can be tested in seconds.
    if !(2..=3600).contains(&s.watchdog_s) {
        p.push((
            path.join("watchdog_s"),
            format!(
                "{} s is out of range; use 2 to 3600 (default 90; below 10 only for tests)",
                s.watchdog_s
            ),
        ));
    }
    if s.source == SourceKind::Replay && s.replay_file.is_none() {
        p.push((
            path.join("replay_file"),
            "source = \"replay\" needs replay_file, a recording made by `beacond record`".into(),
        ));
    }
    if s.sim_hub.as_deref() == Some("") {
        p.push((
            path.join("sim_hub"),
            "must not be empty; name one of the scenario's [[hubs]], or leave it out for all of them"
                .into(),
        ));
    }
    if s.sim_scenario.is_empty() {
        p.push((
            path.join("sim_scenario"),
            "must not be empty; use a scenario file or \"builtin:supermarket\"".into(),
        ));
    }
    check_positive(
        p,
        path.join("speed"),
        s.speed,
        "times real time (1.0 = real time)",
    );
    let f = path.join("filters");
    for (i, u) in s.filters.service_uuids.iter().enumerate() {
        let short = (u.len() == 4 || u.len() == 8) && u.chars().all(|c| c.is_ascii_hexdigit());
        if !short && uuid::Uuid::parse_str(u).is_err() {
            p.push((
                f.join("service_uuids").index(i),
                format!(
                    "{u:?} is not a service UUID; use 4 hex digits (\"feaa\"), 8, or a full UUID"
                ),
            ));
        }
    }
    for (i, u) in s.filters.ibeacon_uuids.iter().enumerate() {
        if let Some(m) = uuid_problem(u) {
            p.push((f.join("ibeacon_uuids").index(i), m));
        }
    }
    check_rssi(p, f.join("min_rssi"), s.filters.min_rssi);
}

fn zones(cfg: &Config, p: &mut Problems) {
    let mut seen = HashSet::new();
    for (i, z) in cfg.zones.iter().enumerate() {
        let path = KeyPath::key("zones").index(i);
        if let Some(m) = topic_level_problem(&z.id) {
            p.push((path.join("id"), m));
        } else if !seen.insert(z.id.as_str()) {
            p.push((
                path.join("id"),
                format!(
                    "zone id {:?} is used twice; every zone needs its own id",
                    z.id
                ),
            ));
        }
        if let Some(h) = &z.hub {
            if let Some(m) = topic_level_problem(h) {
                p.push((path.join("hub"), m));
            }
        }
        check_rssi(p, path.join("enter_rssi"), z.enter_rssi);
        check_rssi(p, path.join("exit_rssi"), z.exit_rssi);
        if z.enter_rssi <= z.exit_rssi {
            p.push((
                path.join("exit_rssi"),
                format!(
                    "exit_rssi ({}) must be below enter_rssi ({}); a gap of 6-10 dB stops flapping",
                    z.exit_rssi, z.enter_rssi
                ),
            ));
        }
        if !(z.min_enter_s.is_finite() && (0.0..=600.0).contains(&z.min_enter_s)) {
            p.push((
                path.join("min_enter_s"),
                format!("{} s is out of range; use 0 to 600", z.min_enter_s),
            ));
        }
        check_positive(
            p,
            path.join("absence_timeout_s"),
            z.absence_timeout_s,
            "seconds",
        );
        if z.dwell_marks_s.contains(&0) || z.dwell_marks_s.windows(2).any(|w| w[0] >= w[1]) {
            p.push((
                path.join("dwell_marks_s"),
                format!(
                    "{:?} must be positive and increasing, like [30, 120, 300]",
                    z.dwell_marks_s
                ),
            ));
        }
        if let Some(mp) = z.measured_power {
            check_power(p, path.join("measured_power"), mp);
        }
        if let Some(n) = z.path_loss_exponent {
            check_exponent(p, path.join("path_loss_exponent"), n);
        }
    }
}

fn presence(cfg: &Config, p: &mut Problems) {
    let path = KeyPath::key("presence");
    let c = &cfg.presence;
    if c.max_tracked == 0 {
        p.push((
            path.join("max_tracked"),
            "must be at least 1 (default 10000)".into(),
        ));
    }
    if !(c.switch_margin_db.is_finite() && (0.0..=30.0).contains(&c.switch_margin_db)) {
        p.push((
            path.join("switch_margin_db"),
            format!(
                "{} dB is out of range; use 0 to 30 (default 3)",
                c.switch_margin_db
            ),
        ));
    }
    if !(c.exit_margin_db.is_finite() && (1.0..=30.0).contains(&c.exit_margin_db)) {
        p.push((
            path.join("exit_margin_db"),
            format!(
                "{} dB is out of range; use 1 to 30 (default 8)",
                c.exit_margin_db
            ),
        ));
    }
    if !(c.silence_gaps.is_finite()
        && (c.silence_gaps == 0.0 || (3.0..=100.0).contains(&c.silence_gaps)))
    {
        p.push((
            path.join("silence_gaps"),
            format!(
                "{} is out of range; use 3 to 100 gaps, or 0 to leave only by absence_timeout_s (default 8)",
                c.silence_gaps
            ),
        ));
    }
    check_power(p, path.join("measured_power"), c.measured_power);
    check_exponent(p, path.join("path_loss_exponent"), c.path_loss_exponent);
    if c.headcount_interval_s == 0 {
        p.push((
            path.join("headcount_interval_s"),
            "must be at least 1 second (default 60)".into(),
        ));
    }
}

fn mqtt(cfg: &Config, p: &mut Problems) {
    let path = KeyPath::key("mqtt");
    let m = &cfg.mqtt;
    let tls = match url::Url::parse(&m.url) {
        Ok(u) if !matches!(u.scheme(), "mqtt" | "mqtts") => {
            p.push((
                path.join("url"),
                format!(
                    "scheme {:?} is not supported; use mqtt://host:1883 or mqtts://host:8883",
                    u.scheme()
                ),
            ));
            false
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => {
            p.push((
                path.join("url"),
                format!("{:?} has no host; use mqtt://host:1883", m.url),
            ));
            false
        }
        Ok(u) => u.scheme() == "mqtts",
        Err(e) => {
            p.push((
                path.join("url"),
                format!(
                    "{:?} is not a URL ({e}); use mqtt://host:1883 or mqtts://host:8883",
                    m.url
                ),
            ));
            false
        }
    };
    let prefix_bad = m.topic_prefix.is_empty()
        || m.topic_prefix.starts_with('/')
        || m.topic_prefix.ends_with('/')
        || m.topic_prefix.contains(['+', '#'])
        || m.topic_prefix.split('/').any(str::is_empty);
    if prefix_bad {
        p.push((
            path.join("topic_prefix"),
            format!(
                "{:?} is not a topic prefix; use one or more levels without wildcards, like \"beacond\" or \"retail/beacond\"",
                m.topic_prefix
            ),
        ));
    }
    if let Some(id) = &m.client_id {
        if id.is_empty() {
            p.push((
                path.join("client_id"),
                "must not be empty; leave it out to use beacond-{store_id}-{hub_id}".into(),
            ));
        }
    }
    if m.client_cert.is_some() != m.client_key.is_some() {
        let missing = if m.client_cert.is_some() {
            "client_key"
        } else {
            "client_cert"
        };
        p.push((
            path.join(missing),
            "mutual TLS needs both client_cert and client_key".into(),
        ));
    }
    for (key, set) in [
        ("ca_file", m.ca_file.is_some()),
        ("client_cert", m.client_cert.is_some()),
    ] {
        if set && !tls && m.url.starts_with("mqtt://") {
            p.push((
                path.join(key),
                format!("{key} needs an mqtts:// url (TLS); the url is {:?}", m.url),
            ));
        }
    }
    if m.password_file.is_some() && m.username.is_none() {
        p.push((
            path.join("password_file"),
            "a password needs a username; set username too".into(),
        ));
    }
    if m.protocol == super::MqttProtocol::V5 {
        p.push((
            path.join("protocol"),
            "MQTT 5 is not supported by this build yet; use \"v311\" (platforms can still use MQTT 5 \
             shared subscriptions on the hub's topics)"
                .into(),
        ));
    }
    if !(5..=3600).contains(&m.keep_alive_s) {
        p.push((
            path.join("keep_alive_s"),
            format!(
                "{} s is out of range; use 5 to 3600 (default 30)",
                m.keep_alive_s
            ),
        ));
    }
    for (key, v) in [
        ("stats_interval_s", m.stats_interval_s),
        ("beacons_interval_s", m.beacons_interval_s),
    ] {
        if v == 0 {
            p.push((path.join(key), "must be at least 1 second".into()));
        }
    }
    if m.spool_max_bytes < 1024 * 1024 {
        p.push((
            path.join("spool_max_bytes"),
            format!(
                "{} bytes is too small; use at least 1048576 (1 MiB; default 64 MiB)",
                m.spool_max_bytes
            ),
        ));
    }
}

fn identity(cfg: &Config, p: &mut Problems) {
    let path = KeyPath::key("identity");
    let c = &cfg.identity;
    if let Some(k) = &c.platform_public_key {
        if k.len() != 64 || hex::decode(k).is_err() {
            p.push((
                path.join("platform_public_key"),
                format!(
                    "must be the platform's Ed25519 public key as 64 hex digits, got {} characters",
                    k.len()
                ),
            ));
        } else if let Err(m) = crate::identity::sync::parse_public_key(k) {
            p.push((path.join("platform_public_key"), m));
        }
    }
    if let Some(m) = uuid_problem(&c.app_service_uuid) {
        p.push((path.join("app_service_uuid"), m));
    }
    if !(60..=86_400).contains(&c.token_epoch_s) {
        p.push((
            path.join("token_epoch_s"),
            format!(
                "{} s is out of range; use 60 to 86400 (default 600)",
                c.token_epoch_s
            ),
        ));
    } else if 86_400 % c.token_epoch_s != 0 {
        p.push((
            path.join("token_epoch_s"),
            format!(
                "{} s does not divide a day, so epochs would straddle day keys; use a divisor of 86400 such as 300, 600 or 900",
                c.token_epoch_s
            ),
        ));
    }
    if !(1..=1024).contains(&c.cache_size_mb) {
        p.push((
            path.join("cache_size_mb"),
            format!(
                "{} MiB is out of range; use 1 to 1024 (default 32)",
                c.cache_size_mb
            ),
        ));
    }
}

fn offers(cfg: &Config, p: &mut Problems) {
    let mut zone_ids: Vec<&str> = cfg.zones.iter().map(|z| z.id.as_str()).collect();
    zone_ids.sort_unstable();
    zone_ids.dedup();
    let mut seen = HashSet::new();
    for (i, o) in cfg.offers.iter().enumerate() {
        let path = KeyPath::key("offers").index(i);
        if let Some(m) = topic_level_problem(&o.id) {
            p.push((path.join("id"), m));
        } else if !seen.insert(o.id.as_str()) {
            p.push((
                path.join("id"),
                format!(
                    "offer id {:?} is used twice; every offer needs its own id",
                    o.id
                ),
            ));
        }
        if o.zones.is_empty() {
            p.push((path.join("zones"), "must name at least one zone id".into()));
        }
        for (j, z) in o.zones.iter().enumerate() {
            if !zone_ids.contains(&z.as_str()) {
                let hint = match closest(z, &zone_ids) {
                    Some(best) => format!("did you mean {best:?}? "),
                    None => String::new(),
                };
                p.push((
                    path.join("zones").index(j),
                    format!(
                        "no zone has id {z:?}; {hint}defined zones: {}",
                        if zone_ids.is_empty() {
                            "none".to_owned()
                        } else {
                            zone_ids.join(", ")
                        }
                    ),
                ));
            }
        }
        if o.trigger == OfferTrigger::Dwell {
            if let Some(d) = o.dwell_s.filter(|d| *d > 0) {
                for z in cfg.zones.iter().filter(|z| o.zones.contains(&z.id)) {
                    if !z.dwell_marks_s.contains(&d) {
                        p.push((
                            path.join("dwell_s"),
                            format!(
                                "zone {:?} has no dwell mark at {d} s (its dwell_marks_s: {:?}); add {d} there, dwell offers fire at a mark",
                                z.id, z.dwell_marks_s
                            ),
                        ));
                    }
                }
            }
        }
        match (o.trigger, o.visits, o.visit_days) {
            (OfferTrigger::VisitCount, v, d) => {
                if v.is_none_or(|v| v < 1) {
                    p.push((
                        path.join("visits"),
                        "trigger = \"visit_count\" needs visits, at least 1".into(),
                    ));
                }
                if !d.is_some_and(|d| (1..=365).contains(&d)) {
                    p.push((
                        path.join("visit_days"),
                        "trigger = \"visit_count\" needs visit_days, 1 to 365".into(),
                    ));
                }
            }
            (_, Some(_), _) => p.push((
                path.join("visits"),
                "only applies with trigger = \"visit_count\"".into(),
            )),
            (_, _, Some(_)) => p.push((
                path.join("visit_days"),
                "only applies with trigger = \"visit_count\"".into(),
            )),
            _ => {}
        }
        for (j, d) in o.days.iter().enumerate() {
            if crate::offers::parse_day(d).is_none() {
                p.push((
                    path.join("days").index(j),
                    format!("{d:?} is not a day; use mon, tue, wed, thu, fri, sat or sun"),
                ));
            }
        }
        if let Some(h) = &o.hours {
            if crate::offers::Hours::parse(h).is_none() {
                p.push((
                    path.join("hours"),
                    format!("{h:?} is not a range of local time; use \"HH:MM-HH:MM\", e.g. \"09:00-21:00\" (may cross midnight)"),
                ));
            }
        }
        for (j, h) in o.quiet_hours.iter().enumerate() {
            if crate::offers::Hours::parse(h).is_none() {
                p.push((
                    path.join("quiet_hours").index(j),
                    format!("{h:?} is not a range of local time; use \"HH:MM-HH:MM\", e.g. \"12:00-14:00\""),
                ));
            }
        }
        if o.daily_budget == Some(0) {
            p.push((
                path.join("daily_budget"),
                "must be at least 1; remove it for no budget".into(),
            ));
        }
        match (o.trigger, o.dwell_s) {
            (OfferTrigger::Dwell, None) => p.push((
                path.join("dwell_s"),
                "trigger = \"dwell\" needs dwell_s, the seconds in the zone".into(),
            )),
            (OfferTrigger::Dwell, Some(0)) => {
                p.push((path.join("dwell_s"), "must be at least 1 second".into()))
            }
            (OfferTrigger::Enter | OfferTrigger::Exit | OfferTrigger::VisitCount, Some(_)) => p
                .push((
                    path.join("dwell_s"),
                    "only applies with trigger = \"dwell\"; remove it or change the trigger".into(),
                )),
            _ => {}
        }
    }
}

fn offer_limits(cfg: &Config, p: &mut Problems) {
    let path = KeyPath::key("offer_limits");
    let l = &cfg.offer_limits;
    if l.max_per_visit == 0 {
        p.push((
            path.join("max_per_visit"),
            "must be at least 1; with no offers wanted, remove the [[offers]]".into(),
        ));
    }
    if l.max_per_minute == 0 {
        p.push((path.join("max_per_minute"), "must be at least 1".into()));
    }
    if !(60..=86_400).contains(&l.visit_gap_s) {
        p.push((
            path.join("visit_gap_s"),
            format!(
                "{} s is out of range; use 60 to 86400 (default 1800)",
                l.visit_gap_s
            ),
        ));
    }
}

fn peers(cfg: &Config, p: &mut Problems) {
    let path = KeyPath::key("peers");
    let s = &cfg.peers;
    for (i, h) in s.hubs.iter().enumerate() {
        let at = path.join("hubs").index(i);
        if let Some(m) = topic_level_problem(h) {
            p.push((at, m));
        } else if *h == cfg.hub.hub_id {
            p.push((
                at,
                format!("{h:?} is this hub's own hub_id; list only the store's other hubs"),
            ));
        } else if s.hubs[..i].contains(h) {
            p.push((at, format!("{h:?} is listed twice; list each hub once")));
        }
    }
    if !s.hubs.is_empty() && !cfg.mqtt.enabled {
        p.push((
            path.join("hubs"),
            "hubs share observations through the MQTT broker; set [mqtt] enabled = true, or leave \
             peers.hubs empty"
                .into(),
        ));
    }
    if !(100..=60_000).contains(&s.max_lag_ms) {
        p.push((
            path.join("max_lag_ms"),
            format!(
                "{} ms is out of range; use 100 to 60000 (default 2000)",
                s.max_lag_ms
            ),
        ));
    }
    if !(50..=5_000).contains(&s.batch_interval_ms) {
        p.push((
            path.join("batch_interval_ms"),
            format!(
                "{} ms is out of range; use 50 to 5000 (default 250)",
                s.batch_interval_ms
            ),
        ));
    }
}

fn health(cfg: &Config, p: &mut Problems) {
    let Some(l) = &cfg.health.listen else { return };
    match l.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_loopback() => {}
        Ok(_) => p.push((
            KeyPath::key("health").join("listen"),
            format!("{l:?} is not a loopback address; the endpoint has no authentication, so it only listens on 127.0.0.1 or [::1] (scrape through a local agent)"),
        )),
        Err(_) => p.push((
            KeyPath::key("health").join("listen"),
            format!("{l:?} is not an address and port; use e.g. \"127.0.0.1:9187\""),
        )),
    }
}

fn log(cfg: &Config, p: &mut Problems) {
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&cfg.log.level) {
        p.push((
            KeyPath::key("log").join("level"),
            format!(
                "{:?} is not a log filter ({e}); use error, warn, info, debug, trace, or e.g. \"beacond=debug,info\"",
                cfg.log.level
            ),
        ));
    }
}
