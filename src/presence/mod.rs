//! Presence stage: noisy RSSI in, `enter` / `dwell` / `exit` out.
//!
//! Sans-IO, after `quinn-proto`: the [`Engine`] is fed `(now, observation)`, asked
//! [`Engine::poll_timeout`], and woken with [`Engine::handle_timeout`]; it never reads a clock and never
//! does I/O, so the simulator runs an hour of a store in seconds through the very code the daemon runs.
//!
//! How a zone is decided:
//! - every (identity, hub) pair has a smoothed RSSI ([`filter`]);
//! - a zone *qualifies* while its hub's smoothed RSSI stays at or above `enter_rssi`; after
//!   `min_enter_s` of that, the identity may enter it;
//! - it leaves when the smoothed RSSI drops `exit_margin_db` below the level the visit settled at
//!   (kept between `exit_rssi` and `enter_rssi`), or when the zone's hub has not heard it for
//!   `absence_timeout_s` (inclusive: exactly at the boundary counts), or sooner when that silence is
//!   many times the device's own usual gap between adverts (`silence_gaps`); a drop another hub corroborates
//!   (it hears the device coming closer) is anticipated along its trend, one nothing corroborates must
//!   go a little further (see `leaves`);
//! - when several zones qualify, the strongest smoothed signal wins, and a customer inside a zone only
//!   moves to another one that is `switch_margin_db` stronger (twice that when neither signal's
//!   trend shows a walk, see `switch_margin`), so standing on a boundary does not ping-pong.
//!   Between nested zones of one hub, the tighter zone (higher `enter_rssi`) wins.
//!
//! Anonymous devices go through the same logic but only ever feed [`Headcount`]s.

pub mod filter;
pub mod margin;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::config::{PresenceConfig, ZoneConfig};
use crate::identity::{CustomerKey, Identity, TagKey};
use crate::time::Timestamp;
use filter::{FilterKind, FilterParams, Smoother};

/// An index into the engine's hub list.
pub type HubIdx = u16;
/// An index into the engine's zone list.
pub type ZoneIdx = u16;

/// One advertisement heard, as the presence engine needs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// Who it is.
    pub identity: Identity,
    /// Which hub heard it.
    pub hub: HubIdx,
    /// Received signal strength, dBm.
    pub rssi: i16,
    /// The power at 1 m the advertisement states, if any.
    pub measured_power: Option<i8>,
}

/// Who a published event is about: never an anonymous device, by construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A customer who opted in.
    Customer(CustomerKey),
    /// A registered beacon.
    Tag(TagKey),
}

/// Why a visit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The smoothed signal fell below `exit_rssi`.
    Signal,
    /// Not heard for `absence_timeout_s`.
    Absence,
    /// Moved to a stronger zone.
    Moved,
    /// Dropped to keep memory bounded.
    Evicted,
    /// The zone was removed from the config by a reload.
    Reconfigured,
}

impl ExitReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Signal => "signal",
            ExitReason::Absence => "absence",
            ExitReason::Moved => "moved",
            ExitReason::Evicted => "evicted",
            ExitReason::Reconfigured => "reconfigured",
        }
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum VisitKind {
    /// Entered the zone.
    Enter,
    /// Still in the zone at a dwell mark.
    Dwell {
        /// The mark, seconds into the visit.
        mark_s: u64,
    },
    /// Left the zone.
    Exit {
        /// How long the visit lasted, seconds.
        duration_s: f64,
        /// Why it ended.
        reason: ExitReason,
    },
}

/// An enter, dwell or exit of a known subject.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VisitEvent {
    /// What happened.
    pub kind: VisitKind,
    /// About whom.
    pub subject: Subject,
    /// Where.
    pub zone: ZoneIdx,
    /// When the engine decided it.
    pub at: Timestamp,
    /// When the visit began.
    pub entered_at: Timestamp,
    /// Smoothed RSSI at the decision, dBm.
    pub rssi: f32,
    /// Estimated distance to the zone's hub, metres (log-distance model; indicative only).
    pub distance_m: f32,
    /// First advertisement that justified the event.
    pub first_seen: Timestamp,
    /// Last advertisement that justified the event.
    pub last_seen: Timestamp,
}

/// Devices per zone over one interval: the only thing anonymous devices ever feed.
#[derive(Clone, Debug, PartialEq)]
pub struct Headcount {
    /// Start of the interval.
    pub start: Timestamp,
    /// End of the interval.
    pub end: Timestamp,
    /// Per zone (index = zone): distinct anonymous devices and distinct known subjects that were in
    /// the zone at some time during the interval.
    pub zones: Vec<ZoneCount>,
}

/// One zone's counts in a [`Headcount`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneCount {
    /// Distinct anonymous devices.
    pub anonymous: u32,
    /// Distinct customers and tags.
    pub known: u32,
}

/// An engine output.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A visit event of a known subject.
    Visit(VisitEvent),
    /// A periodic headcount.
    Headcount(Headcount),
}

/// A zone as the engine uses it: thresholds in the units of the hot path.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    /// The configured id.
    pub id: String,
    /// The hub that measures it.
    pub hub: HubIdx,
    enter_rssi: f32,
    exit_rssi: f32,
    min_enter_ms: u64,
    absence_ms: u64,
    dwell_marks_ms: Vec<u64>,
    measured_power: Option<f32>,
    exponent: f32,
}

/// Engine settings beyond the zones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EngineParams {
    /// The smoothing filter and its tuning.
    pub filter: FilterParams,
    /// dB another hub's zone must be stronger by before a device moves there.
    pub switch_margin_db: f32,
    /// The most tracked identities.
    pub max_tracked: usize,
    /// Headcount interval, ms.
    pub headcount_interval_ms: u64,
    /// Power at 1 m for devices that state none, dBm.
    pub measured_power: f32,
    /// Default path-loss exponent.
    pub exponent: f32,
    /// Exit below `exit_rssi` (true) or as soon as the signal is below `enter_rssi` (false).
    pub hysteresis: bool,
    /// How far below its settled level a visit's signal must fall to exit, dB; with
    /// `adaptive_margin`, the most.
    pub exit_margin_db: f32,
    /// Learn each hub's exit margin from its customers' sags while standing ([`margin`]).
    pub adaptive_margin: bool,
    /// Require `min_enter_s` before entering (false: enter on the first qualifying sample).
    pub sustain: bool,
    /// A device is gone once its zone's hub has not heard it for this many of its usual gaps
    /// between adverts (bounded by [`SILENCE_MIN_MS`] and the absence timeout); 0: only the timeout.
    pub silence_gaps: f32,
}

impl EngineParams {
    /// The settings of `[presence]`.
    pub fn from_config(p: &PresenceConfig) -> EngineParams {
        EngineParams {
            filter: FilterParams::tuned(p.filter.into()),
            switch_margin_db: p.switch_margin_db as f32,
            max_tracked: p.max_tracked.max(1),
            headcount_interval_ms: p.headcount_interval_s.max(1) * 1000,
            measured_power: p.measured_power as f32,
            exponent: p.path_loss_exponent as f32,
            hysteresis: true,
            exit_margin_db: p.exit_margin_db as f32,
            adaptive_margin: p.adaptive_exit_margin,
            sustain: true,
            silence_gaps: p.silence_gaps as f32,
        }
    }

    /// The naive baseline: raw RSSI against the same thresholds, no smoothing, no hysteresis, no
    /// sustain time, no switching margin. `beacond simulate` scores it next to the engine.
    pub fn baseline(p: &PresenceConfig) -> EngineParams {
        EngineParams {
            filter: FilterParams::tuned(FilterKind::Raw),
            switch_margin_db: 0.0,
            hysteresis: false,
            adaptive_margin: false,
            sustain: false,
            silence_gaps: 0.0,
            ..EngineParams::from_config(p)
        }
    }
}

/// One hub's exit margin ([`Engine::exit_margins`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HubExitMargin {
    /// The hub's id.
    pub hub: String,
    /// Visits of 30 s or more it has learned from (the last 64).
    pub visits: u32,
    /// The margin its visits exit at now, dB.
    pub margin_db: f64,
    /// Whether that margin is learned; false: `exit_margin_db`, while the hub has seen fewer than
    /// [`margin::MIN_VISITS`] visits or when it does not learn.
    pub learned: bool,
    /// Whether the hub learns at all (`adaptive_exit_margin`).
    pub adaptive: bool,
}

/// The sags one hub has learned its exit margin from ([`Engine::margin_memory`]): what a daemon
/// keeps on disk so that a restart does not send every hub back to `exit_margin_db` for its next
/// [`margin::MIN_VISITS`] visits.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HubSags {
    /// The hub's id.
    pub hub: String,
    /// Each remembered visit's deepest standing sag, dB below its settled level, oldest first.
    pub sags_db: Vec<f32>,
}

/// As `beacond status` and `beacond simulate` print it: the learned margin, or `exit_margin_db` and
/// how far the hub has got towards learning its own.
impl std::fmt::Display for HubExitMargin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (hub, db, visits) = (&self.hub, self.margin_db, self.visits);
        if self.learned {
            write!(f, "{hub} {db:.1} dB (learned from {visits} visits)")
        } else if !self.adaptive {
            write!(
                f,
                "{hub} {db:.1} dB (exit_margin_db; adaptive_exit_margin = false)"
            )
        } else {
            write!(
                f,
                "{hub} {db:.1} dB (exit_margin_db until it has learned from {} visits: {visits} so far)",
                margin::MIN_VISITS
            )
        }
    }
}

/// Counters for `stats` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Observations handled.
    pub observations: u64,
    /// Observations older than the engine's clock (handled at the engine's time).
    pub late_observations: u64,
    /// Tracks evicted to stay under `max_tracked`.
    pub evictions: u64,
    /// Tracks forgotten after silence.
    pub expired: u64,
}

#[derive(Clone, Debug)]
struct HubState {
    hub: HubIdx,
    smoother: Smoother,
    last_heard: Timestamp,
    /// A slow average of the gaps between adverts this hub heard, ms: the device's own rhythm.
    gap_ms: f32,
    /// How many gaps `gap_ms` has seen, up to `1 / GAP_ALPHA`.
    gaps: u16,
    /// The longest recent gap, ms, fading with [`LONGEST_GAP_TAU_MS`].
    longest_gap_ms: f32,
}

impl HubState {
    fn new(hub: HubIdx, smoother: Smoother, now: Timestamp) -> HubState {
        HubState {
            hub,
            smoother,
            last_heard: now,
            gap_ms: 0.0,
            gaps: 0,
            longest_gap_ms: 0.0,
        }
    }

    /// Folds the gap since the last advert this hub heard into the device's rhythm.
    fn learn_gap(&mut self, gap_ms: u64) {
        let gap = gap_ms as f32;
        // A plain mean of the first gaps, then an exponential one; this runs per advert, so no
        // division once warmed up.
        let alpha = if f32::from(self.gaps) < 1.0 / GAP_ALPHA {
            self.gaps += 1;
            1.0 / f32::from(self.gaps)
        } else {
            GAP_ALPHA
        };
        self.gap_ms += alpha * (gap - self.gap_ms);
        // 1 − x for e^−x: the gaps are far shorter than the time constant.
        let fade = (1.0 - gap * (1.0 / LONGEST_GAP_TAU_MS)).max(0.0);
        self.longest_gap_ms = gap.max(self.longest_gap_ms * fade);
    }

    /// A silence of `gaps` of this device's usual gaps and twice its longest recent pause, ms:
    /// how long it must go unheard before it is taken to be gone (before any floor).
    fn silence_ms(&self, gaps: f32) -> u64 {
        (self.gap_ms * gaps).max(self.longest_gap_ms * SILENCE_LONGEST_FACTOR) as u64
    }

    /// Whether this hub heard the device lately and hears it coming closer, as a walk toward it
    /// shows: what corroborates a departure from, or a move away from, another hub's zone.
    fn approached_by(&self, now: Timestamp) -> bool {
        now.since(self.last_heard) < RECENT_MS && self.smoother.trend() >= APPROACH_DB_PER_S
    }

    fn forget_gaps(&mut self) {
        self.gap_ms = 0.0;
        self.gaps = 0;
        self.longest_gap_ms = 0.0;
    }
}

#[derive(Clone, Copy, Debug)]
struct Visit {
    zone: ZoneIdx,
    entered_at: Timestamp,
    first_seen: Timestamp,
    next_mark: usize,
    /// The level the signal settled at during the visit (a slow average of the smoothed RSSI).
    level: f32,
    /// When `level` was last updated.
    level_at: Timestamp,
    /// How far the signal sagged below `level` while the customer stood.
    sag: margin::SagMeter,
}

#[derive(Clone, Debug)]
struct Track {
    identity: Identity,
    hubs: SmallVec<[HubState; 2]>,
    /// Zones whose threshold the signal has stayed above, and since when.
    qualified: SmallVec<[(ZoneIdx, Timestamp); 2]>,
    visit: Option<Visit>,
    last_heard: Timestamp,
    measured_power: Option<i8>,
    /// Earliest deadline this track has in the timer heap (u64::MAX: none).
    scheduled: u64,
    counted_interval: u64,
    counted_zones: SmallVec<[ZoneIdx; 2]>,
    /// The zone a signal exit just ended and the smoothed RSSI it ended at: that zone qualifies
    /// again only once the signal rises above that value (or has first fallen below `enter_rssi`).
    left: Option<(ZoneIdx, f32)>,
}

impl Track {
    fn hub(&self, hub: HubIdx) -> Option<&HubState> {
        self.hubs.iter().find(|h| h.hub == hub)
    }
}

/// The presence engine. See the module documentation for the rules.
#[derive(Clone, Debug)]
pub struct Engine {
    zones: Vec<Zone>,
    zones_by_hub: Vec<SmallVec<[ZoneIdx; 4]>>,
    hubs: Vec<String>,
    params: EngineParams,
    tracks: Vec<Option<Track>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    index: FxHashMap<Identity, u32>,
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    now: Timestamp,
    /// How long a track with no visit is kept after it was last heard.
    forget_ms: u64,
    interval: Option<u64>,
    counts: Vec<ZoneCount>,
    stats: EngineStats,
    /// Per hub: the exit margin its customers' sags call for.
    margins: Vec<margin::HubMargin>,
}

impl Engine {
    /// An engine for `zones`; zones without a `hub` belong to `default_hub`, which is hub 0.
    pub fn new(zones: &[ZoneConfig], params: EngineParams, default_hub: &str) -> Engine {
        let mut hubs = vec![default_hub.to_owned()];
        let mut engine_zones = Vec::with_capacity(zones.len());
        for z in zones {
            let name = z.hub.as_deref().unwrap_or(default_hub);
            let hub = match hubs.iter().position(|h| h == name) {
                Some(i) => i,
                None => {
                    hubs.push(name.to_owned());
                    hubs.len() - 1
                }
            } as HubIdx;
            engine_zones.push(Zone {
                id: z.id.clone(),
                hub,
                enter_rssi: z.enter_rssi as f32,
                exit_rssi: if params.hysteresis {
                    z.exit_rssi as f32
                } else {
                    z.enter_rssi as f32
                },
                min_enter_ms: if params.sustain {
                    (z.min_enter_s * 1000.0).round() as u64
                } else {
                    0
                },
                absence_ms: (z.absence_timeout_s * 1000.0).round().max(1.0) as u64,
                dwell_marks_ms: z.dwell_marks_s.iter().map(|s| s * 1000).collect(),
                measured_power: z.measured_power.map(f32::from),
                exponent: z.path_loss_exponent.map_or(params.exponent, |e| e as f32),
            });
        }
        let mut zones_by_hub = vec![SmallVec::new(); hubs.len()];
        for (i, z) in engine_zones.iter().enumerate() {
            zones_by_hub[z.hub as usize].push(i as ZoneIdx);
        }
        let hub_count = hubs.len();
        let forget_ms = engine_zones
            .iter()
            .map(|z| z.absence_ms)
            .max()
            .unwrap_or(15_000);
        Engine {
            counts: vec![ZoneCount::default(); engine_zones.len()],
            zones: engine_zones,
            zones_by_hub,
            hubs,
            params,
            tracks: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            index: FxHashMap::default(),
            timers: BinaryHeap::new(),
            now: Timestamp(0),
            forget_ms,
            interval: None,
            stats: EngineStats::default(),
            margins: vec![margin::HubMargin::default(); hub_count],
        }
    }

    /// Ends, with reason `reconfigured`, every visit in a zone that `zones` (a new config) no longer
    /// has. [`Engine::reconfigure`] does this first; a caller that turns events into names calls it
    /// before, so the exits are named while their zones are still the engine's (their zone index
    /// means nothing once the new zones are in place).
    pub fn end_visits_in_dropped_zones(
        &mut self,
        zones: &[ZoneConfig],
        now: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let now = now.max(self.now);
        let kept: Vec<bool> = self
            .zones
            .iter()
            .map(|z| zones.iter().any(|n| n.id == z.id))
            .collect();
        for slot in 0..self.tracks.len() {
            let gone = self.tracks[slot]
                .as_ref()
                .and_then(|t| t.visit)
                .is_some_and(|v| !kept[v.zone as usize]);
            if gone {
                self.exit(slot as u32, now, ExitReason::Reconfigured, out);
            }
        }
    }

    /// Applies new zones and parameters (a config reload) without losing who is where: tracks,
    /// their smoothed signal and visits in zones that still exist (by id) carry over, thresholds and
    /// timeouts take effect from `now`, and a visit in a zone that is gone ends with reason
    /// `reconfigured`. Dwell marks already passed under the old marks are not sent again.
    pub fn reconfigure(
        &mut self,
        zones: &[ZoneConfig],
        params: EngineParams,
        default_hub: &str,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) {
        self.end_visits_in_dropped_zones(zones, now, out);
        let mut new = Engine::new(zones, params, default_hub);
        let hub_map: Vec<Option<HubIdx>> = self.hubs.iter().map(|h| new.hub_index(h)).collect();
        let zone_map: Vec<Option<ZoneIdx>> =
            self.zones.iter().map(|z| new.zone_index(&z.id)).collect();
        let now = now.max(self.now);
        for t in self.tracks.iter_mut().flatten() {
            t.hubs.retain_mut(|h| match hub_map[h.hub as usize] {
                Some(n) => {
                    h.hub = n;
                    true
                }
                None => false,
            });
            t.qualified
                .retain_mut(|(z, _)| match zone_map[*z as usize] {
                    Some(n) => {
                        *z = n;
                        true
                    }
                    None => false,
                });
            t.left = t
                .left
                .and_then(|(z, at)| zone_map[z as usize].map(|n| (n, at)));
            t.counted_zones.retain_mut(|z| match zone_map[*z as usize] {
                Some(n) => {
                    *z = n;
                    true
                }
                None => false,
            });
            if let Some(v) = t.visit.as_mut() {
                v.zone = zone_map[v.zone as usize].expect("visits in removed zones ended above");
                let marks = &new.zones[v.zone as usize].dwell_marks_ms;
                v.next_mark = marks
                    .iter()
                    .filter(|m| v.entered_at.0 + **m <= now.0)
                    .count();
            }
            t.scheduled = u64::MAX;
        }
        for (old, count) in self.counts.iter().enumerate() {
            if let Some(n) = zone_map[old] {
                new.counts[n as usize] = *count;
            }
        }
        // What a hub learned about its customers' sags stays with the hub.
        for (old, learned) in self.margins.iter_mut().enumerate() {
            if let Some(n) = hub_map[old] {
                new.margins[n as usize] = std::mem::take(learned);
            }
        }
        new.tracks = std::mem::take(&mut self.tracks);
        new.generations = std::mem::take(&mut self.generations);
        new.free = std::mem::take(&mut self.free);
        new.index = std::mem::take(&mut self.index);
        new.now = now;
        new.interval = self.interval;
        new.stats = self.stats;
        *self = new;
        // Deadlines depend on the new timeouts: schedule every track afresh.
        for slot in 0..self.tracks.len() {
            if self.tracks[slot].is_some() {
                self.schedule(slot as u32);
            }
        }
    }

    /// The zones, by index.
    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The engine's time: the latest observation or deadline it has handled.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The hubs, by index; hub 0 is the default hub.
    pub fn hubs(&self) -> &[String] {
        &self.hubs
    }

    /// The index of a hub by name.
    pub fn hub_index(&self, name: &str) -> Option<HubIdx> {
        self.hubs
            .iter()
            .position(|h| h == name)
            .map(|i| i as HubIdx)
    }

    /// The index of a zone by id.
    pub fn zone_index(&self, id: &str) -> Option<ZoneIdx> {
        self.zones
            .iter()
            .position(|z| z.id == id)
            .map(|i| i as ZoneIdx)
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// What each hub with zones has learned of the exit margin its customers need, in hub order:
    /// how a field engineer tells whether `adaptive_exit_margin` is at work on a hub yet.
    pub fn exit_margins(&self) -> Vec<HubExitMargin> {
        let configured = self.params.exit_margin_db;
        self.margins
            .iter()
            .enumerate()
            .filter(|(hub, _)| !self.zones_by_hub[*hub].is_empty())
            .map(|(hub, m)| {
                let learned = learned_margin(m, &self.params);
                HubExitMargin {
                    hub: self.hubs[hub].clone(),
                    visits: m.visits() as u32,
                    // To the hundredth: an f32's tail is noise in a report.
                    margin_db: (f64::from(learned.unwrap_or(configured)) * 100.0).round() / 100.0,
                    learned: learned.is_some(),
                    adaptive: self.params.adaptive_margin,
                }
            })
            .collect()
    }

    /// What each hub with zones has learned its exit margin from, for hubs that have seen a visit
    /// to learn from; [`Engine::restore_margins`] takes it back.
    pub fn margin_memory(&self) -> Vec<HubSags> {
        self.margins
            .iter()
            .enumerate()
            .filter(|(hub, m)| !self.zones_by_hub[*hub].is_empty() && m.visits() > 0)
            .map(|(hub, m)| HubSags {
                hub: self.hubs[hub].clone(),
                sags_db: m.depths().collect(),
            })
            .collect()
    }

    /// Puts back what [`Engine::margin_memory`] returned, before a restart or on another engine
    /// with the same hubs. A hub this engine has no zones for is left out (the config changed
    /// since), as are sags no visit could have produced (negative, not finite, or deeper than
    /// 100 dB: the file was edited or damaged); only the newest [`margin::WINDOW`] count.
    /// Returns how many hubs got their memory back.
    pub fn restore_margins(&mut self, saved: &[HubSags]) -> usize {
        let mut restored = 0;
        for h in saved {
            let Some(hub) = self.hub_index(&h.hub).map(usize::from) else {
                continue;
            };
            if self.zones_by_hub[hub].is_empty() {
                continue;
            }
            let sane: Vec<f32> = h
                .sags_db
                .iter()
                .copied()
                .filter(|d| d.is_finite() && (0.0..=100.0).contains(d))
                .collect();
            let mut m = margin::HubMargin::default();
            for d in &sane[sane.len().saturating_sub(margin::WINDOW)..] {
                m.record(*d);
            }
            if m.visits() > 0 {
                self.margins[hub] = m;
                restored += 1;
            }
        }
        restored
    }

    /// How many identities are tracked now, and how many of them are anonymous.
    pub fn tracked(&self) -> (usize, usize) {
        let anon = self.index.keys().filter(|i| i.is_anonymous()).count();
        (self.index.len(), anon)
    }

    /// The zone an identity is in now, if any.
    pub fn zone_of(&self, identity: &Identity) -> Option<ZoneIdx> {
        let slot = *self.index.get(identity)?;
        self.tracks[slot as usize].as_ref()?.visit.map(|v| v.zone)
    }

    /// The smoothed RSSI of an identity at a hub, if it is tracked there.
    pub fn smoothed_rssi(&self, identity: &Identity, hub: HubIdx) -> Option<f32> {
        let slot = *self.index.get(identity)?;
        let t = self.tracks[slot as usize].as_ref()?;
        t.hub(hub).map(|h| h.smoother.value())
    }

    /// Estimated distance (m) for a smoothed RSSI in a zone, using the advertised power if known.
    pub fn distance_m(&self, zone: ZoneIdx, rssi: f32, advertised_power: Option<i8>) -> f32 {
        let z = &self.zones[zone as usize];
        let power = advertised_power
            .map(f32::from)
            .or(z.measured_power)
            .unwrap_or(self.params.measured_power);
        distance_m(power, rssi, z.exponent)
    }

    /// The next time the engine must be woken, if any.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let timer = self.timers.peek().map(|Reverse((d, _, _))| *d);
        let tick = self
            .interval
            .map(|i| (i + 1) * self.params.headcount_interval_ms);
        match (timer, tick) {
            (Some(a), Some(b)) => Some(Timestamp(a.min(b))),
            (a, b) => a.or(b).map(Timestamp),
        }
    }

    /// Handles every deadline up to and including `now`, in time order.
    pub fn handle_timeout(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        loop {
            let timer = self.timers.peek().map(|Reverse((d, _, _))| *d);
            let tick = self
                .interval
                .map(|i| (i + 1) * self.params.headcount_interval_ms);
            let next = match (timer, tick) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > now.0 {
                break;
            }
            if tick == Some(next) && timer.is_none_or(|t| t >= next) {
                self.headcount_tick(Timestamp(next), now, out);
                continue;
            }
            let Some(Reverse((deadline, slot, gen))) = self.timers.pop() else {
                break;
            };
            self.now = self.now.max(Timestamp(deadline));
            if self.generations[slot as usize] != gen {
                continue;
            }
            self.on_deadline(slot, Timestamp(deadline), out);
        }
        self.now = self.now.max(now);
    }

    /// Handles one observation at `now`. Deadlines up to `now` are handled first, so a timeout that
    /// falls exactly on `now` fires before the observation is applied.
    pub fn handle_observation(&mut self, now: Timestamp, obs: Observation, out: &mut Vec<Event>) {
        self.stats.observations += 1;
        if now < self.now {
            // Out of order (a source batching adverts): apply it at the engine's time so no duration
            // goes negative and no deadline moves back.
            self.stats.late_observations += 1;
        }
        self.handle_timeout(now, out);
        let now = self.now;
        if self.interval.is_none() {
            self.interval = Some(now.0 / self.params.headcount_interval_ms);
        }
        if obs.hub as usize >= self.hubs.len() {
            return;
        }
        let slot = match self.index.get(&obs.identity) {
            Some(&s) => s,
            None => self.insert(obs.identity, now, out),
        };
        let params = self.params.filter;
        let track = self.tracks[slot as usize]
            .as_mut()
            .expect("indexed slots hold a track");
        track.last_heard = now;
        if obs.measured_power.is_some() {
            track.measured_power = obs.measured_power;
        }
        let rssi = obs.rssi as f32;
        let stale_after = self.zones_by_hub[obs.hub as usize]
            .iter()
            .map(|&z| self.zones[z as usize].absence_ms)
            .max()
            .unwrap_or(self.forget_ms);
        let fresh_start = match track.hubs.iter_mut().find(|h| h.hub == obs.hub) {
            Some(h) => {
                let gap = now.since(h.last_heard);
                if gap >= stale_after {
                    // Silent for longer than the zone's absence timeout: start over rather than
                    // blend a value from a visit that already ended.
                    h.smoother = Smoother::new(&params, rssi);
                    h.forget_gaps();
                } else {
                    h.smoother.update(&params, gap as f32 / 1000.0, rssi);
                    h.learn_gap(gap);
                }
                h.last_heard = now;
                gap >= stale_after
            }
            None => {
                track
                    .hubs
                    .push(HubState::new(obs.hub, Smoother::new(&params, rssi), now));
                true
            }
        };
        self.evaluate(slot, obs.hub, fresh_start, now, out);
    }

    /// Forgets an identity at once, without any event (opt-out: nothing more about them may leave).
    pub fn forget(&mut self, identity: &Identity) -> bool {
        match self.index.remove(identity) {
            Some(slot) => {
                self.release(slot);
                true
            }
            None => false,
        }
    }

    fn insert(&mut self, identity: Identity, now: Timestamp, out: &mut Vec<Event>) -> u32 {
        if self.index.len() >= self.params.max_tracked {
            self.evict(now, out);
        }
        let track = Track {
            identity,
            hubs: SmallVec::new(),
            qualified: SmallVec::new(),
            visit: None,
            last_heard: now,
            measured_power: None,
            scheduled: u64::MAX,
            counted_interval: u64::MAX,
            counted_zones: SmallVec::new(),
            left: None,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.tracks[s as usize] = Some(track);
                s
            }
            None => {
                self.tracks.push(Some(track));
                self.generations.push(0);
                (self.tracks.len() - 1) as u32
            }
        };
        self.index.insert(identity, slot);
        slot
    }

    fn release(&mut self, slot: u32) {
        self.tracks[slot as usize] = None;
        // A new generation invalidates the timers the old track left in the heap.
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        self.free.push(slot);
    }

    /// Frees a batch of the longest-silent tracks, anonymous ones first, so eviction costs O(1)
    /// amortised per insert.
    fn evict(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        let batch = (self.params.max_tracked / 64).max(1);
        let mut anon: Vec<(Timestamp, u32)> = Vec::new();
        let mut known: Vec<(Timestamp, u32)> = Vec::new();
        for (slot, t) in self.tracks.iter().enumerate() {
            if let Some(t) = t {
                let entry = (t.last_heard, slot as u32);
                if t.identity.is_anonymous() {
                    anon.push(entry);
                } else {
                    known.push(entry);
                }
            }
        }
        let mut victims = Vec::with_capacity(batch);
        for pool in [&mut anon, &mut known] {
            let need = batch - victims.len();
            if need == 0 {
                break;
            }
            if pool.len() > need {
                pool.select_nth_unstable(need);
                pool.truncate(need);
            }
            victims.extend(pool.iter().map(|&(_, s)| s));
        }
        for slot in victims {
            if self.tracks[slot as usize]
                .as_ref()
                .is_some_and(|t| t.visit.is_some())
            {
                self.exit(slot, now, ExitReason::Evicted, out);
            }
            let identity = self.tracks[slot as usize]
                .as_ref()
                .map(|t| t.identity)
                .expect("victims are live tracks");
            self.index.remove(&identity);
            self.release(slot);
            self.stats.evictions += 1;
        }
    }

    fn evaluate(
        &mut self,
        slot: u32,
        heard_on: HubIdx,
        fresh_start: bool,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let params = self.params;
        let track = self.tracks[slot as usize].as_mut().expect("live track");
        let value = track
            .hub(heard_on)
            .map(|h| h.smoother.value())
            .unwrap_or(f32::MIN);
        if fresh_start {
            track.left = None;
        }
        // Update which zones of this hub the signal stays above.
        for &z in &self.zones_by_hub[heard_on as usize] {
            let mut above = value >= self.zones[z as usize].enter_rssi;
            if let Some((left_zone, left_at)) = track.left {
                // A departure taken early, while the signal was still above `enter_rssi`, must not
                // qualify the zone again while the signal keeps falling on the way out: that would
                // re-enter the customer a second later and exit them again (a flap at every such
                // departure). Someone who turns back raises the signal above where it was.
                if left_zone == z {
                    if !above || value > left_at {
                        track.left = None;
                    } else {
                        above = false;
                    }
                }
            }
            let pos = track.qualified.iter().position(|(q, _)| *q == z);
            match (above, pos) {
                (true, None) => track.qualified.push((z, now)),
                (true, Some(i)) if fresh_start => track.qualified[i].1 = now,
                (false, Some(i)) => {
                    track.qualified.swap_remove(i);
                }
                _ => {}
            }
        }
        // Leave the current zone when its own hub's signal falls below the exit threshold.
        let visit_here = track
            .visit
            .filter(|v| self.zones[v.zone as usize].hub == heard_on);
        if let Some(v) = visit_here {
            // Only asked of the visit's own hub, so most observations skip the look at the others.
            let trend = track.hub(heard_on).map_or(0.0, |h| h.smoother.trend());
            let approaching = track
                .hubs
                .iter()
                .any(|h| h.hub != heard_on && h.approached_by(now));
            let zone = &self.zones[v.zone as usize];
            let v = track.visit.as_mut().expect("checked above");
            let margin = learned_margin(&self.margins[zone.hub as usize], &params)
                .unwrap_or(params.exit_margin_db);
            let threshold = narrowed_for_walker(
                exit_threshold(zone, v, value, now, margin, params.hysteresis),
                zone.enter_rssi,
                margin,
                params.exit_margin_db,
                approaching,
                trend,
                now.since(v.entered_at),
            );
            if params.hysteresis {
                v.sag.note(now, value - v.level);
            }
            if leaves(value, trend, threshold, approaching, params.hysteresis) {
                track.left = Some((v.zone, value));
                self.exit(slot, now, ExitReason::Signal, out);
            }
        }
        let track = self.tracks[slot as usize].as_ref().expect("live track");
        // The strongest zone that has qualified long enough, on a hub that still hears the device.
        let mut best: Option<(ZoneIdx, f32, Timestamp)> = None;
        for &(z, since) in &track.qualified {
            let zone = &self.zones[z as usize];
            let Some(h) = track.hub(zone.hub) else {
                continue;
            };
            if now.since(since) < zone.min_enter_ms
                || now.since(h.last_heard) >= self.absence_ms(zone, Some(h))
            {
                continue;
            }
            let v = h.smoother.value();
            let better = match best {
                None => true,
                Some((b, bv, _)) => {
                    v > bv || (v == bv && zone.enter_rssi > self.zones[b as usize].enter_rssi)
                }
            };
            if better {
                best = Some((z, v, since));
            }
        }
        if let Some((b, bv, since)) = best {
            match track.visit {
                None => self.enter(slot, b, since, now, out),
                Some(v) if v.zone != b => {
                    let cur = &self.zones[v.zone as usize];
                    let cand = &self.zones[b as usize];
                    let cur_v = track
                        .hub(cur.hub)
                        .map(|h| h.smoother.value())
                        .unwrap_or(f32::MIN);
                    let switch = if cur.hub == cand.hub {
                        cand.enter_rssi > cur.enter_rssi
                    } else {
                        let margin =
                            switch_margin(track.hub(cur.hub), track.hub(cand.hub), now, &params);
                        bv >= cur_v + margin
                    };
                    if switch {
                        self.exit(slot, now, ExitReason::Moved, out);
                        self.enter(slot, b, since, now, out);
                    }
                }
                Some(_) => {}
            }
        }
        self.schedule(slot);
    }

    fn enter(
        &mut self,
        slot: u32,
        zone: ZoneIdx,
        since: Timestamp,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let track = self.tracks[slot as usize].as_mut().expect("live track");
        track.visit = Some(Visit {
            zone,
            entered_at: now,
            first_seen: since,
            next_mark: 0,
            level: f32::NAN,
            level_at: now,
            sag: margin::SagMeter::new(now),
        });
        let interval = self.interval.unwrap_or(0);
        count_in(track, zone, interval, &mut self.counts);
        self.emit(slot, VisitKind::Enter, now, since, now, out);
    }

    fn exit(&mut self, slot: u32, now: Timestamp, reason: ExitReason, out: &mut Vec<Event>) {
        let track = self.tracks[slot as usize].as_mut().expect("live track");
        let Some(v) = track.visit else {
            return;
        };
        let last_seen = track
            .hub(self.zones[v.zone as usize].hub)
            .map_or(track.last_heard, |h| h.last_heard);
        let kind = VisitKind::Exit {
            duration_s: now.secs_since(v.entered_at),
            reason,
        };
        self.emit(slot, kind, now, v.first_seen, last_seen, out);
        let track = self.tracks[slot as usize].as_mut().expect("live track");
        // Learn from visits of known subjects that ended the way visits end, long enough to have
        // stood: anonymous phones advertise to another rhythm than the fobs and apps the margin
        // serves, and an eviction or a reload says nothing about the signal.
        let learns = self.params.adaptive_margin
            && !matches!(track.identity, Identity::Anonymous(_))
            && matches!(
                reason,
                ExitReason::Signal | ExitReason::Absence | ExitReason::Moved
            )
            && now.since(v.entered_at) >= margin::MIN_VISIT_MS;
        if let (true, Some(depth)) = (learns, v.sag.standing_depth()) {
            self.margins[self.zones[v.zone as usize].hub as usize].record(depth);
        }
        track.visit = None;
        // Re-entering needs a fresh sustained qualification.
        track.qualified.retain(|(z, _)| *z != v.zone);
    }

    fn emit(
        &self,
        slot: u32,
        kind: VisitKind,
        at: Timestamp,
        first_seen: Timestamp,
        last_seen: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let track = self.tracks[slot as usize].as_ref().expect("live track");
        let subject = match track.identity {
            Identity::Customer(c) => Subject::Customer(c),
            Identity::Tag(t) => Subject::Tag(t),
            Identity::Anonymous(_) => return,
        };
        let Some(v) = track.visit else {
            return;
        };
        let zone = &self.zones[v.zone as usize];
        let rssi = track.hub(zone.hub).map_or(f32::NAN, |h| h.smoother.value());
        out.push(Event::Visit(VisitEvent {
            kind,
            subject,
            zone: v.zone,
            at,
            entered_at: v.entered_at,
            rssi,
            distance_m: self.distance_m(v.zone, rssi, track.measured_power),
            first_seen,
            last_seen,
        }));
    }

    /// How long `zone`'s hub may go without hearing a device (whose state on that hub is `h`)
    /// before it is taken to be gone: the absence timeout, or sooner when the silence is many times
    /// the device's usual gap between adverts — a device heard every 400 ms that has not been heard
    /// for 4 s has left (or been switched off) far more likely than lost 10 adverts in a row.
    fn absence_ms(&self, zone: &Zone, h: Option<&HubState>) -> u64 {
        let k = self.params.silence_gaps;
        match h {
            // Derived here, not stored, so a reload that changes `silence_gaps` applies at once.
            Some(h) if k > 0.0 && h.gaps >= SILENCE_MIN_GAPS => {
                // Never later than the timeout, even one set below the 3 s floor.
                h.silence_ms(k).max(SILENCE_MIN_MS).min(zone.absence_ms)
            }
            _ => zone.absence_ms,
        }
    }

    /// When a device in a visit of `zone` is taken to be gone: [`Engine::absence_ms`] after the
    /// zone's hub last heard it, or sooner once no hub at all has heard it for half as many of its
    /// gaps (at least [`GONE_EVERYWHERE_MIN_MS`]) while another hub heard it lately: a shopper who
    /// walks out of the door falls silent on every hub at once, which losing adverts to the radio on
    /// several hubs together hardly ever does.
    fn gone_at(&self, track: &Track, zone: &Zone) -> u64 {
        let h = track.hub(zone.hub);
        let heard = h.map_or(track.last_heard, |h| h.last_heard);
        let own = heard.0 + self.absence_ms(zone, h);
        let k = self.params.silence_gaps / 2.0;
        match h {
            Some(h) if k > 0.0 && h.gaps >= SILENCE_MIN_GAPS => {
                // Another hub must have heard it around the zone's hub's last advert; one hub alone
                // keeps the per-hub rule and its longer floor.
                let others = track
                    .hubs
                    .iter()
                    .any(|o| o.hub != zone.hub && heard.since(o.last_heard) < RECENT_MS);
                if !others {
                    return own;
                }
                let silence = h.silence_ms(k).max(GONE_EVERYWHERE_MIN_MS);
                own.min(track.last_heard.0 + silence)
            }
            _ => own,
        }
    }

    /// The next deadline of a track: absence or dwell mark during a visit, forgetting otherwise.
    fn next_deadline(&self, track: &Track) -> u64 {
        match track.visit {
            Some(v) => {
                let zone = &self.zones[v.zone as usize];
                let absence = self.gone_at(track, zone);
                let mark = zone
                    .dwell_marks_ms
                    .get(v.next_mark)
                    .map_or(u64::MAX, |m| v.entered_at.0 + m);
                absence.min(mark)
            }
            None => track.last_heard.0 + self.forget_ms,
        }
    }

    fn schedule(&mut self, slot: u32) {
        let track = self.tracks[slot as usize].as_ref().expect("live track");
        let next = self.next_deadline(track);
        if next < track.scheduled {
            self.timers
                .push(Reverse((next, slot, self.generations[slot as usize])));
            self.tracks[slot as usize]
                .as_mut()
                .expect("live track")
                .scheduled = next;
        }
    }

    fn on_deadline(&mut self, slot: u32, at: Timestamp, out: &mut Vec<Event>) {
        let track = self.tracks[slot as usize].as_mut().expect("live track");
        if at.0 >= track.scheduled {
            track.scheduled = u64::MAX;
        }
        // Dwell marks first: a mark reached before the absence deadline still counts.
        while let Some(v) = self.tracks[slot as usize].as_ref().and_then(|t| t.visit) {
            let zone = &self.zones[v.zone as usize];
            let Some(&mark) = zone.dwell_marks_ms.get(v.next_mark) else {
                break;
            };
            let (heard, gone) = {
                let t = self.tracks[slot as usize].as_ref().expect("live track");
                let h = t.hub(zone.hub);
                (
                    h.map_or(t.last_heard, |h| h.last_heard),
                    self.gone_at(t, zone),
                )
            };
            let mark_at = v.entered_at.0 + mark;
            if mark_at > at.0 || mark_at > gone {
                break;
            }
            let track = self.tracks[slot as usize].as_mut().expect("live track");
            if let Some(v) = track.visit.as_mut() {
                v.next_mark += 1;
            }
            let last = heard;
            self.emit(
                slot,
                VisitKind::Dwell {
                    mark_s: mark / 1000,
                },
                Timestamp(mark_at),
                v.first_seen,
                last,
                out,
            );
        }
        let track = self.tracks[slot as usize].as_ref().expect("live track");
        if let Some(v) = track.visit {
            let zone = &self.zones[v.zone as usize];
            let absence_at = self.gone_at(track, zone);
            if absence_at <= at.0 {
                self.exit(slot, Timestamp(absence_at), ExitReason::Absence, out);
            }
        }
        let track = self.tracks[slot as usize].as_ref().expect("live track");
        if track.visit.is_none() && track.last_heard.0 + self.forget_ms <= at.0 {
            let identity = track.identity;
            self.index.remove(&identity);
            self.release(slot);
            self.stats.expired += 1;
            return;
        }
        self.schedule(slot);
    }

    fn headcount_tick(&mut self, end: Timestamp, now: Timestamp, out: &mut Vec<Event>) {
        let ms = self.params.headcount_interval_ms;
        let start = Timestamp(end.0 - ms);
        let zones = std::mem::replace(
            &mut self.counts,
            vec![ZoneCount::default(); self.zones.len()],
        );
        out.push(Event::Headcount(Headcount { start, end, zones }));
        // After a gap of hours, skip the empty intervals rather than emit one per minute missed.
        let next = if now.0 >= end.0 + ms {
            now.0 / ms
        } else {
            end.0 / ms
        };
        self.interval = Some(next);
        for t in self.tracks.iter_mut().flatten() {
            if let Some(v) = t.visit {
                count_in(t, v.zone, next, &mut self.counts);
            }
        }
    }
}

/// Another hub hearing the device within this long counts as hearing it now, ms.
const RECENT_MS: u64 = 2_000;
/// The shortest silence taken as a departure before the absence timeout, ms.
pub const SILENCE_MIN_MS: u64 = 3_000;
/// The shortest silence on every hub taken as a departure, ms.
pub const GONE_EVERYWHERE_MIN_MS: u64 = 1_500;
/// A device that has once been silent for a while may do it again (a phone's advertising paused by
/// its OS): a silence counts as a departure only past this many times the longest recent one.
const SILENCE_LONGEST_FACTOR: f32 = 2.0;
/// How fast the longest recent gap is forgotten, ms (its time constant).
const LONGEST_GAP_TAU_MS: f32 = 60_000.0;
/// Gaps a hub must have measured before its silences are judged by them.
const SILENCE_MIN_GAPS: u16 = 8;
/// Weight of a new gap in the average once `SILENCE_MIN_GAPS` are in: slow enough that one long
/// silence does not teach the engine to wait for the next one.
const GAP_ALPHA: f32 = 0.05;
/// Another hub's smoothed signal rising at least this fast, dB/s, says the device is walking toward
/// it: about what a walker 10–15 m from a hub produces under path-loss exponents of 2–2.5.
const APPROACH_DB_PER_S: f32 = 1.0;
/// How far ahead a corroborated departure is anticipated along the signal's trend, s.
const ANTICIPATE_S: f32 = 2.0;
/// How much further below the exit threshold a drop nothing corroborates must go, dB.
const UNCORROBORATED_DB: f32 = 0.75;
/// How far below `enter_rssi` a walker's visit ends on a hub that learned its customers sag less
/// than `exit_margin_db`, dB ([`narrowed_for_walker`]).
const WALKER_BAND_DB: f32 = 2.0;

/// Whether a visit whose hub now reads `value` (moving at `trend` dB/s) ends at `threshold`.
///
/// A smoothed signal lags someone walking out by a second or more, while a standing customer's
/// signal also sags now and then (slow shadowing as people and trolleys move around them). What
/// tells the two apart is that walking changes every hub's signal at once: when another hub hears the
/// device coming closer, the drop is a departure and the exit is taken where the falling trend will be
/// [`ANTICIPATE_S`] from now; when nothing corroborates it, the drop must go [`UNCORROBORATED_DB`]
/// further. Without hysteresis (the naive baseline) the threshold is taken as it is.
fn leaves(value: f32, trend: f32, threshold: f32, approaching: bool, hysteresis: bool) -> bool {
    if !hysteresis {
        value < threshold
    } else if approaching {
        value + trend.min(0.0) * ANTICIPATE_S < threshold
    } else {
        value < threshold - UNCORROBORATED_DB
    }
}

/// The exit margin hub `m` has learned, when the engine learns (`adaptive_exit_margin`) and the hub
/// has seen enough visits; otherwise visits use `exit_margin_db`. The one place that says which,
/// for the exit rule and for what `beacond status` reports alike.
fn learned_margin(m: &margin::HubMargin, params: &EngineParams) -> Option<f32> {
    params
        .adaptive_margin
        .then(|| m.learned(params.exit_margin_db))
        .flatten()
}

/// The exit `threshold` of a visit `in_visit_ms` old, narrowed for a walker.
///
/// A `margin` learned below the `configured` one says this hub's standing customers sag little,
/// so a drop that looks like a walk on every count is one (another hub hears the device coming
/// closer, the zone's own signal falls by [`APPROACH_DB_PER_S`]): the band narrows to
/// [`WALKER_BAND_DB`] under `enter_rssi`. Not before [`margin::MIN_VISIT_MS`], while a customer
/// who just came in may still be walking to their spot: without that, twelve hours of the
/// supermarket flap over the product's bar (docs/presence.md). The baseline, without the learned
/// margin, never narrows.
fn narrowed_for_walker(
    threshold: f32,
    enter_rssi: f32,
    margin: f32,
    configured: f32,
    approaching: bool,
    trend: f32,
    in_visit_ms: u64,
) -> f32 {
    let walking_out = margin < configured
        && approaching
        && trend <= -APPROACH_DB_PER_S
        && in_visit_ms >= margin::MIN_VISIT_MS;
    if walking_out {
        threshold.max(enter_rssi - WALKER_BAND_DB)
    } else {
        threshold
    }
}

/// The lead a zone on hub `cand` needs over the visit's zone on hub `cur` to take the visit.
///
/// Walking from one zone to the next moves both signals at once, the one left behind falling and
/// the one ahead rising; a customer standing near a boundary sees the two drift apart slowly and
/// at random (shadowing as people and trolleys move). So, as for departures (see [`leaves`]), a
/// switch that either trend corroborates takes `switch_margin_db`, and one that nothing
/// corroborates needs twice that. Filters that keep no trend cannot tell the two apart, so with
/// them the configured margin applies as it is.
fn switch_margin(
    cur: Option<&HubState>,
    cand: Option<&HubState>,
    now: Timestamp,
    params: &EngineParams,
) -> f32 {
    let margin = params.switch_margin_db;
    let (Some(cur), Some(cand)) = (cur, cand) else {
        return margin;
    };
    if !params.hysteresis || !cur.smoother.has_trend() {
        return margin;
    }
    let leaving = cur.smoother.trend() <= -APPROACH_DB_PER_S;
    if leaving || cand.approached_by(now) {
        margin
    } else {
        2.0 * margin
    }
}

/// Time constant of a visit's settled level, ms.
const LEVEL_TAU_MS: f32 = 10_000.0;

/// The exit threshold of a visit, after folding `value` into its settled level.
///
/// Hysteresis is there to stop flapping, and what protects a visit from flapping is the distance
/// between where its signal actually sits and the threshold. So a visit exits when the signal falls
/// `exit_margin_db` below its settled level: a customer standing under the hub, 15 dB above
/// `enter_rssi`, leaves as soon as they cross `enter_rssi` (no lag walking out through the hysteresis
/// band), while one who barely got in (a fob in a pocket) keeps the hysteresis down to `exit_rssi`.
/// The threshold never rises above `enter_rssi` nor falls below `exit_rssi`.
fn exit_threshold(
    zone: &Zone,
    v: &mut Visit,
    value: f32,
    now: Timestamp,
    margin: f32,
    hysteresis: bool,
) -> f32 {
    if !hysteresis {
        return zone.exit_rssi;
    }
    if v.level.is_nan() {
        v.level = value;
    } else {
        let a = 1.0 - (-(now.since(v.level_at) as f32) / LEVEL_TAU_MS).exp();
        v.level += a * (value - v.level);
    }
    v.level_at = now;
    (v.level - margin).clamp(zone.exit_rssi, zone.enter_rssi)
}

fn count_in(track: &mut Track, zone: ZoneIdx, interval: u64, counts: &mut [ZoneCount]) {
    if track.counted_interval != interval {
        track.counted_interval = interval;
        track.counted_zones.clear();
    }
    if track.counted_zones.contains(&zone) {
        return;
    }
    track.counted_zones.push(zone);
    let c = &mut counts[zone as usize];
    if track.identity.is_anonymous() {
        c.anonymous += 1;
    } else {
        c.known += 1;
    }
}

/// Log-distance path loss: `d = 10^((P1m − RSSI) / (10·n))`, in metres.
pub fn distance_m(power_1m: f32, rssi: f32, exponent: f32) -> f32 {
    10f32.powf((power_1m - rssi) / (10.0 * exponent))
}

#[cfg(test)]
mod tests;
