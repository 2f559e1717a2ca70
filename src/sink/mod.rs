//! Sinks: where the pipeline's records go. Records are the engine's events with names instead of
//! indices, ready to serialise; only known subjects ever appear by id, anonymous devices only as counts.
//! - `stdout`: one JSON object per line ([`stdout`]);
//! - `terminal`: the demo's live view ([`terminal`]);
//! - `mqtt`: the platform (MQTT issue).

pub mod certs;
pub mod inflight;
pub mod mqtt;
pub mod spool;
pub mod stdout;
pub mod terminal;
pub mod twin;

use serde::{Serialize, Serializer};

use crate::pipeline::Core;
use crate::presence::{Event, Subject, VisitKind};
use crate::time::Timestamp;

/// Serialises a timestamp as RFC 3339 UTC with milliseconds, as every record does.
pub fn rfc3339<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339())
}

/// Resolved MQTT settings travelling to the sink (compared by identity: two are never equal).
#[derive(Clone)]
pub struct NewTarget(pub Box<crate::sink::mqtt::Settings>);

impl PartialEq for NewTarget {
    fn eq(&self, _: &Self) -> bool {
        false
    }
}

impl std::fmt::Debug for NewTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewTarget")
    }
}

/// A record of the pipeline, as sinks receive it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// An enter, dwell or exit of a customer or tag.
    Presence(PresenceRecord),
    /// Devices per zone over an interval.
    Headcount(HeadcountRecord),
    /// Pipeline counters over an interval.
    Stats(StatsRecord),
    /// Health of the store's fixed beacons.
    Beacons(BeaconsRecord),
    /// An offer trigger for a customer.
    Offer(crate::offers::Triggered),
    /// These customers opted out or were deleted: sinks must drop anything they still hold about
    /// them. Never published or printed.
    #[serde(skip)]
    Purge(Vec<String>),
    /// A new MQTT target from a reload: the sink says goodbye to the old broker and connects to
    /// this one; the spool carries over. Never printed.
    #[serde(skip)]
    MqttTarget(NewTarget),
    /// A running problem for the hub's status (`message`), or its end (`None`). Never printed.
    #[serde(skip)]
    Notice {
        /// What it is about (`reload`).
        key: String,
        /// The problem, or `None` once it is over.
        message: Option<String>,
    },
}

impl Record {
    /// The pipeline time the record is about.
    pub fn at(&self) -> Timestamp {
        match self {
            Record::Presence(p) => p.at,
            Record::Headcount(h) => h.end,
            Record::Stats(s) => s.end,
            Record::Beacons(b) => b.at,
            Record::Offer(o) => o.at,
            Record::Purge(_) | Record::Notice { .. } | Record::MqttTarget(_) => Timestamp(0),
        }
    }
}

/// Pipeline counters over one interval (the MQTT sink adds its spool and connection counters).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatsRecord {
    /// Start of the interval.
    #[serde(serialize_with = "rfc3339")]
    pub start: Timestamp,
    /// End of the interval.
    #[serde(serialize_with = "rfc3339")]
    pub end: Timestamp,
    /// Adverts heard in the interval.
    pub adverts: u64,
    /// Adverts per second over the interval.
    pub adverts_per_s: f64,
    /// Adverts that did not decode.
    pub decode_errors: u64,
    /// Adverts of customers and tags.
    pub known_adverts: u64,
    /// Adverts of anonymous devices.
    pub anonymous_adverts: u64,
    /// Adverts of the store's fixed beacons.
    pub fixed_beacon_adverts: u64,
    /// Identities tracked at the end of the interval.
    pub tracked: u64,
    /// Of which anonymous.
    pub tracked_anonymous: u64,
    /// Tracks evicted to stay under `max_tracked` (since start).
    pub evictions: u64,
    /// Observations that arrived out of order (since start).
    pub late_observations: u64,
    /// Adverts with an app token that resolved to a customer.
    pub app_tokens_resolved: u64,
    /// Adverts with an app token that matched nobody (treated as anonymous devices).
    pub app_tokens_unknown: u64,
    /// Customer sync counters (since start), when the hub syncs customers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<crate::pipeline::SyncReport>,
    /// Sharing with peer hubs (since start), when `[peers]` lists any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<PeerCounters>,
    /// The scanning source's counters (since start): what it let through and filtered out, and the
    /// BlueZ watchdog's and device cleanup's work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<crate::scan::bluez::tracker::ScanCounters>,
    /// Each hub's exit margin, for the local health endpoint only: not published, so the stats
    /// message's contract (docs/asyncapi.yaml) does not change with what the engine learns.
    #[serde(skip)]
    pub exit_margins: Vec<crate::presence::HubExitMargin>,
}

/// What a hub shared with its peers and took from them, since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PeerCounters {
    /// Own observations of known devices sent to peers.
    pub shared: u64,
    /// Peers' observations the engine used.
    pub applied: u64,
    /// Peers' observations that came too late to use (`[peers] max_lag_ms`): a slow broker, or a
    /// peer's clock behind this hub's.
    pub late: u64,
    /// Peers' observations of customers this hub does not know (its customer list behind the
    /// peer's).
    pub unknown: u64,
}

/// Health of the store's fixed beacons.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BeaconsRecord {
    /// When the report was made.
    #[serde(serialize_with = "rfc3339")]
    pub at: Timestamp,
    /// One entry per fixed beacon heard since start.
    pub beacons: Vec<BeaconHealthRecord>,
}

/// Below this battery voltage a beacon is flagged for replacement, mV.
pub const LOW_BATTERY_MV: u16 = 2600;

/// One fixed beacon's health.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BeaconHealthRecord {
    /// Its id.
    pub id: String,
    /// Last time it was heard.
    #[serde(serialize_with = "rfc3339")]
    pub last_seen: Timestamp,
    /// RSSI of its last advert, dBm.
    pub rssi: i16,
    /// Adverts heard since start.
    pub adverts: u64,
    /// Battery from Eddystone-TLM, mV.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_mv: Option<u16>,
    /// Temperature from Eddystone-TLM, °C.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f32>,
    /// Uptime from Eddystone-TLM, s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<f64>,
    /// Battery below [`LOW_BATTERY_MV`].
    pub low_battery: bool,
}

/// The counters since `prev` (the core's counters at `start`), as a stats record.
pub fn stats_record(
    core: &Core,
    prev: &crate::pipeline::CoreStats,
    start: Timestamp,
    end: Timestamp,
) -> Record {
    let now = core.stats();
    let e = core.engine().stats();
    let (tracked, anonymous) = core.engine().tracked();
    let adverts = now.adverts - prev.adverts;
    let secs = end.secs_since(start).max(1e-3);
    Record::Stats(StatsRecord {
        start,
        end,
        adverts,
        adverts_per_s: (adverts as f64 / secs * 10.0).round() / 10.0,
        decode_errors: now.decode_errors - prev.decode_errors,
        known_adverts: now.known_adverts - prev.known_adverts,
        anonymous_adverts: now.anonymous_adverts - prev.anonymous_adverts,
        fixed_beacon_adverts: now.fixed_beacon_adverts - prev.fixed_beacon_adverts,
        tracked: tracked as u64,
        tracked_anonymous: anonymous as u64,
        evictions: e.evictions,
        late_observations: e.late_observations,
        app_tokens_resolved: now.app_tokens_resolved - prev.app_tokens_resolved,
        app_tokens_unknown: now.app_tokens_unknown - prev.app_tokens_unknown,
        sync: core.sync_report(),
        peers: core.shares().then_some(PeerCounters {
            shared: now.peer_shared,
            applied: now.peer_applied,
            late: now.peer_late,
            unknown: now.peer_unknown,
        }),
        scan: None,
        exit_margins: core.engine().exit_margins(),
    })
}

/// The fleet health record at `at`.
pub fn beacons_record(core: &Core, at: Timestamp) -> Record {
    Record::Beacons(BeaconsRecord {
        at,
        beacons: core
            .fleet()
            .into_iter()
            .map(|(id, h)| BeaconHealthRecord {
                id,
                last_seen: h.last_seen,
                rssi: h.rssi,
                adverts: h.adverts,
                battery_mv: h.battery_mv,
                temperature_c: h.temperature_c,
                uptime_s: h.uptime_s,
                low_battery: h.battery_mv.is_some_and(|b| b < LOW_BATTERY_MV),
            })
            .collect(),
    })
}

/// An enter, dwell or exit.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PresenceRecord {
    /// `enter`, `dwell` or `exit`.
    pub event: &'static str,
    /// The customer's platform id, for customers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// The tag's id, for registered non-customer beacons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_id: Option<String>,
    /// Zone id.
    pub zone: String,
    /// When the engine decided it.
    #[serde(serialize_with = "rfc3339")]
    pub at: Timestamp,
    /// When the visit began.
    #[serde(serialize_with = "rfc3339")]
    pub entered_at: Timestamp,
    /// First advertisement that justified it.
    #[serde(serialize_with = "rfc3339")]
    pub first_seen: Timestamp,
    /// Last advertisement that justified it.
    #[serde(serialize_with = "rfc3339")]
    pub last_seen: Timestamp,
    /// Smoothed RSSI, dBm (one decimal).
    pub rssi: f64,
    /// Estimated distance to the zone's hub, m (two decimals; indicative only).
    pub distance_m: f64,
    /// For `dwell`: the mark reached, s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<u64>,
    /// For `exit`: the visit's length, s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// For `exit`: `signal`, `absence`, `moved`, `evicted` or `reconfigured`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// Devices per zone over one interval.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadcountRecord {
    /// Start of the interval.
    #[serde(serialize_with = "rfc3339")]
    pub start: Timestamp,
    /// End of the interval.
    #[serde(serialize_with = "rfc3339")]
    pub end: Timestamp,
    /// One entry per zone.
    pub zones: Vec<ZoneHeadcount>,
}

/// One zone's counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ZoneHeadcount {
    /// Zone id.
    pub zone: String,
    /// Distinct anonymous devices in the zone during the interval.
    pub anonymous: u32,
    /// Distinct customers and tags in the zone during the interval.
    pub known: u32,
}

fn round(x: f32, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x as f64 * m).round() / m
}

/// Names an engine event for the outside world.
pub fn render(core: &Core, event: &Event) -> Record {
    let zones = core.engine().zones();
    match event {
        Event::Visit(v) => {
            let (customer_id, tag_id) = match v.subject {
                Subject::Customer(c) => (core.directory().customer(c).map(|c| c.id.clone()), None),
                Subject::Tag(t) => (None, core.directory().tag(t).map(str::to_owned)),
            };
            let (event, dwell_s, duration_s, reason) = match v.kind {
                VisitKind::Enter => ("enter", None, None, None),
                VisitKind::Dwell { mark_s } => ("dwell", Some(mark_s), None, None),
                VisitKind::Exit { duration_s, reason } => (
                    "exit",
                    None,
                    Some((duration_s * 1000.0).round() / 1000.0),
                    Some(reason.as_str()),
                ),
            };
            Record::Presence(PresenceRecord {
                event,
                customer_id,
                tag_id,
                zone: zones[v.zone as usize].id.clone(),
                at: v.at,
                entered_at: v.entered_at,
                first_seen: v.first_seen,
                last_seen: v.last_seen,
                rssi: round(v.rssi, 1),
                distance_m: round(v.distance_m, 2),
                dwell_s,
                duration_s,
                reason,
            })
        }
        Event::Headcount(h) => Record::Headcount(HeadcountRecord {
            start: h.start,
            end: h.end,
            zones: h
                .zones
                .iter()
                .zip(zones)
                .enumerate()
                // A peer counts its own zones: here they would miss every device only it hears.
                .filter(|(i, _)| core.reports_zone(*i as crate::presence::ZoneIdx))
                .map(|(_, (c, z))| ZoneHeadcount {
                    zone: z.id.clone(),
                    anonymous: c.anonymous,
                    known: c.known,
                })
                .collect(),
        }),
    }
}
