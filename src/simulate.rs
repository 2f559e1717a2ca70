//! `beacond simulate`: the real pipeline on a scenario with a simulated clock, scored against the
//! simulator's ground truth, next to a naive baseline (raw RSSI against the same thresholds, no
//! smoothing, no hysteresis).
//!
//! Metric definitions (over customers who carry a registered fob; anonymous devices have no events):
//! - `zone_accuracy`: share of customer-seconds in the store where the engine's zone (or none) equals
//!   the true zone (or none);
//! - a *truth visit* is a stay in one zone of at least `min_truth_visit_s`; shorter stays are transit;
//! - an engine visit *touches* a truth visit when it has the same customer and zone, starts no later
//!   than the truth visit ends and ends no earlier than 5 s before it starts; it *detects* it when it
//!   also overlaps it by at least 10 s (or half the truth visit, if that is shorter) — a zone reported
//!   in flickers is not a detection;
//! - `enter_latency`: |first detecting enter − true arrival|; `exit_latency`: |last detecting exit −
//!   true departure|, for visits that ended more than a minute before the end of the run. Absolute:
//!   entering before the customer arrives or leaving before they leave is as wrong as being late;
//! - `missed_visits`: truth visits with no detecting engine visit;
//! - `false_enters`: engine visits that overlap (±5 s) no true stay in that zone, transit included;
//! - `flaps_per_customer_hour`: touching engine visits beyond the first per truth visit (an exit and a
//!   re-enter while the customer stayed), per hour of customer time in the store.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::Serialize;

use crate::config::SmoothingFilter;
use crate::identity::CustomerKey;
use crate::pipeline::Core;
use crate::presence::filter::FilterParams;
use crate::presence::{Engine, EngineParams, Event, Subject, VisitKind};
use crate::scan::sim::{Scenario, Simulation, SIM_EPOCH_MS};

/// Slack when matching engine visits to true stays, ms.
const SLACK_MS: u64 = 5_000;
/// How long an engine visit must overlap a truth visit (or half of it, if shorter) to detect it, ms.
const HOLD_MS: u64 = 10_000;

/// The scores of one engine configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Share of customer-seconds attributed to the right zone or correctly to none.
    pub zone_accuracy: f64,
    /// Median enter latency, s.
    pub enter_latency_p50_s: f64,
    /// 95th percentile enter latency, s.
    pub enter_latency_p95_s: f64,
    /// Median exit latency, s.
    pub exit_latency_p50_s: f64,
    /// 95th percentile exit latency, s.
    pub exit_latency_p95_s: f64,
    /// Engine visits matching no true stay.
    pub false_enters: u64,
    /// Truth visits the engine never detected.
    pub missed_visits: u64,
    /// Extra visits per truth visit, per customer-hour.
    pub flaps_per_customer_hour: f64,
    /// Truth visits scored.
    pub truth_visits: u64,
    /// Visits the engine reported.
    pub engine_visits: u64,
}

impl Metrics {
    /// The metrics that score, each with whether higher is better. The one place that says which
    /// way each metric points, for the table and for the tests that compare with the baseline.
    fn scored(&self) -> [(&'static str, f64, bool); 8] {
        [
            ("zone_accuracy", self.zone_accuracy, true),
            ("enter_latency_p50_s", self.enter_latency_p50_s, false),
            ("enter_latency_p95_s", self.enter_latency_p95_s, false),
            ("exit_latency_p50_s", self.exit_latency_p50_s, false),
            ("exit_latency_p95_s", self.exit_latency_p95_s, false),
            ("false_enters", self.false_enters as f64, false),
            ("missed_visits", self.missed_visits as f64, false),
            (
                "flaps_per_customer_hour",
                self.flaps_per_customer_hour,
                false,
            ),
        ]
    }

    /// Each scoring metric's value here and in `other`, and how they compare: `Greater` where
    /// these are better, `Less` where `other`'s are.
    pub fn versus(&self, other: &Metrics) -> Vec<(&'static str, f64, f64, Ordering)> {
        self.scored()
            .into_iter()
            .zip(other.scored())
            .map(|((name, x, higher_better), (_, y, _))| {
                let ord = x.total_cmp(&y);
                (name, x, y, if higher_better { ord } else { ord.reverse() })
            })
            .collect()
    }
}

/// A whole `simulate` run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The seed shoppers and radio were drawn from.
    pub seed: u64,
    /// The smoothing filter of the engine run.
    pub filter: SmoothingFilter,
    /// Simulated seconds.
    pub simulated_s: u64,
    /// Adverts heard by all hubs.
    pub adverts: u64,
    /// Customers (fob carriers) scored.
    pub customers: u64,
    /// Customer-hours in the store.
    pub customer_hours: f64,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
    /// Whether one engine heard every hub or each hub decided its own zones.
    pub deployment: Deployment,
    /// The engine's scores, flattened to the top level in JSON.
    #[serde(flatten)]
    pub engine: Metrics,
    /// The naive baseline's scores.
    pub baseline: Metrics,
    /// Offer triggers of the scenario's `[[offers]]`, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offers: Option<OfferReport>,
    /// Each hub's exit margin at the end of the run: what a hub in this store would learn.
    pub exit_margins: Vec<crate::presence::HubExitMargin>,
}

/// What the scenario's offer rules did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OfferReport {
    /// Triggers in all.
    pub triggers: u64,
    /// Customers who got at least one.
    pub customers: u64,
    /// Per rule: fired, capped, outranked, held.
    pub rules: std::collections::BTreeMap<String, crate::offers::stage::RuleCounts>,
    /// Triggers of an offer to a customer who had it within its cooldown: must be 0.
    pub repeats_within_cooldown: u64,
}

/// A visit the engine reported: zone (the scenario's index), start and end (simulated ms).
type EngineVisit = (u16, u64, u64);

/// How the store's hubs share what they hear in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deployment {
    /// One engine hears every hub, as the simulator and recordings of it feed the daemon: moves
    /// between hubs' zones and departures are judged on every hub's signal.
    #[default]
    Shared,
    /// One engine per hub, each hearing only its own radio and deciding only its own zones: a store
    /// where each hub runs its own beacond. A customer may then be in two hubs' zones at once.
    PerHub,
    /// One engine per hub as in `PerHub`, but the hubs share their observations of known devices
    /// (`[peers]`): each engine holds every zone, hears its own radio at once and the other hubs'
    /// `lag_ms` later, and reports only its own hub's zones.
    PerHubSharing {
        /// How long a shared observation takes to reach the other hubs: the batch interval plus the
        /// trip through the broker.
        lag_ms: u64,
    },
}

/// One engine and what it hears.
struct Lane {
    core: Core,
    /// The source hub it hears; `None`: every hub.
    hears: Option<u16>,
    /// Peers' batches on their way, with when they arrive. A lane's outbox is taken after every
    /// advert, so a batch holds one observation, and the queue is in order of arrival.
    inbound: std::collections::VecDeque<(u64, std::sync::Arc<crate::peers::Batch>)>,
    /// The scenario's index of each of its engine's zones.
    zones: Vec<u16>,
    events: Vec<Event>,
}

/// Collects one configuration's visits per customer, from one engine or one per hub.
struct Scorer {
    lanes: Vec<Lane>,
    /// With [`Deployment::PerHubSharing`]: how late peers' observations arrive.
    lag_ms: Option<u64>,
    visits: HashMap<CustomerKey, Vec<EngineVisit>>,
    open: HashMap<(CustomerKey, usize), (u16, u64)>,
}

impl Scorer {
    fn new(sim: &Simulation, params: EngineParams, deployment: Deployment) -> Scorer {
        let cfg = sim.scenario().as_config();
        let lane = |picked: Vec<usize>, hub_id: &str, hears: Option<u16>| {
            let zones: Vec<_> = picked.iter().map(|&i| cfg.zones[i].clone()).collect();
            let engine = Engine::new(&zones, params, hub_id);
            Lane {
                core: Core::new(engine, sim.directory().clone(), sim.hub_names(), 0x5EED),
                hears,
                inbound: Default::default(),
                zones: picked.into_iter().map(|i| i as u16).collect(),
                events: Vec::new(),
            }
        };
        let own_zones = |hub: &str| -> Vec<usize> {
            (0..cfg.zones.len())
                .filter(|&z| cfg.zones[z].hub.as_deref().unwrap_or(&cfg.hub.hub_id) == hub)
                .collect()
        };
        let lanes = match deployment {
            Deployment::Shared => vec![lane((0..cfg.zones.len()).collect(), &cfg.hub.hub_id, None)],
            Deployment::PerHub => sim
                .hub_names()
                .iter()
                .enumerate()
                // Every hub runs its daemon, zones or not: a store with none still scores.
                .map(|(i, hub)| lane(own_zones(hub), hub, Some(i as u16)))
                .collect(),
            Deployment::PerHubSharing { .. } => {
                let hubs = sim.hub_names();
                hubs.iter()
                    .enumerate()
                    .map(|(i, hub)| {
                        let mut l = lane((0..cfg.zones.len()).collect(), hub, Some(i as u16));
                        let peers: Vec<String> =
                            hubs.iter().filter(|h| *h != hub).cloned().collect();
                        l.core.share_with(hub, &peers, cfg.peers.max_lag_ms);
                        l
                    })
                    .collect()
            }
        };
        let lag_ms = match deployment {
            Deployment::PerHubSharing { lag_ms } => Some(lag_ms),
            _ => None,
        };
        Scorer {
            lanes,
            lag_ms,
            visits: HashMap::new(),
            open: HashMap::new(),
        }
    }

    /// Hands `a` to every engine that hears it; the others only run their deadlines up to it, as a
    /// hub's daemon does on its own clock.
    fn advert(&mut self, a: &crate::scan::Advert) {
        for lane in &mut self.lanes {
            while lane.inbound.front().is_some_and(|(due, _)| *due <= a.at.0) {
                let (_, batch) = lane.inbound.pop_front().expect("checked");
                for o in &batch.obs {
                    lane.core.handle_peer(&batch.hub, o, a.at, &mut lane.events);
                }
            }
            match lane.hears {
                Some(h) if h != a.hub => {
                    if lane.core.poll_timeout().is_some_and(|t| t <= a.at) {
                        lane.core.handle_timeout(a.at, &mut lane.events);
                    }
                }
                _ => lane.core.handle_advert(a, &mut lane.events),
            }
        }
        let Some(lag) = self.lag_ms else {
            return;
        };
        for i in 0..self.lanes.len() {
            let Some(batch) = self.lanes[i].core.take_shared() else {
                continue;
            };
            let due = batch.obs[0].t + lag;
            let batch = std::sync::Arc::new(batch);
            for (j, lane) in self.lanes.iter_mut().enumerate() {
                if j != i {
                    lane.inbound.push_back((due, batch.clone()));
                }
            }
        }
    }

    fn timeout(&mut self, end: crate::time::Timestamp) {
        for lane in &mut self.lanes {
            lane.core.handle_timeout(end, &mut lane.events);
        }
    }

    fn drain(&mut self, mut on_event: impl FnMut(&Core, &Event)) {
        for (n, lane) in self.lanes.iter_mut().enumerate() {
            for e in lane.events.drain(..) {
                on_event(&lane.core, &e);
                let Event::Visit(v) = &e else {
                    continue;
                };
                let Subject::Customer(c) = v.subject else {
                    continue;
                };
                let at = v.at.0 - SIM_EPOCH_MS;
                let zone = lane.zones[v.zone as usize];
                match v.kind {
                    VisitKind::Enter => {
                        self.open.insert((c, n), (zone, at));
                    }
                    VisitKind::Exit { .. } => {
                        if let Some((z, start)) = self.open.remove(&(c, n)) {
                            self.visits.entry(c).or_default().push((z, start, at));
                        }
                    }
                    VisitKind::Dwell { .. } => {}
                }
            }
        }
    }

    fn finish(&mut self, end: u64) {
        for ((c, _), (z, start)) in self.open.drain() {
            self.visits.entry(c).or_default().push((z, start, end));
        }
        // Lanes report in turn, not in time order; the scoring reads visits in time order.
        for v in self.visits.values_mut() {
            v.sort_unstable_by_key(|&(z, start, end)| (start, end, z));
        }
    }

    /// The core that knows the customers (every lane's does).
    fn core(&self) -> &Core {
        &self.lanes[0].core
    }

    fn exit_margins(&self) -> Vec<crate::presence::HubExitMargin> {
        self.lanes
            .iter()
            .flat_map(|l| l.core.engine().exit_margins())
            .collect()
    }
}

/// Runs `scenario` through the engine (with `filter`, or the scenario's own) and the baseline, calling
/// `on_event` with every engine event as it happens.
pub fn run(
    scenario: Scenario,
    filter: Option<SmoothingFilter>,
    on_event: impl FnMut(&Core, &Event),
) -> Report {
    run_deployed(scenario, filter, Deployment::Shared, on_event)
}

/// [`run`] with the hubs deployed as `deployment` says, engine and baseline alike.
pub fn run_deployed(
    scenario: Scenario,
    filter: Option<SmoothingFilter>,
    deployment: Deployment,
    on_event: impl FnMut(&Core, &Event),
) -> Report {
    let kind = filter.unwrap_or(scenario.presence.filter);
    run_tuned(
        scenario,
        kind,
        FilterParams::tuned(kind.into()),
        deployment,
        on_event,
    )
}

/// [`run`] with explicit filter tuning: how the defaults in [`FilterParams::tuned`] were chosen.
pub fn run_tuned(
    scenario: Scenario,
    kind: SmoothingFilter,
    tuning: FilterParams,
    deployment: Deployment,
    mut on_event: impl FnMut(&Core, &Event),
) -> Report {
    let started = std::time::Instant::now();
    let mut presence = scenario.presence.clone();
    presence.filter = kind;
    let cfg = scenario.as_config();
    let mut offers = crate::offers::stage::OfferStage::new(&cfg);
    let cooldowns: HashMap<String, u64> = cfg
        .offers
        .iter()
        .map(|o| (o.id.clone(), o.cooldown_s * 1000))
        .collect();
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    let mut report = OfferReport::default();
    let mut offered = std::collections::HashSet::new();
    let mut on_event = |core: &Core, e: &Event| {
        on_event(core, e);
        if let Some(t) = offers.on_event(core, e) {
            report.triggers += 1;
            offered.insert(t.customer_id.clone());
            let key = (t.offer_id.clone(), t.customer_id.clone());
            if let Some(prev) = last.insert(key, t.at.0) {
                if t.at.0 < prev + cooldowns.get(&t.offer_id).copied().unwrap_or(0) {
                    report.repeats_within_cooldown += 1;
                }
            }
        }
    };
    let mut sim = Simulation::new(scenario);
    let mut params = EngineParams::from_config(&presence);
    params.filter = tuning;
    let mut engine = Scorer::new(&sim, params, deployment);
    let mut baseline = Scorer::new(&sim, EngineParams::baseline(&presence), deployment);
    let mut adverts = 0u64;
    while let Some(a) = sim.next_advert() {
        adverts += 1;
        // Handling an advert first handles every deadline up to its time.
        engine.advert(&a);
        baseline.advert(&a);
        engine.drain(&mut on_event);
        baseline.drain(|_, _| {});
    }
    let end = sim.end();
    for s in [&mut engine, &mut baseline] {
        s.timeout(end);
    }
    engine.drain(&mut on_event);
    baseline.drain(|_, _| {});
    let end_ms = end.0 - SIM_EPOCH_MS;
    engine.finish(end_ms);
    baseline.finish(end_ms);

    let (customers, hours) = customer_time(&sim, end_ms);
    report.customers = offered.len() as u64;
    report.rules = offers.counts().clone();
    Report {
        scenario: sim.scenario().name.clone(),
        seed: sim.scenario().seed,
        filter: presence.filter,
        simulated_s: sim.scenario().duration_s,
        adverts,
        customers,
        customer_hours: hours,
        wall_s: started.elapsed().as_secs_f64(),
        deployment,
        engine: score(&sim, engine.core(), &engine.visits, end_ms),
        baseline: score(&sim, baseline.core(), &baseline.visits, end_ms),
        offers: (!cfg.offers.is_empty()).then_some(report),
        exit_margins: engine.exit_margins(),
    }
}

fn customer_time(sim: &Simulation, end: u64) -> (u64, f64) {
    let mut n = 0;
    let mut ms = 0u64;
    for s in sim.shoppers().iter().filter(|s| s.customer.is_some()) {
        if s.arrive < end {
            n += 1;
            ms += s.depart.min(end) - s.arrive;
        }
    }
    (n, ms as f64 / 3_600_000.0)
}

fn score(
    sim: &Simulation,
    core: &Core,
    visits: &HashMap<CustomerKey, Vec<EngineVisit>>,
    end: u64,
) -> Metrics {
    let min_visit = (sim.scenario().min_truth_visit_s * 1000.0) as u64;
    let none: Vec<EngineVisit> = Vec::new();
    let (mut right, mut total) = (0u64, 0u64);
    let (mut enter_lat, mut exit_lat) = (Vec::new(), Vec::new());
    let (mut missed, mut flaps, mut false_enters, mut truth_visits, mut engine_visits) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for shopper in sim.shoppers() {
        let Some(id) = &shopper.customer else {
            continue;
        };
        let ev = core
            .directory()
            .customer_by_id(id)
            .and_then(|k| visits.get(&k))
            .unwrap_or(&none);
        engine_visits += ev.len() as u64;
        // Zone accuracy, one sample per second of the stay.
        let mut t = shopper.arrive;
        while t < shopper.depart.min(end) {
            // One engine holds a customer in one zone at a time; hubs deployed each on their own
            // may hold them in two, and the one entered last is where a reader would put them.
            let engine_zone = ev
                .iter()
                .filter(|v| v.1 <= t && t < v.2)
                .max_by_key(|v| v.1)
                .map(|v| v.0);
            if engine_zone == shopper.truth_at(t) {
                right += 1;
            }
            total += 1;
            t += 1000;
        }
        // Visits.
        for &(a, b, zone) in &shopper.truth {
            let Some(z) = zone else { continue };
            if b - a < min_visit || a >= end.saturating_sub(60_000) {
                continue;
            }
            truth_visits += 1;
            let touching: Vec<&EngineVisit> = ev
                .iter()
                .filter(|v| v.0 == z && v.1 <= b && v.2 + SLACK_MS >= a)
                .collect();
            flaps += (touching.len() as u64).saturating_sub(1);
            // A visit only counts as detected by engine visits that hold the zone for a real part of
            // it, so reporting a zone in flickers does not pass for detecting it.
            let hold = HOLD_MS.min((b - a) / 2);
            let detecting: Vec<&&EngineVisit> = touching
                .iter()
                .filter(|v| v.2.min(b) >= v.1.max(a) + hold)
                .collect();
            let Some(first) = detecting.first() else {
                missed += 1;
                continue;
            };
            enter_lat.push(first.1.abs_diff(a) as f64 / 1000.0);
            if b + 60_000 <= end {
                let last = detecting.last().expect("non-empty");
                exit_lat.push(last.2.abs_diff(b) as f64 / 1000.0);
            }
        }
        for v in ev {
            let real = shopper.truth.iter().any(|&(a, b, zone)| {
                zone == Some(v.0) && a <= v.2 + SLACK_MS && v.1 <= b + SLACK_MS
            });
            if !real {
                false_enters += 1;
            }
        }
    }
    let (_, hours) = customer_time(sim, end);
    Metrics {
        zone_accuracy: if total == 0 {
            1.0
        } else {
            right as f64 / total as f64
        },
        enter_latency_p50_s: percentile(&mut enter_lat, 0.50),
        enter_latency_p95_s: percentile(&mut enter_lat, 0.95),
        exit_latency_p50_s: percentile(&mut exit_lat, 0.50),
        exit_latency_p95_s: percentile(&mut exit_lat, 0.95),
        false_enters,
        missed_visits: missed,
        flaps_per_customer_hour: if hours > 0.0 {
            flaps as f64 / hours
        } else {
            0.0
        },
        truth_visits,
        engine_visits,
    }
}

/// Nearest-rank percentile; 0 for no samples.
fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

impl Report {
    /// A table for people.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "scenario {} seed {} ({} s simulated, {} adverts, {} customers, {:.1} customer-hours) in {:.2} s\n",
            self.scenario,
            self.seed,
            self.simulated_s,
            self.adverts,
            self.customers,
            self.customer_hours,
            self.wall_s
        );
        match self.deployment {
            Deployment::Shared => {}
            Deployment::PerHub => s.push_str(
                "deployed one engine per hub: each hub hears only its own radio and decides only its own zones\n",
            ),
            Deployment::PerHubSharing { lag_ms } => s.push_str(&format!(
                "deployed one engine per hub, sharing observations of known devices {lag_ms} ms late: each hub decides only its own zones\n"
            )),
        }
        s.push_str(&format!(
            "{:<26} {:>12} {:>12}\n",
            "metric",
            self.filter.as_str(),
            "baseline"
        ));
        let (e, b) = (&self.engine, &self.baseline);
        for (name, x, y, ord) in e.versus(b) {
            // Say so where the naive detector does better: the one thing a reader must not miss.
            let note = if ord == Ordering::Less {
                "  (baseline better)"
            } else {
                ""
            };
            s.push_str(&format!("{name:<26} {x:>12.3} {y:>12.3}{note}\n"));
        }
        // The two counts give scale; neither is better high or low.
        for (name, x, y) in [
            ("truth_visits", e.truth_visits, b.truth_visits),
            ("engine_visits", e.engine_visits, b.engine_visits),
        ] {
            s.push_str(&format!("{name:<26} {x:>12} {y:>12}\n"));
        }
        if !self.exit_margins.is_empty() {
            s.push_str("\nexit margin at the end:\n");
            for m in &self.exit_margins {
                s.push_str(&format!("  {m}\n"));
            }
        }
        if let Some(o) = &self.offers {
            s.push_str(&format!(
                "\noffers: {} triggers to {} customers, {} repeats within cooldown\n{:<26} {:>8} {:>8} {:>9} {:>8}\n",
                o.triggers, o.customers, o.repeats_within_cooldown, "rule", "fired", "capped", "outranked", "held"
            ));
            for (id, c) in &o.rules {
                s.push_str(&format!(
                    "{id:<26} {:>8} {:>8} {:>9} {:>8}\n",
                    c.fired, c.capped, c.outranked, c.held
                ));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(percentile(&mut v, 0.5), 3.0);
        assert_eq!(percentile(&mut v, 0.95), 5.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }

    #[test]
    fn the_table_names_the_filter_as_the_config_spells_it() {
        for f in [
            SmoothingFilter::KalmanTrend,
            SmoothingFilter::Kalman,
            SmoothingFilter::TrimmedMean,
            SmoothingFilter::Ewma,
        ] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.as_str());
        }
        let report = Report {
            filter: SmoothingFilter::KalmanTrend,
            ..Report::default()
        };
        let header = report.to_text().lines().nth(1).unwrap().to_owned();
        assert!(header.contains(" kalman_trend "), "{header}");
    }

    #[test]
    fn the_table_marks_the_metrics_the_baseline_does_better() {
        let mut report = Report::default();
        report.engine.zone_accuracy = 0.9;
        report.baseline.zone_accuracy = 0.95;
        report.engine.exit_latency_p50_s = 3.0;
        report.baseline.exit_latency_p50_s = 2.0;
        report.engine.enter_latency_p50_s = 1.0;
        report.baseline.enter_latency_p50_s = 2.0;
        report.engine.engine_visits = 10;
        report.baseline.engine_visits = 20;
        let text = report.to_text();
        let marked: Vec<&str> = text
            .lines()
            .filter(|l| l.ends_with("(baseline better)"))
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(marked, ["zone_accuracy", "exit_latency_p50_s"], "{text}");
    }
}
