//! What `beacond scan` shows: one row per thing the hub hears, built from the same core the daemon
//! runs, so the zone it shows is the zone the daemon would assign. Pure: fed adverts and `now`.

use std::collections::{HashMap, VecDeque};

use serde_json::{json, Value};

use crate::decode::json::frame_to_json;
use crate::decode::{decode_frames, Frame};
use crate::identity::{BeaconId, Identity};
use crate::pipeline::{Core, Resolved};
use crate::scan::Advert;
use crate::time::Timestamp;

/// Rates are adverts per second over this window.
const RATE_WINDOW_MS: u64 = 10_000;
/// A row not heard for this long is dropped.
const FORGET_MS: u64 = 60_000;
/// The most rows kept (a busy street outside can bring thousands of random addresses).
const MAX_ROWS: usize = 2_000;

/// What a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A customer who opted in (by fob or app token).
    Customer,
    /// A registered tag.
    Tag,
    /// One of the store's fixed beacons.
    Fixed,
    /// A beacon frame beacond decodes but does not know.
    Beacon,
    /// Anything else: a salted handle, never an address.
    Anonymous,
}

/// One thing the hub hears.
#[derive(Clone, Debug)]
pub struct Row {
    /// What to call it: a beacon id, `customer ID`, a tag or fixed-beacon id, or `anon-…`.
    pub label: String,
    /// What it is.
    pub kind: Kind,
    /// The hub that heard it (multi-hub simulations).
    pub hub: String,
    /// The decoded frames, as `beacond decode` names their fields.
    pub frames: Vec<Value>,
    /// The last RSSI heard.
    pub rssi: i16,
    /// The engine's smoothed RSSI.
    pub smoothed: Option<f32>,
    /// Estimated distance from the smoothed (or raw) RSSI.
    pub distance_m: f32,
    /// The zone the engine puts it in now.
    pub zone: Option<String>,
    /// Adverts per second over the last ten seconds.
    pub rate: f32,
    /// Adverts heard in all.
    pub adverts: u64,
    /// When last heard.
    pub last_seen: Timestamp,
    times: VecDeque<Timestamp>,
    first_seen: Timestamp,
    dirty: bool,
}

impl Row {
    /// The `--json` object.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.label,
            "kind": self.kind,
            "hub": self.hub,
            "frames": self.frames,
            "rssi": self.rssi,
            "smoothed_rssi": self.smoothed.map(|s| round(s, 10.0)),
            "distance_m": round(self.distance_m, 100.0),
            "zone": self.zone,
            "adverts_per_s": round(self.rate, 10.0),
            "adverts": self.adverts,
            "last_seen": self.last_seen.to_rfc3339(),
        })
    }
}

/// What `beacond scan` calls an advert's sender, what it is, its decoded frames, and how the core
/// resolves it; `None` for what names nothing (a fixed beacon's bare telemetry).
pub fn identify(core: &Core, adv: &Advert) -> Option<(String, Kind, Vec<Value>, Resolved)> {
    let r = core.resolve(adv);
    let mut frames = Vec::new();
    let mut beacon: Option<BeaconId> = None;
    let _ = decode_frames(&adv.payload, |f: Frame| {
        if beacon.is_none() {
            beacon = BeaconId::of(&f);
        }
        frames.push(frame_to_json(&f));
    });
    let dir = core.directory();
    let (label, kind) = match (r.identity, r.fixed) {
        (_, Some(k)) => (
            dir.fixed(k).unwrap_or("fixed beacon").to_string(),
            Kind::Fixed,
        ),
        (Some(Identity::Customer(c)), _) => (
            format!(
                "customer {}",
                dir.customer(c).map(|c| c.id.as_str()).unwrap_or("?")
            ),
            Kind::Customer,
        ),
        (Some(Identity::Tag(t)), _) => (dir.tag(t).unwrap_or("tag").to_string(), Kind::Tag),
        (Some(Identity::Anonymous(h)), _) => match beacon {
            Some(b) => (b.to_string(), Kind::Beacon),
            None => (format!("anon-{:06x}", h & 0xff_ffff), Kind::Anonymous),
        },
        // A fixed beacon's telemetry frame.
        (None, None) => match beacon {
            Some(b) => (b.to_string(), Kind::Fixed),
            None => return None,
        },
    };
    Some((label, kind, frames, r))
}

/// Rounds in f64, so JSON shows -76.2 and not f32's -76.19999694824219.
fn round(v: f32, scale: f64) -> f64 {
    (f64::from(v) * scale).round() / scale
}

/// How rows are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SortKey {
    /// Strongest smoothed RSSI first.
    #[default]
    Rssi,
    /// Most recently heard first.
    LastSeen,
    /// Most adverts per second first.
    Rate,
    /// By label.
    Id,
    /// By zone, then strongest.
    Zone,
}

/// The rows, by label.
#[derive(Default)]
pub struct View {
    rows: HashMap<String, Row>,
}

impl View {
    /// An empty view.
    pub fn new() -> View {
        View::default()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Feeds one advert that `core` has already handled.
    pub fn observe(&mut self, core: &Core, adv: &Advert) {
        let Some((label, kind, frames, r)) = identify(core, adv) else {
            return;
        };
        let engine = core.engine();
        let hub = core.engine_hub(adv.hub);
        let hub_name = hub
            .and_then(|h| engine.hubs().get(h as usize))
            .cloned()
            .unwrap_or_default();
        // In a zone, what matters is the signal at that zone's hub, whichever hub heard this advert.
        let (smoothed, zone) = match r.identity {
            Some(id) => {
                let zone = engine.zone_of(&id);
                let at = zone.map(|z| engine.zones()[z as usize].hub).or(hub);
                (at.and_then(|h| engine.smoothed_rssi(&id, h)), zone)
            }
            None => (None, None),
        };
        let level = smoothed.unwrap_or(adv.rssi as f32);
        let distance_m = match (zone, engine.zones().is_empty()) {
            (Some(z), _) => engine.distance_m(z, level, r.measured_power),
            (None, false) => engine.distance_m(0, level, r.measured_power),
            (None, true) => crate::presence::distance_m(
                r.measured_power.map(f32::from).unwrap_or(-59.0),
                level,
                2.0,
            ),
        };
        if !self.rows.contains_key(&label) && self.rows.len() >= MAX_ROWS {
            self.forget_oldest();
        }
        let row = self.rows.entry(label.clone()).or_insert_with(|| Row {
            label,
            kind,
            hub: String::new(),
            frames: Vec::new(),
            rssi: 0,
            smoothed: None,
            distance_m: 0.0,
            zone: None,
            rate: 0.0,
            adverts: 0,
            last_seen: adv.at,
            times: VecDeque::new(),
            first_seen: adv.at,
            dirty: true,
        });
        row.kind = kind;
        row.hub = hub_name;
        row.frames = frames;
        row.rssi = adv.rssi;
        row.smoothed = smoothed;
        row.distance_m = distance_m;
        row.zone = zone.map(|z| engine.zones()[z as usize].id.clone());
        row.adverts += 1;
        row.last_seen = adv.at;
        row.times.push_back(adv.at);
        row.dirty = true;
    }

    fn forget_oldest(&mut self) {
        if let Some(k) = self
            .rows
            .values()
            .min_by_key(|r| r.last_seen)
            .map(|r| r.label.clone())
        {
            self.rows.remove(&k);
        }
    }

    /// Updates rates and drops rows not heard for a minute.
    pub fn tick(&mut self, now: Timestamp) {
        self.rows
            .retain(|_, r| now.0.saturating_sub(r.last_seen.0) < FORGET_MS);
        for r in self.rows.values_mut() {
            while r
                .times
                .front()
                .is_some_and(|t| now.0.saturating_sub(t.0) > RATE_WINDOW_MS)
            {
                r.times.pop_front();
            }
            let span_ms = now
                .0
                .saturating_sub(r.first_seen.0)
                .clamp(1000, RATE_WINDOW_MS);
            r.rate = r.times.len() as f32 * 1000.0 / span_ms as f32;
        }
    }

    /// The rows, sorted, keeping those whose label, kind or zone contains `filter`.
    pub fn rows(&self, sort: SortKey, filter: Option<&str>) -> Vec<&Row> {
        let mut v: Vec<&Row> = self
            .rows
            .values()
            .filter(|r| match filter {
                None => true,
                Some(f) => {
                    let f = f.to_lowercase();
                    r.label.to_lowercase().contains(&f)
                        || format!("{:?}", r.kind).to_lowercase().contains(&f)
                        || r.zone.as_deref().is_some_and(|z| z.contains(&f))
                }
            })
            .collect();
        let level = |r: &Row| r.smoothed.unwrap_or(r.rssi as f32);
        match sort {
            SortKey::Rssi => v.sort_by(|a, b| level(b).total_cmp(&level(a))),
            SortKey::LastSeen => v.sort_by_key(|r| std::cmp::Reverse(r.last_seen)),
            SortKey::Rate => v.sort_by(|a, b| b.rate.total_cmp(&a.rate)),
            SortKey::Id => v.sort_by(|a, b| a.label.cmp(&b.label)),
            SortKey::Zone => v.sort_by(|a, b| {
                a.zone
                    .cmp(&b.zone)
                    .then_with(|| level(b).total_cmp(&level(a)))
            }),
        }
        v
    }

    /// Rows heard since the last call, for the `--json` stream.
    pub fn take_changed(&mut self, sort: SortKey, filter: Option<&str>) -> Vec<Value> {
        let out: Vec<Value> = self
            .rows(sort, filter)
            .into_iter()
            .filter(|r| r.dirty)
            .map(Row::to_json)
            .collect();
        for r in self.rows.values_mut() {
            r.dirty = false;
        }
        out
    }

    /// The table, as text of at most `max_rows` rows.
    pub fn table(
        &self,
        sort: SortKey,
        filter: Option<&str>,
        now: Timestamp,
        max_rows: usize,
    ) -> String {
        use std::fmt::Write;
        let rows = self.rows(sort, filter);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<48} {:<9} {:>5} {:>7} {:>7} {:<14} {:>6} {:>6}",
            "ID", "KIND", "RSSI", "SMOOTH", "DIST_M", "ZONE", "ADV/S", "AGO_S"
        );
        for r in rows.iter().take(max_rows) {
            let label: String = r.label.chars().take(48).collect();
            let smooth = r
                .smoothed
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "{:<48} {:<9} {:>5} {:>7} {:>7.2} {:<14} {:>6.1} {:>6.1}",
                label,
                format!("{:?}", r.kind).to_lowercase(),
                r.rssi,
                smooth,
                r.distance_m,
                r.zone.as_deref().unwrap_or("-"),
                r.rate,
                now.secs_since(r.last_seen).max(0.0),
            );
        }
        if rows.len() > max_rows {
            let _ = writeln!(s, "… {} more (narrow with --match)", rows.len() - max_rows);
        }
        s
    }
}
