//! RSSI smoothing filters. All are time-aware (they take the seconds since the previous sample),
//! because phones advertise at irregular intervals and packets get lost.
//!
//! Which one is the default, and why, is measured on the simulator: see `docs/presence.md`.

use std::collections::VecDeque;

use crate::config::SmoothingFilter;

/// Tuning of the filters, shared by every track.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FilterParams {
    /// Which filter.
    pub kind: FilterKind,
    /// Kalman: how fast the true signal may drift, in dB² per second (walking changes it).
    pub kalman_q: f32,
    /// Kalman: variance of one measurement, in dB² (fast fading and shadowing).
    pub kalman_r: f32,
    /// Kalman: innovations beyond this many standard deviations are clipped (deep fades).
    pub kalman_clip_sigma: f32,
    /// Trimmed mean: the window, in seconds.
    pub window_s: f32,
    /// Trimmed mean: share of samples dropped at each end (0.1 = 10 %).
    pub trim: f32,
    /// EWMA: time constant in seconds.
    pub tau_s: f32,
}

/// A filter, including the unsmoothed one the baseline uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    /// 1-D Kalman filter with a random-walk model.
    Kalman,
    /// Trimmed running mean over a time window.
    TrimmedMean,
    /// Exponentially weighted moving average.
    Ewma,
    /// Kalman filter on level and trend.
    Trend,
    /// No smoothing: the last sample (the naive baseline).
    Raw,
}

impl From<SmoothingFilter> for FilterKind {
    fn from(f: SmoothingFilter) -> FilterKind {
        match f {
            SmoothingFilter::KalmanTrend => FilterKind::Trend,
            SmoothingFilter::Kalman => FilterKind::Kalman,
            SmoothingFilter::TrimmedMean => FilterKind::TrimmedMean,
            SmoothingFilter::Ewma => FilterKind::Ewma,
        }
    }
}

impl FilterParams {
    /// The tuned defaults for `kind` (see docs/presence.md for how they were chosen).
    pub fn tuned(kind: FilterKind) -> FilterParams {
        FilterParams {
            kind,
            // The trend filter's q is a trend drift (dB²/s³), the level filter's a level drift
            // (dB²/s): each is the best of a grid on the shipped scenarios (docs/presence.md).
            kalman_q: if kind == FilterKind::Trend { 0.5 } else { 6.0 },
            kalman_r: if kind == FilterKind::Trend {
                60.0
            } else {
                40.0
            },
            kalman_clip_sigma: 2.5,
            window_s: 2.5,
            trim: 0.1,
            tau_s: 1.5,
        }
    }
}

/// Bound on samples kept by the trimmed mean, whatever the advertising rate.
const MAX_WINDOW_SAMPLES: usize = 48;

/// The state of one filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Smoother {
    /// Kalman estimate and its variance.
    Kalman {
        /// Estimate, dBm.
        x: f32,
        /// Variance of the estimate.
        p: f32,
    },
    /// Samples in the window: (seconds since the first sample of the track, dBm).
    TrimmedMean(Box<VecDeque<(f32, f32)>>, f32, f32),
    /// EWMA estimate.
    Ewma(f32),
    /// Level-and-trend Kalman: estimate, trend (dB/s), and the 2×2 covariance [pxx, pxv, pvv].
    Trend {
        /// Estimate, dBm.
        x: f32,
        /// Trend, dB/s.
        v: f32,
        /// Covariance.
        p: [f32; 3],
    },
    /// The last sample.
    Raw(f32),
}

impl Smoother {
    /// A filter started from its first sample.
    pub fn new(params: &FilterParams, first: f32) -> Smoother {
        match params.kind {
            FilterKind::Kalman => Smoother::Kalman {
                x: first,
                p: params.kalman_r,
            },
            FilterKind::TrimmedMean => {
                let mut q = VecDeque::with_capacity(8);
                q.push_back((0.0, first));
                Smoother::TrimmedMean(Box::new(q), 0.0, first)
            }
            FilterKind::Ewma => Smoother::Ewma(first),
            FilterKind::Trend => Smoother::Trend {
                x: first,
                v: 0.0,
                p: [params.kalman_r, 0.0, 4.0],
            },
            FilterKind::Raw => Smoother::Raw(first),
        }
    }

    /// Feeds a sample `dt` seconds after the previous one; returns the new estimate.
    pub fn update(&mut self, params: &FilterParams, dt: f32, z: f32) -> f32 {
        let dt = dt.max(0.0);
        match self {
            Smoother::Kalman { x, p } => {
                // Predict: the true level drifts as the person moves.
                *p += params.kalman_q * dt;
                // Fast fading makes deep, short drops; clip the innovation so one fade cannot drag
                // the estimate across a threshold.
                let s = (*p + params.kalman_r).sqrt();
                let innovation =
                    (z - *x).clamp(-params.kalman_clip_sigma * s, params.kalman_clip_sigma * s);
                let k = *p / (*p + params.kalman_r);
                *x += k * innovation;
                *p *= 1.0 - k;
                *x
            }
            Smoother::TrimmedMean(samples, clock, value) => {
                *clock += dt;
                samples.push_back((*clock, z));
                while samples.len() > MAX_WINDOW_SAMPLES
                    || samples
                        .front()
                        .is_some_and(|(t, _)| *clock - *t > params.window_s)
                {
                    samples.pop_front();
                }
                let mut sorted: smallvec::SmallVec<[f32; MAX_WINDOW_SAMPLES]> =
                    samples.iter().map(|(_, v)| *v).collect();
                sorted.sort_unstable_by(f32::total_cmp);
                let cut = ((sorted.len() as f32) * params.trim).floor() as usize;
                let kept = &sorted[cut..sorted.len() - cut];
                *value = kept.iter().sum::<f32>() / kept.len() as f32;
                *value
            }
            Smoother::Trend { x, v, p } => {
                // Predict with a constant-velocity model; the trend is what lets the estimate keep
                // up with someone walking in or out instead of lagging behind them.
                let q = params.kalman_q;
                let [mut pxx, mut pxv, mut pvv] = *p;
                *x += *v * dt;
                pxx += dt * (2.0 * pxv + dt * pvv) + q * dt * dt * dt / 3.0;
                pxv += dt * pvv + q * dt * dt / 2.0;
                pvv += q * dt;
                let s = pxx + params.kalman_r;
                let innovation = (z - *x).clamp(
                    -params.kalman_clip_sigma * s.sqrt(),
                    params.kalman_clip_sigma * s.sqrt(),
                );
                let (kx, kv) = (pxx / s, pxv / s);
                *x += kx * innovation;
                // A trend is bounded by how fast anyone walks through a path-loss gradient.
                *v = (*v + kv * innovation).clamp(-8.0, 8.0);
                pvv -= kv * pxv;
                pxv -= kx * pxv;
                pxx -= kx * pxx;
                *p = [pxx, pxv, pvv];
                *x
            }
            Smoother::Ewma(x) => {
                let alpha = 1.0 - (-dt / params.tau_s).exp();
                *x += alpha * (z - *x);
                *x
            }
            Smoother::Raw(x) => {
                *x = z;
                *x
            }
        }
    }

    /// How fast the estimate is moving, dB/s: the level-and-trend filter's trend, 0 for filters that
    /// do not model one.
    pub fn trend(&self) -> f32 {
        match self {
            Smoother::Trend { v, .. } => *v,
            _ => 0.0,
        }
    }

    /// Whether this filter estimates a trend at all (only then does [`Smoother::trend`] say anything).
    pub fn has_trend(&self) -> bool {
        matches!(self, Smoother::Trend { .. })
    }

    /// The current estimate.
    pub fn value(&self) -> f32 {
        match self {
            Smoother::Kalman { x, .. } | Smoother::Trend { x, .. } => *x,
            Smoother::TrimmedMean(_, _, v) => *v,
            Smoother::Ewma(x) | Smoother::Raw(x) => *x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: FilterKind, samples: &[f32]) -> f32 {
        let p = FilterParams::tuned(kind);
        let mut s = Smoother::new(&p, samples[0]);
        for z in &samples[1..] {
            s.update(&p, 0.2, *z);
        }
        s.value()
    }

    #[test]
    fn every_filter_converges_on_a_steady_signal() {
        let steady = vec![-65.0; 100];
        for k in [
            FilterKind::Kalman,
            FilterKind::TrimmedMean,
            FilterKind::Ewma,
            FilterKind::Raw,
        ] {
            assert!((run(k, &steady) + 65.0).abs() < 1e-3, "{k:?}");
        }
    }

    #[test]
    fn smoothing_filters_resist_a_single_deep_fade() {
        let mut samples = vec![-65.0; 50];
        samples.push(-95.0);
        for k in [
            FilterKind::Kalman,
            FilterKind::TrimmedMean,
            FilterKind::Ewma,
        ] {
            let v = run(k, &samples);
            assert!(v > -72.0, "{k:?} fell to {v}");
        }
        assert_eq!(run(FilterKind::Raw, &samples), -95.0);
    }

    #[test]
    fn filters_follow_a_real_step_within_seconds() {
        // 5 samples per second; after 5 s at the new level every filter is within 3 dB of it.
        let mut samples = vec![-85.0; 50];
        samples.extend(vec![-60.0; 25]);
        for k in [
            FilterKind::Kalman,
            FilterKind::TrimmedMean,
            FilterKind::Ewma,
        ] {
            let v = run(k, &samples);
            assert!((v + 60.0).abs() < 3.0, "{k:?} at {v}");
        }
    }

    #[test]
    fn trimmed_mean_keeps_a_bounded_window() {
        let p = FilterParams::tuned(FilterKind::TrimmedMean);
        let mut s = Smoother::new(&p, -70.0);
        for _ in 0..10_000 {
            s.update(&p, 0.001, -70.0);
        }
        let Smoother::TrimmedMean(q, _, _) = &s else {
            unreachable!()
        };
        assert!(q.len() <= MAX_WINDOW_SAMPLES);
    }
}
