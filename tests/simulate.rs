//! The presence engine against the simulator's ground truth: it must beat the naive baseline on the
//! shipped scenarios, and the supermarket must meet the product's bars. These are regression
//! guards on quality; docs/presence.md has the full numbers.

use beacond::config::SmoothingFilter;
use beacond::scan::sim::Scenario;
use beacond::simulate::{run, Metrics, Report};
use std::cmp::Ordering;

fn report(name: &str) -> Report {
    run(
        Scenario::load(&format!("builtin:{name}")).unwrap(),
        None,
        |_, _| {},
    )
}

/// The engine must beat the baseline on every metric, on exit p50 only when `exit_p50` says so;
/// `what` names the run in the failure.
fn assert_ahead(r: &Report, what: &str, exit_p50: bool) {
    let behind: Vec<_> = r
        .engine
        .versus(&r.baseline)
        .into_iter()
        .filter(|&(name, _, _, ord)| match name {
            // Left to the callers that can: in the boutique, whose zones reach past their areas,
            // the baseline's few surviving visits end a second or so closer to the true exit than
            // the engine's (see docs/presence.md).
            "exit_latency_p50_s" => exit_p50 && ord != Ordering::Greater,
            // Missing no more visits is enough: both often miss none.
            "missed_visits" => ord == Ordering::Less,
            _ => ord != Ordering::Greater,
        })
        .collect();
    assert!(
        behind.is_empty(),
        "{what}: not ahead of the baseline on {behind:?}\nengine {:?}\nbaseline {:?}",
        r.engine,
        r.baseline
    );
}

/// Every metric on which the engine must beat the baseline everywhere: all but exit p50.
fn assert_beats_baseline(r: &Report) {
    assert_ahead(r, &r.scenario, false);
}

/// [`assert_beats_baseline`], and on exit p50 too.
fn assert_beats_baseline_exit_p50_included(r: &Report, what: &str) {
    assert_ahead(r, what, true);
}

#[test]
fn engine_beats_the_baseline_on_every_shipped_scenario() {
    for name in ["boutique", "supermarket", "hard"] {
        let r = report(name);
        assert!(
            r.engine.truth_visits > 20,
            "{name}: too few visits to score"
        );
        if name == "boutique" {
            // Exit p50 is the one metric the boutique's loose zones give to the baseline.
            assert_beats_baseline(&r);
        } else {
            assert_beats_baseline_exit_p50_included(&r, name);
        }
    }
}

/// With every zone's thresholds from a calibration walk (`beacond simulate S --calibrate`), the
/// engine beats the baseline on every metric, exit p50 included: the baseline's exits come close to
/// the truth only where zones are set looser than their areas (docs/presence.md, "Thresholds").
#[test]
fn with_calibrated_thresholds_the_engine_beats_the_baseline_on_every_metric() {
    for name in ["boutique", "supermarket", "hard"] {
        let mut scenario = Scenario::load(&format!("builtin:{name}")).unwrap();
        let surveyed = beacond::scan::sim::survey::survey(&scenario).unwrap();
        for (zone, s) in scenario.zones.iter_mut().zip(&surveyed) {
            assert_eq!(zone.id, s.zone);
            zone.enter_rssi = s.suggestion.enter_rssi;
            zone.exit_rssi = s.suggestion.exit_rssi;
        }
        let r = run(scenario, None, |_, _| {});
        assert_beats_baseline_exit_p50_included(&r, name);
    }
}

/// A store written after all tuning, with default settings, on its own seed and on `seeds`: it must
/// be beaten on every metric, exit p50 included, with at least `min_visits` visits scored.
fn assert_hold_out_beats_baseline(name: &str, seeds: &[u64], min_visits: u64) {
    let own = Scenario::load(&format!("builtin:{name}")).unwrap().seed;
    for &seed in std::iter::once(&own).chain(seeds) {
        let mut sc = Scenario::load(&format!("builtin:{name}")).unwrap();
        sc.seed = seed;
        let r = run(sc, None, |_, _| {});
        assert!(
            r.engine.truth_visits > min_visits,
            "{name} seed {seed}: too few visits"
        );
        assert_beats_baseline_exit_p50_included(&r, &format!("{name} seed {seed}"));
    }
}

#[test]
fn the_engine_beats_the_baseline_on_every_metric_in_the_hold_out_store() {
    // The pharmacy was added after tuning and keeps the default settings: a tuning that only fits
    // the other three stores shows up here. Exit p50 is asserted too (it holds on seeds 1-12).
    assert_hold_out_beats_baseline("pharmacy", &[1, 2], 100);
}

#[test]
fn the_engine_beats_the_baseline_on_every_metric_in_the_second_hold_out_store() {
    // Written in session 15, after all tuning, with what the pharmacy does not vary: 1 Hz fobs
    // (the silence rule waits for 8 of their gaps), a 3 m ceiling, brisk walkers. Default settings.
    assert_hold_out_beats_baseline("electronics", &[1], 150);
}

#[test]
fn the_hold_out_stores_hold_with_one_setting_changed() {
    // The robustness sweep (docs/presence.md, "Robustness"): stores the engine was not tuned on,
    // made noisier, slower or more pocketed than written, still beaten on every metric.
    for (name, set) in [
        ("pharmacy", "shoppers.fob_interval_ms=1000"),
        ("pharmacy", "shoppers.pocket_share=0.8"),
        ("pharmacy", "radio.shadowing_sigma_db=1.5"),
        ("hard", "radio.scan_duty=0.5"),
        ("electronics", "radio.shadowing_sigma_db=4"),
    ] {
        let sc = Scenario::load_with(&format!("builtin:{name}"), &[set.to_string()]).unwrap();
        let r = run(sc, None, |_, _| {});
        assert!(r.engine.truth_visits > 100, "{name} {set}: too few visits");
        assert_beats_baseline_exit_p50_included(&r, &format!("{name} with {set}"));
    }
}

/// One hour of the supermarket scores 642 exits, and on its shipped seed the engine's exit p50 is
/// only 0.01 s below the baseline's (2.525 against 2.536 s): over seeds the baseline's one-hour p50
/// swings by ±0.3 s. Twelve hours of the same store settle which detector leaves nearer the truth;
/// there the engine beats the baseline on every metric and still meets the product's bars
/// (docs/presence.md, "On long runs").
#[test]
fn over_a_long_run_the_supermarket_beats_the_baseline_on_every_metric_and_meets_the_bars() {
    let mut sc = Scenario::load("builtin:supermarket").unwrap();
    sc.lengthen(12 * 3600);
    let r = run(sc, None, |_, _| {});
    assert!(r.engine.truth_visits > 9000, "{:?}", r.engine);
    assert_beats_baseline_exit_p50_included(&r, "supermarket, twelve hours");
    assert_meets_the_product_bars(&r.engine);
}

/// The issue's bars for the supermarket (its absence timeout is 15 s).
fn assert_meets_the_product_bars(e: &Metrics) {
    let absence = 15.0;
    assert!(e.zone_accuracy >= 0.95, "{e:?}");
    assert!(e.enter_latency_p95_s <= 5.0, "{e:?}");
    assert!(e.exit_latency_p95_s <= absence + 5.0, "{e:?}");
    assert!(e.flaps_per_customer_hour <= 0.1, "{e:?}");
}

#[test]
fn supermarket_meets_the_product_bars() {
    let e = &report("supermarket").engine;
    assert_meets_the_product_bars(e);
    assert_eq!(e.missed_visits, 0, "{e:?}");
}

#[test]
fn shoppers_who_walk_out_of_the_boutique_are_let_go_by_their_silence() {
    // A quarter of the boutique's exits are shoppers vanishing at the door, next to the window
    // zone: nothing but silence tells the engine, and the 15 s absence timeout alone put its exit
    // p95 at 17 s. Their fobs advertise every 350 ms, so 8 gaps of silence is about 3 s.
    let r = report("boutique");
    assert!(r.engine.exit_latency_p95_s < 8.0, "{:?}", r.engine);
    let mut sc = Scenario::load("builtin:boutique").unwrap();
    sc.presence.silence_gaps = 0.0;
    let timeout_only = run(sc, None, |_, _| {});
    assert!(
        timeout_only.engine.exit_latency_p95_s > 15.0,
        "{:?}",
        timeout_only.engine
    );
    // Leaving sooner on silence costs nothing on those who stay.
    assert!(r.engine.flaps_per_customer_hour <= timeout_only.engine.flaps_per_customer_hour);
    assert!(r.engine.zone_accuracy >= timeout_only.engine.zone_accuracy);
}

#[test]
fn the_supermarket_holds_on_seeds_it_was_not_tuned_on() {
    // Other shoppers and radio draws in the same store. Accuracy and the latency bars hold on every
    // seed tried (docs/presence.md); flaps <= 0.1 and exit p50 below the baseline's do not on all of
    // them, so they are not asserted here.
    for seed in 1..=3 {
        let mut sc = Scenario::load("builtin:supermarket").unwrap();
        sc.seed = seed;
        let r = run(sc, None, |_, _| {});
        let (e, b) = (&r.engine, &r.baseline);
        assert!(e.zone_accuracy >= 0.95, "seed {seed}: {e:?}");
        assert!(e.enter_latency_p95_s <= 5.0, "seed {seed}: {e:?}");
        assert!(e.exit_latency_p95_s <= 20.0, "seed {seed}: {e:?}");
        assert_eq!(e.missed_visits, 0, "seed {seed}: {e:?}");
        assert!(e.zone_accuracy > b.zone_accuracy, "seed {seed}");
        assert!(e.false_enters < b.false_enters, "seed {seed}");
        assert!(
            e.flaps_per_customer_hour < b.flaps_per_customer_hour,
            "seed {seed}"
        );
    }
}

#[test]
fn runs_are_deterministic() {
    let a = report("boutique");
    let b = report("boutique");
    assert_eq!(a.engine, b.engine);
    assert_eq!(a.baseline, b.baseline);
    assert_eq!(a.adverts, b.adverts);
}

#[test]
fn every_filter_runs_and_the_default_is_best_on_the_supermarket() {
    let sc = Scenario::load("builtin:supermarket").unwrap();
    let default = run(sc.clone(), None, |_, _| {});
    for f in [
        SmoothingFilter::Kalman,
        SmoothingFilter::TrimmedMean,
        SmoothingFilter::Ewma,
    ] {
        let other = run(sc.clone(), Some(f), |_, _| {});
        assert!(
            default.engine.zone_accuracy >= other.engine.zone_accuracy - 0.002,
            "{f:?} {:?} beats the default {:?}",
            other.engine,
            default.engine
        );
    }
}

#[test]
fn events_only_name_customers() {
    let sc = Scenario::load("builtin:boutique").unwrap();
    let mut named = 0;
    run(sc, None, |core, e| {
        if let beacond::sink::Record::Presence(p) = beacond::sink::render(core, e) {
            assert!(
                p.customer_id
                    .as_deref()
                    .is_some_and(|c| c.starts_with("cust-")),
                "{p:?}"
            );
            named += 1;
        }
    });
    assert!(named > 0);
}

#[test]
fn scenario_errors_name_the_line_and_key() {
    let text = "name = \"x\"\nduration_s = 10\n[[hubs]]\nid = \"h\"\nx = 0.0\ny = 0.0\n\
                [[zones]]\nid = \"z\"\n[[areas]]\nzone = \"zz\"\nx = 0.0\ny = 0.0\nradius_m = 1.0\n\
                [shoppers]\ncount = 1\narrival_window_s = 1\nentrance = [0.0, 0.0]\n";
    let err = Scenario::parse(text, "x.toml").unwrap_err().to_string();
    assert!(
        err.contains("x.toml:10:1: areas[0].zone: no zone has id \"zz\""),
        "{err}"
    );
    assert!(
        err.contains("x.toml:8:1: zones[0].id: zone \"z\" has no [[areas]] entry"),
        "{err}"
    );
}

#[test]
fn a_scenario_typo_and_its_broken_references_show_in_one_run() {
    let text = "name = \"x\"\nduration_s = 10\n[[hubs]]\nid = \"h\"\nx = 0.0\ny = 0.0\n\
                [[zones]]\nid = \"z\"\n[[areas]]\nzone = \"zz\"\nx = 0.0\ny = 0.0\nradius_m = 1.0\n\
                [shoppers]\ncount = 1\narrival_window_s = 1\nentrance = [0.0, 0.0]\n\
                [radio]\nshadowing_sigma = 3.0\n";
    let err = Scenario::parse(text, "x.toml").unwrap_err().to_string();
    for line in [
        "x.toml:19:1: radio.shadowing_sigma: unknown key",
        "x.toml:10:1: areas[0].zone: no zone has id \"zz\"",
        "x.toml:8:1: zones[0].id: zone \"z\" has no [[areas]] entry",
        // The radio lost a key, so its values are checked on the next run, and it says so.
        "x.toml: note: the values in radio are range-checked once the problems above are fixed",
    ] {
        assert!(err.contains(line), "{line} not in {err}");
    }
    // A zone that lost a key holds back the tables that refer to zones, named in file order.
    let held = text.replace("id = \"z\"\n", "id = \"z\"\nenter_rsi = -70\n");
    match Scenario::parse(&held, "x.toml") {
        Err(beacond::scan::sim::ScenarioError::Invalid { rejected, .. }) => {
            assert_eq!(rejected.unchecked, ["zones[0]", "radio", "areas"]);
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn supermarket_offers_fire_per_rule_and_never_repeat_within_cooldown() {
    let r = report("supermarket");
    let o = r.offers.expect("the supermarket has offer rules");
    assert!(o.triggers > 50, "{o:?}");
    assert_eq!(o.repeats_within_cooldown, 0);
    assert!(o.rules["fresh-bread"].fired > 0);
    assert!(
        o.rules["fresh-bread"].capped > 0,
        "re-entries within the hour are capped"
    );
    assert!(o.rules["wine-club"].fired > 0);
    assert!(
        o.rules["wine-club"].held > 0,
        "non-club or under-18 customers are held back"
    );
    assert_eq!(
        o.rules["deli-lunch"].fired, 0,
        "the simulated morning is outside its hours"
    );
    assert!(o.rules["deli-lunch"].held > 0);
    assert!(o.rules["thanks"].fired <= 25, "its daily budget");
    // One offer per presence event at most, and at most max_per_visit (2) per customer visit.
    assert!(o.triggers <= 2 * o.customers);
}

/// The complete example in docs/scenarios.md is a valid store that runs, has the thresholds the
/// page says a calibration walk gives, and uses every key the page documents in its tables.
#[test]
fn the_scenario_reference_example_is_a_store_that_runs() {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/scenarios.md")).unwrap();
    let example = page
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/scenarios.md has a ```toml example");
    let scenario = Scenario::parse(example, "docs/scenarios.md").unwrap();
    for zone in beacond::scan::sim::survey::survey(&scenario).unwrap() {
        assert_eq!(
            zone.configured,
            (zone.suggestion.enter_rssi, zone.suggestion.exit_rssi),
            "zone {}: the page says its thresholds are the calibration walk's",
            zone.zone
        );
    }
    // Every key in the reference tables appears in the example.
    for row in page.lines().filter(|l| l.starts_with("| `")) {
        for key in row.split('|').nth(1).unwrap().split('`').skip(1).step_by(2) {
            assert!(
                example.contains(&format!("\n{key} = ")),
                "the example does not show `{key}`"
            );
        }
    }
    let r = run(scenario, None, |_, _| {});
    assert!(r.engine.truth_visits > 20, "{r:?}");
    assert!(r.engine.engine_visits > 20, "{r:?}");
    assert!(r.customers > 10, "{r:?}");
}

/// In a quiet supermarket (1.5 dB of shadowing instead of 2.5) the hubs learn that standing
/// customers hardly sag, and let them go sooner than the configured `exit_margin_db` would: exit
/// p50 3.6-3.9 s with the fixed margin, about 2.6 s learned, with the bars still met
/// (docs/presence.md, "An exit margin learned from the store").
#[test]
fn a_quiet_store_learns_a_smaller_exit_margin_and_sees_people_leave_sooner() {
    let quiet = || {
        Scenario::load_with(
            "builtin:supermarket",
            &["radio.shadowing_sigma_db=1.5".to_string()],
        )
        .unwrap()
    };
    let learned = run(quiet(), None, |_, _| {});
    let mut fixed_sc = quiet();
    fixed_sc.presence.adaptive_exit_margin = false;
    let fixed = run(fixed_sc, None, |_, _| {});
    let (l, f) = (&learned.engine, &fixed.engine);
    assert!(
        l.exit_latency_p50_s + 0.5 < f.exit_latency_p50_s,
        "learned {l:?}\nfixed {f:?}"
    );
    assert!(
        l.zone_accuracy > f.zone_accuracy,
        "learned {l:?}\nfixed {f:?}"
    );
    assert_meets_the_product_bars(l);
    // The report says what each of the eight hubs learned: every one has, and less than 8 dB.
    let m = &learned.exit_margins;
    assert_eq!(m.len(), 8, "{m:?}");
    assert!(
        m.iter()
            .all(|h| h.learned && h.margin_db < 8.0 && h.visits >= 20),
        "{m:?}"
    );
    assert!(fixed
        .exit_margins
        .iter()
        .all(|h| !h.learned && h.margin_db == 8.0));
}

/// The most zones any one customer was in at once during a run of `name`, deployed as `d`, and the
/// seconds customers spent reported in two zones at once, by the events' own times (engines that run
/// side by side report the same instant in either order).
fn most_zones_at_once(name: &str, d: beacond::simulate::Deployment) -> (Report, usize, f64) {
    use beacond::presence::{Event, Subject, VisitKind};
    use std::collections::{HashMap, HashSet};
    let mut inside: HashMap<String, HashSet<String>> = HashMap::new();
    let mut most = 0;
    // Per customer: (time, +1 enter / -1 exit).
    let mut edges: HashMap<String, Vec<(u64, i32)>> = HashMap::new();
    let r = beacond::simulate::run_deployed(
        Scenario::load(&format!("builtin:{name}")).unwrap(),
        None,
        d,
        |core, e| {
            let Event::Visit(v) = e else { return };
            let Subject::Customer(c) = v.subject else {
                return;
            };
            // Zone indices are each engine's own: name them by the engine that reported them.
            let zone = core.engine().zones()[v.zone as usize].id.clone();
            let zones = inside.entry(format!("{c:?}")).or_default();
            match v.kind {
                VisitKind::Enter => {
                    zones.insert(zone);
                    edges.entry(format!("{c:?}")).or_default().push((v.at.0, 1));
                }
                VisitKind::Exit { .. } => {
                    zones.remove(&zone);
                    edges
                        .entry(format!("{c:?}"))
                        .or_default()
                        .push((v.at.0, -1));
                }
                VisitKind::Dwell { .. } => {}
            }
            most = most.max(zones.len());
        },
    );
    let mut twice_ms = 0;
    for e in edges.values_mut() {
        // Exits first at a tie: a move at one instant is not two zones at once.
        e.sort_unstable();
        let mut n = 0;
        let mut since = 0;
        for &(t, step) in e.iter() {
            if n >= 2 {
                twice_ms += t - since;
            }
            n += step;
            since = t;
        }
    }
    (r, most, twice_ms as f64 / 1000.0)
}

#[test]
fn deployed_one_engine_per_hub_each_hub_decides_its_own_zones_alone() {
    use beacond::simulate::Deployment;
    // One engine hearing every hub holds a customer in one zone at a time.
    let (shared, most, twice) = most_zones_at_once("boutique", Deployment::Shared);
    assert_eq!((most, twice), (1, 0.0));
    assert_eq!(shared.deployment, Deployment::Shared);
    // Hubs that each hear only their own radio cannot arbitrate: the boutique's zones reach past
    // the midpoints between hubs, so a customer is in two of them at once, and the engine's
    // accuracy falls (docs/presence.md, "As deployed").
    let (alone, most, twice) = most_zones_at_once("boutique", Deployment::PerHub);
    assert_eq!(alone.deployment, Deployment::PerHub);
    assert!(most >= 2, "no customer in two zones at once");
    assert!(twice > 600.0, "{twice} s in two zones at once");
    assert!(
        alone.engine.zone_accuracy < shared.engine.zone_accuracy - 0.1,
        "shared {} per hub {}",
        shared.engine.zone_accuracy,
        alone.engine.zone_accuracy
    );
    // The same adverts, the same customers: only who hears what differs.
    assert_eq!(alone.adverts, shared.adverts);
    assert_eq!(alone.engine.truth_visits, shared.engine.truth_visits);
    let json = serde_json::to_value(&alone).unwrap();
    assert_eq!(json["deployment"], "per_hub");
}

#[test]
fn hubs_that_share_observations_decide_as_one_engine_hearing_every_hub() {
    use beacond::simulate::Deployment;
    let (shared, _, _) = most_zones_at_once("boutique", Deployment::Shared);
    // Shared at once, each hub's engine holds what one engine would: the very same visits, and each
    // reported once, by the hub whose zone it is.
    let (at_once, _, twice) =
        most_zones_at_once("boutique", Deployment::PerHubSharing { lag_ms: 0 });
    assert_eq!(twice, 0.0);
    assert_eq!(at_once.engine, shared.engine);
    assert_eq!(at_once.baseline, shared.baseline);
    // A quarter of a second late (the default batch interval), they lose little of it; alone, each
    // hub loses a third of the store (the test above).
    let lag_ms = 250;
    let (late, _, twice) = most_zones_at_once("boutique", Deployment::PerHubSharing { lag_ms });
    // A move shows in both zones for as long as the news takes to reach the hub left: 3 s in all
    // over two customer-hours, where hubs alone hold customers in two zones for an hour.
    assert!(twice < 10.0, "{twice} s in two zones at once");
    let (alone, _, _) = most_zones_at_once("boutique", Deployment::PerHub);
    assert!(
        late.engine.zone_accuracy > shared.engine.zone_accuracy - 0.02
            && late.engine.zone_accuracy > alone.engine.zone_accuracy + 0.3,
        "one engine {}, sharing {}, alone {}",
        shared.engine.zone_accuracy,
        late.engine.zone_accuracy,
        alone.engine.zone_accuracy
    );
    assert_eq!(late.engine.missed_visits, 0);
    let json = serde_json::to_value(&late).unwrap();
    assert_eq!(json["deployment"]["per_hub_sharing"]["lag_ms"], lag_ms);
}

#[test]
fn a_store_without_zones_scores_deployed_either_way() {
    use beacond::simulate::Deployment;
    for d in [
        Deployment::Shared,
        Deployment::PerHub,
        Deployment::PerHubSharing { lag_ms: 250 },
    ] {
        let mut sc = Scenario::load("builtin:boutique").unwrap();
        sc.zones.clear();
        sc.areas.clear();
        sc.offers.clear();
        let r = beacond::simulate::run_deployed(sc, None, d, |_, _| {});
        assert_eq!(r.engine.engine_visits, 0, "{d:?}");
        assert_eq!(r.engine.truth_visits, 0, "{d:?}");
    }
}
