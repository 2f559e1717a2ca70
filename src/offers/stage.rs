//! Offers in the pipeline: presence events in, triggers out, caps persisted first. The daemon, the
//! simulator and `beacond offers explain` all run this same code.

use std::collections::{BTreeMap, HashMap};

use crate::config::Config;
use crate::pipeline::Core;
use crate::presence::{Event, Subject, VisitKind};

use super::store::Store;
use super::{CapWrite, Caps, Decision, Facts, Outcome, PresenceKind, Rules, Triggered};

/// Per-rule counts, for `beacond simulate` and `stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RuleCounts {
    /// Triggers.
    pub fired: u64,
    /// Matched but capped (cooldown, budget, visit limit, rate limit).
    pub capped: u64,
    /// Matched but outranked by a higher priority.
    pub outranked: u64,
    /// Matched zone and trigger but held back by segments, days, hours or quiet hours.
    pub held: u64,
}

/// The offers stage.
pub struct OfferStage {
    rules: Rules,
    caps: Caps,
    store: Option<Store>,
    /// Entry history (store visits, zone entries) not yet written, the newest per customer, keyed
    /// by (is it the store visit, customer): it is written with the next trigger, at
    /// [`OfferStage::flush`] and at stop, not on every enter.
    pending: HashMap<(bool, String), CapWrite>,
    counts: BTreeMap<String, RuleCounts>,
    /// Every decision, when asked to keep them (explain).
    pub log: Option<Vec<(Facts<'static>, Decision)>>,
}

/// Facts with owned strings, for the explain log.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

impl OfferStage {
    /// The stage for `cfg`'s rules, with cap state in memory only.
    pub fn new(cfg: &Config) -> OfferStage {
        let rules = Rules::new(&cfg.offers, &cfg.offer_limits, &cfg.hub.timezone);
        let counts = rules
            .ids()
            .map(|id| (id.to_owned(), RuleCounts::default()))
            .collect();
        OfferStage {
            rules,
            caps: Caps::default(),
            store: None,
            pending: HashMap::new(),
            counts,
            log: None,
        }
    }

    /// Keeps cap state in `store` (loading what it holds, pruned at `now`).
    pub fn with_store(
        mut self,
        store: Store,
        now: crate::time::Timestamp,
    ) -> Result<OfferStage, super::store::StoreError> {
        let mut caps = store.load()?;
        self.rules.prune(&mut caps, now);
        store.replace(&caps)?;
        self.caps = caps;
        self.store = Some(store);
        Ok(self)
    }

    /// New rules from a reloaded config; cap state carries over.
    pub fn reload(&mut self, cfg: &Config) {
        self.rules = Rules::new(&cfg.offers, &cfg.offer_limits, &cfg.hub.timezone);
        for id in self.rules.ids() {
            self.counts.entry(id.to_owned()).or_default();
        }
    }

    /// Writes the entry history gathered since the last trigger, in one flushed batch; the daemon
    /// calls it on its periodic tick (a minute by default) and at stop. An fsync per enter was a
    /// quarter of what the daemon wrote to the card in real time (docs/PERFORMANCE.md); now a
    /// crash or power cut costs at most the entries since the last tick (a visit-count offer may
    /// come a visit later), never the cap of an offer that left.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // Kept on failure: the next tick tries again.
        if let Err(e) = self.write_pending_with(&[]) {
            tracing::warn!(error = %e, "cannot persist visit counts for offers");
        }
    }

    /// Writes the gathered entry history, then `writes`, in one flushed batch, and forgets what
    /// was written. Without a store there is nothing to write.
    fn write_pending_with(&mut self, writes: &[CapWrite]) -> Result<(), super::store::StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let batch: Vec<CapWrite> = self.pending.values().chain(writes).cloned().collect();
        store.apply(&batch)?;
        self.pending.clear();
        Ok(())
    }

    /// How many customers' entry history waits for [`OfferStage::flush`] or a trigger.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Per-rule counts since start.
    pub fn counts(&self) -> &BTreeMap<String, RuleCounts> {
        &self.counts
    }

    /// Forgets a customer who opted out, here and on disk.
    pub fn forget(&mut self, customer: &str) {
        self.caps.last_fired.retain(|(_, c), _| c != customer);
        self.caps.visits.remove(customer);
        self.caps.enters.remove(customer);
        // Nor written later.
        self.pending.retain(|(_, c), _| c != customer);
        if let Some(s) = &self.store {
            if let Err(e) = s.forget_customer(customer) {
                tracing::error!(error = %e, "cannot remove an opted-out customer's offer caps");
            }
        }
    }

    /// Handles one pipeline event; returns the offer it triggers, if any. Only customers still in
    /// the directory — opted in at this very moment — are considered.
    pub fn on_event(&mut self, core: &Core, e: &Event) -> Option<Triggered> {
        self.on_event_as(core, e, None)
    }

    /// [`OfferStage::on_event`], with the customer's segments replaced by `segments` when given
    /// (`beacond offers explain --segments`).
    pub fn on_event_as(
        &mut self,
        core: &Core,
        e: &Event,
        segments: Option<&[String]>,
    ) -> Option<Triggered> {
        if self.rules.is_empty() {
            return None;
        }
        let Event::Visit(v) = e else { return None };
        let Subject::Customer(key) = v.subject else {
            return None;
        };
        let customer = core.directory().customer(key)?;
        let zone = &core.engine().zones()[v.zone as usize].id;
        let facts = Facts {
            customer: &customer.id,
            segments: segments.unwrap_or(&customer.segments),
            zone,
            event: match v.kind {
                VisitKind::Enter => PresenceKind::Enter,
                VisitKind::Dwell { mark_s } => PresenceKind::Dwell(mark_s),
                VisitKind::Exit { .. } => PresenceKind::Exit,
            },
            at: v.at,
            entered_at: v.entered_at,
        };
        let decision = self.rules.handle(&mut self.caps, &facts);
        if v.at.0 % 60_000 < 1_000 {
            self.rules.prune(&mut self.caps, v.at);
        }
        for (id, o) in &decision.outcomes {
            let c = self.counts.entry(id.clone()).or_default();
            match o {
                Outcome::Fired => c.fired += 1,
                Outcome::Cooldown { .. }
                | Outcome::BudgetSpent
                | Outcome::VisitLimit
                | Outcome::RateLimit => c.capped += 1,
                Outcome::Outranked(_) => c.outranked += 1,
                Outcome::NotInSegments
                | Outcome::ExcludedSegment(_)
                | Outcome::OutsideDays
                | Outcome::OutsideHours
                | Outcome::QuietHours => c.held += 1,
                Outcome::OtherZone | Outcome::OtherTrigger | Outcome::TooFewVisits { .. } => {}
            }
        }
        let trigger = decision.trigger.clone();
        if let Some(t) = &trigger {
            // Durable before it leaves: if this fails, not firing is the safe side. The entry
            // history gathered so far goes in the same batch, before the trigger's own writes.
            if let Err(e) = self.write_pending_with(&decision.writes) {
                tracing::error!(error = %e, offer = %t.offer_id,
                    "cannot persist offer caps; not firing this offer");
                return None;
            }
        } else if self.store.is_some() {
            for w in &decision.writes {
                let key = match w {
                    CapWrite::Visit { customer, .. } => (true, customer.clone()),
                    CapWrite::Enters { customer, .. } => (false, customer.clone()),
                    // Only a trigger writes caps, and it is written above.
                    CapWrite::Fired { .. } | CapWrite::Daily { .. } => continue,
                };
                self.pending.insert(key, w.clone());
            }
        }
        if let Some(log) = &mut self.log {
            let owned = Facts {
                customer: leak(facts.customer),
                segments: Box::leak(facts.segments.to_vec().into_boxed_slice()),
                zone: leak(facts.zone),
                ..facts
            };
            log.push((owned, decision));
        }
        trigger
    }
}

/// `beacond offers explain`: every presence event of `customer` in a simulated store, and what each
/// rule made of it. Returns the report's text, or `None` if the customer never appeared.
pub fn explain(
    scenario: crate::scan::sim::Scenario,
    customer: &str,
    segments: Option<Vec<String>>,
    timezone: &str,
) -> Option<String> {
    use std::fmt::Write;
    let mut cfg = scenario.as_config();
    cfg.hub.timezone = timezone.to_owned();
    let mut stage = OfferStage::new(&cfg);
    stage.log = Some(Vec::new());
    let mut own_segments: Option<Vec<String>> = None;
    crate::simulate::run(scenario, None, |core, e| {
        let Event::Visit(v) = e else { return };
        let Subject::Customer(k) = v.subject else {
            return;
        };
        let Some(c) = core.directory().customer(k) else {
            return;
        };
        // Only this customer's events feed the stage: the explanation is about their visit alone
        // (a real hub's rate limit also counts everyone else's offers).
        if c.id == customer {
            own_segments.get_or_insert_with(|| c.segments.clone());
            stage.on_event_as(core, e, segments.as_deref());
        }
    });
    let log = stage.log.take().unwrap_or_default();
    if log.is_empty() {
        return None;
    }
    let shown = segments.or(own_segments).unwrap_or_default();
    let mut out =
        format!(
        "customer {customer} (segments: {}) — {} presence events, rules in {timezone} local time\n",
        if shown.is_empty() { "none".to_owned() } else { shown.join(", ") },
        log.len()
    );
    let mut summary: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for (facts, decision) in &log {
        let local = stage_local(&stage.rules, facts.at);
        let what = match facts.event {
            PresenceKind::Dwell(s) => format!("dwell {s} s"),
            other => other.as_str().to_owned(),
        };
        let _ = writeln!(out, "\n{local}  {what} in {}", facts.zone);
        for (id, o) in &decision.outcomes {
            *summary
                .entry(id.clone())
                .or_default()
                .entry(o.describe())
                .or_default() += 1;
            if matches!(o, Outcome::OtherZone | Outcome::OtherTrigger) {
                continue;
            }
            let mark = if *o == Outcome::Fired {
                "FIRES "
            } else {
                "      "
            };
            let _ = writeln!(out, "  {mark}{id:<24} {}", o.describe());
        }
    }
    let _ = writeln!(out, "\nper rule over the visit:");
    for (id, reasons) in summary {
        let fired = reasons.get("fired").copied().unwrap_or(0);
        let why: Vec<String> = reasons
            .iter()
            .filter(|(r, _)| r.as_str() != "fired")
            .map(|(r, n)| format!("{r} ×{n}"))
            .collect();
        let _ = writeln!(
            out,
            "  {id:<24} fired {fired}×; otherwise: {}",
            why.join("; ")
        );
    }
    Some(out)
}

fn stage_local(rules: &Rules, t: crate::time::Timestamp) -> String {
    rules.local(t).format("%a %Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::sim::Scenario;

    #[test]
    fn entry_history_is_written_with_triggers_and_flushes_not_per_enter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offers");
        let mut scenario = Scenario::load("builtin:supermarket").unwrap();
        scenario.duration_s = 900;
        let mut cfg = scenario.as_config();
        // A returning-customer rule, so entries are kept too (the scenario has none).
        let mut returning = cfg.offers[0].clone();
        returning.id = "returning".into();
        returning.trigger = crate::config::OfferTrigger::VisitCount;
        (returning.visits, returning.visit_days) = (Some(3), Some(30));
        cfg.offers.push(returning);
        let (store, _) = Store::open(&path).unwrap();
        let mut stage = OfferStage::new(&cfg)
            .with_store(store, crate::time::Timestamp(0))
            .unwrap();
        let (mut fired, mut waiting) = (0, 0);
        crate::simulate::run(scenario, None, |core, e| {
            let trigger = stage.on_event(core, e);
            if trigger.is_some() {
                fired += 1;
                assert_eq!(stage.pending(), 0, "a trigger writes everything gathered");
            } else if let Event::Visit(v) = e {
                let customer = matches!(v.subject, Subject::Customer(k)
                    if core.directory().customer(k).is_some());
                if customer && v.kind == VisitKind::Enter {
                    waiting += 1;
                    assert!(stage.pending() > 0, "an entry alone is not written");
                }
            }
        });
        assert!(
            fired > 0 && waiting > fired,
            "{fired} triggers, {waiting} entries"
        );
        // A customer who opts out while their entries wait is not written afterwards.
        let (_, gone) = stage
            .pending
            .keys()
            .next()
            .cloned()
            .expect("entries waiting");
        stage.forget(&gone);
        stage.flush();
        assert_eq!(stage.pending(), 0);
        let live = stage.caps.clone();
        drop(stage);

        // What the disk holds after the flush is what a restart starts from.
        let (store, _) = Store::open(&path).unwrap();
        let saved = store.load().unwrap();
        assert_eq!(saved.last_fired, live.last_fired);
        assert_eq!(saved.daily, live.daily);
        assert_eq!(saved.enters, live.enters);
        assert!(!saved.enters.is_empty() && !saved.visits.is_empty());
        assert!(!saved.visits.contains_key(&gone) && !saved.enters.contains_key(&gone));
        // A visit's `last` moves with every event but is written with entries and triggers only.
        let visits = |c: &Caps| {
            let mut v: Vec<_> = c
                .visits
                .iter()
                .map(|(k, v)| (k.clone(), v.start, v.offers))
                .collect();
            v.sort();
            v
        };
        assert_eq!(visits(&saved), visits(&live));
    }
}
