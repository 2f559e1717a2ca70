//! `beacond calibrate`, played by a simulated field engineer in a simulated store.
//!
//! A scenario's zone thresholds are the one part of it a real store would get from a person with a
//! reference device, not from the ground truth. Choosing them by scoring runs against the truth
//! fits them to the engine (and to the comparison with the baseline), which no field engineer can
//! do. So the survey does what the field guide tells an engineer to do, through the same radio the
//! shoppers meet (`receive` in the simulator): a reference fob in hand, 1 m from the hub, then walked once
//! around the area's edge, then once around a circle [`OUTSIDE_M`] beyond it; and it hands the three
//! phases to the product's own calibration arithmetic ([`crate::field::calibrate::suggest`]).
//! `tests/simulate.rs` holds every shipped scenario to what its survey suggests.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::scenario::{Area, Radio};
use super::{receive, Carried, Scenario};
use crate::field::calibrate::{self, CalibrateError, PhaseStats, Suggestion};

/// How far beyond an area's edge the "just outside" walk goes, m: a step or two, where a customer
/// plainly is no longer in the zone.
pub const OUTSIDE_M: f64 = 1.0;
/// How far a scenario's thresholds may be from its survey's suggestion, dB: the survey's own
/// spread from seed to seed.
pub const TOLERANCE_DB: i16 = 1;
/// How fast the engineer walks a circle, m/s: slowly, so each spot gets a few adverts.
const WALK_MPS: f64 = 0.5;
/// The shortest phase, s (the field tool's default `--seconds`).
const MIN_PHASE_S: f64 = 20.0;

/// What the survey of one zone found and suggests.
#[derive(Clone, Debug)]
pub struct ZoneSurvey {
    /// The zone id.
    pub zone: String,
    /// The zone's thresholds as the scenario configures them: (`enter_rssi`, `exit_rssi`).
    pub configured: (i16, i16),
    /// The three phases: at 1 m, at the edge, outside.
    pub phases: [PhaseStats; 3],
    /// What `beacond calibrate` suggests from them.
    pub suggestion: Suggestion,
}

/// Problems surveying a scenario.
#[derive(Debug, thiserror::Error)]
pub enum SurveyError {
    /// A zone has no `[[areas]]` entry, so it has no edge to stand at.
    #[error("zone {0:?} has no [[areas]] entry: the survey needs an area's edge to stand at")]
    NoArea(String),
    /// A zone names a hub the scenario does not have (the scenario's own checks reject this first).
    #[error("zone {0:?}: its hub is not one of the scenario's [[hubs]]")]
    NoHub(String),
    /// A phase heard too little (the hub cannot hear the edge at all).
    #[error("zone {zone:?}: {source}")]
    Phase {
        /// The zone.
        zone: String,
        /// What went wrong.
        source: CalibrateError,
    },
}

/// The engineer with the reference fob: the clock, the generator and the shadowing the fob meets,
/// carried from one reading to the next (and one phase to the next) as a real walk would.
struct Walker {
    rng: ChaCha8Rng,
    /// Simulated ms since the survey of this zone began.
    t: u64,
    cell: (f32, u64, [f64; 2]),
    hub: [f64; 2],
    power_db: f64,
    interval_ms: u64,
}

impl Walker {
    /// The readings `hub` takes through `radio` over `secs`, with the fob at `at(s)` `s` seconds
    /// into the phase.
    fn listen(&mut self, radio: &Radio, secs: f64, at: impl Fn(f64) -> [f64; 2]) -> Vec<i16> {
        let mut samples = Vec::new();
        let start = self.t;
        let end = start + (secs * 1000.0) as u64;
        while self.t < end {
            let device = Carried {
                pos: at((self.t - start) as f64 / 1000.0),
                facing: 0.0,
                power_db: self.power_db,
                pocket: false,
            };
            samples.extend(receive(
                &mut self.rng,
                radio,
                self.hub,
                device,
                self.t,
                &mut self.cell,
            ));
            self.t += self.interval_ms;
        }
        samples
    }

    /// Once around each of `areas`, `beyond` m outside its edge, at walking pace.
    fn walk(&mut self, radio: &Radio, areas: &[&Area], beyond: f64) -> Vec<i16> {
        let mut all = Vec::new();
        for a in areas {
            let r = a.radius_m + beyond;
            let secs = (std::f64::consts::TAU * r / WALK_MPS).max(MIN_PHASE_S);
            let (cx, cy) = (a.x, a.y);
            all.extend(self.listen(radio, secs, |s| {
                let angle = std::f64::consts::TAU * s / secs;
                [cx + r * angle.cos(), cy + r * angle.sin()]
            }));
        }
        all
    }
}

/// Surveys every zone of `scenario`, seeded from the scenario's seed.
pub fn survey(scenario: &Scenario) -> Result<Vec<ZoneSurvey>, SurveyError> {
    let radio = &scenario.radio;
    let mut out = Vec::new();
    for (zi, zone) in scenario.zones.iter().enumerate() {
        let hub = scenario
            .hub_of(zone)
            .map(|h| [h.x, h.y])
            .ok_or_else(|| SurveyError::NoHub(zone.id.clone()))?;
        let areas: Vec<&Area> = scenario
            .areas
            .iter()
            .filter(|a| a.zone == zone.id)
            .collect();
        if areas.is_empty() {
            return Err(SurveyError::NoArea(zone.id.clone()));
        }
        let mut walker = Walker {
            rng: ChaCha8Rng::seed_from_u64(scenario.seed ^ 0x5_0EE7 ^ ((zi as u64) << 32)),
            t: 0,
            cell: (f32::NAN, 0, [0.0; 2]),
            hub,
            power_db: f64::from(scenario.shoppers.measured_power),
            interval_ms: scenario.shoppers.fob_interval_ms.max(20),
        };
        // At 1 m: held up to the hub, which hangs above the shoppers.
        let close = Radio {
            height_m: 1.0,
            ..radio.clone()
        };
        let at_1m = walker.listen(&close, MIN_PHASE_S, |_| hub);
        let edge = walker.walk(radio, &areas, 0.0);
        let outside = walker.walk(radio, &areas, OUTSIDE_M);
        let phase = |name, v: &[i16]| {
            PhaseStats::of(name, v).map_err(|source| SurveyError::Phase {
                zone: zone.id.clone(),
                source,
            })
        };
        let phases = [
            phase("at 1 m", &at_1m)?,
            phase("edge", &edge)?,
            phase("outside", &outside)?,
        ];
        // The edge's distance from the hub, for the path-loss exponent: the nearest area's, in 3-D.
        let edge_m = areas
            .iter()
            .map(|a| {
                let centre = ((a.x - hub[0]).powi(2) + (a.y - hub[1]).powi(2)).sqrt();
                ((centre + a.radius_m).powi(2) + radio.height_m.powi(2)).sqrt()
            })
            .fold(f64::INFINITY, f64::min);
        let suggestion = calibrate::suggest(
            &phases[0],
            &phases[1],
            &phases[2],
            Some(edge_m),
            scenario.presence.exit_margin_db,
        );
        out.push(ZoneSurvey {
            zone: zone.id.clone(),
            configured: (zone.enter_rssi, zone.exit_rssi),
            phases,
            suggestion,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One hub 2 m above the floor, one zone of radius `r` around it, a radio as quiet as `sigma`.
    fn store(r: f64, sigma: f64) -> Scenario {
        let text = format!(
            r#"
name = "t"
duration_s = 60
[radio]
path_loss_exponent = 2.0
shadowing_sigma_db = {sigma}
fading_k = 1000.0
packet_loss = 0.0
scan_duty = 1.0
height_m = 2.0
[[hubs]]
id = "h"
x = 0.0
y = 0.0
[[zones]]
id = "z"
hub = "h"
enter_rssi = -70
exit_rssi = -79
[[areas]]
zone = "z"
x = 0.0
y = 0.0
radius_m = {r}
[shoppers]
count = 0
arrival_window_s = 1
entrance = [0.0, 0.0]
measured_power = -59
"#
        );
        Scenario::parse(&text, "t").unwrap()
    }

    #[test]
    fn a_quiet_store_is_calibrated_to_its_path_loss() {
        // Edge at 4 m from the hub's foot, 2 m below it: -59 - 20·log10(√20) = -72.0 dBm.
        let z = &survey(&store(4.0, 0.0)).unwrap()[0];
        assert_eq!(z.zone, "z");
        assert_eq!(z.configured, (-70, -79));
        assert_eq!(z.suggestion.measured_power, -59);
        assert_eq!(z.suggestion.enter_rssi, -72);
        // The band is the engine's exit margin (8 dB by default) and one more.
        assert_eq!(z.suggestion.exit_rssi, -81);
        assert_eq!(z.suggestion.path_loss_exponent, Some(2.0));
        // 1 m outside: -59 - 20·log10(√29) = -73.6, only 1.6 dB below the edge.
        assert!((z.phases[2].median - -73.6).abs() <= 0.6, "{:?}", z.phases);
        assert!(
            z.suggestion.warnings.iter().any(|w| w.contains("soft")),
            "{:?}",
            z.suggestion.warnings
        );
    }

    #[test]
    fn shadowing_moves_a_survey_by_little_and_the_same_seed_repeats_it() {
        let a = survey(&store(4.0, 4.0)).unwrap();
        let b = survey(&store(4.0, 4.0)).unwrap();
        assert_eq!(a[0].suggestion, b[0].suggestion);
        // A walk around the whole edge averages over about 17 shadowing cells of 1.5 m.
        for seed in 1..6 {
            let mut s = store(4.0, 4.0);
            s.seed = seed;
            let z = &survey(&s).unwrap()[0];
            assert!(
                (-75..=-69).contains(&z.suggestion.enter_rssi),
                "seed {seed}: {:?}",
                z.phases
            );
        }
    }

    #[test]
    fn a_zone_without_an_area_or_out_of_earshot_is_an_error() {
        let mut s = store(4.0, 0.0);
        s.areas.clear();
        assert!(matches!(survey(&s), Err(SurveyError::NoArea(z)) if z == "z"));
        // An edge 400 m away is below the hub's sensitivity.
        let e = survey(&store(400.0, 0.0)).unwrap_err().to_string();
        assert!(
            e.contains("edge") && e.contains("heard the device only"),
            "{e}"
        );
    }
}
