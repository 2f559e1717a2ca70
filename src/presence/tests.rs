//! Every state transition of the engine, with a simulated clock.

use super::*;
use crate::config::{PresenceConfig, SmoothingFilter, ZoneConfig};

const T0: u64 = 1_800_000_000_000;

fn zone(id: &str, hub: Option<&str>, enter: i16, exit: i16) -> ZoneConfig {
    ZoneConfig {
        hub: hub.map(str::to_owned),
        enter_rssi: enter,
        exit_rssi: exit,
        min_enter_s: 2.0,
        absence_timeout_s: 10.0,
        dwell_marks_s: vec![30, 120],
        ..ZoneConfig::new(id)
    }
}

fn params(max_tracked: usize) -> EngineParams {
    let mut p = EngineParams::from_config(&PresenceConfig {
        max_tracked,
        ..PresenceConfig::default()
    });
    // Raw samples make the thresholds exact, so the tests read as the rules; smoothing has tests of
    // its own in `filter`.
    p.filter = FilterParams::tuned(FilterKind::Raw);
    p
}

/// [`params`] with departures judged only by the absence timeout, for the tests of that rule.
fn timeout_only() -> EngineParams {
    EngineParams {
        silence_gaps: 0.0,
        ..params(10_000)
    }
}

struct Harness {
    engine: Engine,
    now: u64,
    events: Vec<Event>,
}

const ALICE: Identity = Identity::Customer(CustomerKey(0));
const BOB: Identity = Identity::Customer(CustomerKey(1));

impl Harness {
    fn new(zones: &[ZoneConfig]) -> Harness {
        Harness::with(zones, params(10_000))
    }

    fn with(zones: &[ZoneConfig], p: EngineParams) -> Harness {
        Harness {
            engine: Engine::new(zones, p, "hub-1"),
            now: T0,
            events: Vec::new(),
        }
    }

    fn hear(&mut self, who: Identity, hub: HubIdx, rssi: i16) {
        let obs = Observation {
            identity: who,
            hub,
            rssi,
            measured_power: Some(-59),
        };
        self.engine
            .handle_observation(Timestamp(self.now), obs, &mut self.events);
    }

    /// Hears `who` every 200 ms for `secs` seconds at `rssi`.
    fn hear_for(&mut self, who: Identity, hub: HubIdx, rssi: i16, secs: f64) {
        self.hear_every(who, hub, rssi, secs, 200);
    }

    /// Hears `who` every `period_ms` for `secs` seconds at `rssi`.
    fn hear_every(&mut self, who: Identity, hub: HubIdx, rssi: i16, secs: f64, period_ms: u64) {
        let end = self.now + (secs * 1000.0) as u64;
        while self.now < end {
            self.hear(who, hub, rssi);
            self.now += period_ms;
        }
    }

    /// The time of the absence exit after `who` was last heard at `last`, stepping through
    /// `poll_timeout` as a daemon would.
    fn absence_exit_after(&mut self, last: u64) -> u64 {
        self.visits();
        while let Some(t) = self.engine.poll_timeout() {
            assert!(t.0 >= last, "a deadline before the last advert");
            self.advance_to(t.0);
            if let Some(&(kind, _, at)) = self.visits().first() {
                assert!(
                    matches!(
                        kind,
                        VisitKind::Exit {
                            reason: ExitReason::Absence,
                            ..
                        }
                    ),
                    "{kind:?}"
                );
                return at + T0 - last;
            }
        }
        panic!("the visit never ended");
    }

    fn advance_to(&mut self, t: u64) {
        self.now = t;
        self.engine.handle_timeout(Timestamp(t), &mut self.events);
    }

    fn visits(&mut self) -> Vec<(VisitKind, ZoneIdx, u64)> {
        self.events
            .drain(..)
            .filter_map(|e| match e {
                Event::Visit(v) => Some((v.kind, v.zone, v.at.0 - T0)),
                Event::Headcount(_) => None,
            })
            .collect()
    }

    fn headcounts(&mut self) -> Vec<Headcount> {
        self.events
            .drain(..)
            .filter_map(|e| match e {
                Event::Headcount(h) => Some(h),
                Event::Visit(_) => None,
            })
            .collect()
    }
}

#[test]
fn enters_only_after_the_signal_stays_above_for_min_enter() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 0, -65, 1.8);
    assert!(h.visits().is_empty(), "entered before min_enter_s");
    h.hear_for(ALICE, 0, -65, 0.4);
    assert_eq!(h.visits(), vec![(VisitKind::Enter, 0, 2000)]);
}

#[test]
fn a_spike_shorter_than_min_enter_does_not_enter() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 0, -65, 1.0);
    h.hear_for(ALICE, 0, -75, 1.0);
    h.hear_for(ALICE, 0, -65, 1.0);
    assert!(h.visits().is_empty());
}

#[test]
fn enter_event_carries_the_adverts_that_justified_it() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 0, -65, 2.2);
    let Event::Visit(v) = h.events[0] else {
        panic!("{:?}", h.events)
    };
    assert_eq!(v.subject, Subject::Customer(CustomerKey(0)));
    assert_eq!(v.first_seen, Timestamp(T0));
    assert_eq!(v.last_seen, Timestamp(T0 + 2000));
    assert_eq!(v.rssi, -65.0);
    // -59 dBm at 1 m, -65 dBm heard, n = 2.2: 10^(6/22) ≈ 1.87 m.
    assert!((v.distance_m - 1.874).abs() < 0.01, "{}", v.distance_m);
}

#[test]
fn hysteresis_keeps_a_visit_between_exit_and_enter_thresholds() {
    // A weak signal that only just got in (a fob in a pocket) keeps the full hysteresis band.
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 0, -69, 3.0);
    h.hear_for(ALICE, 0, -76, 5.0);
    assert_eq!(h.visits(), vec![(VisitKind::Enter, 0, 2000)]);
    h.hear(ALICE, 0, -81);
    let v = h.visits();
    assert_eq!(v.len(), 1);
    assert!(matches!(
        v[0].0,
        VisitKind::Exit {
            reason: ExitReason::Signal,
            ..
        }
    ));
    assert_eq!(v[0].2, 8000);
}

#[test]
fn a_strong_signal_exits_as_soon_as_it_falls_below_enter() {
    // Settled at -60, 10 dB above enter: falling 8 dB (the exit margin) is not yet an exit, falling
    // below enter_rssi is, without waiting for exit_rssi.
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 0, -60, 20.0);
    h.visits();
    h.hear_for(ALICE, 0, -68, 1.0);
    assert!(h.visits().is_empty());
    h.hear(ALICE, 0, -71);
    let v = h.visits();
    assert!(matches!(
        v[0].0,
        VisitKind::Exit {
            reason: ExitReason::Signal,
            ..
        }
    ));
}

#[test]
fn a_middling_signal_exits_at_its_margin_below_the_settled_level() {
    // Settled at -66: the exit threshold is about -66 - 8 = -74, between exit_rssi and enter_rssi;
    // with no other hub corroborating a departure the drop must clear it by UNCORROBORATED_DB.
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 0, -66, 30.0);
    h.visits();
    h.hear_for(ALICE, 0, -73, 1.0);
    assert!(
        !h.visits()
            .iter()
            .any(|v| matches!(v.0, VisitKind::Exit { .. })),
        "exited above the margin"
    );
    h.hear(ALICE, 0, -75);
    assert!(
        h.visits().is_empty(),
        "exited within the uncorroborated margin"
    );
    h.hear(ALICE, 0, -76);
    assert!(h
        .visits()
        .iter()
        .any(|v| matches!(v.0, VisitKind::Exit { .. })));
}

#[test]
fn exit_reports_the_visit_duration() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 0, -65, 12.0);
    h.hear(ALICE, 0, -90);
    let exit = h
        .events
        .iter()
        .find_map(|e| match e {
            Event::Visit(v) if matches!(v.kind, VisitKind::Exit { .. }) => Some(*v),
            _ => None,
        })
        .unwrap();
    let VisitKind::Exit { duration_s, .. } = exit.kind else {
        unreachable!()
    };
    assert_eq!(duration_s, 10.0);
    assert_eq!(exit.entered_at, Timestamp(T0 + 2000));
}

#[test]
fn dwell_marks_fire_at_their_exact_times_from_poll_timeout() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 0, -65, 2.2);
    h.visits();
    // Keep hearing until just before the first mark, then let the timer fire it.
    h.hear_for(ALICE, 0, -65, 29.6);
    let deadline = h.engine.poll_timeout().unwrap();
    assert!(deadline <= Timestamp(T0 + 32_000));
    h.advance_to(T0 + 31_999);
    assert!(h.visits().is_empty());
    h.advance_to(T0 + 32_000);
    assert_eq!(
        h.visits(),
        vec![(VisitKind::Dwell { mark_s: 30 }, 0, 32_000)]
    );
}

#[test]
fn absence_timeout_is_inclusive_at_the_boundary() {
    let mut h = Harness::with(&[zone("a", None, -70, -80)], timeout_only());
    h.hear_for(ALICE, 0, -65, 3.0);
    h.visits();
    let last = h.now - 200;
    // poll_timeout may wake the caller early (stale timers are dropped lazily), never late.
    assert!(h.engine.poll_timeout().unwrap() <= Timestamp(last + 10_000));
    h.advance_to(last + 9_999);
    assert_eq!(h.engine.zone_of(&ALICE), Some(0));
    assert!(h.visits().is_empty());
    // An advert arriving exactly at the deadline comes too late: the exit fires first.
    h.now = last + 10_000;
    h.hear(ALICE, 0, -65);
    let v = h.visits();
    assert!(matches!(
        v[0],
        (
            VisitKind::Exit {
                reason: ExitReason::Absence,
                ..
            },
            0,
            _
        )
    ));
    assert_eq!(v[0].2, last + 10_000 - T0);
}

#[test]
fn a_device_that_falls_silent_leaves_after_eight_of_its_usual_gaps() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_every(ALICE, 0, -65, 6.0, 400);
    let last = h.now - 400;
    assert_eq!(h.engine.zone_of(&ALICE), Some(0));
    // 8 × 400 ms, well before the 10 s timeout: ten adverts lost in a row at -65 dBm is not what
    // happened; the customer left (or switched off).
    assert_eq!(h.absence_exit_after(last), 3_200);
}

#[test]
fn an_advert_exactly_at_the_silence_deadline_is_too_late() {
    for (silent_ms, leaves) in [(3_199, false), (3_200, true)] {
        let mut h = Harness::new(&[zone("a", None, -70, -80)]);
        h.hear_every(ALICE, 0, -65, 6.0, 400);
        h.visits();
        h.now += silent_ms - 400;
        h.hear(ALICE, 0, -65);
        let v = h.visits();
        assert_eq!(
            !v.is_empty(),
            leaves,
            "after {silent_ms} ms of silence: {v:?}"
        );
        if leaves {
            assert!(matches!(
                v[0].0,
                VisitKind::Exit {
                    reason: ExitReason::Absence,
                    ..
                }
            ));
        }
    }
}

#[test]
fn a_silence_under_three_seconds_is_never_a_departure() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_every(ALICE, 0, -65, 6.0, 100);
    let last = h.now - 100;
    assert_eq!(h.absence_exit_after(last), SILENCE_MIN_MS);
}

#[test]
fn a_device_that_paused_before_is_given_twice_that_pause() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_every(ALICE, 0, -65, 4.0, 400);
    // A phone whose OS held its advertising back for 2.5 s, then carried on.
    h.now += 2_100;
    h.hear_every(ALICE, 0, -65, 4.0, 400);
    let last = h.now - 400;
    assert_eq!(
        h.engine.zone_of(&ALICE),
        Some(0),
        "the pause ended the visit"
    );
    let after = h.absence_exit_after(last);
    // Twice the pause, a little faded by the 4 s since: well past 8 gaps, well before the timeout.
    assert!((4_500..5_000).contains(&after), "{after}");
}

#[test]
fn too_few_adverts_to_know_the_rhythm_wait_for_the_absence_timeout() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_every(ALICE, 0, -65, 3.0, 1000);
    assert_eq!(h.engine.zone_of(&ALICE), Some(0));
    assert_eq!(h.absence_exit_after(h.now - 1000), 10_000);
}

#[test]
fn silence_gaps_zero_leaves_only_by_the_absence_timeout() {
    let mut h = Harness::with(&[zone("a", None, -70, -80)], timeout_only());
    h.hear_every(ALICE, 0, -65, 6.0, 400);
    assert_eq!(h.absence_exit_after(h.now - 400), 10_000);
}

#[test]
fn a_reload_that_turns_silent_departures_off_applies_at_once() {
    let zones = [zone("a", None, -70, -80)];
    let mut h = Harness::new(&zones);
    h.hear_every(ALICE, 0, -65, 6.0, 400);
    let last = h.now - 400;
    h.engine.reconfigure(
        &zones,
        timeout_only(),
        "hub-1",
        Timestamp(last),
        &mut h.events,
    );
    assert_eq!(h.engine.zone_of(&ALICE), Some(0));
    assert_eq!(h.absence_exit_after(last), 10_000);
}

#[test]
fn an_absence_timeout_under_three_seconds_still_bounds_the_silence() {
    let z = ZoneConfig {
        absence_timeout_s: 2.0,
        ..zone("a", None, -70, -80)
    };
    let mut h = Harness::new(&[z]);
    h.hear_every(ALICE, 0, -65, 6.0, 400);
    assert_eq!(h.absence_exit_after(h.now - 400), 2_000);
}

#[test]
fn a_late_observation_is_applied_at_engine_time() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 0, -65, 3.0);
    h.now -= 1_500;
    h.hear(ALICE, 0, -65);
    assert_eq!(h.engine.stats().late_observations, 1);
    h.now += 1_700;
    h.hear(ALICE, 0, -90);
    let v = h.visits();
    let VisitKind::Exit { duration_s, .. } = v.last().unwrap().0 else {
        panic!("{v:?}")
    };
    assert!(duration_s >= 0.0);
}

#[test]
fn a_gap_of_hours_exits_at_the_absence_deadline_and_forgets() {
    let mut h = Harness::with(&[zone("a", None, -70, -80)], timeout_only());
    h.hear_for(ALICE, 0, -65, 5.0);
    h.events.clear();
    let last = h.now - 200;
    h.advance_to(h.now + 3 * 3600 * 1000);
    let exits: Vec<_> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Visit(v) => Some(*v),
            _ => None,
        })
        .collect();
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0].at, Timestamp(last + 10_000));
    assert_eq!(h.engine.tracked(), (0, 0));
    // One headcount for the interval that ended, not one per minute of the gap.
    assert!(h.headcounts().len() <= 2);
}

#[test]
fn the_stronger_hub_wins_and_the_margin_stops_ping_pong() {
    let zones = [
        zone("a", Some("hub-1"), -70, -80),
        zone("b", Some("hub-2"), -70, -80),
    ];
    let mut h = Harness::new(&zones);
    // Both qualify; b is stronger.
    for _ in 0..15 {
        h.hear(ALICE, 0, -66);
        h.hear(ALICE, 1, -62);
        h.now += 200;
    }
    assert_eq!(h.visits(), vec![(VisitKind::Enter, 1, 2000)]);
    // On the boundary a is sometimes 2 dB stronger: within the 3 dB margin, so no move.
    for i in 0..100 {
        let (ra, rb) = if i % 2 == 0 { (-63, -65) } else { (-65, -63) };
        h.hear(ALICE, 0, ra);
        h.hear(ALICE, 1, rb);
        h.now += 200;
    }
    assert!(h.visits().is_empty());
    // Clearly nearer a: moves after a's sustain time.
    for _ in 0..15 {
        h.hear(ALICE, 0, -58);
        h.hear(ALICE, 1, -68);
        h.now += 200;
    }
    let v = h.visits();
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(matches!(
        v[0].0,
        VisitKind::Exit {
            reason: ExitReason::Moved,
            ..
        }
    ));
    assert_eq!((v[1].0, v[1].1), (VisitKind::Enter, 0));
}

#[test]
fn nested_zones_of_one_hub_prefer_the_tighter_zone() {
    let zones = [zone("hall", None, -80, -88), zone("desk", None, -62, -70)];
    let mut h = Harness::new(&zones);
    h.hear_for(ALICE, 0, -75, 2.2);
    assert_eq!(h.visits(), vec![(VisitKind::Enter, 0, 2000)]);
    h.hear_for(ALICE, 0, -60, 2.2);
    let v = h.visits();
    assert_eq!(v.len(), 2);
    assert_eq!((v[1].0, v[1].1), (VisitKind::Enter, 1));
    // Back to the hall: the desk exits by signal, the hall re-qualifies.
    h.hear_for(ALICE, 0, -75, 2.4);
    let v = h.visits();
    assert!(matches!(v[0], (VisitKind::Exit { .. }, 1, _)), "{v:?}");
    assert_eq!((v[1].0, v[1].1), (VisitKind::Enter, 0));
}

#[test]
fn anonymous_devices_only_feed_headcounts() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    for i in 0..5 {
        h.hear_for(Identity::Anonymous(i), 0, -60, 3.0);
    }
    h.hear_for(ALICE, 0, -60, 3.0);
    let visits: Vec<_> = h
        .events
        .iter()
        .filter(|e| matches!(e, Event::Visit(_)))
        .collect();
    assert_eq!(visits.len(), 1, "only Alice's enter: {visits:?}");
    h.events.clear();
    h.advance_to(h.now + 61_000);
    let counts = h.headcounts();
    assert!(!counts.is_empty());
    let total_anon: u32 = counts.iter().map(|c| c.zones[0].anonymous).sum();
    let total_known: u32 = counts.iter().map(|c| c.zones[0].known).sum();
    assert_eq!(total_anon, 5);
    assert_eq!(total_known, 1);
    assert_eq!(counts[0].end.0 - counts[0].start.0, 60_000);
}

#[test]
fn memory_is_bounded_and_anonymous_devices_are_evicted_first() {
    let mut h = Harness::with(&[zone("a", None, -70, -80)], params(100));
    h.hear_for(ALICE, 0, -60, 3.0);
    for i in 0..10_000 {
        if i % 100 == 0 {
            h.hear(ALICE, 0, -60);
        }
        h.hear(Identity::Anonymous(i), 0, -75);
        h.now += 1;
        assert!(h.engine.tracked().0 <= 100);
    }
    assert!(
        h.engine.zone_of(&ALICE).is_some(),
        "a known customer was evicted for anonymous ones"
    );
    assert!(h.engine.stats().evictions >= 9_900);
}

#[test]
fn evicting_a_customer_in_a_visit_reports_the_exit() {
    let mut h = Harness::with(&[zone("a", None, -70, -80)], params(1));
    h.hear_for(ALICE, 0, -60, 3.0);
    h.visits();
    h.hear(BOB, 0, -60);
    let v = h.visits();
    assert!(matches!(
        v[0].0,
        VisitKind::Exit {
            reason: ExitReason::Evicted,
            ..
        }
    ));
}

#[test]
fn forgetting_an_identity_emits_nothing_more() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 0, -60, 3.0);
    h.visits();
    assert!(h.engine.forget(&ALICE));
    h.advance_to(h.now + 3_600_000);
    assert!(h.visits().is_empty());
    assert_eq!(h.engine.tracked().0, 0);
}

#[test]
fn silent_tracks_expire() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(Identity::Anonymous(7), 0, -95, 1.0);
    assert_eq!(h.engine.tracked(), (1, 1));
    h.advance_to(h.now + 10_000);
    assert_eq!(h.engine.tracked(), (0, 0));
    assert_eq!(h.engine.stats().expired, 1);
}

#[test]
fn baseline_enters_at_once_and_exits_without_hysteresis() {
    let p = EngineParams::baseline(&PresenceConfig {
        filter: SmoothingFilter::Kalman,
        ..PresenceConfig::default()
    });
    let mut h = Harness::with(&[zone("a", None, -70, -80)], p);
    h.hear(ALICE, 0, -65);
    assert_eq!(h.visits(), vec![(VisitKind::Enter, 0, 0)]);
    h.now += 200;
    h.hear(ALICE, 0, -72);
    assert!(matches!(h.visits()[0].0, VisitKind::Exit { .. }));
}

#[test]
fn observations_from_unknown_hubs_are_ignored() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 9, -50, 3.0);
    assert!(h.visits().is_empty());
    assert_eq!(h.engine.tracked().0, 0);
}

#[test]
fn a_reload_keeps_visits_in_zones_that_stay_and_ends_those_in_zones_that_go() {
    // Zone a on hub-1, zone b on hub-2 (hub index 1).
    let mut h = Harness::new(&[
        zone("a", None, -70, -80),
        zone("b", Some("hub-2"), -70, -80),
    ]);
    h.hear_for(ALICE, 0, -65, 2.2);
    h.hear_for(BOB, 1, -65, 2.2);
    assert_eq!(h.visits().len(), 2);
    // New config: zone a is gone, b has a stricter exit and moved to index 0, c is new.
    let new = [
        zone("b", Some("hub-2"), -60, -66),
        zone("c", None, -70, -80),
    ];
    h.engine.reconfigure(
        &new,
        params(10_000),
        "hub-1",
        Timestamp(h.now),
        &mut h.events,
    );
    let v = h.visits();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(matches!(
        v[0].0,
        VisitKind::Exit {
            reason: ExitReason::Reconfigured,
            ..
        }
    ));
    assert_eq!(h.engine.zone_index("b"), Some(0));
    assert_eq!(h.engine.zone_of(&BOB), Some(0), "Bob is still in b");
    let hub2 = h.engine.hub_index("hub-2").unwrap();
    // Bob at -68 was inside under the old exit (-80) and is outside under the new one (-66).
    h.hear_for(BOB, hub2, -68, 1.0);
    let v = h.visits();
    assert!(
        v.iter().any(|(k, z, _)| *z == 0
            && matches!(
                k,
                VisitKind::Exit {
                    reason: ExitReason::Signal,
                    ..
                }
            )),
        "{v:?}"
    );
    // Alice can enter the new zone c.
    let hub1 = h.engine.hub_index("hub-1").unwrap();
    h.hear_for(ALICE, hub1, -65, 2.2);
    assert!(h
        .visits()
        .contains(&(VisitKind::Enter, 1, h.now - T0 - 200)));
}

#[test]
fn a_reload_does_not_repeat_dwell_marks_already_sent() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    h.hear_for(ALICE, 0, -65, 40.0);
    let marks = |v: &[(VisitKind, ZoneIdx, u64)]| {
        v.iter()
            .filter(|(k, _, _)| matches!(k, VisitKind::Dwell { .. }))
            .count()
    };
    assert_eq!(marks(&h.visits()), 1);
    let mut z = zone("a", None, -70, -80);
    z.dwell_marks_s = vec![10, 30, 60];
    h.engine.reconfigure(
        &[z],
        params(10_000),
        "hub-1",
        Timestamp(h.now),
        &mut h.events,
    );
    h.hear_for(ALICE, 0, -65, 30.0);
    let v = h.visits();
    assert_eq!(marks(&v), 1, "only the 60 s mark is new: {v:?}");
}

#[test]
fn an_uncorroborated_drop_must_clear_the_threshold_by_a_margin() {
    // Alone, a dip just under the threshold is not yet an exit; a departure another hub corroborates
    // is taken where its falling trend will be; the baseline takes the threshold as it is.
    assert!(!leaves(-74.5, 0.0, -74.0, false, true));
    assert!(leaves(
        -74.0 - UNCORROBORATED_DB - 0.1,
        0.0,
        -74.0,
        false,
        true
    ));
    assert!(leaves(-73.0, -1.0, -74.0, true, true));
    assert!(
        !leaves(-73.0, 0.5, -74.0, true, true),
        "a rising signal is not anticipated down"
    );
    assert!(!leaves(-73.0, -1.0, -74.0, false, true));
    assert!(leaves(-74.5, 0.0, -74.0, false, false));
}

/// When the engine lets a customer who walks from zone a toward hub-2 go, with hub-2 hearing the
/// approach or not.
fn departure_exit_ms(corroborated: bool) -> u64 {
    let zones = [
        zone("a", Some("hub-1"), -70, -80),
        zone("b", Some("hub-2"), -60, -70),
    ];
    let mut p = params(100);
    p.filter = FilterParams::tuned(FilterKind::Trend);
    let mut h = Harness::with(&zones, p);
    for _ in 0..100 {
        h.hear(ALICE, 0, -62);
        h.hear(ALICE, 1, -90);
        h.now += 200;
    }
    assert_eq!(h.visits(), vec![(VisitKind::Enter, 0, 2000)]);
    // Walking out: a's signal falls 2 dB/s; hub-2's rises 2 dB/s when it hears the approach.
    let start = h.now;
    for i in 1..=100u64 {
        let a = -62.0 - 2.0 * (i as f64 * 0.2);
        let b = if corroborated {
            -90.0 + 2.0 * (i as f64 * 0.2)
        } else {
            -90.0
        };
        h.hear(ALICE, 0, a.round() as i16);
        h.hear(ALICE, 1, b.round() as i16);
        h.now += 200;
        let exits: Vec<_> = h
            .visits()
            .into_iter()
            .filter(|v| matches!(v.0, VisitKind::Exit { .. }))
            .collect();
        if let Some(&(kind, zone, at)) = exits.first() {
            assert_eq!(zone, 0);
            assert!(matches!(
                kind,
                VisitKind::Exit {
                    reason: ExitReason::Signal,
                    ..
                }
            ));
            return at - (start - T0);
        }
    }
    panic!("never exited");
}

#[test]
fn a_departure_another_hub_corroborates_exits_sooner() {
    let alone = departure_exit_ms(false);
    let corroborated = departure_exit_ms(true);
    // The raw signal crosses enter_rssi (-70) 4 s into the walk.
    assert!(alone > 4_000, "left before the signal fell: {alone} ms");
    assert!(
        corroborated + 500 <= alone,
        "corroborated {corroborated} ms vs alone {alone} ms"
    );
}

/// A customer who stood under hub-1 in zone a walks out slowly toward hub-2 (a falls 1 dB/s, hub-2
/// rises 2 dB/s, so the departure is corroborated and anticipated), then keeps going or, 11 s into
/// the walk, turns back: the events after the enter. With `reload`, the config is reloaded with the
/// zones in the other order right after the exit.
fn slow_departure(turn_back: bool, reload: bool) -> Vec<(VisitKind, ZoneIdx, u64)> {
    let zones = [
        ZoneConfig {
            min_enter_s: 1.0,
            ..zone("a", Some("hub-1"), -70, -80)
        },
        zone("b", Some("hub-2"), -50, -60),
    ];
    let mut p = params(100);
    p.filter = FilterParams::tuned(FilterKind::Trend);
    let mut h = Harness::with(&zones, p);
    let mut seen = Vec::new();
    for _ in 0..100 {
        h.hear(ALICE, 0, -58);
        h.hear(ALICE, 1, -90);
        h.now += 200;
    }
    assert_eq!(h.visits(), vec![(VisitKind::Enter, 0, 1000)]);
    let (mut a, mut b) = (-58.0f64, -90.0f64);
    let legs: &[(f64, f64, u32)] = if turn_back {
        &[(-1.0, 2.0, 55), (2.0, -2.0, 30)]
    } else {
        &[(-1.0, 2.0, 80)]
    };
    for &(da, db, steps) in legs {
        for _ in 0..steps {
            a += da * 0.2;
            b += db * 0.2;
            h.hear(ALICE, 0, a.round() as i16);
            h.hear(ALICE, 1, b.round() as i16);
            h.now += 200;
            let new = h.visits();
            if reload && seen.is_empty() && !new.is_empty() {
                let swapped = [zones[1].clone(), zones[0].clone()];
                h.engine
                    .reconfigure(&swapped, p, "hub-1", Timestamp(h.now), &mut h.events);
            }
            seen.extend(new);
        }
    }
    seen.extend(h.visits());
    seen
}

#[test]
fn an_early_departure_does_not_re_enter_while_the_signal_keeps_falling() {
    let after = slow_departure(false, false);
    // The exit is anticipated while the signal is still above enter_rssi (-70), and it stays above
    // for longer than min_enter_s after that: without the rule the customer would enter again a
    // second later and leave again, a flap at every such departure.
    assert!(
        matches!(
            after.as_slice(),
            [(
                VisitKind::Exit {
                    reason: ExitReason::Signal,
                    ..
                },
                0,
                _
            )]
        ),
        "{after:?}"
    );
    // Anticipated: before the signal fell to -70, 12 s into the walk (32 s).
    assert!(after[0].2 < 32_000, "{after:?}");
}

#[test]
fn a_customer_who_turns_back_after_an_early_departure_enters_again() {
    let after = slow_departure(true, false);
    let kinds: Vec<_> = after.iter().map(|v| (v.0, v.1)).collect();
    assert!(
        matches!(
            kinds.as_slice(),
            [(VisitKind::Exit { .. }, 0), (VisitKind::Enter, 0)]
        ),
        "{after:?}"
    );
}

#[test]
fn a_reload_keeps_an_early_departure_from_re_entering() {
    // After the reload zone a is index 1: the rule must follow it there.
    let after = slow_departure(false, true);
    assert!(
        matches!(after.as_slice(), [(VisitKind::Exit { .. }, 0, _)]),
        "{after:?}"
    );
}

/// Zone a on hub-1, heard there every 200 ms for 10 s, and on hub-2 too unless `alone`; then hub-1
/// hears nothing, and hub-2 goes on hearing the device when `others_hear`. How long after hub-1's
/// last advert the visit ends.
fn silent_exit_ms(alone: bool, others_hear: bool, p: EngineParams) -> u64 {
    let zones = [
        zone("a", Some("hub-1"), -70, -80),
        zone("b", Some("hub-2"), -50, -60),
    ];
    let mut h = Harness::with(&zones, p);
    let end = h.now + 10_000;
    while h.now < end {
        h.hear(ALICE, 0, -62);
        if !alone {
            h.hear(ALICE, 1, -85);
        }
        h.now += 200;
    }
    let last = h.now - 200;
    assert_eq!(h.engine.zone_of(&ALICE), Some(0));
    h.visits();
    if others_hear {
        // hub-2 keeps hearing it for longer than any deadline below.
        for _ in 0..100 {
            h.hear(ALICE, 1, -85);
            h.now += 200;
            if let Some(&(_, _, at)) = h.visits().first() {
                return at + T0 - last;
            }
        }
        panic!("never exited");
    }
    h.absence_exit_after(last)
}

#[test]
fn a_device_no_hub_hears_any_more_is_gone_sooner() {
    // Heard by two hubs, then by none: max(4 gaps, 1.5 s), not the one hub's 3 s floor.
    assert_eq!(
        silent_exit_ms(false, false, params(100)),
        GONE_EVERYWHERE_MIN_MS
    );
    // The zone's hub alone went quiet while another still hears the device: the per-hub rule.
    assert_eq!(silent_exit_ms(false, true, params(100)), SILENCE_MIN_MS);
    // Only one hub ever heard it: silence there is all the engine knows, so the per-hub rule.
    assert_eq!(silent_exit_ms(true, false, params(100)), SILENCE_MIN_MS);
    // silence_gaps = 0 turns both off: the 10 s timeout.
    assert_eq!(silent_exit_ms(false, false, timeout_only()), 10_000);
}

/// A hub's state after hearing a signal that moved at `rate` dB/s for 10 s, every 200 ms, with
/// `kind` smoothing it; last heard at `now`.
fn hub_moving(kind: FilterKind, rate: f32, now: Timestamp) -> HubState {
    let fp = FilterParams::tuned(kind);
    let mut s = Smoother::new(&fp, -70.0);
    for i in 1..=50 {
        s.update(&fp, 0.2, -70.0 + rate * 0.2 * i as f32);
    }
    HubState::new(1, s, now)
}

#[test]
fn a_switch_nothing_corroborates_needs_twice_the_margin() {
    let now = Timestamp(T0);
    let mut p = params(100);
    p.filter = FilterParams::tuned(FilterKind::Trend);
    let m = p.switch_margin_db;
    let steady = hub_moving(FilterKind::Trend, 0.0, now);
    let drifting = hub_moving(FilterKind::Trend, 0.3, now);
    let rising = hub_moving(FilterKind::Trend, 2.0, now);
    let falling = hub_moving(FilterKind::Trend, -2.0, now);
    // Standing: both signals still, or drifting as shadowing does.
    assert_eq!(
        switch_margin(Some(&steady), Some(&steady), now, &p),
        2.0 * m
    );
    assert_eq!(
        switch_margin(Some(&steady), Some(&drifting), now, &p),
        2.0 * m
    );
    // Walking: the zone left behind falls, or the one ahead rises.
    assert_eq!(switch_margin(Some(&falling), Some(&steady), now, &p), m);
    assert_eq!(switch_margin(Some(&steady), Some(&rising), now, &p), m);
    // A rise the candidate's hub measured seconds ago says nothing about now.
    let stale = hub_moving(FilterKind::Trend, 2.0, Timestamp(T0 - RECENT_MS));
    assert_eq!(switch_margin(Some(&steady), Some(&stale), now, &p), 2.0 * m);
    // The baseline has no hysteresis, and a filter without a trend cannot tell walking from
    // drifting: the configured margin stands.
    let b = EngineParams {
        hysteresis: false,
        ..p
    };
    assert_eq!(switch_margin(Some(&steady), Some(&steady), now, &b), m);
    let level = hub_moving(FilterKind::Kalman, 0.0, now);
    assert_eq!(switch_margin(Some(&level), Some(&level), now, &p), m);
}

/// The zone a customer is in after standing in zone a (hub-1 at -62) while hub-2's signal climbs
/// at `rate` dB/s from -75 to `to` and then holds there for 10 s.
fn zone_after_hub2_climbs(rate: f64, to: f64) -> Option<ZoneIdx> {
    let zones = [
        zone("a", Some("hub-1"), -70, -80),
        zone("b", Some("hub-2"), -70, -80),
    ];
    let mut p = params(100);
    p.filter = FilterParams::tuned(FilterKind::Trend);
    let mut h = Harness::with(&zones, p);
    for _ in 0..50 {
        h.hear(ALICE, 0, -62);
        h.hear(ALICE, 1, -75);
        h.now += 200;
    }
    assert_eq!(h.visits(), vec![(VisitKind::Enter, 0, 2000)]);
    let mut b = -75.0;
    while b < to {
        b = (b + rate * 0.2).min(to);
        h.hear(ALICE, 0, -62);
        h.hear(ALICE, 1, b.round() as i16);
        h.now += 200;
    }
    for _ in 0..50 {
        h.hear(ALICE, 0, -62);
        h.hear(ALICE, 1, to as i16);
        h.now += 200;
    }
    h.engine.zone_of(&ALICE)
}

#[test]
fn a_slow_drift_past_the_margin_does_not_move_a_standing_customer() {
    // 4 dB stronger, reached at 0.25 dB/s, as slow shadowing does: not a move...
    assert_eq!(zone_after_hub2_climbs(0.25, -58.0), Some(0));
    // ...7 dB stronger is, however slowly it came.
    assert_eq!(zone_after_hub2_climbs(0.25, -55.0), Some(1));
    // The same 4 dB reached at 4 dB/s is someone walking toward hub-2: moved.
    assert_eq!(zone_after_hub2_climbs(4.0, -58.0), Some(1));
}

/// Twenty customers who stood steadily at the zone's hub (their signal never more than a dB under
/// where it settled) and then left; then ALICE settles at -66 dBm and her signal falls to -72.
fn after_twenty_steady_visits(adaptive: bool) -> Harness {
    let mut h = Harness::with(
        &[zone("a", None, -70, -80)],
        EngineParams {
            adaptive_margin: adaptive,
            ..params(10_000)
        },
    );
    for n in 10..30 {
        let who = Identity::Customer(CustomerKey(n));
        for _ in 0..100 {
            h.hear_for(who, 0, -66, 0.2);
            h.hear_for(who, 0, -67, 0.2);
        }
        // Silent: gone after a few of its gaps, a visit of 40 s that ended as visits do.
        h.advance_to(h.now + 20_000);
    }
    let exits = h
        .visits()
        .iter()
        .filter(|v| matches!(v.0, VisitKind::Exit { .. }))
        .count();
    assert_eq!(exits, 20);
    h.hear_for(ALICE, 0, -66, 30.0);
    h.visits();
    h.hear(ALICE, 0, -72);
    h
}

#[test]
fn a_hub_whose_customers_stand_steadily_learns_a_smaller_exit_margin() {
    // Their sags call for the smallest margin (4 dB): ALICE's visit ends at enter_rssi (less the
    // uncorroborated 0.75 dB) rather than 8 dB under her level (-74.75 dBm).
    let mut h = after_twenty_steady_visits(true);
    let learned = HubExitMargin {
        hub: "hub-1".into(),
        visits: 20,
        margin_db: f64::from(margin::FLOOR_DB),
        learned: true,
        adaptive: true,
    };
    assert_eq!(h.engine.exit_margins(), vec![learned.clone()]);
    assert!(
        h.visits()
            .iter()
            .any(|v| matches!(v.0, VisitKind::Exit { .. })),
        "the learned margin lets her go at -72 dBm"
    );
    let mut fixed = after_twenty_steady_visits(false);
    assert!(
        fixed.visits().is_empty(),
        "with adaptive_exit_margin = false, 8 dB under her level still holds her"
    );
    assert_eq!(
        fixed.engine.exit_margins(),
        vec![HubExitMargin {
            visits: 0,
            margin_db: 8.0,
            learned: false,
            adaptive: false,
            ..learned
        }]
    );
}

#[test]
fn what_a_hub_learned_stays_with_it_across_a_reload() {
    let mut h = after_twenty_steady_visits(true);
    // The new config adds a zone on another hub, listed first, and keeps hub-1's.
    h.engine.reconfigure(
        &[
            zone("b", Some("hub-2"), -70, -80),
            zone("a", None, -70, -80),
        ],
        EngineParams {
            adaptive_margin: true,
            ..params(10_000)
        },
        "hub-1",
        Timestamp(h.now),
        &mut h.events,
    );
    let m = h.engine.exit_margins();
    let by_hub: Vec<(&str, u32, bool)> = m
        .iter()
        .map(|m| (m.hub.as_str(), m.visits, m.learned))
        .collect();
    assert_eq!(by_hub, [("hub-1", 20, true), ("hub-2", 0, false)]);
}

#[test]
fn what_a_hub_learned_comes_back_after_a_restart() {
    let learned = after_twenty_steady_visits(true);
    let memory = learned.engine.margin_memory();
    assert_eq!(memory.len(), 1);
    assert_eq!(
        (memory[0].hub.as_str(), memory[0].sags_db.len()),
        ("hub-1", 20)
    );

    // A new engine (the daemon started again) with hub-1's zone and one on a hub not saved.
    let mut h = Harness::with(
        &[
            zone("a", None, -70, -80),
            zone("b", Some("hub-2"), -70, -80),
        ],
        EngineParams {
            adaptive_margin: true,
            ..params(10_000)
        },
    );
    let gone = HubSags {
        hub: "hub-gone".into(),
        sags_db: vec![1.0; 30],
    };
    assert_eq!(h.engine.restore_margins(&[memory[0].clone(), gone]), 1);
    assert_eq!(h.engine.exit_margins()[0], learned.engine.exit_margins()[0]);
    assert!(!h.engine.exit_margins()[1].learned);
    // And it acts on it at once: ALICE goes at -72 dBm as she did before the restart.
    h.hear_for(ALICE, 0, -66, 30.0);
    h.visits();
    h.hear(ALICE, 0, -72);
    assert!(h
        .visits()
        .iter()
        .any(|v| matches!(v.0, VisitKind::Exit { .. })));
}

#[test]
fn sags_no_visit_could_produce_are_not_restored() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    let mut sags_db = vec![f32::NAN, -3.0, 250.0, f32::INFINITY];
    sags_db.extend(std::iter::repeat_n(1.0, 100));
    assert_eq!(
        h.engine.restore_margins(&[HubSags {
            hub: "hub-1".into(),
            sags_db
        }]),
        1
    );
    // Only the newest WINDOW sane ones.
    let m = &h.engine.margin_memory()[0];
    assert_eq!(m.sags_db, vec![1.0; margin::WINDOW]);
    // Nothing sane: the hub keeps learning from scratch.
    let mut fresh = Harness::new(&[zone("a", None, -70, -80)]);
    let junk = HubSags {
        hub: "hub-1".into(),
        sags_db: vec![f32::NAN, -1.0],
    };
    assert_eq!(fresh.engine.restore_margins(&[junk]), 0);
    assert!(fresh.engine.margin_memory().is_empty());
}

#[test]
fn anonymous_devices_and_short_visits_teach_no_margin() {
    let mut h = Harness::new(&[zone("a", None, -70, -80)]);
    for n in 0..20u64 {
        // Anonymous phones standing steadily, and customers who stayed 20 s.
        let phone = Identity::Anonymous(n);
        let who = Identity::Customer(CustomerKey(100 + n as u32));
        h.hear_for(phone, 0, -66, 40.0);
        h.hear_for(who, 0, -66, 20.0);
        h.advance_to(h.now + 20_000);
    }
    h.visits();
    h.hear_for(ALICE, 0, -66, 30.0);
    h.visits();
    h.hear(ALICE, 0, -72);
    assert!(h.visits().is_empty(), "no margin was learned: 8 dB holds");
    let still_learning = &h.engine.exit_margins()[0];
    assert_eq!(
        (
            still_learning.visits,
            still_learning.learned,
            still_learning.margin_db
        ),
        (0, false, 8.0)
    );
}

#[test]
fn a_walker_leaves_a_hub_whose_customers_stand_steadily_at_a_narrower_band() {
    // A visit whose threshold sits 6 dB under enter_rssi, on a hub that learned a 6 dB margin
    // (configured 8): a walk seen on every count lifts it to enter_rssi - WALKER_BAND_DB.
    let (enter, threshold) = (-70.0, -76.0);
    let narrowed = |margin, approaching, trend, in_visit_ms| {
        narrowed_for_walker(
            threshold,
            enter,
            margin,
            8.0,
            approaching,
            trend,
            in_visit_ms,
        )
    };
    assert_eq!(narrowed(6.0, true, -1.5, 40_000), enter - WALKER_BAND_DB);
    // Take any one count away and the threshold stays.
    for (margin, approaching, trend, in_visit_ms, why) in [
        (
            8.0,
            true,
            -1.5,
            40_000,
            "the configured margin: nothing learned",
        ),
        (6.0, false, -1.5, 40_000, "no other hub hears them coming"),
        (
            6.0,
            true,
            -0.5,
            40_000,
            "their signal falls slower than a walk",
        ),
        (
            6.0,
            true,
            -1.5,
            20_000,
            "20 s in, still walking to their spot?",
        ),
    ] {
        assert_eq!(
            narrowed(margin, approaching, trend, in_visit_ms),
            threshold,
            "{why}"
        );
    }
    // A threshold already above the band stays where it is.
    assert_eq!(
        narrowed_for_walker(-70.0, enter, 6.0, 8.0, true, -1.5, 40_000),
        -70.0
    );
}
