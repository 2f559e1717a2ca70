//! The exit margin a hub's own customers call for, learned from how far their signals sag while
//! they stand still.
//!
//! A visit ends `exit_margin_db` below the level its signal settled at. That margin is there so a
//! customer standing still does not flap when slow shadowing (people and trolleys moving around
//! them) pulls their signal down for a while; every dB more than the store needs is a metre more
//! that a customer walks past the zone's edge before the visit ends. How deep those sags go differs
//! from store to store, and from hub to hub: 1.5 dB of shadowing and 4 dB need margins 3 dB apart
//! (docs/presence.md, "An exit margin learned from the store"). So each hub keeps, for its last
//! [`WINDOW`] visits of known customers, the deepest the smoothed signal fell below its settled
//! level while the customer stood, leaving out the last [`WAY_OUT_S`] seconds of the visit (the
//! way out), and asks for the [`QUANTILE`] of those sags plus [`PAD_DB`], never more than the
//! configured `exit_margin_db` and never less than [`FLOOR_DB`]. A hub that has seen too few visits
//! uses `exit_margin_db`.

use std::collections::VecDeque;

use crate::time::Timestamp;

/// Seconds before a visit's end whose sags are not counted: the customer walking out, not standing.
pub const WAY_OUT_S: u64 = 10;
/// Visits shorter than this, ms, tell too little about standing still to count.
pub const MIN_VISIT_MS: u64 = 30_000;
/// How many recent visits a hub remembers.
pub const WINDOW: usize = 64;
/// How many it needs before it trusts what it learned.
pub const MIN_VISITS: usize = 20;
/// The share of remembered visits whose deepest sag the margin must clear.
pub const QUANTILE: f32 = 0.95;
/// dB above that sag.
pub const PAD_DB: f32 = 1.5;
/// The smallest margin, dB, however quiet the store.
pub const FLOOR_DB: f32 = 4.0;

/// Seconds of per-second minima a visit keeps before they count: one more than [`WAY_OUT_S`].
const RING: usize = WAY_OUT_S as usize + 1;

/// How far one visit's signal has sagged below its settled level, not counting the last
/// [`WAY_OUT_S`] seconds.
#[derive(Clone, Copy, Debug)]
pub struct SagMeter {
    /// The deepest sag (dB below the level, negative) in each of the last [`RING`] seconds.
    recent: [f32; RING],
    /// The second the newest entry of `recent` stands for.
    second: u64,
    /// The deepest sag older than that.
    counted: f32,
}

impl SagMeter {
    /// A meter for a visit entered at `now`.
    pub fn new(now: Timestamp) -> SagMeter {
        SagMeter {
            recent: [f32::INFINITY; RING],
            second: now.0 / 1000,
            counted: f32::INFINITY,
        }
    }

    /// The signal stood `sag` dB from the settled level at `now` (negative: below it).
    pub fn note(&mut self, now: Timestamp, sag: f32) {
        let second = (now.0 / 1000).max(self.second);
        // Seconds that leave the window are counted; after a long gap, all of them at once.
        let steps = (second - self.second).min(RING as u64);
        for s in 1..=steps {
            let slot = ((self.second + s) % RING as u64) as usize;
            self.counted = self.counted.min(self.recent[slot]);
            self.recent[slot] = f32::INFINITY;
        }
        self.second = second;
        let slot = (second % RING as u64) as usize;
        self.recent[slot] = self.recent[slot].min(sag);
    }

    /// The deepest sag, dB below the level (positive), before the last [`WAY_OUT_S`] seconds; none
    /// when no signal was noted that long ago.
    pub fn standing_depth(&self) -> Option<f32> {
        self.counted.is_finite().then_some(-self.counted)
    }
}

/// What one hub has learned about its customers' sags.
#[derive(Clone, Debug, Default)]
pub struct HubMargin {
    depths: VecDeque<f32>,
    /// The [`QUANTILE`] of `depths`, once there are [`MIN_VISITS`] of them.
    quantile: Option<f32>,
}

impl HubMargin {
    /// Remembers one finished visit's deepest standing sag, dB.
    pub fn record(&mut self, depth: f32) {
        if self.depths.len() == WINDOW {
            self.depths.pop_front();
        }
        self.depths.push_back(depth);
        if self.depths.len() >= MIN_VISITS {
            let mut sorted: Vec<f32> = self.depths.iter().copied().collect();
            sorted.sort_by(f32::total_cmp);
            let i = ((sorted.len() as f32 * QUANTILE) as usize).min(sorted.len() - 1);
            self.quantile = Some(sorted[i]);
        }
    }

    /// The margin learned from the visits remembered, once there are [`MIN_VISITS`] of them, with
    /// the configured `exit_margin_db` as the most.
    pub fn learned(&self, configured: f32) -> Option<f32> {
        self.quantile
            .map(|q| (q + PAD_DB).clamp(FLOOR_DB.min(configured), configured))
    }

    /// How many visits the hub remembers (at most [`WINDOW`]).
    pub fn visits(&self) -> usize {
        self.depths.len()
    }

    /// The deepest standing sag of each visit remembered, dB, oldest first: what
    /// [`HubMargin::record`] was given, so recording them again restores what was learned.
    pub fn depths(&self) -> impl Iterator<Item = f32> + '_ {
        self.depths.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000;

    /// The margin `h`'s visits exit at: learned, or `configured` until then.
    fn margin(h: &HubMargin, configured: f32) -> f32 {
        h.learned(configured).unwrap_or(configured)
    }

    fn at(s: f64) -> Timestamp {
        Timestamp(T + (s * 1000.0) as u64)
    }

    #[test]
    fn sags_count_only_once_they_are_older_than_the_way_out() {
        let mut m = SagMeter::new(at(0.0));
        for i in 0..200 {
            m.note(at(i as f64 * 0.2), -1.0);
        }
        m.note(at(40.0), -3.0);
        // 40 s in: the -3 dB sag is the last thing heard, possibly the walk out.
        m.note(at(40.2), -1.0);
        assert_eq!(m.standing_depth(), Some(1.0));
        for i in 0..(WAY_OUT_S * 5 + 5) {
            m.note(at(40.4 + i as f64 * 0.2), -1.0);
        }
        // The customer stayed: more than WAY_OUT_S later it was a sag while standing.
        assert_eq!(m.standing_depth(), Some(3.0));
        // A deeper fall in the last seconds, as a visit ends, does not count.
        m.note(at(60.0), -9.0);
        m.note(at(61.0), -12.0);
        assert_eq!(m.standing_depth(), Some(3.0));
    }

    #[test]
    fn a_long_gap_counts_everything_before_it() {
        let mut m = SagMeter::new(at(0.0));
        m.note(at(1.0), -2.0);
        m.note(at(2.0), -4.0);
        assert_eq!(m.standing_depth(), None, "too recent");
        m.note(at(3_600.0), 0.0);
        assert_eq!(m.standing_depth(), Some(4.0));
        // A clock that went back is treated as the same second.
        m.note(at(3_000.0), -5.0);
        assert_eq!(m.standing_depth(), Some(4.0));
    }

    #[test]
    fn a_hub_uses_the_configured_margin_until_it_has_seen_enough_visits() {
        let mut h = HubMargin::default();
        for _ in 0..MIN_VISITS - 1 {
            h.record(3.0);
        }
        assert_eq!(margin(&h, 8.0), 8.0);
        h.record(3.0);
        assert_eq!(margin(&h, 8.0), 3.0 + PAD_DB);
    }

    #[test]
    fn the_margin_clears_nearly_every_sag_within_its_bounds() {
        let mut h = HubMargin::default();
        // 60 quiet visits and then 4 that sagged 6 dB: once the deep ones are more than 5 % of
        // the window, the margin must clear them.
        for _ in 0..60 {
            h.record(2.0);
        }
        assert_eq!(margin(&h, 8.0), FLOOR_DB, "2 + 1.5 is below the floor");
        for _ in 0..4 {
            h.record(6.0);
        }
        assert_eq!(margin(&h, 8.0), 6.0 + PAD_DB);
        // Never more than configured, and the floor gives way to a smaller configured margin.
        for _ in 0..WINDOW {
            h.record(12.0);
        }
        assert_eq!(margin(&h, 8.0), 8.0);
        assert_eq!(margin(&h, 10.0), 10.0);
        let mut quiet = HubMargin::default();
        for _ in 0..WINDOW {
            quiet.record(0.5);
        }
        assert_eq!(margin(&quiet, 3.0), 3.0);
        // The window forgets: after 64 quiet visits the deep ones are gone.
        for _ in 0..WINDOW {
            h.record(2.0);
        }
        assert_eq!(margin(&h, 8.0), FLOOR_DB);
    }
}
