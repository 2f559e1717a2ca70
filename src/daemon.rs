//! The daemon: one page that wires sources → core stages → sinks with bounded channels and one
//! shutdown signal.
//!
//! ```text
//!  source task ──adverts (bounded)──▶ core task ──records (bounded)──▶ sink task
//!  (sim/replay/bluez)                (decode → identity → presence)    (stdout/terminal/mqtt)
//! ```

use thiserror::Error;
use tokio::sync::mpsc;

use crate::config::{Config, SourceKind};
use crate::pipeline::Core;
use crate::presence::{Engine, EngineParams};
use crate::scan::sim::{Scenario, Simulation};
use crate::scan::{Advert, Clock};
use crate::shutdown::Shutdown;
use crate::sink::{self, Record};

/// Adverts waiting for the core: a few seconds of a busy store.
const ADVERT_QUEUE: usize = 8192;
/// Records waiting for the sink.
const RECORD_QUEUE: usize = 1024;

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// A stage failed in a way the daemon cannot recover from by itself.
    #[error("{stage}: {message}")]
    Stage {
        /// Which stage.
        stage: &'static str,
        /// What happened.
        message: String,
    },
}

/// Where records go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkKind {
    /// JSON lines on stdout.
    Stdout,
    /// The demo's live terminal view.
    Terminal,
}

/// How to run, beyond the config.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunOptions {
    /// Where records go.
    pub sink: SinkKind,
    /// For simulated sources: run this many simulated seconds at once before pacing starts, so the
    /// store is already busy (the feed of that stretch is not shown).
    pub warm_start_s: f64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            sink: SinkKind::Stdout,
            warm_start_s: 0.0,
        }
    }
}

/// Runs the pipeline described by `cfg` until the source ends or `shutdown` fires, with records
/// going to JSON lines on stdout.
pub async fn run(cfg: Config, shutdown: Shutdown) -> Result<(), DaemonError> {
    run_with(cfg, RunOptions::default(), shutdown).await
}

/// Runs the pipeline with the given options.
pub async fn run_with(
    cfg: Config,
    opts: RunOptions,
    shutdown: Shutdown,
) -> Result<(), DaemonError> {
    let (adv_tx, adv_rx) = mpsc::channel::<Advert>(ADVERT_QUEUE);
    let (rec_tx, rec_rx) = mpsc::channel::<Record>(RECORD_QUEUE);

    // Source.
    let (sim, directory, hubs) = match cfg.scan.source {
        SourceKind::Sim => {
            let scenario =
                Scenario::load(&cfg.scan.sim_scenario).map_err(|e| DaemonError::Stage {
                    stage: "scan.sim",
                    message: e.to_string(),
                })?;
            let sim = Simulation::new(scenario);
            let directory = sim.directory().clone();
            let hubs = sim.hub_names().to_vec();
            (sim, directory, hubs)
        }
        other => {
            return Err(DaemonError::Stage {
                stage: "scan",
                message: format!(
                    "source {other:?} is not available in this build yet; use source = \"sim\""
                ),
            })
        }
    };

    // Core.
    let engine = Engine::new(
        &cfg.zones,
        EngineParams::from_config(&cfg.presence),
        &cfg.hub.hub_id,
    );
    let zones: Vec<String> = engine.zones().iter().map(|z| z.id.clone()).collect();
    let mut core = Core::new(engine, directory, &hubs, rand::random());

    // Sink.
    let warm_end = sim.start().plus_secs(opts.warm_start_s);
    let sink_task = tokio::spawn(async move {
        match opts.sink {
            SinkKind::Stdout => sink::stdout::run(rec_rx).await,
            SinkKind::Terminal => sink::terminal::run(rec_rx, zones, warm_end).await,
        }
    });

    // A warm start runs the first stretch of the scenario straight through the core, so the engine's
    // clock never runs ahead of adverts the source has not produced yet.
    let mut sim = sim;
    let mut events = Vec::new();
    let mut first_live = None;
    while let Some(a) = sim.next_advert() {
        if a.at >= warm_end {
            first_live = Some(a);
            break;
        }
        core.handle_advert(&a, &mut events);
        for e in events.drain(..) {
            if rec_tx.send(sink::render(&core, &e)).await.is_err() {
                break;
            }
        }
    }
    let clock = Clock::scaled(warm_end, cfg.scan.speed);
    let source = tokio::spawn(crate::scan::run_sim(
        sim,
        first_live,
        clock,
        adv_tx,
        shutdown.clone(),
    ));
    let core_task = tokio::spawn(run_core(core, clock, adv_rx, rec_tx, shutdown.clone()));

    tracing::info!(
        store = %cfg.hub.store_id,
        hub = %cfg.hub.hub_id,
        source = %cfg.scan.source,
        zones = cfg.zones.len(),
        "beacond started"
    );
    let _ = source.await;
    let _ = core_task.await;
    let sunk = sink_task.await;
    tracing::info!("beacond stopped");
    match sunk {
        Ok(Ok(())) => Ok(()),
        // A closed stdout (`beacond demo | head`) is a normal way for a reader to stop.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Ok(Err(e)) => Err(DaemonError::Stage {
            stage: "sink",
            message: e.to_string(),
        }),
        Err(e) => Err(DaemonError::Stage {
            stage: "sink",
            message: e.to_string(),
        }),
    }
}

/// The core task: adverts in, records out, woken for the engine's deadlines. When the source ends it
/// runs the clock to the last advert and stops.
async fn run_core(
    mut core: Core,
    clock: Clock,
    mut rx: mpsc::Receiver<Advert>,
    tx: mpsc::Sender<Record>,
    mut shutdown: Shutdown,
) {
    let mut events = Vec::new();
    loop {
        let deadline = core.poll_timeout();
        tokio::select! {
            // Queued adverts first: a deadline must not overtake adverts heard before it.
            biased;
            _ = shutdown.recv() => break,
            adv = rx.recv() => match adv {
                Some(a) => core.handle_advert(&a, &mut events),
                None => break,
            },
            // Handle exactly the deadline that came due, not "now": when adverts are backlogged
            // (a warm start, a busy moment) the engine must not jump ahead of them.
            _ = sleep_until_some(deadline.map(|t| clock.instant_of(t))) => {
                if let Some(t) = deadline {
                    core.handle_timeout(t, &mut events);
                }
            }
        }
        for e in events.drain(..) {
            if tx.send(sink::render(&core, &e)).await.is_err() {
                return;
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
