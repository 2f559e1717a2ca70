//! Every rule field and every cap, with a simulated clock.

use super::*;
use crate::config::{OfferConfig, OfferLimits, OfferTrigger};

/// Monday 2026-11-23 10:00:00 UTC.
const MON_10H: u64 = 1_795_428_000_000;
const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

fn offer(id: &str, zone: &str, trigger: OfferTrigger) -> OfferConfig {
    OfferConfig {
        id: id.into(),
        zones: vec![zone.into()],
        trigger,
        dwell_s: (trigger == OfferTrigger::Dwell).then_some(60),
        segments_include: vec![],
        segments_exclude: vec![],
        priority: 0,
        cooldown_s: 86_400,
        visits: None,
        visit_days: None,
        days: vec![],
        hours: None,
        quiet_hours: vec![],
        daily_budget: None,
    }
}

fn limits() -> OfferLimits {
    OfferLimits {
        max_per_visit: 10,
        max_per_minute: 100,
        visit_gap_s: 1800,
    }
}

struct H {
    rules: Rules,
    caps: Caps,
}

impl H {
    fn new(offers: &[OfferConfig]) -> H {
        H::with(offers, limits(), "UTC")
    }

    fn with(offers: &[OfferConfig], l: OfferLimits, tz: &str) -> H {
        H {
            rules: Rules::new(offers, &l, tz),
            caps: Caps::default(),
        }
    }

    fn event(
        &mut self,
        who: &str,
        segs: &[&str],
        zone: &str,
        ev: PresenceKind,
        at: u64,
    ) -> Decision {
        let segments: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
        self.rules.handle(
            &mut self.caps,
            &Facts {
                customer: who,
                segments: &segments,
                zone,
                event: ev,
                at: Timestamp(at),
                entered_at: Timestamp(at.saturating_sub(1000)),
            },
        )
    }

    fn enter(&mut self, who: &str, zone: &str, at: u64) -> Option<String> {
        self.event(who, &[], zone, PresenceKind::Enter, at)
            .trigger
            .map(|t| t.offer_id)
    }
}

fn outcome(d: &Decision, id: &str) -> Outcome {
    d.outcomes.iter().find(|(i, _)| i == id).unwrap().1.clone()
}

#[test]
fn zone_and_trigger_must_both_match() {
    let mut h = H::new(&[
        offer("in", "wine", OfferTrigger::Enter),
        offer("stay", "wine", OfferTrigger::Dwell),
        offer("bye", "wine", OfferTrigger::Exit),
    ]);
    let d = h.event("c", &[], "bakery", PresenceKind::Enter, MON_10H);
    assert_eq!(outcome(&d, "in"), Outcome::OtherZone);
    let d = h.event("c", &[], "wine", PresenceKind::Enter, MON_10H);
    assert_eq!(d.trigger.as_ref().unwrap().offer_id, "in");
    assert_eq!(outcome(&d, "stay"), Outcome::OtherTrigger);
    // Dwell fires at its own mark only.
    let d = h.event("c", &[], "wine", PresenceKind::Dwell(30), MON_10H + 30_000);
    assert_eq!(outcome(&d, "stay"), Outcome::OtherTrigger);
    let d = h.event("c", &[], "wine", PresenceKind::Dwell(60), MON_10H + 60_000);
    let t = d.trigger.unwrap();
    assert_eq!(
        (t.offer_id.as_str(), t.reason.threshold),
        ("stay", Some(60))
    );
    assert_eq!(t.cause.dwell_s, Some(60));
    let d = h.event("c", &[], "wine", PresenceKind::Exit, MON_10H + 90_000);
    assert_eq!(d.trigger.unwrap().offer_id, "bye");
}

#[test]
fn segments_include_and_exclude() {
    let mut o = offer("club", "wine", OfferTrigger::Enter);
    o.segments_include = vec!["club".into(), "vip".into()];
    o.segments_exclude = vec!["under-18".into()];
    let mut h = H::new(&[o]);
    let d = h.event("a", &["staff"], "wine", PresenceKind::Enter, MON_10H);
    assert_eq!(outcome(&d, "club"), Outcome::NotInSegments);
    let d = h.event(
        "b",
        &["vip", "under-18"],
        "wine",
        PresenceKind::Enter,
        MON_10H,
    );
    assert_eq!(
        outcome(&d, "club"),
        Outcome::ExcludedSegment("under-18".into())
    );
    let d = h.event("c", &["vip"], "wine", PresenceKind::Enter, MON_10H);
    assert!(d.trigger.is_some());
    // Exclusion alone, no inclusion list: everyone but the excluded.
    let mut o = offer("all", "wine", OfferTrigger::Enter);
    o.segments_exclude = vec!["under-18".into()];
    let mut h = H::new(&[o]);
    assert!(h
        .event("d", &[], "wine", PresenceKind::Enter, MON_10H)
        .trigger
        .is_some());
}

#[test]
fn days_hours_and_quiet_hours_in_local_time() {
    let mut o = offer("lunch", "deli", OfferTrigger::Enter);
    o.days = vec!["mon".into(), "tue".into()];
    o.hours = Some("11:00-15:00".into());
    o.quiet_hours = vec!["12:30-13:00".into()];
    o.cooldown_s = 0;
    // Paris is UTC+1 in November: 10:00 UTC is 11:00 local.
    let mut h = H::with(&[o], limits(), "Europe/Paris");
    let at = |h_utc: u64, m: u64| MON_10H - 10 * HOUR + h_utc * HOUR + m * MIN;
    assert_eq!(
        outcome(
            &h.event("a", &[], "deli", PresenceKind::Enter, at(9, 59)),
            "lunch"
        ),
        Outcome::OutsideHours
    );
    assert_eq!(h.enter("b", "deli", at(10, 0)).as_deref(), Some("lunch"));
    assert_eq!(
        outcome(
            &h.event("c", &[], "deli", PresenceKind::Enter, at(11, 45)),
            "lunch"
        ),
        Outcome::QuietHours
    );
    assert_eq!(h.enter("d", "deli", at(12, 0)).as_deref(), Some("lunch"));
    assert_eq!(
        outcome(
            &h.event("e", &[], "deli", PresenceKind::Enter, at(14, 0)),
            "lunch"
        ),
        Outcome::OutsideHours
    );
    // Wednesday.
    let wed = MON_10H + 2 * 24 * HOUR;
    assert_eq!(
        outcome(
            &h.event("f", &[], "deli", PresenceKind::Enter, wed),
            "lunch"
        ),
        Outcome::OutsideDays
    );
}

#[test]
fn hours_may_cross_midnight() {
    let mut o = offer("late", "deli", OfferTrigger::Enter);
    o.hours = Some("22:00-02:00".into());
    o.cooldown_s = 0;
    let mut h = H::new(&[o]);
    let midnight = MON_10H + 14 * HOUR;
    assert!(h.enter("a", "deli", midnight - 30 * MIN).is_some());
    assert!(h.enter("b", "deli", midnight + 90 * MIN).is_some());
    assert!(h.enter("c", "deli", midnight + 3 * HOUR).is_none());
    assert_eq!(Hours::parse("25:00-02:00"), None);
    assert_eq!(Hours::parse("10:00-10:00"), None);
    assert_eq!(
        Hours::parse("9:30-24:00"),
        Some(Hours {
            start: 570,
            end: 1440
        })
    );
}

#[test]
fn hours_follow_the_clock_across_dst_changes() {
    let mut o = offer("morning", "deli", OfferTrigger::Enter);
    o.hours = Some("09:00-10:00".into());
    o.cooldown_s = 0;
    let mut h = H::with(&[o], limits(), "Europe/London");
    // Saturday 2026-03-28 08:30 UTC is 08:30 GMT: before opening.
    let sat = 1_774_686_600_000;
    assert!(h.enter("a", "deli", sat).is_none());
    // Clocks go forward on Sunday 29 March: Monday 08:30 UTC is 09:30 BST.
    let mon = sat + 2 * 24 * HOUR;
    assert!(h.enter("b", "deli", mon).is_some());
    // And back on Sunday 25 October: Monday 26th 08:30 UTC is 08:30 GMT again.
    let oct_mon = 1_793_003_400_000;
    assert_eq!(
        h.rules
            .local(Timestamp(oct_mon))
            .format("%a %H:%M")
            .to_string(),
        "Mon 08:30"
    );
    assert!(h.enter("c", "deli", oct_mon).is_none());
    assert!(h.enter("d", "deli", oct_mon + HOUR).is_some());
}

#[test]
fn daily_budgets_reset_at_local_midnight() {
    let mut o = offer("free-coffee", "cafe", OfferTrigger::Enter);
    o.daily_budget = Some(2);
    // New York: UTC-5 in November. 04:00 UTC Tuesday is still Monday 23:00 local.
    let mut h = H::with(&[o], limits(), "America/New_York");
    assert!(h.enter("a", "cafe", MON_10H).is_some());
    assert!(h.enter("b", "cafe", MON_10H + HOUR).is_some());
    let d = h.event("c", &[], "cafe", PresenceKind::Enter, MON_10H + 18 * HOUR);
    assert_eq!(outcome(&d, "free-coffee"), Outcome::BudgetSpent);
    // 05:30 UTC Tuesday = 00:30 Tuesday local: a new budget.
    assert!(h
        .enter("c", "cafe", MON_10H + 19 * HOUR + 30 * MIN)
        .is_some());
}

#[test]
fn cooldown_per_customer_per_offer() {
    let mut o = offer("wine", "wine", OfferTrigger::Enter);
    o.cooldown_s = 3600;
    let mut h = H::new(&[o]);
    assert!(h.enter("a", "wine", MON_10H).is_some());
    let d = h.event("a", &[], "wine", PresenceKind::Enter, MON_10H + 59 * MIN);
    assert_eq!(
        outcome(&d, "wine"),
        Outcome::Cooldown {
            until: Timestamp(MON_10H + HOUR)
        }
    );
    assert!(
        h.enter("b", "wine", MON_10H + 59 * MIN).is_some(),
        "another customer"
    );
    assert!(h.enter("a", "wine", MON_10H + HOUR).is_some());
}

#[test]
fn overlapping_rules_the_highest_priority_that_is_not_capped_wins() {
    let mut high = offer("high", "wine", OfferTrigger::Enter);
    high.priority = 10;
    high.cooldown_s = 3600;
    let mut low = offer("low", "wine", OfferTrigger::Enter);
    low.priority = 1;
    let mut tie = offer("tie", "wine", OfferTrigger::Enter);
    tie.priority = 1;
    let mut h = H::new(&[low, tie, high]);
    let d = h.event("a", &[], "wine", PresenceKind::Enter, MON_10H);
    assert_eq!(d.trigger.as_ref().unwrap().offer_id, "high");
    assert_eq!(outcome(&d, "low"), Outcome::Outranked("high".into()));
    // High is now in cooldown: the first of the tied lower ones wins.
    let d = h.event("a", &[], "wine", PresenceKind::Enter, MON_10H + MIN);
    assert!(matches!(outcome(&d, "high"), Outcome::Cooldown { .. }));
    assert_eq!(d.trigger.as_ref().unwrap().offer_id, "low");
    assert_eq!(outcome(&d, "tie"), Outcome::Outranked("low".into()));
}

#[test]
fn at_most_max_per_visit_offers_in_one_store_visit() {
    let mut l = limits();
    l.max_per_visit = 2;
    l.visit_gap_s = 600;
    let mut h = H::with(
        &[
            offer("a", "z1", OfferTrigger::Enter),
            offer("b", "z2", OfferTrigger::Enter),
            offer("c", "z3", OfferTrigger::Enter),
        ],
        l,
        "UTC",
    );
    assert!(h.enter("x", "z1", MON_10H).is_some());
    assert!(h.enter("x", "z2", MON_10H + MIN).is_some());
    let d = h.event("x", &[], "z3", PresenceKind::Enter, MON_10H + 2 * MIN);
    assert_eq!(outcome(&d, "c"), Outcome::VisitLimit);
    assert!(d.trigger.is_none());
    // Eleven minutes without any presence event: a new store visit.
    assert!(h.enter("x", "z3", MON_10H + 13 * MIN).is_some());
}

#[test]
fn the_hub_wide_rate_limit_holds_over_any_minute() {
    let mut l = limits();
    l.max_per_minute = 3;
    let mut h = H::with(&[offer("a", "z", OfferTrigger::Enter)], l, "UTC");
    for i in 0..3 {
        assert!(h.enter(&format!("c{i}"), "z", MON_10H + i * 1000).is_some());
    }
    let d = h.event("c9", &[], "z", PresenceKind::Enter, MON_10H + 30_000);
    assert_eq!(outcome(&d, "a"), Outcome::RateLimit);
    assert!(h.enter("c9", "z", MON_10H + 60_001).is_some());
}

#[test]
fn visit_count_needs_enough_visits_within_the_window() {
    let mut o = offer("regular", "wine", OfferTrigger::VisitCount);
    o.visits = Some(3);
    o.visit_days = Some(7);
    let mut h = H::new(&[o]);
    let day = 24 * HOUR;
    let d = h.event("a", &[], "wine", PresenceKind::Enter, MON_10H);
    assert_eq!(
        outcome(&d, "regular"),
        Outcome::TooFewVisits { have: 1, need: 3 }
    );
    assert!(h.enter("a", "wine", MON_10H + 2 * day).is_none());
    // The first visit falls out of the window on day 7.
    let d = h.event("a", &[], "wine", PresenceKind::Enter, MON_10H + 7 * day);
    assert_eq!(
        outcome(&d, "regular"),
        Outcome::TooFewVisits { have: 2, need: 3 }
    );
    let d = h.event("a", &[], "wine", PresenceKind::Enter, MON_10H + 8 * day);
    let t = d.trigger.unwrap();
    assert_eq!(
        (t.reason.trigger, t.reason.visits, t.reason.window_days),
        ("visit_count", Some(3), Some(7))
    );
    // Visits are persisted with the decision.
    assert!(d
        .writes
        .iter()
        .any(|w| matches!(w, CapWrite::Enters { enters, .. } if enters.len() == 3)));
}

#[test]
fn writes_describe_everything_a_restart_needs() {
    let mut o = offer("a", "z", OfferTrigger::Enter);
    o.daily_budget = Some(5);
    let mut h = H::new(&[o.clone()]);
    let d = h.event("x", &[], "z", PresenceKind::Enter, MON_10H);
    assert!(d.trigger.is_some());
    // Replaying the writes into fresh state gives the same decision as the live state.
    let mut restored = Caps::default();
    for w in &d.writes {
        match w {
            CapWrite::Fired {
                offer,
                customer,
                at,
            } => {
                restored
                    .last_fired
                    .insert((offer.clone(), customer.clone()), *at);
            }
            CapWrite::Daily { offer, date, count } => {
                restored.daily.insert((offer.clone(), date.clone()), *count);
            }
            CapWrite::Visit { customer, visit } => {
                restored.visits.insert(customer.clone(), *visit);
            }
            CapWrite::Enters { customer, enters } => {
                restored.enters.insert(customer.clone(), enters.clone());
            }
        }
    }
    let mut h2 = H::new(&[o]);
    h2.caps = restored;
    let d2 = h2.event("x", &[], "z", PresenceKind::Enter, MON_10H + MIN);
    assert!(matches!(outcome(&d2, "a"), Outcome::Cooldown { .. }));
}

#[test]
fn pruning_keeps_state_bounded_without_forgetting_live_cooldowns() {
    let mut o = offer("a", "z", OfferTrigger::Enter);
    o.cooldown_s = 3600;
    let mut h = H::new(&[o]);
    for i in 0..1000 {
        h.enter(&format!("c{i}"), "z", MON_10H + i * 1000);
    }
    h.rules.prune(&mut h.caps, Timestamp(MON_10H + 1000 * 1000));
    assert_eq!(h.caps.last_fired.len(), 1000, "all still cooling down");
    h.rules.prune(&mut h.caps, Timestamp(MON_10H + 3 * HOUR));
    assert!(h.caps.last_fired.is_empty());
    assert!(h.caps.visits.is_empty());
    assert!(h.caps.recent.is_empty());
}
