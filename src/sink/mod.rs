//! Sinks: where the pipeline's records go. Records are the engine's events with names instead of
//! indices, ready to serialise; only known subjects ever appear by id, anonymous devices only as counts.
//! - `stdout`: one JSON object per line ([`stdout`]);
//! - `terminal`: the demo's live view ([`terminal`]);
//! - `mqtt`: the platform (MQTT issue).

pub mod mqtt;
pub mod spool;
pub mod stdout;
pub mod terminal;

use serde::{Serialize, Serializer};

use crate::pipeline::Core;
use crate::presence::{Event, Subject, VisitKind};
use crate::time::Timestamp;

fn rfc3339<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339())
}

/// A record of the pipeline, as sinks receive it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// An enter, dwell or exit of a customer or tag.
    Presence(PresenceRecord),
    /// Devices per zone over an interval.
    Headcount(HeadcountRecord),
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
    /// For `exit`: `signal`, `absence`, `moved` or `evicted`.
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
                .map(|(c, z)| ZoneHeadcount {
                    zone: z.id.clone(),
                    anonymous: c.anonymous,
                    known: c.known,
                })
                .collect(),
        }),
    }
}
