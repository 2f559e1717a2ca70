//! Configuration: one TOML file, every key with a default, validated before anything runs.
//!
//! A field engineer edits this file on site, so every problem is reported as
//! `FILE:LINE:COL: KEY: what is wrong; what would be valid`, all problems at once where possible, and a
//! misspelt key names the key that was probably meant. `config/beacond.example.toml` documents every key.

pub(crate) mod locate;
pub(crate) mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use locate::LineCol;

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Who this hub is.
    pub hub: HubConfig,
    /// Where advertisements come from.
    pub scan: ScanConfig,
    /// The zones of the store this hub decides on.
    pub zones: Vec<ZoneConfig>,
    /// How RSSI becomes presence.
    pub presence: PresenceConfig,
    /// The connection to the central platform.
    pub mqtt: MqttConfig,
    /// Recognising customers.
    pub identity: IdentityConfig,
    /// Offer trigger rules.
    pub offers: Vec<OfferConfig>,
    /// Caps across all offers.
    pub offer_limits: OfferLimits,
    /// The store's other hubs this hub shares observations with.
    pub peers: PeersConfig,
    /// The local health and metrics endpoint.
    pub health: HealthConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[hub]`: the identity of this hub and where it keeps its state.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// The store's id as the platform knows it; part of every MQTT topic.
    pub store_id: String,
    /// This hub's id within the store; part of every MQTT topic.
    pub hub_id: String,
    /// Where the customer cache, the spool and the offer caps live.
    pub data_dir: PathBuf,
    /// The store's IANA time zone (`Europe/London`): offer days, hours and quiet hours are in local
    /// time, daily budgets reset at local midnight.
    pub timezone: String,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            store_id: "store-1".into(),
            hub_id: "hub-1".into(),
            data_dir: "/var/lib/beacond".into(),
            timezone: "UTC".into(),
        }
    }
}

/// Which scanning source feeds the pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The Bluetooth adapter, through BlueZ.
    #[default]
    Bluez,
    /// A recording made with `beacond record`.
    Replay,
    /// The store simulator.
    Sim,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Bluez => "bluez",
            SourceKind::Replay => "replay",
            SourceKind::Sim => "sim",
        })
    }
}

/// `[scan]`: the source of advertisements and what is let through.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// `bluez`, `replay` or `sim`.
    pub source: SourceKind,
    /// `auto` for the first powered adapter, or a name such as `hci1`.
    pub adapter: String,
    /// Restart discovery after this many seconds without any advertisement.
    pub watchdog_s: u64,
    /// The recording to play with `source = "replay"`.
    pub replay_file: Option<PathBuf>,
    /// The scenario for `source = "sim"`: a file, or `builtin:NAME`.
    pub sim_scenario: String,
    /// With `source = "sim"`: play the scenario again each time it ends, simulated time running on,
    /// instead of stopping the daemon (a test hub feeding a platform, a long run).
    pub sim_repeat: bool,
    /// With `source = "sim"`: hear only this hub of the scenario, as a hub's radio would, so that
    /// one daemon per hub makes a simulated store look to the platform as a real one does.
    /// Absent: every hub of the scenario.
    pub sim_hub: Option<String>,
    /// Playback speed for `replay` and `sim` (1.0 = real time).
    pub speed: f64,
    /// What is let into the pipeline.
    pub filters: ScanFilters,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            source: SourceKind::Bluez,
            adapter: "auto".into(),
            watchdog_s: 90,
            replay_file: None,
            sim_scenario: "builtin:supermarket".into(),
            sim_repeat: false,
            sim_hub: None,
            speed: 1.0,
            filters: ScanFilters::default(),
        }
    }
}

/// `[scan.filters]`: applied before the pipeline; what is filtered out is counted and not kept.
///
/// With all three lists empty every advertisement passes; otherwise one that matches any entry of any
/// list passes. `min_rssi` applies on top.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanFilters {
    /// Manufacturer company identifiers (e.g. 0x004C for Apple/iBeacon).
    pub company_ids: Vec<u16>,
    /// Service UUIDs: 16-bit as four hex digits (`"feaa"`) or full 128-bit UUIDs.
    pub service_uuids: Vec<String>,
    /// iBeacon proximity UUIDs.
    pub ibeacon_uuids: Vec<String>,
    /// Advertisements weaker than this (dBm) are dropped.
    pub min_rssi: i16,
}

impl Default for ScanFilters {
    fn default() -> Self {
        ScanFilters {
            company_ids: Vec::new(),
            service_uuids: Vec::new(),
            ibeacon_uuids: Vec::new(),
            min_rssi: -100,
        }
    }
}

/// `[[zones]]`: an area of the store, decided on the smoothed RSSI heard by one hub.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Stable id, used in events and offer rules.
    pub id: String,
    /// Display name; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// The hub that measures this zone; defaults to this hub.
    #[serde(default)]
    pub hub: Option<String>,
    /// Smoothed RSSI (dBm) above which a device counts as inside.
    #[serde(default = "defaults::enter_rssi")]
    pub enter_rssi: i16,
    /// Smoothed RSSI (dBm) below which a device counts as outside; below `enter_rssi` (hysteresis).
    #[serde(default = "defaults::exit_rssi")]
    pub exit_rssi: i16,
    /// Seconds the signal must stay above `enter_rssi` before `enter` fires.
    #[serde(default = "defaults::min_enter_s")]
    pub min_enter_s: f64,
    /// Seconds without hearing a device before it counts as gone.
    #[serde(default = "defaults::absence_timeout_s")]
    pub absence_timeout_s: f64,
    /// Seconds into a visit at which `dwell` fires.
    #[serde(default = "defaults::dwell_marks_s")]
    pub dwell_marks_s: Vec<u64>,
    /// RSSI at 1 m for devices that advertise none, overriding `[presence]`.
    #[serde(default)]
    pub measured_power: Option<i16>,
    /// Path-loss exponent for distance estimates here, overriding `[presence]`.
    #[serde(default)]
    pub path_loss_exponent: Option<f64>,
}

impl ZoneConfig {
    /// A zone with every optional key at its default.
    pub fn new(id: impl Into<String>) -> ZoneConfig {
        ZoneConfig {
            id: id.into(),
            name: None,
            hub: None,
            enter_rssi: defaults::enter_rssi(),
            exit_rssi: defaults::exit_rssi(),
            min_enter_s: defaults::min_enter_s(),
            absence_timeout_s: defaults::absence_timeout_s(),
            dwell_marks_s: defaults::dwell_marks_s(),
            measured_power: None,
            path_loss_exponent: None,
        }
    }

    /// The display name.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// RSSI smoothing filters the presence engine offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SmoothingFilter {
    /// A Kalman filter on level and trend: keeps up with people walking in and out.
    #[default]
    KalmanTrend,
    /// A one-dimensional Kalman filter on the level only.
    Kalman,
    /// A running mean over a window with the extremes trimmed (Android Beacon Library style).
    TrimmedMean,
    /// An exponentially weighted moving average.
    Ewma,
}

impl SmoothingFilter {
    /// The name `[presence] filter` and `--filter` take.
    pub fn as_str(self) -> &'static str {
        match self {
            SmoothingFilter::KalmanTrend => "kalman_trend",
            SmoothingFilter::Kalman => "kalman",
            SmoothingFilter::TrimmedMean => "trimmed_mean",
            SmoothingFilter::Ewma => "ewma",
        }
    }
}

/// `[presence]`: turning RSSI into zone decisions.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// The smoothing filter.
    pub filter: SmoothingFilter,
    /// The most identities tracked at once; anonymous devices are evicted first.
    pub max_tracked: usize,
    /// dB by which another zone must be stronger before a device moves there (twice this, with a
    /// trend filter, when neither zone's signal trend shows the device walking).
    pub switch_margin_db: f64,
    /// dB below its settled level a visit's signal must fall before it exits (bounded by the zone's
    /// `enter_rssi` above and `exit_rssi` below).
    pub exit_margin_db: f64,
    /// Learn each hub's exit margin from how far its customers' signals sag while they stand
    /// still, with `exit_margin_db` as the most: quiet stores then see departures sooner.
    pub adaptive_exit_margin: bool,
    /// A visit also ends when its zone's hub has not heard the device for this many of the device's
    /// usual gaps between adverts (and twice its longest recent one, and at least 3 s): a fob heard
    /// every 400 ms that falls silent has left; half as many (at least 1.5 s) when no hub hears it
    /// any more. `absence_timeout_s` still bounds it; 0 turns it off.
    pub silence_gaps: f64,
    /// RSSI at 1 m assumed for devices that advertise none (dBm).
    pub measured_power: i16,
    /// Path-loss exponent for distance estimates (about 1.8 in groceries, 2.2 in shops).
    pub path_loss_exponent: f64,
    /// Seconds between anonymous per-zone headcounts.
    pub headcount_interval_s: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            filter: SmoothingFilter::KalmanTrend,
            max_tracked: 10_000,
            switch_margin_db: 3.0,
            exit_margin_db: 8.0,
            adaptive_exit_margin: true,
            silence_gaps: 8.0,
            measured_power: -59,
            path_loss_exponent: 2.2,
            headcount_interval_s: 60,
        }
    }
}

/// MQTT protocol version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MqttProtocol {
    /// MQTT 3.1.1.
    #[default]
    V311,
    /// MQTT 5.
    V5,
}

/// `[mqtt]`: the connection to the central platform.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Publish to the broker at all; off, events go to the log only.
    pub enabled: bool,
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Client id; defaults to `beacond-{store_id}-{hub_id}`.
    pub client_id: Option<String>,
    /// First segment of every topic.
    pub topic_prefix: String,
    /// `v311` or `v5`.
    pub protocol: MqttProtocol,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// File holding the password; relative paths are looked up in `$CREDENTIALS_DIRECTORY` first.
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) for `mqtts://`; the system roots when unset.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// Keep-alive interval in seconds.
    pub keep_alive_s: u64,
    /// Seconds between `stats` messages.
    pub stats_interval_s: u64,
    /// Seconds between `beacons` fleet health messages.
    pub beacons_interval_s: u64,
    /// Upper bound of the on-disk spool, in bytes.
    pub spool_max_bytes: u64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            url: "mqtt://localhost:1883".into(),
            client_id: None,
            topic_prefix: "beacond".into(),
            protocol: MqttProtocol::V311,
            username: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keep_alive_s: 30,
            stats_interval_s: 60,
            beacons_interval_s: 60,
            spool_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[identity]`: recognising customers.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The platform's Ed25519 public key (64 hex digits) that signs customer sync batches.
    pub platform_public_key: Option<String>,
    /// The retailer app's 128-bit service UUID, under which it advertises its rotating token.
    pub app_service_uuid: String,
    /// Length of one token epoch in seconds.
    pub token_epoch_s: u64,
    /// Memory for the customer cache's page cache, in MiB.
    pub cache_size_mb: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            platform_public_key: None,
            app_service_uuid: "6b1f3e2a-5c4d-4e8f-9a0b-1c2d3e4f5a6b".into(),
            token_epoch_s: 600,
            cache_size_mb: 32,
        }
    }
}

/// What makes an offer rule fire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferTrigger {
    /// On entering a zone.
    #[default]
    Enter,
    /// After dwelling `dwell_s` seconds in a zone.
    Dwell,
    /// On leaving a zone.
    Exit,
    /// On entering a zone, once the customer has entered the rule's zones at least `visits` times
    /// in the last `visit_days` days (this visit included).
    VisitCount,
}

/// `[[offers]]`: one offer trigger rule.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OfferConfig {
    /// Stable id, sent in every trigger.
    pub id: String,
    /// Zones (by id) where the rule applies.
    pub zones: Vec<String>,
    /// `enter`, `dwell` or `exit`.
    #[serde(default)]
    pub trigger: OfferTrigger,
    /// For `dwell`: seconds in the zone.
    #[serde(default)]
    pub dwell_s: Option<u64>,
    /// Only customers in at least one of these segments (empty: everyone).
    #[serde(default)]
    pub segments_include: Vec<String>,
    /// Never customers in any of these segments.
    #[serde(default)]
    pub segments_exclude: Vec<String>,
    /// Higher wins when several rules match at once.
    #[serde(default)]
    pub priority: i32,
    /// Seconds before the same customer can get this offer again.
    #[serde(default = "defaults::cooldown_s")]
    pub cooldown_s: u64,
    /// For `visit_count`: visits needed.
    #[serde(default)]
    pub visits: Option<u32>,
    /// For `visit_count`: over how many days.
    #[serde(default)]
    pub visit_days: Option<u32>,
    /// Days of the week it is active (`mon` … `sun`; empty: every day), in the store's time zone.
    #[serde(default)]
    pub days: Vec<String>,
    /// Local hours it is active, `"HH:MM-HH:MM"` (may cross midnight); absent: all day.
    #[serde(default)]
    pub hours: Option<String>,
    /// Local hours it never fires, `["HH:MM-HH:MM", …]`.
    #[serde(default)]
    pub quiet_hours: Vec<String>,
    /// The most triggers of this offer per local day on this hub; absent: no budget.
    #[serde(default)]
    pub daily_budget: Option<u32>,
}

/// `[peers]`: the store's other hubs, whose observations of known devices this hub's engine uses
/// as if its own radio had heard them, and which hear this hub's in turn (over the MQTT broker).
/// Zones of a peer hub may then be in this hub's `[[zones]]`: the engine weighs them when a
/// customer moves between hubs, and the peer reports them. Each hub reports only its own zones.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// The other hubs' `hub_id`s; empty: share nothing (the default).
    pub hubs: Vec<String>,
    /// A peer's observation heard longer ago than this, by this hub's clock, is not used: the
    /// engine has decided without it. Covers the broker's trip and clock skew between hubs.
    pub max_lag_ms: u64,
    /// How often this hub sends what it heard, ms. Shorter: peers decide sooner; longer: fewer
    /// messages.
    pub batch_interval_ms: u64,
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            hubs: Vec::new(),
            max_lag_ms: 2000,
            batch_interval_ms: 250,
        }
    }
}

/// `[health]`: the local HTTP endpoint for Prometheus, `/healthz` and `beacond status`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// `127.0.0.1:PORT` (or `[::1]:PORT`) to serve on; absent: no endpoint.
    pub listen: Option<String>,
}

/// `[offer_limits]`: caps across all offers.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfferLimits {
    /// The most offers one customer gets in one store visit, across all offers.
    pub max_per_visit: u32,
    /// The most offers this hub fires in any 60 seconds.
    pub max_per_minute: u32,
    /// A customer unseen in every zone for this long has ended their store visit.
    pub visit_gap_s: u64,
}

impl Default for OfferLimits {
    fn default() -> Self {
        OfferLimits {
            max_per_visit: 2,
            max_per_minute: 30,
            visit_gap_s: 1800,
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human on a terminal, compact under systemd.
    #[default]
    Auto,
    /// Coloured, multi-field human format.
    Human,
    /// One compact line per event, no colour codes.
    Compact,
    /// One JSON object per line.
    Json,
}

/// `[log]`: logging.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, or per-module like `beacond=debug,rumqttc=warn`. `RUST_LOG`
    /// overrides it.
    pub level: String,
    /// `auto`, `human`, `compact` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

mod defaults {
    pub fn enter_rssi() -> i16 {
        -70
    }
    pub fn exit_rssi() -> i16 {
        -80
    }
    pub fn min_enter_s() -> f64 {
        2.0
    }
    pub fn absence_timeout_s() -> f64 {
        15.0
    }
    pub fn dwell_marks_s() -> Vec<u64> {
        vec![30, 120, 300]
    }
    pub fn cooldown_s() -> u64 {
        86_400
    }
}

/// One problem found in a config file, located in the source text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file (1-based).
    pub at: LineCol,
    /// The key, as a dotted path (`zones[1].enter_rssi`), or `(syntax)` for a parse error.
    pub key: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// Why a file was not accepted: every problem found, and what could not be checked yet because
/// of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Every problem found, in file order.
    pub problems: Vec<Problem>,
    /// Tables and arrays whose range checks were held back because part of them (or of a table
    /// they refer to) could not be read as written, as key paths (`zones[1]`, `offers`); `""`
    /// when nothing past the problems could be checked (a syntax error, an unknown section).
    pub unchecked: Vec<String>,
}

impl Rejected {
    /// A rejection where nothing past `problems` was checked.
    pub fn at_first_sight(problems: Vec<Problem>) -> Rejected {
        Rejected {
            problems,
            unchecked: vec![String::new()],
        }
    }

    /// Every problem as `ORIGIN:LINE:COL: KEY: MESSAGE`, one a line, then the note on what was
    /// not checked, if any.
    pub fn render(&self, origin: &str) -> String {
        let lines = self.problems.iter().map(|p| {
            format!(
                "{origin}:{}:{}: {}: {}",
                p.at.line, p.at.col, p.key, p.message
            )
        });
        lines
            .chain(self.unchecked_note(origin))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last line of a rejection, for `origin` (a file name): what the next run may still
    /// find, so a field engineer who fixes every listed problem is not surprised by new ones.
    /// `None` when everything was checked.
    pub fn unchecked_note(&self, origin: &str) -> Option<String> {
        if self.unchecked.is_empty() {
            return None;
        }
        if self.unchecked.iter().any(String::is_empty) {
            return Some(format!(
                "{origin}: note: the rest of the file is checked once the problems above are fixed; run the check again"
            ));
        }
        let names = match self.unchecked.as_slice() {
            [one] => one.clone(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
            [] => unreachable!("checked above"),
        };
        Some(format!(
            "{origin}: note: the values in {names} are range-checked once the problems above are fixed (until then \
             a default stands in for what could not be read); run the check again"
        ))
    }
}

/// `message` about the key `key` of `zones[index]` in `text`, a file that loaded, located at the
/// key, or at the zone's table when the zone inherits it: for warnings, which do not reject.
pub fn zone_key_problem(text: &str, index: usize, key: &'static str, message: String) -> Problem {
    let path = locate::KeyPath::key("zones").index(index).join(key);
    match locate::Document::parse(text) {
        Ok(doc) => doc.problem_at(&path, message),
        // The file changed since it loaded: the key, unlocated.
        Err(_) => Problem {
            at: LineCol { line: 1, col: 1 },
            key: path.to_string(),
            message,
        },
    }
}

/// A configuration that could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", rejected.render(&path.display().to_string()))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, and what they kept from being checked.
        rejected: Rejected,
    },
}

impl ConfigError {
    /// What check-config prints for it: the error, and for an invalid file how many problems.
    pub fn report(&self) -> String {
        match self {
            ConfigError::Invalid { rejected, .. } => {
                format!("{self}\n{} problem(s) found", rejected.problems.len())
            }
            ConfigError::Read { .. } => self.to_string(),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text).map_err(|rejected| ConfigError::Invalid {
            path: path.to_owned(),
            rejected,
        })
    }

    /// Parses and validates config text; on failure returns every problem found.
    ///
    /// Syntax errors are all reported; so are keys of the wrong name or type (each is set aside
    /// and the rest of the file read again), and with them the semantic problems of every table
    /// that was read as written; the tables that were not are named in [`Rejected::unchecked`].
    pub fn parse(text: &str) -> Result<Config, Rejected> {
        let doc = locate::Document::parse(text)?;
        doc.check(validate::validate, &[("offers", "zones")])
    }

    /// The config as the daemon uses it: what the file left out at its default, and what a zone
    /// inherits (its name, its hub, its measured power and path-loss exponent) and the MQTT client
    /// id written out. `beacond check-config --effective` prints it, so "which exit_rssi does the
    /// till use?" has an answer without reading the defaults in the docs.
    pub fn effective(&self) -> Config {
        let mut cfg = self.clone();
        for z in &mut cfg.zones {
            z.name.get_or_insert_with(|| z.id.clone());
            z.hub.get_or_insert_with(|| self.hub.hub_id.clone());
            z.measured_power.get_or_insert(self.presence.measured_power);
            z.path_loss_exponent
                .get_or_insert(self.presence.path_loss_exponent);
        }
        cfg.mqtt.client_id = Some(self.mqtt_client_id());
        cfg
    }

    /// The config as TOML that [`Config::parse`] reads back to the same config.
    pub fn to_toml(&self) -> String {
        // Every field is a TOML type and every table comes after the plain keys of its parent,
        // so serialising cannot fail; a message beats a panic should that ever change.
        toml::to_string(self)
            .unwrap_or_else(|e| format!("# cannot write the config as TOML: {e}\n"))
    }

    /// The MQTT client id, derived from the hub's identity unless set.
    pub fn mqtt_client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("beacond-{}-{}", self.hub.store_id, self.hub.hub_id))
    }

    /// A short human summary for `beacond check-config`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "hub {}/{} (data in {})\nsource: {}",
            self.hub.store_id,
            self.hub.hub_id,
            self.hub.data_dir.display(),
            self.scan.source
        );
        match self.scan.source {
            SourceKind::Bluez => s.push_str(&format!(" (adapter {})", self.scan.adapter)),
            SourceKind::Replay => s.push_str(&format!(
                " ({})",
                self.scan
                    .replay_file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )),
            SourceKind::Sim => s.push_str(&format!(" ({})", self.scan.sim_scenario)),
        }
        s.push_str(&format!("\nzones: {}", self.zones.len()));
        for z in &self.zones {
            s.push_str(&format!(
                "\n  {:<16} enter {} dBm / exit {} dBm, after {} s, gone after {} s",
                z.id, z.enter_rssi, z.exit_rssi, z.min_enter_s, z.absence_timeout_s
            ));
        }
        s.push_str(&format!("\noffers: {}", self.offers.len()));
        for o in &self.offers {
            s.push_str(&format!(
                "\n  {:<16} on {:?} in {}",
                o.id,
                o.trigger,
                o.zones.join(", ")
            ));
        }
        if self.mqtt.enabled {
            s.push_str(&format!(
                "\nmqtt: {} as {} (topics {}/{}/{}/…)",
                self.mqtt.url,
                self.mqtt_client_id(),
                self.mqtt.topic_prefix,
                self.hub.store_id,
                self.hub.hub_id
            ));
        } else {
            s.push_str("\nmqtt: disabled");
        }
        if !self.peers.hubs.is_empty() {
            s.push_str(&format!(
                "\npeers: {} (observations shared every {} ms, used up to {} ms old)",
                self.peers.hubs.join(", "),
                self.peers.batch_interval_ms,
                self.peers.max_lag_ms
            ));
        }
        s
    }
}
