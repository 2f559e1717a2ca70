//! Offer triggers, sans-IO: fed presence facts about an opted-in customer and `now`, the rules decide
//! whether an offer fires, and say why each rule did or did not. Cap state ([`Caps`]) is plain data
//! the caller persists ([`store`]) from the [`CapWrite`]s each decision returns — before the trigger
//! leaves, so a crash can lose a trigger but never repeat one within its cooldown.
//!
//! Precedence when a presence event arrives: every rule is checked (zone, trigger, segments, days,
//! hours, quiet hours, its own cooldown and daily budget); of those that pass, the highest priority
//! (then the first in the file) is the candidate; the customer's per-visit maximum and the hub's
//! per-minute rate then apply to it. One presence event fires at most one offer.

pub mod stage;
pub mod store;

use std::collections::{HashMap, VecDeque};

use chrono::{Datelike, Timelike, Weekday};
use serde::{Deserialize, Serialize};

use crate::config::{OfferConfig, OfferLimits, OfferTrigger};
use crate::time::Timestamp;

const DAY_MS: u64 = 86_400_000;

/// A presence event about an opted-in customer, as the rules see it.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The platform's customer id.
    pub customer: &'a str,
    /// The customer's segments.
    pub segments: &'a [String],
    /// The zone.
    pub zone: &'a str,
    /// What happened.
    pub event: PresenceKind,
    /// When.
    pub at: Timestamp,
    /// When the visit to the zone began.
    pub entered_at: Timestamp,
}

/// The presence event kinds rules react to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceKind {
    /// Entered the zone.
    Enter,
    /// Reached a dwell mark (seconds).
    Dwell(u64),
    /// Left the zone.
    Exit,
}

impl PresenceKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceKind::Enter => "enter",
            PresenceKind::Dwell(_) => "dwell",
            PresenceKind::Exit => "exit",
        }
    }
}

/// Why a rule did or did not fire for one presence event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It fired.
    Fired,
    /// Not one of its zones.
    OtherZone,
    /// Not its trigger (or not its dwell mark).
    OtherTrigger,
    /// Fewer visits than it needs.
    TooFewVisits {
        /// Visits in the window, this one included.
        have: u32,
        /// Visits needed.
        need: u32,
    },
    /// The customer is in none of `segments_include`.
    NotInSegments,
    /// The customer is in a segment of `segments_exclude`.
    ExcludedSegment(String),
    /// Not one of its days (local).
    OutsideDays,
    /// Outside its hours (local).
    OutsideHours,
    /// In its quiet hours (local).
    QuietHours,
    /// The customer got it less than `cooldown_s` ago.
    Cooldown {
        /// When it may fire again.
        until: Timestamp,
    },
    /// Its daily budget on this hub is spent.
    BudgetSpent,
    /// Another matching rule had a higher priority.
    Outranked(String),
    /// The customer already got `max_per_visit` offers this visit.
    VisitLimit,
    /// The hub fired `max_per_minute` offers in the last minute.
    RateLimit,
}

impl Outcome {
    /// A short reason, for logs and `offers explain`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Fired => "fired".into(),
            Outcome::OtherZone => "not one of its zones".into(),
            Outcome::OtherTrigger => "not its trigger".into(),
            Outcome::TooFewVisits { have, need } => format!("{have} visits of {need} needed"),
            Outcome::NotInSegments => "customer in none of segments_include".into(),
            Outcome::ExcludedSegment(s) => format!("customer in excluded segment {s:?}"),
            Outcome::OutsideDays => "not one of its days".into(),
            Outcome::OutsideHours => "outside its hours".into(),
            Outcome::QuietHours => "quiet hours".into(),
            Outcome::Cooldown { until } => format!("capped: cooldown until {}", until.to_rfc3339()),
            Outcome::BudgetSpent => "capped: daily budget spent".into(),
            Outcome::Outranked(by) => format!("outranked by {by}"),
            Outcome::VisitLimit => "capped: max_per_visit reached".into(),
            Outcome::RateLimit => "capped: hub rate limit".into(),
        }
    }
}

/// A local time range in minutes since midnight; `start > end` crosses midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hours {
    start: u16,
    end: u16,
}

impl Hours {
    /// Parses `"HH:MM-HH:MM"`.
    pub fn parse(s: &str) -> Option<Hours> {
        let (a, b) = s.split_once('-')?;
        let min = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
        };
        let (start, end) = (min(a)?, min(b)?);
        (start != end).then_some(Hours { start, end })
    }

    fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// Parses `mon` … `sun` (or full names).
pub fn parse_day(s: &str) -> Option<Weekday> {
    s.trim().to_lowercase().parse().ok()
}

#[derive(Clone, Copy, Debug)]
enum Trigger {
    Enter,
    Dwell(u64),
    Exit,
    VisitCount { visits: u32, days: u32 },
}

#[derive(Clone, Debug)]
struct Rule {
    id: String,
    zones: Vec<String>,
    trigger: Trigger,
    include: Vec<String>,
    exclude: Vec<String>,
    priority: i32,
    cooldown_ms: u64,
    days: Vec<Weekday>,
    hours: Option<Hours>,
    quiet: Vec<Hours>,
    daily_budget: Option<u32>,
}

/// A fired offer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Triggered {
    /// The offer (rule) id.
    pub offer_id: String,
    /// The customer.
    pub customer_id: String,
    /// The zone.
    pub zone: String,
    /// When.
    #[serde(serialize_with = "crate::sink::rfc3339")]
    pub at: Timestamp,
    /// The presence event that caused it.
    pub cause: Cause,
    /// Which rule and threshold.
    pub reason: Reason,
}

/// The presence event behind a trigger.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cause {
    /// `enter`, `dwell` or `exit`.
    pub event: &'static str,
    /// When it happened.
    #[serde(serialize_with = "crate::sink::rfc3339")]
    pub at: Timestamp,
    /// When the zone visit began.
    #[serde(serialize_with = "crate::sink::rfc3339")]
    pub entered_at: Timestamp,
    /// For dwell: the mark reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<u64>,
}

/// Why a trigger fired.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reason {
    /// The rule (the offer's id).
    pub rule: String,
    /// `enter`, `dwell`, `exit` or `visit_count`.
    pub trigger: &'static str,
    /// The threshold met: dwell seconds, or visits needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    /// For visit_count: the days counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_days: Option<u32>,
    /// For visit_count: the visits counted, this one included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visits: Option<u32>,
    /// The rule's priority.
    pub priority: i32,
}

/// A customer's store visit, for `max_per_visit`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreVisit {
    /// When the visit began (ms).
    pub start: u64,
    /// Last presence event (ms).
    pub last: u64,
    /// Offers fired in it.
    pub offers: u32,
}

/// Cap state: everything a decision depends on besides the rules. Persisted by [`store`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Caps {
    /// Last trigger per (offer, customer), ms.
    pub last_fired: HashMap<(String, String), u64>,
    /// Triggers per (offer, local date `YYYY-MM-DD`).
    pub daily: HashMap<(String, String), u32>,
    /// Store visits per customer.
    pub visits: HashMap<String, StoreVisit>,
    /// Zone enters per customer, ms, oldest first (for visit_count).
    pub enters: HashMap<String, Vec<(String, u64)>>,
    /// The hub's recent triggers, ms (rate limit; not persisted).
    pub recent: VecDeque<u64>,
}

/// A change to persist.
#[derive(Clone, Debug, PartialEq)]
pub enum CapWrite {
    /// The customer got the offer at this time.
    Fired {
        /// Offer.
        offer: String,
        /// Customer.
        customer: String,
        /// When (ms).
        at: u64,
    },
    /// The offer's count for a local day.
    Daily {
        /// Offer.
        offer: String,
        /// Local date.
        date: String,
        /// Triggers that day.
        count: u32,
    },
    /// The customer's current store visit.
    Visit {
        /// Customer.
        customer: String,
        /// The visit.
        visit: StoreVisit,
    },
    /// The customer's recent zone enters.
    Enters {
        /// Customer.
        customer: String,
        /// (zone, ms).
        enters: Vec<(String, u64)>,
    },
}

/// A decision about one presence event.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// The offer that fired, if any.
    pub trigger: Option<Triggered>,
    /// Every rule's outcome, in config order.
    pub outcomes: Vec<(String, Outcome)>,
    /// What to persist, before the trigger is sent.
    pub writes: Vec<CapWrite>,
}

/// The compiled rules.
#[derive(Clone, Debug)]
pub struct Rules {
    rules: Vec<Rule>,
    limits: OfferLimits,
    tz: chrono_tz::Tz,
    /// The longest visit_count window, for pruning enters.
    enters_keep_ms: u64,
}

impl Rules {
    /// Compiles validated config (values validation would reject are skipped or defaulted).
    pub fn new(offers: &[OfferConfig], limits: &OfferLimits, timezone: &str) -> Rules {
        let rules: Vec<Rule> = offers
            .iter()
            .map(|o| Rule {
                id: o.id.clone(),
                zones: o.zones.clone(),
                trigger: match o.trigger {
                    OfferTrigger::Enter => Trigger::Enter,
                    OfferTrigger::Dwell => Trigger::Dwell(o.dwell_s.unwrap_or(0)),
                    OfferTrigger::Exit => Trigger::Exit,
                    OfferTrigger::VisitCount => Trigger::VisitCount {
                        visits: o.visits.unwrap_or(1),
                        days: o.visit_days.unwrap_or(1),
                    },
                },
                include: o.segments_include.clone(),
                exclude: o.segments_exclude.clone(),
                priority: o.priority,
                cooldown_ms: o.cooldown_s.saturating_mul(1000),
                days: o.days.iter().filter_map(|d| parse_day(d)).collect(),
                hours: o.hours.as_deref().and_then(Hours::parse),
                quiet: o
                    .quiet_hours
                    .iter()
                    .filter_map(|h| Hours::parse(h))
                    .collect(),
                daily_budget: o.daily_budget,
            })
            .collect();
        let enters_keep_ms = rules
            .iter()
            .filter_map(|r| match r.trigger {
                Trigger::VisitCount { days, .. } => Some(u64::from(days) * DAY_MS),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        Rules {
            rules,
            limits: limits.clone(),
            tz: timezone.parse().unwrap_or(chrono_tz::UTC),
            enters_keep_ms,
        }
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule ids, in config order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// The local date of `t` in the store's time zone (budgets reset at local midnight).
    pub fn local_date(&self, t: Timestamp) -> String {
        self.local(t).format("%Y-%m-%d").to_string()
    }

    pub(crate) fn local(&self, t: Timestamp) -> chrono::DateTime<chrono_tz::Tz> {
        chrono::DateTime::from_timestamp_millis(t.0 as i64)
            .unwrap_or_default()
            .with_timezone(&self.tz)
    }

    /// Decides on one presence event, updating `caps`; the returned writes must be persisted before
    /// the trigger is sent.
    pub fn handle(&self, caps: &mut Caps, f: &Facts) -> Decision {
        let mut writes = Vec::new();
        let now = f.at.0;
        // The store visit this event belongs to.
        let gap = self.limits.visit_gap_s.saturating_mul(1000);
        let visit = caps.visits.entry(f.customer.to_owned()).or_default();
        if visit.start == 0 || now.saturating_sub(visit.last) > gap {
            *visit = StoreVisit {
                start: now,
                last: now,
                offers: 0,
            };
        } else {
            visit.last = visit.last.max(now);
        }
        let mut visit_changed = f.event == PresenceKind::Enter;
        if f.event == PresenceKind::Enter && self.enters_keep_ms > 0 {
            let list = caps.enters.entry(f.customer.to_owned()).or_default();
            list.retain(|(_, t)| now.saturating_sub(*t) < self.enters_keep_ms);
            list.push((f.zone.to_owned(), now));
            writes.push(CapWrite::Enters {
                customer: f.customer.to_owned(),
                enters: list.clone(),
            });
        }
        let (outcomes, winner) = self.evaluate(caps, f);
        let mut decision = Decision {
            trigger: None,
            outcomes,
            writes,
        };
        if let Some(i) = winner {
            let r = &self.rules[i];
            let date = self.local_date(f.at);
            caps.last_fired
                .insert((r.id.clone(), f.customer.to_owned()), now);
            let day = caps.daily.entry((r.id.clone(), date.clone())).or_default();
            *day += 1;
            let count = *day;
            // Yesterday's budgets are of no use any more.
            caps.daily.retain(|(_, d), _| *d >= date);
            caps.recent.push_back(now);
            if let Some(v) = caps.visits.get_mut(f.customer) {
                v.offers += 1;
            }
            visit_changed = true;
            decision.writes.push(CapWrite::Fired {
                offer: r.id.clone(),
                customer: f.customer.to_owned(),
                at: now,
            });
            decision.writes.push(CapWrite::Daily {
                offer: r.id.clone(),
                date,
                count,
            });
            let visits = match r.trigger {
                Trigger::VisitCount { days, .. } => Some(self.visits_in(caps, f, days)),
                _ => None,
            };
            decision.trigger = Some(Triggered {
                offer_id: r.id.clone(),
                customer_id: f.customer.to_owned(),
                zone: f.zone.to_owned(),
                at: f.at,
                cause: Cause {
                    event: f.event.as_str(),
                    at: f.at,
                    entered_at: f.entered_at,
                    dwell_s: match f.event {
                        PresenceKind::Dwell(s) => Some(s),
                        _ => None,
                    },
                },
                reason: Reason {
                    rule: r.id.clone(),
                    trigger: match r.trigger {
                        Trigger::Enter => "enter",
                        Trigger::Dwell(_) => "dwell",
                        Trigger::Exit => "exit",
                        Trigger::VisitCount { .. } => "visit_count",
                    },
                    threshold: match r.trigger {
                        Trigger::Dwell(s) => Some(s),
                        Trigger::VisitCount { visits, .. } => Some(u64::from(visits)),
                        _ => None,
                    },
                    window_days: match r.trigger {
                        Trigger::VisitCount { days, .. } => Some(days),
                        _ => None,
                    },
                    visits,
                    priority: r.priority,
                },
            });
        }
        if visit_changed {
            if let Some(v) = caps.visits.get(f.customer) {
                decision.writes.push(CapWrite::Visit {
                    customer: f.customer.to_owned(),
                    visit: *v,
                });
            }
        }
        decision
    }

    fn visits_in(&self, caps: &Caps, f: &Facts, days: u32) -> u32 {
        let window = u64::from(days) * DAY_MS;
        caps.enters.get(f.customer).map_or(0, |l| {
            l.iter()
                .filter(|(z, t)| f.at.0.saturating_sub(*t) < window && self.zone_counts(z, f))
                .count() as u32
        })
    }

    fn zone_counts(&self, zone: &str, f: &Facts) -> bool {
        // Visits count in any zone of a rule that lists the event's zone.
        self.rules
            .iter()
            .any(|r| r.zones.iter().any(|z| z == f.zone) && r.zones.iter().any(|z| z == zone))
    }

    /// Every rule's outcome for `f` against `caps`, and the rule that would fire; changes nothing.
    pub fn evaluate(&self, caps: &Caps, f: &Facts) -> (Vec<(String, Outcome)>, Option<usize>) {
        let local = self.local(f.at);
        let minute = (local.hour() * 60 + local.minute()) as u16;
        let today = self.local_date(f.at);
        let mut outcomes: Vec<Outcome> = self
            .rules
            .iter()
            .map(|r| self.check(r, caps, f, &local, minute, &today))
            .collect();
        let winner = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == Outcome::Fired)
            .max_by_key(|(i, _)| (self.rules[*i].priority, std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        let mut fired = winner;
        if let Some(w) = winner {
            for (i, o) in outcomes.iter_mut().enumerate() {
                if i != w && *o == Outcome::Fired {
                    *o = Outcome::Outranked(self.rules[w].id.clone());
                }
            }
            let visit_full = caps
                .visits
                .get(f.customer)
                .is_some_and(|v| v.offers >= self.limits.max_per_visit);
            let minute_ago = f.at.0.saturating_sub(60_000);
            let in_last_minute = caps.recent.iter().filter(|t| **t > minute_ago).count();
            if visit_full {
                outcomes[w] = Outcome::VisitLimit;
                fired = None;
            } else if in_last_minute >= self.limits.max_per_minute as usize {
                outcomes[w] = Outcome::RateLimit;
                fired = None;
            }
        }
        let named = self
            .rules
            .iter()
            .map(|r| r.id.clone())
            .zip(outcomes)
            .collect();
        (named, fired)
    }

    fn check(
        &self,
        r: &Rule,
        caps: &Caps,
        f: &Facts,
        local: &chrono::DateTime<chrono_tz::Tz>,
        minute: u16,
        today: &str,
    ) -> Outcome {
        if !r.zones.iter().any(|z| z == f.zone) {
            return Outcome::OtherZone;
        }
        match (r.trigger, f.event) {
            (Trigger::Enter, PresenceKind::Enter) | (Trigger::Exit, PresenceKind::Exit) => {}
            (Trigger::Dwell(want), PresenceKind::Dwell(mark)) if mark == want => {}
            (Trigger::VisitCount { visits, days }, PresenceKind::Enter) => {
                let have = self.visits_in(caps, f, days);
                if have < visits {
                    return Outcome::TooFewVisits { have, need: visits };
                }
            }
            _ => return Outcome::OtherTrigger,
        }
        if !r.include.is_empty() && !r.include.iter().any(|s| f.segments.contains(s)) {
            return Outcome::NotInSegments;
        }
        if let Some(s) = r.exclude.iter().find(|s| f.segments.contains(s)) {
            return Outcome::ExcludedSegment(s.clone());
        }
        if !r.days.is_empty() && !r.days.contains(&local.weekday()) {
            return Outcome::OutsideDays;
        }
        if r.hours.is_some_and(|h| !h.contains(minute)) {
            return Outcome::OutsideHours;
        }
        if r.quiet.iter().any(|q| q.contains(minute)) {
            return Outcome::QuietHours;
        }
        if let Some(last) = caps.last_fired.get(&(r.id.clone(), f.customer.to_owned())) {
            let until = last.saturating_add(r.cooldown_ms);
            if f.at.0 < until {
                return Outcome::Cooldown {
                    until: Timestamp(until),
                };
            }
        }
        if let Some(budget) = r.daily_budget {
            let used = caps
                .daily
                .get(&(r.id.clone(), today.to_owned()))
                .copied()
                .unwrap_or(0);
            if used >= budget {
                return Outcome::BudgetSpent;
            }
        }
        Outcome::Fired
    }

    /// Drops state no rule can need any more at `now` (old triggers, visits, enters, the rate
    /// window), so cap state stays bounded over months.
    pub fn prune(&self, caps: &mut Caps, now: Timestamp) {
        let longest_cooldown = self.rules.iter().map(|r| r.cooldown_ms).max().unwrap_or(0);
        caps.last_fired
            .retain(|_, t| now.0.saturating_sub(*t) < longest_cooldown);
        let gap = self.limits.visit_gap_s.saturating_mul(1000);
        caps.visits
            .retain(|_, v| now.0.saturating_sub(v.last) <= gap);
        let keep = self.enters_keep_ms;
        caps.enters.retain(|_, l| {
            l.retain(|(_, t)| now.0.saturating_sub(*t) < keep);
            !l.is_empty()
        });
        let today = self.local_date(now);
        caps.daily.retain(|(_, d), _| *d >= today);
        while caps
            .recent
            .front()
            .is_some_and(|t| now.0.saturating_sub(*t) >= 60_000)
        {
            caps.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;
