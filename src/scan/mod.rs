//! Scanning sources: where advertisements come from. Each source produces [`Advert`]s stamped with
//! our own time and the index of the hub that heard them:
//! - `sim`: the store simulator, with ground truth ([`sim`]);
//! - `replay`: a recording made by `beacond record` ([`replay`]);
//! - `bluez`: the Bluetooth adapter through BlueZ ([`bluez`]).
//!
//! [`open`] and [`Opened::spawn`] start any of them the same way for the daemon, `beacond scan` and
//! `beacond record`.

pub mod bluez;
pub mod filter;
pub mod replay;
pub mod sim;

use smallvec::SmallVec;
use tokio::sync::{mpsc, watch};

use crate::time::Timestamp;

/// Advertising data inline up to the legacy 31 bytes; longer (merged scan response) spills to the heap.
pub type Payload = SmallVec<[u8; 31]>;

/// One advertisement as a hub heard it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// When it was heard (our clock, or the simulated one).
    pub at: Timestamp,
    /// Which of the source's hubs heard it (index into the source's hub list).
    pub hub: u16,
    /// The device address. Random for phones; it never leaves the process.
    pub address: [u8; 6],
    /// Received signal strength, dBm.
    pub rssi: i16,
    /// The raw advertising data (AD structures).
    pub payload: Payload,
}

/// Maps between the pipeline's time and the wall clock: real time for the radio, a scaled simulated
/// time for `sim` and `replay` at `--speed N`.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    /// The radio's time: [`Timestamp::now`], which follows the system clock forward (NTP after
    /// boot) and never steps back, the same clock the BlueZ source stamps adverts with.
    Real,
    /// Time that started at `start` at `wall_start` and runs `speed` times the wall clock.
    Scaled {
        /// When it started, on the wall clock.
        wall_start: tokio::time::Instant,
        /// Its time then.
        start: Timestamp,
        /// How much faster than the wall clock it runs.
        speed: f64,
    },
}

impl Clock {
    /// Real time.
    pub fn real() -> Clock {
        Clock::Real
    }

    /// Time that starts at `start` now and runs `speed` times faster than the wall clock.
    pub fn scaled(start: Timestamp, speed: f64) -> Clock {
        Clock::Scaled {
            wall_start: tokio::time::Instant::now(),
            start,
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }

    /// The pipeline's time now.
    pub fn now(&self) -> Timestamp {
        match *self {
            Clock::Real => Timestamp::now(),
            Clock::Scaled {
                wall_start,
                start,
                speed,
            } => start.plus_secs(wall_start.elapsed().as_secs_f64() * speed),
        }
    }

    /// The wall-clock instant at which pipeline time `t` comes.
    pub fn instant_of(&self, t: Timestamp) -> tokio::time::Instant {
        match *self {
            // Measured from now, so a forward step of the system clock brings deadlines forward.
            Clock::Real => {
                tokio::time::Instant::now()
                    + std::time::Duration::from_millis(t.since(Timestamp::now()))
            }
            Clock::Scaled {
                wall_start,
                start,
                speed,
            } => wall_start + std::time::Duration::from_secs_f64(t.secs_since(start) / speed),
        }
    }
}

/// Plays adverts from `next` against `clock`, sending each when its time comes, until `next` runs
/// out, the receiver goes away, or shutdown. `watermark` tells the core how far the source has got:
/// no advert older than it will come, so deadlines up to it can be handled without overtaking an
/// advert. Adverts the filter stops are counted in `counters` and dropped.
pub async fn run_paced(
    mut next: impl FnMut() -> Option<Advert> + Send,
    clock: Clock,
    filter: filter::Filter,
    io: SourceIo,
    mut shutdown: crate::shutdown::Shutdown,
) {
    let SourceIo {
        adverts: tx,
        watermark,
        counters,
        mut filters,
    } = io;
    let mut filter = filter;
    let mut c = bluez::tracker::ScanCounters::default();
    while let Some(adv) = next() {
        if let Some(rx) = filters
            .as_mut()
            .filter(|rx| rx.has_changed().unwrap_or(false))
        {
            filter = rx.borrow_and_update().clone();
        }
        // Nothing older than this advert can come any more: the core may run deadlines up to it.
        watermark.send_replace(Timestamp(adv.at.0.saturating_sub(1)));
        c.events += 1;
        match filter.check(adv.rssi, &adv.payload) {
            filter::Verdict::Pass => c.adverts += 1,
            filter::Verdict::WeakSignal => {
                c.filtered_rssi += 1;
                continue;
            }
            filter::Verdict::NotListed => {
                c.filtered_unlisted += 1;
                continue;
            }
        }
        if adv.at > clock.now() {
            counters.send_replace(c);
            tokio::select! {
                _ = tokio::time::sleep_until(clock.instant_of(adv.at)) => {}
                _ = shutdown.recv() => return,
            }
        }
        tokio::select! {
            sent = tx.send(adv) => if sent.is_err() { return },
            _ = shutdown.recv() => return,
        }
    }
    counters.send_replace(c);
    watermark.send_replace(Timestamp(u64::MAX));
}

/// The channels from a source to the core.
pub struct SourceIo {
    /// Adverts, in time order.
    pub adverts: mpsc::Sender<Advert>,
    /// How far the source has got.
    pub watermark: watch::Sender<Timestamp>,
    /// The source's counters, for `stats.scan`.
    pub counters: watch::Sender<bluez::tracker::ScanCounters>,
    /// New `[scan.filters]` from a reload, applied from the next advert on.
    pub filters: Option<watch::Receiver<filter::Filter>>,
}

/// A source that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The simulated store's scenario.
    #[error("scan.sim_scenario: {0}")]
    Scenario(#[from] sim::ScenarioError),
    /// The recording to replay.
    #[error("scan.replay_file: {0}")]
    Replay(#[from] replay::ReplayError),
    /// `sim_hub` names no hub of the scenario.
    #[error(
        "scan.sim_hub: {hub} is not a hub of the simulated store {scenario}; use one of {hubs}"
    )]
    SimHub {
        /// The hub asked for.
        hub: String,
        /// The scenario.
        scenario: String,
        /// Its hubs, comma-separated.
        hubs: String,
    },
    /// `source = "replay"` without a file.
    #[error("scan.replay_file: not set; source = \"replay\" needs the recording to play (`beacond record FILE` makes one)")]
    NoReplayFile,
    /// The bluez source gave up.
    #[error("bluez: {0}")]
    Bluez(#[from] bluez::BluezError),
}

/// A source, opened and ready to spawn.
pub enum Opened {
    /// The store simulator.
    Sim(Box<sim::Simulation>),
    /// A recording.
    Replay(Box<replay::Recording>),
    /// The Bluetooth adapter.
    Bluez(bluez::Settings),
}

impl Opened {
    /// The hubs the source's adverts name by index.
    pub fn hubs(&self, own_hub: &str) -> Vec<String> {
        match self {
            Opened::Sim(s) => s.hub_names().to_vec(),
            Opened::Replay(r) if !r.header.hubs.is_empty() => r.header.hubs.clone(),
            _ => vec![own_hub.to_string()],
        }
    }

    /// The customers the source comes with: the simulated store's; none for the others (the
    /// customer cache provides them).
    pub fn directory(&self) -> crate::identity::Directory {
        match self {
            Opened::Sim(s) => s.directory().clone(),
            _ => Default::default(),
        }
    }

    /// The source's own start of time: simulated and recorded time start in the past or future.
    pub fn start(&self) -> Timestamp {
        match self {
            Opened::Sim(s) => s.start(),
            Opened::Replay(r) => r.start(),
            Opened::Bluez(_) => Timestamp::now(),
        }
    }

    /// The source's name, as in config.
    pub fn kind(&self) -> &'static str {
        match self {
            Opened::Sim(_) => "sim",
            Opened::Replay(_) => "replay",
            Opened::Bluez(_) => "bluez",
        }
    }

    /// Runs the source on its own task. Simulated and recorded time start at `start` and run at
    /// `speed`; the radio runs on the wall clock.
    pub fn spawn(
        self,
        start: Timestamp,
        speed: f64,
        filter: filter::Filter,
        io: SourceIo,
        shutdown: crate::shutdown::Shutdown,
    ) -> (Clock, tokio::task::JoinHandle<Result<(), SourceError>>) {
        match self {
            Opened::Sim(mut sim) => {
                let clock = Clock::scaled(start, speed);
                let task = tokio::spawn(async move {
                    let (mut laps, mut ended) = (sim.laps(), false);
                    let next = || {
                        let a = sim.next_advert();
                        ended = a.is_none();
                        if sim.laps() != laps {
                            laps = sim.laps();
                            tracing::info!(
                                scenario = %sim.scenario().name,
                                lap = laps + 1,
                                "simulated scenario starts again"
                            );
                        }
                        a
                    };
                    run_paced(next, clock, filter, io, shutdown).await;
                    // Stopped by the shutdown signal, it did not finish.
                    if ended {
                        tracing::info!(scenario = %sim.scenario().name, "simulated scenario finished");
                    }
                    Ok(())
                });
                (clock, task)
            }
            Opened::Replay(mut rec) => {
                let clock = Clock::scaled(start, speed);
                let task = tokio::spawn(async move {
                    let mut failed = None;
                    let next = || match rec.next_advert() {
                        Ok(a) => a,
                        Err(e) => {
                            failed = Some(e);
                            None
                        }
                    };
                    run_paced(next, clock, filter, io, shutdown).await;
                    match failed {
                        Some(e) => Err(e.into()),
                        None => {
                            tracing::info!("recording finished");
                            Ok(())
                        }
                    }
                });
                (clock, task)
            }
            Opened::Bluez(mut settings) => {
                settings.filter = filter;
                let task = tokio::spawn(async move {
                    bluez::run(settings, io, shutdown)
                        .await
                        .map_err(SourceError::from)
                });
                (Clock::real(), task)
            }
        }
    }
}

/// The hubs a source hears, and how to name the source in a message.
///
/// A hub's radio hears only that hub, so a zone `cfg` assigns to another hub is never entered on
/// it: a store with several hubs gives each its own zones. The simulated store and recordings of
/// it hear several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heard {
    /// The hubs whose adverts the source gives.
    pub hubs: Vec<String>,
    kind: crate::config::SourceKind,
    what: String,
}

/// A zone measured by a hub its source does not hear: nobody is ever seen in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnheardZone {
    /// The zone's index in `[[zones]]`.
    pub index: usize,
    /// What is wrong and what to do, for a log line or after `zones[N].hub: `.
    pub message: String,
}

/// `zones[N].hub: MESSAGE`, as the log and doctor say it.
impl std::fmt::Display for UnheardZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "zones[{}].hub: {}", self.index, self.message)
    }
}

impl Heard {
    /// What `opened`, the source `cfg` names, hears.
    pub fn of(opened: &Opened, cfg: &crate::config::Config) -> Heard {
        let hubs = match (opened, &cfg.scan.sim_hub) {
            // Opening checked that the scenario has it.
            (Opened::Sim(_), Some(hub)) => vec![hub.clone()],
            _ => opened.hubs(&cfg.hub.hub_id),
        };
        Heard::new(cfg, hubs)
    }

    /// What the source `cfg` names hears, reading the scenario or the recording's header (not
    /// the radio: a hub's radio hears the hub itself).
    pub fn read(cfg: &crate::config::Config) -> Result<Heard, SourceError> {
        use crate::config::SourceKind;
        let hubs = match cfg.scan.source {
            SourceKind::Bluez => vec![cfg.hub.hub_id.clone()],
            SourceKind::Sim => {
                let all: Vec<String> = sim::Scenario::load(&cfg.scan.sim_scenario)?
                    .hubs
                    .into_iter()
                    .map(|h| h.id)
                    .collect();
                match &cfg.scan.sim_hub {
                    Some(hub) => {
                        sim_hub_index(cfg, hub, &all)?;
                        vec![hub.clone()]
                    }
                    None => all,
                }
            }
            SourceKind::Replay => {
                Opened::Replay(Box::new(replay::Recording::open(replay_file(cfg)?)?))
                    .hubs(&cfg.hub.hub_id)
            }
        };
        Ok(Heard::new(cfg, hubs))
    }

    fn new(cfg: &crate::config::Config, hubs: Vec<String>) -> Heard {
        use crate::config::SourceKind;
        let what = match cfg.scan.source {
            SourceKind::Bluez => format!("this hub ({}) hears only its own radio", cfg.hub.hub_id),
            SourceKind::Sim if cfg.scan.sim_hub.is_some() => format!(
                "this hub hears only {} of the simulated store {} (scan.sim_hub)",
                hubs.join(", "),
                cfg.scan.sim_scenario
            ),
            SourceKind::Sim => format!(
                "the simulated store {} has hubs {}",
                cfg.scan.sim_scenario,
                hubs.join(", ")
            ),
            SourceKind::Replay => format!(
                "the recording {} was heard by {}",
                cfg.scan
                    .replay_file
                    .as_deref()
                    .unwrap_or(std::path::Path::new("?"))
                    .display(),
                hubs.join(", ")
            ),
        };
        Heard {
            hubs,
            kind: cfg.scan.source,
            what,
        }
    }

    /// The zones of `cfg` that no hub of this source measures, in file order, each with what to
    /// do about it.
    pub fn unheard_zones(&self, cfg: &crate::config::Config) -> Vec<UnheardZone> {
        cfg.zones
            .iter()
            .enumerate()
            .filter_map(|(index, z)| {
                let hub = z.hub.as_deref().unwrap_or(&cfg.hub.hub_id);
                // A peer measures it and reports it; this hub hears it through the peer.
                if self.hubs.iter().chain(&cfg.peers.hubs).any(|h| h == hub) {
                    return None;
                }
                let advice = match self.kind {
                    crate::config::SourceKind::Bluez => format!(
                        "leave `hub` out to measure it with this hub, move the zone to {hub}'s own \
                         config, or list {hub} in [peers] hubs to share observations with it"
                    ),
                    _ => format!("set `hub` to one of {}", self.hubs.join(", ")),
                };
                Some(UnheardZone {
                    index,
                    message: format!(
                        "zone \"{}\" is measured by hub {hub}, but {}: nobody is ever seen in it and \
                         offers on it never fire; {advice}",
                        z.id, self.what
                    ),
                })
            })
            .collect()
    }
}

/// The index of `hub` among the simulated store's `hubs`.
fn sim_hub_index(
    cfg: &crate::config::Config,
    hub: &str,
    hubs: &[String],
) -> Result<u16, SourceError> {
    hubs.iter()
        .position(|h| h == hub)
        .map(|i| i as u16)
        .ok_or_else(|| SourceError::SimHub {
            hub: hub.to_owned(),
            scenario: cfg.scan.sim_scenario.clone(),
            hubs: hubs.join(", "),
        })
}

/// The recording `cfg` replays.
fn replay_file(cfg: &crate::config::Config) -> Result<&std::path::Path, SourceError> {
    cfg.scan
        .replay_file
        .as_deref()
        .ok_or(SourceError::NoReplayFile)
}

/// Opens the source `cfg` names.
pub fn open(cfg: &crate::config::Config) -> Result<Opened, SourceError> {
    use crate::config::SourceKind;
    Ok(match cfg.scan.source {
        SourceKind::Sim => {
            let mut sim = sim::Simulation::new(sim::Scenario::load(&cfg.scan.sim_scenario)?);
            if cfg.scan.sim_repeat {
                sim.repeat();
            }
            if let Some(hub) = &cfg.scan.sim_hub {
                let i = sim_hub_index(cfg, hub, sim.hub_names())?;
                sim.hear_only(i);
            }
            Opened::Sim(Box::new(sim))
        }
        SourceKind::Replay => Opened::Replay(Box::new(replay::Recording::open(replay_file(cfg)?)?)),
        SourceKind::Bluez => Opened::Bluez(bluez::Settings {
            adapter: cfg.scan.adapter.clone(),
            watchdog_s: cfg.scan.watchdog_s,
            // A device is forgotten (and its BlueZ object removed) once no zone could still hold it.
            forget_after_s: (cfg
                .zones
                .iter()
                .map(|z| z.absence_timeout_s)
                .fold(0.0, f64::max)
                + 10.0)
                .max(15.0),
            max_devices: cfg.presence.max_tracked.max(1024),
            filter: filter::Filter::default(),
        }),
    })
}

/// The filter `cfg` asks for.
pub fn filter_of(cfg: &crate::config::Config) -> filter::Filter {
    filter::Filter::new(
        &cfg.scan.filters,
        uuid::Uuid::parse_str(&cfg.identity.app_service_uuid).ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> crate::config::Config {
        crate::config::Config::parse(text).expect("valid config")
    }

    #[test]
    fn a_hubs_radio_hears_only_its_own_zones() {
        let cfg = config(
            "[hub]\nhub_id = \"hub-1\"\n\
             [[zones]]\nid = \"till\"\n\
             [[zones]]\nid = \"door\"\nhub = \"hub-1\"\n\
             [[zones]]\nid = \"deli\"\nhub = \"hub-2\"\n",
        );
        let heard = Heard::read(&cfg).unwrap();
        assert_eq!(heard.hubs, ["hub-1"]);
        let unheard = heard.unheard_zones(&cfg);
        assert_eq!(unheard.len(), 1, "{unheard:?}");
        assert_eq!(unheard[0].index, 2);
        let m = &unheard[0].message;
        assert!(m.starts_with("zone \"deli\" is measured by hub hub-2, but this hub (hub-1) hears only its own radio"), "{m}");
        assert!(
            m.ends_with("list hub-2 in [peers] hubs to share observations with it"),
            "{m}"
        );
        // Shared with hub-2, the zone is heard through it.
        let mut cfg = cfg;
        cfg.peers.hubs = vec!["hub-2".into()];
        assert!(heard.unheard_zones(&cfg).is_empty());
    }

    #[test]
    fn the_simulated_store_hears_its_scenarios_hubs_and_no_other() {
        let cfg = config(
            "[hub]\nhub_id = \"hub-1\"\n[scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\n\
             [[zones]]\nid = \"window\"\nhub = \"hub-window\"\n\
             [[zones]]\nid = \"till\"\n",
        );
        let heard = Heard::read(&cfg).unwrap();
        assert_eq!(heard.hubs, ["hub-window", "hub-rails", "hub-fitting"]);
        // The zone that inherits the hub's own id is the one no simulated hub measures.
        let unheard = heard.unheard_zones(&cfg);
        assert_eq!(unheard.iter().map(|u| u.index).collect::<Vec<_>>(), [1]);
        assert!(
            unheard[0]
                .message
                .ends_with("set `hub` to one of hub-window, hub-rails, hub-fitting"),
            "{}",
            unheard[0].message
        );
        // A daemon that hears one hub of it, as a real hub would.
        let one = config(
            "[scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\nsim_hub = \"hub-rails\"\n\
             [[zones]]\nid = \"window\"\nhub = \"hub-window\"\n\
             [[zones]]\nid = \"rails\"\nhub = \"hub-rails\"\n",
        );
        let heard = Heard::read(&one).unwrap();
        assert_eq!(heard.hubs, ["hub-rails"]);
        let unheard = heard.unheard_zones(&one);
        assert_eq!(unheard.iter().map(|u| u.index).collect::<Vec<_>>(), [0]);
        let wrong = config(
            "[scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\nsim_hub = \"hub-till\"\n",
        );
        assert!(matches!(
            Heard::read(&wrong),
            Err(SourceError::SimHub { .. })
        ));
        assert!(matches!(open(&wrong), Err(SourceError::SimHub { .. })));
        // What `run` would fail on is said, not hidden.
        let missing = config("[scan]\nsource = \"replay\"\nreplay_file = \"/nonexistent.jsonl\"\n");
        assert!(Heard::read(&missing).is_err());
    }

    #[test]
    fn real_clock_is_the_daemon_time_and_schedules_from_now() {
        let clock = Clock::real();
        let before = Timestamp::now();
        let t = clock.now();
        assert!(t >= before && t <= Timestamp::now());
        // A deadline a second ahead comes a second from now, not from when the clock was made.
        let at = clock.instant_of(Timestamp(Timestamp::now().0 + 1_000));
        let wait = at.duration_since(tokio::time::Instant::now());
        assert!(wait <= std::time::Duration::from_millis(1_000));
        assert!(wait >= std::time::Duration::from_millis(500), "{wait:?}");
        // A deadline already past is due now.
        let past = clock.instant_of(Timestamp(before.0.saturating_sub(60_000)));
        assert!(past <= tokio::time::Instant::now());
    }

    #[test]
    fn scaled_clock_runs_from_its_own_start() {
        let start = Timestamp(1_000_000);
        let clock = Clock::scaled(start, 10.0);
        assert!(clock.now() >= start && clock.now().0 < start.0 + 10_000);
        let at = clock.instant_of(Timestamp(start.0 + 10_000));
        let wait = at.saturating_duration_since(tokio::time::Instant::now());
        assert!(wait <= std::time::Duration::from_millis(1_000), "{wait:?}");
        assert!(wait >= std::time::Duration::from_millis(500), "{wait:?}");
    }
}
