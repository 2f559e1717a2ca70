//! Time as the core sees it: a plain number of milliseconds since the Unix epoch, passed in by the
//! caller. The core never reads a clock, so the simulator can run an hour in a second and tests can
//! put an observation exactly on a boundary.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Seconds since the epoch, with fractions.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// The wall clock now, as the daemon keeps it: it follows the system clock forward (NTP setting a
    /// Raspberry Pi's clock after boot) but never steps back. Only the edges (sources, the daemon)
    /// call this.
    ///
    /// The engine's deadlines wait for the source's time to pass them, so a system clock stepped back
    /// by an hour (a hub whose clock ran ahead, corrected by NTP) would otherwise stop every exit,
    /// headcount and stats message for that hour while adverts kept coming "late". Instead the
    /// daemon's time keeps running from where it was, ahead of the system clock by the step (logged
    /// once), until the next restart.
    pub fn now() -> Timestamp {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::OnceLock;
        static BASE: OnceLock<std::time::Instant> = OnceLock::new();
        static OFFSET: AtomicU64 = AtomicU64::new(0);
        static WARNED: AtomicBool = AtomicBool::new(false);
        let base = *BASE.get_or_init(std::time::Instant::now);
        let elapsed = base.elapsed().as_millis() as u64;
        let wall = system_now();
        // fetch_max, not load-then-store: two threads reading across a forward step both see it.
        let seen = OFFSET.fetch_max(wall.saturating_sub(elapsed), Ordering::Relaxed);
        let reading = steady(seen, wall, elapsed);
        if reading.wall_behind_ms > STEP_WARN_MS {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    behind_s = reading.wall_behind_ms / 1000,
                    "the system clock stepped back; beacond keeps its time running from where it was, \
                     so event timestamps are ahead of the system clock by that much until beacond is \
                     restarted (systemctl restart beacond)"
                );
            }
        } else {
            WARNED.store(false, Ordering::Relaxed);
        }
        reading.now
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Seconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn secs_since(self, earlier: Timestamp) -> f64 {
        self.since(earlier) as f64 / 1000.0
    }

    /// This time plus `secs` seconds (rounded to the millisecond).
    pub fn plus_secs(self, secs: f64) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add((secs * 1000.0).round().max(0.0) as u64),
        )
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-25T10:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        match chrono::DateTime::from_timestamp_millis(self.0 as i64) {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            None => format!("{}ms", self.0),
        }
    }
}

/// How far the system clock may be behind the daemon's before it is logged, ms.
const STEP_WARN_MS: u64 = 2_000;

/// The system clock, ms since the epoch.
fn system_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// One reading of the daemon's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reading {
    /// The largest `wall − elapsed` seen so far: the daemon's time is `offset + elapsed`.
    offset: u64,
    /// The daemon's time.
    now: Timestamp,
    /// How far the system clock is behind it, ms (0 when it is not).
    wall_behind_ms: u64,
}

/// The daemon's time from the system clock `wall` and the monotonic `elapsed` since start: the
/// monotonic clock carries it, and the system clock can only push it forward.
fn steady(offset: u64, wall: u64, elapsed: u64) -> Reading {
    let offset = offset.max(wall.saturating_sub(elapsed));
    let now = offset + elapsed;
    Reading {
        offset,
        now: Timestamp(now),
        wall_behind_ms: now.saturating_sub(wall),
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_millis() as u64))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(d.as_millis() as u64))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds (wall, elapsed) pairs through `steady` as `now()` does and returns the readings.
    fn run(samples: &[(u64, u64)]) -> Vec<Reading> {
        let mut offset = 0;
        samples
            .iter()
            .map(|&(wall, elapsed)| {
                let r = steady(offset, wall, elapsed);
                offset = r.offset;
                r
            })
            .collect()
    }

    #[test]
    fn daemon_time_is_the_system_clock_while_it_runs_steadily() {
        let t0 = 1_764_064_800_000;
        let r = run(&[(t0, 0), (t0 + 1_000, 1_000), (t0 + 60_000, 60_000)]);
        assert_eq!(r[0].now, Timestamp(t0));
        assert_eq!(r[1].now, Timestamp(t0 + 1_000));
        assert_eq!(r[2].now, Timestamp(t0 + 60_000));
        assert!(r.iter().all(|r| r.wall_behind_ms == 0));
    }

    #[test]
    fn daemon_time_follows_the_system_clock_forward() {
        // A Pi boots with the clock of its last shutdown; NTP sets it three hours later.
        let t0 = 1_764_064_800_000;
        let step = 3 * 3_600_000;
        let r = run(&[
            (t0, 0),
            (t0 + step + 5_000, 5_000),
            (t0 + step + 6_000, 6_000),
        ]);
        assert_eq!(r[1].now, Timestamp(t0 + step + 5_000));
        assert_eq!(r[2].now, Timestamp(t0 + step + 6_000));
        assert_eq!(r[2].wall_behind_ms, 0);
    }

    #[test]
    fn daemon_time_never_steps_back_with_the_system_clock() {
        // The clock ran an hour ahead and NTP corrects it: the daemon's time keeps moving forward at
        // the monotonic clock's pace, so deadlines keep coming, and says how far ahead it is.
        let t0 = 1_764_064_800_000;
        let hour = 3_600_000;
        let r = run(&[
            (t0, 0),
            (t0 + 10_000, 10_000),
            (t0 + 10_001 - hour, 10_001),
            (t0 + 20_000 - hour, 20_000),
        ]);
        let times: Vec<u64> = r.iter().map(|r| r.now.0).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        assert_eq!(r[2].now, Timestamp(t0 + 10_001));
        assert_eq!(r[3].now, Timestamp(t0 + 20_000));
        assert_eq!(r[3].wall_behind_ms, hour);
    }

    #[test]
    fn now_never_goes_back() {
        let mut prev = Timestamp::now();
        for _ in 0..1_000 {
            let t = Timestamp::now();
            assert!(t >= prev);
            prev = t;
        }
    }

    #[test]
    fn formats_rfc3339_utc_with_millis() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_764_064_800_123).to_rfc3339(),
            "2025-11-25T10:00:00.123Z"
        );
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(Timestamp(5).since(Timestamp(10)), 0);
        assert_eq!(Timestamp(5) - Duration::from_millis(10), Timestamp(0));
        assert_eq!(Timestamp(1000).plus_secs(1.5), Timestamp(2500));
    }
}
