//! Scenario files (`config/sim/*.toml`): a store's hubs, zones and their geometry, fixed beacons,
//! shoppers, and the radio model. The `[[zones]]` and `[presence]` tables are exactly those of the
//! daemon's config, so a zone tuned in the simulator can be pasted into a hub's config.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::config::locate::{Document, KeyPath};
use crate::config::{Config, PresenceConfig, Rejected, ZoneConfig};

/// The scenarios built into the binary, by name (`builtin:NAME`).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "boutique",
        include_str!("../../../config/sim/boutique.toml"),
    ),
    (
        "supermarket",
        include_str!("../../../config/sim/supermarket.toml"),
    ),
    ("hard", include_str!("../../../config/sim/hard.toml")),
    (
        "pharmacy",
        include_str!("../../../config/sim/pharmacy.toml"),
    ),
    (
        "electronics",
        include_str!("../../../config/sim/electronics.toml"),
    ),
];

/// A whole scenario.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What the scenario models.
    #[serde(default)]
    pub description: String,
    /// Seed of every random draw: the same seed gives the same run.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated seconds.
    pub duration_s: u64,
    /// Truth visits shorter than this are transit (walking through), not visits to score.
    #[serde(default = "default_min_truth_visit")]
    pub min_truth_visit_s: f64,
    /// The radio model.
    #[serde(default)]
    pub radio: Radio,
    /// The hubs and where they hang.
    pub hubs: Vec<HubSpec>,
    /// The zones, as in the daemon's config (`hub` names a hub of this scenario).
    pub zones: Vec<ZoneConfig>,
    /// Where each zone physically is: the ground truth.
    pub areas: Vec<Area>,
    /// The store's fixed beacons.
    #[serde(default)]
    pub beacons: Vec<FixedBeaconSpec>,
    /// The shoppers.
    pub shoppers: Shoppers,
    /// Presence engine settings, as in the daemon's config.
    #[serde(default)]
    pub presence: PresenceConfig,
    /// Offer rules, as in the daemon's config (the simulated store runs them on its customers).
    #[serde(default)]
    pub offers: Vec<crate::config::OfferConfig>,
    /// Offer caps, as in the daemon's config.
    #[serde(default)]
    pub offer_limits: crate::config::OfferLimits,
}

fn default_seed() -> u64 {
    1
}

fn default_min_truth_visit() -> f64 {
    10.0
}

/// The radio model.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Radio {
    /// Path-loss exponent of the log-distance model.
    pub path_loss_exponent: f64,
    /// Standard deviation of log-normal shadowing, dB.
    pub shadowing_sigma_db: f64,
    /// Correlation time of shadowing for a device standing still, s (people and trolleys moving
    /// around it).
    pub shadowing_tau_s: f64,
    /// Correlation distance of shadowing, m: how far a device moves before the obstacles between it
    /// and a hub are different ones.
    pub shadowing_corr_m: f64,
    /// Rician K factor of fast fading (0 = Rayleigh, the harshest).
    pub fading_k: f64,
    /// Share of packets lost on air.
    pub packet_loss: f64,
    /// Extra loss when the phone is in a pocket on the far side of the body, dB.
    pub body_loss_db: f64,
    /// Share of the hub's time spent listening (scan window / scan interval).
    pub scan_duty: f64,
    /// Weakest signal the hub's radio decodes, dBm.
    pub sensitivity_dbm: f64,
    /// Height of the hubs above the phones, m.
    pub height_m: f64,
}

impl Default for Radio {
    fn default() -> Self {
        Radio {
            path_loss_exponent: 2.2,
            shadowing_sigma_db: 4.0,
            shadowing_tau_s: 30.0,
            shadowing_corr_m: 2.0,
            fading_k: 3.0,
            packet_loss: 0.05,
            body_loss_db: 6.0,
            scan_duty: 0.9,
            sensitivity_dbm: -100.0,
            height_m: 1.5,
        }
    }
}

/// A hub's position.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubSpec {
    /// Hub id.
    pub id: String,
    /// Position, m.
    pub x: f64,
    /// Position, m.
    pub y: f64,
}

/// A zone's physical extent: a disc.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Area {
    /// The zone id.
    pub zone: String,
    /// Centre, m.
    pub x: f64,
    /// Centre, m.
    pub y: f64,
    /// Radius, m.
    pub radius_m: f64,
    /// How likely shoppers are to visit it, relative to other zones.
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_weight() -> f64 {
    1.0
}

/// Kinds of fixed beacon.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FixedKind {
    /// iBeacon.
    Ibeacon,
    /// Eddystone-UID, with a TLM frame every tenth advertisement.
    EddystoneUid,
}

/// A fixed beacon on a shelf or a wall.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FixedBeaconSpec {
    /// Display id.
    pub id: String,
    /// Frame type.
    pub kind: FixedKind,
    /// Position, m.
    pub x: f64,
    /// Position, m.
    pub y: f64,
    /// Advertising interval, ms.
    #[serde(default = "default_beacon_interval")]
    pub interval_ms: u64,
    /// Calibrated power at 1 m, dBm.
    #[serde(default = "default_power")]
    pub measured_power: i8,
}

fn default_beacon_interval() -> u64 {
    1000
}

fn default_power() -> i8 {
    -59
}

/// The shoppers of the scenario.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Shoppers {
    /// How many come in during `arrival_window_s`.
    pub count: u32,
    /// Arrivals are spread uniformly over this many seconds from the start.
    pub arrival_window_s: u64,
    /// Where they come in and leave, m.
    pub entrance: [f64; 2],
    /// Zones visited per shopper, at least.
    #[serde(default = "default_visits_min")]
    pub visits_min: u32,
    /// Zones visited per shopper, at most.
    #[serde(default = "default_visits_max")]
    pub visits_max: u32,
    /// Shortest dwell in a zone, s.
    #[serde(default = "default_dwell_min")]
    pub dwell_min_s: f64,
    /// Longest dwell in a zone, s.
    #[serde(default = "default_dwell_max")]
    pub dwell_max_s: f64,
    /// Walking speed, m/s (each shopper draws ±25 %).
    #[serde(default = "default_speed")]
    pub walk_speed_mps: f64,
    /// Share of shoppers who carry a registered loyalty fob (known customers).
    #[serde(default = "default_known_share")]
    pub known_share: f64,
    /// The fob's advertising interval, ms.
    #[serde(default = "default_fob_interval")]
    pub fob_interval_ms: u64,
    /// Anonymous phones' advertising interval, ms.
    #[serde(default = "default_phone_interval")]
    pub phone_interval_ms: u64,
    /// Phones change their random address this often, s.
    #[serde(default = "default_rotation")]
    pub address_rotation_s: u64,
    /// The fob's calibrated power at 1 m, dBm.
    #[serde(default = "default_power")]
    pub measured_power: i8,
    /// How far a device's real power strays from the calibrated one (σ, dB).
    #[serde(default = "default_power_sigma")]
    pub power_sigma_db: f64,
    /// Share of shoppers whose fob is in a pocket (body shadowing when the hub is behind them).
    #[serde(default = "default_pocket")]
    pub pocket_share: f64,
}

fn default_visits_min() -> u32 {
    2
}
fn default_visits_max() -> u32 {
    5
}
fn default_dwell_min() -> f64 {
    20.0
}
fn default_dwell_max() -> f64 {
    240.0
}
fn default_speed() -> f64 {
    1.0
}
fn default_known_share() -> f64 {
    0.6
}
fn default_fob_interval() -> u64 {
    350
}
fn default_phone_interval() -> u64 {
    1000
}
fn default_rotation() -> u64 {
    900
}
fn default_power_sigma() -> f64 {
    2.0
}
fn default_pocket() -> f64 {
    0.4
}

/// A scenario that could not be loaded.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// No built-in scenario of that name.
    #[error("no built-in scenario {name:?}; built-in scenarios: {}", BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))]
    UnknownBuiltin {
        /// The name asked for.
        name: String,
    },
    /// The file could not be read.
    #[error("{}: cannot read the scenario: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `--set` override cannot be applied.
    #[error(transparent)]
    Override(#[from] super::overrides::OverrideError),
    /// The scenario is not valid.
    #[error("{}", rejected.render(origin))]
    Invalid {
        /// The file name or `builtin:NAME`.
        origin: String,
        /// Every problem found, and what they kept from being checked.
        rejected: Rejected,
    },
}

impl Scenario {
    /// Loads `builtin:NAME` or a file path.
    pub fn load(spec: &str) -> Result<Scenario, ScenarioError> {
        Scenario::load_with(spec, &[])
    }

    /// Loads `builtin:NAME` or a file path with `KEY=VALUE` overrides applied before it is
    /// validated (`beacond simulate --set`; see [`super::overrides::apply`]).
    pub fn load_with(spec: &str, sets: &[String]) -> Result<Scenario, ScenarioError> {
        let text = if let Some(name) = spec.strip_prefix("builtin:") {
            BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| (*t).to_owned())
                .ok_or_else(|| ScenarioError::UnknownBuiltin {
                    name: name.to_owned(),
                })?
        } else {
            let path = Path::new(spec);
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
                path: path.to_owned(),
                source,
            })?
        };
        if sets.is_empty() {
            return Scenario::parse(&text, spec);
        }
        let text = super::overrides::apply(&text, sets)?;
        // Lines are those of the file; an override that adds a table adds it at the end.
        Scenario::parse(&text, &format!("{spec} (with --set)"))
    }

    /// Parses and validates scenario text; `origin` names it in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let invalid = |rejected| ScenarioError::Invalid {
            origin: origin.to_owned(),
            rejected,
        };
        let doc = Document::parse(text).map_err(invalid)?;
        // Zones name their hub and are placed by areas; offers name zones.
        let depends = [
            ("zones", "hubs"),
            ("zones", "areas"),
            ("areas", "zones"),
            ("offers", "zones"),
        ];
        doc.check(Scenario::problems, &depends).map_err(invalid)
    }

    /// The same store run for `duration_s` instead of its own duration: shoppers keep arriving at
    /// the scenario's rate, and the last of them have as long to shop before the end as before.
    ///
    /// Why: a p50 over one hour of a small store rests on a few dozen visits and moves by a second
    /// between seeds; a long run scores the engine on enough visits for a comparison to mean
    /// something (`beacond simulate --hours`).
    pub fn lengthen(&mut self, duration_s: u64) {
        let window = self.shoppers.arrival_window_s.max(1);
        let new_window = if duration_s >= self.duration_s {
            window + (duration_s - self.duration_s)
        } else {
            // Shorter: arrivals shrink with the run, so nobody arrives after it has ended.
            window * duration_s / self.duration_s.max(1)
        };
        let count = u64::from(self.shoppers.count) * new_window / window;
        self.shoppers.count = u32::try_from(count).unwrap_or(u32::MAX);
        self.shoppers.arrival_window_s = new_window;
        self.duration_s = duration_s;
    }

    /// The hub that hears `zone`: the one it names, or, when it names none, the hub the config
    /// stands for ([`Self::as_config`] makes that the first), as the daemon reads a zone without
    /// `hub` as its own hub's. `None` when the zone names a hub the scenario does not have.
    pub fn hub_of(&self, zone: &ZoneConfig) -> Option<&HubSpec> {
        match &zone.hub {
            Some(id) => self.hubs.iter().find(|h| &h.id == id),
            None => self.hubs.first(),
        }
    }

    /// The daemon config this scenario stands for: its zones and presence settings, the first hub as
    /// this hub, and no MQTT.
    pub fn as_config(&self) -> Config {
        let mut cfg = Config::default();
        cfg.hub.store_id = self.name.clone();
        if let Some(h) = self.hubs.first() {
            cfg.hub.hub_id = h.id.clone();
        }
        cfg.zones = self.zones.clone();
        cfg.presence = self.presence.clone();
        cfg.offers = self.offers.clone();
        cfg.offer_limits = self.offer_limits.clone();
        cfg.mqtt.enabled = false;
        cfg
    }

    fn problems(&self) -> Vec<(KeyPath, String)> {
        // The zones and presence tables are the daemon's: check them with the daemon's rules.
        let mut p = crate::config::validate::validate(&self.as_config());
        let hub_ids: Vec<&str> = self.hubs.iter().map(|h| h.id.as_str()).collect();
        if hub_ids.is_empty() {
            p.push((
                KeyPath::key("hubs"),
                "a scenario needs at least one [[hubs]]".into(),
            ));
        }
        for (i, z) in self.zones.iter().enumerate() {
            if let Some(h) = &z.hub {
                if !hub_ids.contains(&h.as_str()) {
                    p.push((
                        KeyPath::key("zones").index(i).join("hub"),
                        format!("no hub has id {h:?}; hubs: {}", hub_ids.join(", ")),
                    ));
                }
            }
        }
        for (i, a) in self.areas.iter().enumerate() {
            if !self.zones.iter().any(|z| z.id == a.zone) {
                p.push((
                    KeyPath::key("areas").index(i).join("zone"),
                    format!("no zone has id {:?}", a.zone),
                ));
            }
            let valid = a.radius_m > 0.0 && a.weight >= 0.0;
            if !valid {
                p.push((
                    KeyPath::key("areas").index(i).join("radius_m"),
                    "radius_m must be positive and weight not negative".into(),
                ));
            }
        }
        for (i, z) in self.zones.iter().enumerate() {
            if !self.areas.iter().any(|a| a.zone == z.id) {
                p.push((
                    KeyPath::key("zones").index(i).join("id"),
                    format!("zone {:?} has no [[areas]] entry: where is it?", z.id),
                ));
            }
        }
        let s = &self.shoppers;
        let path = KeyPath::key("shoppers");
        if s.visits_min == 0 || s.visits_min > s.visits_max {
            p.push((
                path.join("visits_min"),
                "visits_min must be at least 1 and at most visits_max".into(),
            ));
        }
        if !(s.dwell_min_s > 0.0 && s.dwell_min_s <= s.dwell_max_s) {
            p.push((
                path.join("dwell_min_s"),
                "dwell_min_s must be positive and at most dwell_max_s".into(),
            ));
        }
        for (key, v) in [
            ("known_share", s.known_share),
            ("pocket_share", s.pocket_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                p.push((path.join(key), format!("{v} must be between 0 and 1")));
            }
        }
        if s.walk_speed_mps <= 0.0 {
            p.push((path.join("walk_speed_mps"), "must be positive".into()));
        }
        if s.fob_interval_ms < 20 || s.phone_interval_ms < 20 || s.address_rotation_s == 0 {
            p.push((
                path.join("fob_interval_ms"),
                "advertising intervals must be at least 20 ms (BLE's minimum) and rotation positive"
                    .into(),
            ));
        }
        let r = &self.radio;
        let rp = KeyPath::key("radio");
        // Each range says what the number means, so the message tells the author what to write.
        for (key, v, ok, want) in [
            (
                "packet_loss",
                r.packet_loss,
                (0.0..1.0).contains(&r.packet_loss),
                "the share of adverts lost, at least 0 and below 1",
            ),
            (
                "scan_duty",
                r.scan_duty,
                r.scan_duty > 0.0 && r.scan_duty <= 1.0,
                "the share of time the hub scans, above 0 and at most 1",
            ),
            (
                "shadowing_sigma_db",
                r.shadowing_sigma_db,
                r.shadowing_sigma_db >= 0.0,
                "a standard deviation in dB, 0 or more",
            ),
            (
                "shadowing_tau_s",
                r.shadowing_tau_s,
                r.shadowing_tau_s > 0.0,
                "a time constant in seconds, above 0",
            ),
            (
                "shadowing_corr_m",
                r.shadowing_corr_m,
                r.shadowing_corr_m > 0.0,
                "a correlation distance in metres, above 0",
            ),
            (
                "fading_k",
                r.fading_k,
                r.fading_k >= 0.0,
                "a Rician K factor, 0 (Rayleigh) or more",
            ),
            (
                "path_loss_exponent",
                r.path_loss_exponent,
                r.path_loss_exponent > 0.0,
                "above 0 (2 in free space, 2-4 in shops)",
            ),
            (
                "body_loss_db",
                r.body_loss_db,
                r.body_loss_db >= 0.0,
                "a loss in dB, 0 or more (a body costs 4-8 dB)",
            ),
            (
                "height_m",
                r.height_m,
                r.height_m >= 0.0,
                "a height in metres, 0 or more",
            ),
        ] {
            if !ok {
                p.push((rp.join(key), format!("{v} is out of range: {want}")));
            }
        }
        if self.duration_s == 0 {
            p.push((KeyPath::key("duration_s"), "must be positive".into()));
        }
        p
    }
}
