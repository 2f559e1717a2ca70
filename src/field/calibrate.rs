//! `beacond calibrate`: turns RSSI heard from a reference device at 1 m, at a zone's edge and outside
//! it into the zone's `measured_power`, `enter_rssi` and `exit_rssi`, with the reasoning, and edits the
//! config in place keeping its comments. The arithmetic here is pure; the field module collects.

use thiserror::Error;

/// A zone whose "just outside" reads less than this below `enter_rssi` has a soft edge, dB: about
/// the standard deviation of a smoothed signal under shop shadowing.
const SOFT_EDGE_DB: f64 = 3.0;

/// How much more than the engine's `exit_margin_db` the band between `enter_rssi` and `exit_rssi`
/// keeps, dB: a drop nothing else corroborates must clear the exit threshold by 0.75 dB.
const BAND_OVER_MARGIN_DB: i16 = 1;

/// The narrowest band between `enter_rssi` and `exit_rssi` for an engine that leaves
/// `exit_margin_db` below a visit's settled level.
///
/// The engine clamps its exit threshold to `exit_rssi`, so a customer who barely got in (settled at
/// `enter_rssi`) has only the band to fall through before leaving. A band narrower than the margin
/// cuts it short, and the simulator shows what that costs (thresholds at the areas' edge): a 4 dB
/// band flaps 14–18 times per customer-hour in the boutique and 2.3 in the supermarket, a 9 dB band
/// 1.8 and 0.03.
pub fn min_band_db(exit_margin_db: f64) -> i16 {
    exit_margin_db.ceil() as i16 + BAND_OVER_MARGIN_DB
}

/// Calibration that cannot be completed.
#[derive(Debug, Error)]
pub enum CalibrateError {
    /// Too few samples in a phase.
    #[error("{phase}: heard the device only {got} times; need at least {need}. Hold it still for longer (--seconds) or check that it advertises")]
    TooFew {
        /// The phase.
        phase: &'static str,
        /// Samples heard.
        got: usize,
        /// Samples needed.
        need: usize,
    },
    /// The zone is not in the config file.
    #[error("{file}: no [[zones]] entry with id = {zone:?}; add the zone first (see config/beacond.example.toml)")]
    NoZone {
        /// The config file.
        file: String,
        /// The zone id.
        zone: String,
    },
    /// The config file is not TOML.
    #[error("{file}: {message}")]
    Toml {
        /// The config file.
        file: String,
        /// The parser's message.
        message: String,
    },
}

/// Statistics of one phase's RSSI samples (dBm).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PhaseStats {
    /// Samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// 10th percentile (weak end).
    pub p10: f64,
    /// 90th percentile (strong end).
    pub p90: f64,
    /// Standard deviation.
    pub stdev: f64,
}

/// The fewest samples a phase needs for its percentiles to mean something.
pub const MIN_SAMPLES: usize = 10;

impl PhaseStats {
    /// Statistics of `samples`, or an error naming `phase` if there are too few.
    pub fn of(phase: &'static str, samples: &[i16]) -> Result<PhaseStats, CalibrateError> {
        if samples.len() < MIN_SAMPLES {
            return Err(CalibrateError::TooFew {
                phase,
                got: samples.len(),
                need: MIN_SAMPLES,
            });
        }
        let mut v: Vec<f64> = samples.iter().map(|&s| f64::from(s)).collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let pos = p * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        Ok(PhaseStats {
            n: v.len(),
            median: q(0.5),
            p10: q(0.1),
            p90: q(0.9),
            stdev: var.sqrt(),
        })
    }
}

/// What calibration suggests for a zone.
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    /// RSSI at 1 m.
    pub measured_power: i16,
    /// Enter at or above this smoothed RSSI.
    pub enter_rssi: i16,
    /// Leave below this smoothed RSSI.
    pub exit_rssi: i16,
    /// The path-loss exponent, when the edge distance was given.
    pub path_loss_exponent: Option<f64>,
    /// Why, one line per value.
    pub reasoning: Vec<String>,
    /// What may go wrong with these values.
    pub warnings: Vec<String>,
}

/// Suggests zone values from the three phases; `edge_m` is the edge's distance from the hub, if
/// measured, and `exit_margin_db` the config's `[presence] exit_margin_db`.
pub fn suggest(
    at_1m: &PhaseStats,
    edge: &PhaseStats,
    outside: &PhaseStats,
    edge_m: Option<f64>,
    exit_margin_db: f64,
) -> Suggestion {
    let mut reasoning = Vec::new();
    let mut warnings = Vec::new();
    let measured_power = at_1m.median.round() as i16;
    reasoning.push(format!(
        "measured_power = {measured_power}: the median of {} readings at 1 m (spread ±{:.1} dB)",
        at_1m.n, at_1m.stdev
    ));
    // The smoothed RSSI of someone standing at the edge hovers around the edge's median: entering
    // there means "at the edge or closer".
    let enter_rssi = edge.median.round() as i16;
    reasoning.push(format!(
        "enter_rssi = {enter_rssi}: the median at the zone's edge ({} readings, 10–90 % {:.0} to {:.0})",
        edge.n, edge.p10, edge.p90
    ));
    // Leave once the signal is clearly weaker than the edge's weak end, halfway to outside, but keep
    // enough hysteresis that a customer standing at the edge does not flap in and out.
    let midway = ((edge.p10 + outside.median) / 2.0).round() as i16;
    let band = min_band_db(exit_margin_db);
    let exit_rssi = midway.min(enter_rssi - band);
    reasoning.push(format!(
        "exit_rssi = {exit_rssi}: halfway between the edge's weak end ({:.0}) and the median outside \
         ({:.0}), and at least {band} dB below enter_rssi (exit_margin_db {exit_margin_db} + \
         {BAND_OVER_MARGIN_DB}), so a customer who barely got in does not flap at the edge",
        edge.p10, outside.median
    ));
    // Compared as medians: the engine decides on a smoothed signal, so what matters is where the
    // signal of someone standing outside sits, not how far one faded or boosted reading reaches.
    // (Single readings 1 m outside reach `enter_rssi` in every store the simulator models, so a
    // warning on them would fire on every calibration and teach people to ignore it.)
    let gap = f64::from(enter_rssi) - outside.median;
    if gap < SOFT_EDGE_DB {
        warnings.push(format!(
            "just outside reads {:.0} dBm, only {gap:.0} dB below enter_rssi: the zone's edge is \
             soft, so people standing just outside will sometimes be counted in and people at the \
             edge counted out. Move or shield the hub, or draw the edge nearer the hub, where the \
             signal falls faster",
            outside.median
        ));
    }
    if at_1m.median <= edge.median {
        warnings.push(
            "the device was not stronger at 1 m than at the edge: repeat the 1 m phase closer to \
             the hub"
                .into(),
        );
    }
    let path_loss_exponent = edge_m.filter(|d| *d > 1.0).map(|d| {
        let n = (at_1m.median - edge.median) / (10.0 * d.log10());
        let n = (n * 10.0).round() / 10.0;
        reasoning.push(format!(
            "path_loss_exponent = {n}: {:.0} dB lost between 1 m and {d} m",
            at_1m.median - edge.median
        ));
        n
    });
    Suggestion {
        measured_power,
        enter_rssi,
        exit_rssi,
        path_loss_exponent,
        reasoning,
        warnings,
    }
}

/// The suggestion as lines to paste into the zone's `[[zones]]` table.
pub fn snippet(zone: &str, s: &Suggestion) -> String {
    let mut out = format!(
        "[[zones]]\nid = {zone:?}\nmeasured_power = {}\nenter_rssi = {}\nexit_rssi = {}\n",
        s.measured_power, s.enter_rssi, s.exit_rssi
    );
    if let Some(n) = s.path_loss_exponent {
        out.push_str(&format!("path_loss_exponent = {n}\n"));
    }
    out
}

/// `text` with the zone's values replaced (or added), everything else — comments, order, other
/// zones — as it was.
pub fn write_zone(
    text: &str,
    file: &str,
    zone: &str,
    s: &Suggestion,
) -> Result<String, CalibrateError> {
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| CalibrateError::Toml {
                file: file.into(),
                message: e.to_string(),
            })?;
    let no_zone = || CalibrateError::NoZone {
        file: file.into(),
        zone: zone.into(),
    };
    let zones = doc
        .get_mut("zones")
        .and_then(|z| z.as_array_of_tables_mut())
        .ok_or_else(no_zone)?;
    let table = zones
        .iter_mut()
        .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(zone))
        .ok_or_else(no_zone)?;
    table["measured_power"] = toml_edit::value(i64::from(s.measured_power));
    table["enter_rssi"] = toml_edit::value(i64::from(s.enter_rssi));
    table["exit_rssi"] = toml_edit::value(i64::from(s.exit_rssi));
    if let Some(n) = s.path_loss_exponent {
        table["path_loss_exponent"] = toml_edit::value(n);
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(center: i16, spread: i16) -> Vec<i16> {
        (0..40)
            .map(|i| center + (i % (2 * spread + 1)) - spread)
            .collect()
    }

    #[test]
    fn statistics_are_robust_percentiles() {
        let s =
            PhaseStats::of("edge", &[-70, -72, -71, -69, -70, -90, -70, -71, -69, -70]).unwrap();
        assert_eq!(s.median, -70.0);
        assert!(s.p10 < -71.0 && s.p90 >= -69.1);
        assert!(matches!(
            PhaseStats::of("at 1 m", &[-60; 3]),
            Err(CalibrateError::TooFew { got: 3, .. })
        ));
    }

    #[test]
    fn a_separable_zone_gets_hysteresis_and_no_warnings() {
        let s = suggest(
            &PhaseStats::of("1m", &phase(-59, 2)).unwrap(),
            &PhaseStats::of("edge", &phase(-72, 3)).unwrap(),
            &PhaseStats::of("out", &phase(-88, 3)).unwrap(),
            Some(4.0),
            8.0,
        );
        assert_eq!(s.measured_power, -59);
        assert_eq!(s.enter_rssi, -72);
        // Edge weak end ≈ -75, outside median -88 → about -81.
        assert!((-83..=-79).contains(&s.exit_rssi), "{s:?}");
        assert!(s.enter_rssi - s.exit_rssi >= min_band_db(8.0));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        // 13 dB over a factor of 4 in distance: n ≈ 2.2.
        assert_eq!(s.path_loss_exponent, Some(2.2));
        assert_eq!(s.reasoning.len(), 4);
    }

    #[test]
    fn overlapping_phases_are_warned_about_and_hysteresis_is_kept() {
        let s = suggest(
            &PhaseStats::of("1m", &phase(-60, 2)).unwrap(),
            &PhaseStats::of("edge", &phase(-70, 2)).unwrap(),
            &PhaseStats::of("out", &phase(-71, 4)).unwrap(),
            None,
            8.0,
        );
        assert_eq!(s.exit_rssi, s.enter_rssi - 9);
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("soft"), "{:?}", s.warnings);
        assert_eq!(s.path_loss_exponent, None);
    }

    #[test]
    fn the_band_keeps_the_engines_exit_margin() {
        assert_eq!(min_band_db(8.0), 9);
        assert_eq!(min_band_db(6.5), 8);
        // A narrow band from the phases themselves is widened to the margin.
        let s = suggest(
            &PhaseStats::of("1m", &phase(-58, 1)).unwrap(),
            &PhaseStats::of("edge", &phase(-70, 1)).unwrap(),
            &PhaseStats::of("out", &phase(-74, 1)).unwrap(),
            None,
            12.0,
        );
        assert_eq!(s.exit_rssi, -70 - 13);
        // A wide one stays as the phases put it.
        let s = suggest(
            &PhaseStats::of("1m", &phase(-58, 1)).unwrap(),
            &PhaseStats::of("edge", &phase(-70, 1)).unwrap(),
            &PhaseStats::of("out", &phase(-96, 1)).unwrap(),
            None,
            4.0,
        );
        // Halfway between the edge's weak end (-71) and outside (-96).
        assert_eq!(s.exit_rssi, -84);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn writing_keeps_comments_and_other_zones() {
        let text = "# the hub\n[hub]\nstore_id = \"s\" # inline\n\n[[zones]]\nid = \"a\"\n# tuned in March\nenter_rssi = -70\nexit_rssi = -80\n\n[[zones]]\nid = \"b\"\nenter_rssi = -60\nexit_rssi = -70\n";
        let s = Suggestion {
            measured_power: -58,
            enter_rssi: -66,
            exit_rssi: -75,
            path_loss_exponent: None,
            reasoning: vec![],
            warnings: vec![],
        };
        let out = write_zone(text, "f.toml", "b", &s).unwrap();
        assert!(
            out.contains("# the hub")
                && out.contains("# inline")
                && out.contains("# tuned in March")
        );
        let v: toml::Value = toml::from_str(&out).unwrap();
        let zones = v["zones"].as_array().unwrap();
        assert_eq!(zones[0]["enter_rssi"].as_integer(), Some(-70));
        assert_eq!(zones[1]["enter_rssi"].as_integer(), Some(-66));
        assert_eq!(zones[1]["exit_rssi"].as_integer(), Some(-75));
        assert_eq!(zones[1]["measured_power"].as_integer(), Some(-58));
        let e = write_zone(text, "f.toml", "c", &s).unwrap_err().to_string();
        assert!(
            e.starts_with("f.toml: no [[zones]] entry with id = \"c\""),
            "{e}"
        );
    }
}
