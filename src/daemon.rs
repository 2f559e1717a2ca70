//! The daemon: one page that wires sources → core stages → sinks with bounded channels and one
//! shutdown signal.
//!
//! ```text
//!  source task ──adverts (bounded)──▶ core task ──records (bounded)──▶ sink task
//!  (sim/replay/bluez)                (decode → identity → presence)    (stdout/terminal/mqtt)
//!                                        ▲ directory changes                 │ sync batches
//!                                        └────────── sync stage ◀────────────┘ (customer cache)
//! ```

use thiserror::Error;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::identity::cache::Cache;
use crate::identity::sync::{parse_public_key, SyncState};
use crate::learned::LearnedFile;
use crate::offers::stage::OfferStage;
use crate::pipeline::{Core, CoreCommand};
use crate::scan::{Advert, Clock, Opened, SourceIo};
use crate::shutdown::Shutdown;
use crate::sink::mqtt::{Health as MqttHealth, Settings as MqttSettings};
use crate::sink::spool::Spool;
use crate::sink::{self, Record};
use std::sync::{Arc, Mutex};

/// Adverts waiting for the core: a few seconds of a busy store.
const ADVERT_QUEUE: usize = 8192;
/// Records waiting for the sink.
const RECORD_QUEUE: usize = 1024;
/// Commands for the core (directory changes, token tables, counters).
const COMMAND_QUEUE: usize = 64;
/// Sync batches waiting for the sync stage.
const SYNC_QUEUE: usize = 256;

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
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// The config file, re-read on SIGHUP (`systemctl reload`); `None`: no reload.
    pub config_path: Option<std::path::PathBuf>,
    /// Where records go locally (besides MQTT when `[mqtt] enabled`).
    pub sink: SinkKind,
    /// For simulated sources: run this many simulated seconds at once before pacing starts, so the
    /// store is already busy (the feed of that stretch is not shown).
    pub warm_start_s: f64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            config_path: None,
            sink: SinkKind::Stdout,
            warm_start_s: 0.0,
        }
    }
}

impl SinkKind {
    /// Whether this sink still runs when MQTT is on: the demo's view does, stdout does not (the
    /// daemon's records go to the broker then, its stdout stays quiet for the journal).
    fn alongside_mqtt(self) -> bool {
        self == SinkKind::Terminal
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
    let opened = crate::scan::open(&cfg).map_err(|e| DaemonError::Stage {
        stage: "scan",
        message: e.to_string(),
    })?;
    let heard = crate::scan::Heard::of(&opened, &cfg);
    let hubs = opened.hubs(&cfg.hub.hub_id);

    // Core.
    let mut core = Core::for_config(&cfg, opened.directory(), &hubs);
    let (peer_io, mut peer_link) = share_with_peers(&cfg, &mut core).unzip();
    let learned = restore_learned(&cfg, &mut core);
    let zones: Vec<String> = core.engine().zones().iter().map(|z| z.id.clone()).collect();
    let (cmd_tx, cmd_rx) = mpsc::channel::<CoreCommand>(COMMAND_QUEUE);
    // Queued before anything else: the retained status says so from the first connect.
    let _ = cmd_tx.try_send(unheard_zones_notice(&heard, &cfg));
    let mut offers = open_offers(&cfg, opened.start())?;

    // Sinks: MQTT when enabled, the local sink unless MQTT replaces it, fed by one tee.
    let warm_end = opened.start().plus_secs(opts.warm_start_s);
    let mqtt_health = cfg
        .mqtt
        .enabled
        .then(|| Arc::new(Mutex::new(MqttHealth::default())));
    // The systemd watchdog stops being fed after as much silence as the scan watchdog needs to give
    // up by itself: a quiet night is not a wedged daemon.
    let progress = crate::health::Progress::new(3 * cfg.scan.watchdog_s);
    progress
        .mqtt_enabled
        .store(cfg.mqtt.enabled, std::sync::atomic::Ordering::Relaxed);
    let health = crate::health::Health {
        progress: progress.clone(),
        snapshot: Default::default(),
        mqtt: mqtt_health.clone(),
    };
    health.snapshot.lock().expect("snapshot lock").source = opened.kind().to_owned();
    if let Some(addr) = &cfg.health.listen {
        let bound = crate::health::serve(addr, health.clone()).map_err(|e| DaemonError::Stage {
            stage: "health.listen",
            message: format!("{addr}: {e}"),
        })?;
        tracing::info!(%bound, "health endpoint: /metrics, /healthz, /status");
    }
    tokio::spawn(crate::health::notify_systemd(
        health.clone(),
        shutdown.clone(),
    ));
    let mut sink_tasks = Vec::new();
    let mut outs: Vec<mpsc::Sender<Record>> = Vec::new();
    if cfg.mqtt.enabled {
        let (tx, rx) = mpsc::channel::<Record>(RECORD_QUEUE);
        outs.push(tx);
        let mut settings =
            MqttSettings::from_config(&cfg, config_hash(&cfg)).map_err(|e| DaemonError::Stage {
                stage: "mqtt",
                message: e.to_string(),
            })?;
        let dir = cfg.hub.data_dir.join("spool");
        std::fs::create_dir_all(&cfg.hub.data_dir).map_err(|e| DaemonError::Stage {
            stage: "hub.data_dir",
            message: format!("{}: {e}", cfg.hub.data_dir.display()),
        })?;
        let (spool, report) =
            Spool::open(&dir, cfg.mqtt.spool_max_bytes).map_err(|e| DaemonError::Stage {
                stage: "spool",
                message: if e.is_disk_condition() {
                    format!("{e}; {}", crate::storage::DISK_ADVICE)
                } else {
                    e.to_string()
                },
            })?;
        if let Some((aside, why)) = &report.moved_aside {
            settings.warn(format!(
                "spool would not open ({why}); moved to {} and started empty",
                aside.display()
            ));
        }
        if report.recovered > 0 {
            tracing::info!(
                messages = report.recovered,
                "spool has messages from before; sending them"
            );
        }
        let links = crate::sink::mqtt::Links {
            sync: Some(start_sync(
                &cfg,
                &mut settings,
                cmd_tx.clone(),
                shutdown.clone(),
            )?),
            peers: peer_link.take(),
        };
        let health = mqtt_health.clone().expect("MQTT is on");
        let shutdown_for_mqtt = shutdown.clone();
        sink_tasks.push(tokio::spawn(async move {
            crate::sink::mqtt::run(settings, spool, rx, health, links, shutdown_for_mqtt).await;
            Ok(())
        }));
    }
    if !cfg.mqtt.enabled || opts.sink.alongside_mqtt() {
        let (tx, rx) = mpsc::channel::<Record>(RECORD_QUEUE);
        outs.push(tx);
        sink_tasks.push(tokio::spawn(async move {
            match opts.sink {
                SinkKind::Stdout => sink::stdout::run(rx).await,
                SinkKind::Terminal => sink::terminal::run(rx, zones, warm_end).await,
            }
        }));
    }
    let tee_health = health.clone();
    let tee = tokio::spawn(async move {
        let mut rec_rx = rec_rx;
        while let Some(r) = rec_rx.recv().await {
            tee_health.observe(&r);
            for o in &outs {
                // A sink that went away (a closed terminal) must not stop the others.
                let _ = o.send(r.clone()).await;
            }
        }
    });

    // A warm start runs the first stretch of the scenario straight through the core, so the engine's
    // clock never runs ahead of adverts the source has not produced yet.
    let opened = match opened {
        Opened::Sim(mut sim) if opts.warm_start_s > 0.0 => {
            let mut events = Vec::new();
            let mut first_live = None;
            while let Some(a) = sim.next_advert() {
                if a.at >= warm_end {
                    first_live = Some(a);
                    break;
                }
                core.handle_advert(&a, &mut events);
                for e in events.drain(..) {
                    for r in records_of(&core, &mut offers, &e) {
                        let _ = rec_tx.send(r).await;
                    }
                }
            }
            sim.push_back(first_live);
            // What the warm stretch heard is history to a peer: only live observations are sent.
            let _ = core.take_shared();
            Opened::Sim(sim)
        }
        other => other,
    };
    let (mark_tx, mark_rx) = tokio::sync::watch::channel(warm_end);
    let (filters_tx, filters_rx) = tokio::sync::watch::channel(crate::scan::filter_of(&cfg));
    let (counters_tx, counters_rx) = tokio::sync::watch::channel(Default::default());
    let (clock, source) = opened.spawn(
        warm_end,
        cfg.scan.speed,
        crate::scan::filter_of(&cfg),
        SourceIo {
            adverts: adv_tx,
            watermark: mark_tx,
            counters: counters_tx,
            filters: Some(filters_rx),
        },
        shutdown.clone(),
    );
    if let Some(path) = opts.config_path.clone() {
        tokio::spawn(reload_on_hangup(
            path,
            cfg.clone(),
            Reloadable {
                commands: cmd_tx.clone(),
                filters: filters_tx,
                heard,
            },
            shutdown.clone(),
        ));
    }
    let periodic = Periodic::new(
        clock.now(),
        cfg.mqtt.stats_interval_s * 1000,
        cfg.mqtt.beacons_interval_s * 1000,
        counters_rx,
        learned,
    );
    let core_task = tokio::spawn(run_core(
        core,
        offers,
        clock,
        Inputs {
            adverts: adv_rx,
            watermark: mark_rx,
            commands: cmd_rx,
            command_tx: cmd_tx,
            progress,
            peers: peer_io,
        },
        rec_tx,
        periodic,
        shutdown.clone(),
    ));

    tracing::info!(
        store = %cfg.hub.store_id,
        hub = %cfg.hub.hub_id,
        source = %cfg.scan.source,
        zones = cfg.zones.len(),
        "beacond started"
    );
    let source_result = source.await;
    let _ = core_task.await;
    let _ = tee.await;
    let mut result = match source_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(DaemonError::Stage {
            stage: "scan",
            message: e.to_string(),
        }),
        Err(e) => Err(DaemonError::Stage {
            stage: "scan",
            message: e.to_string(),
        }),
    };
    for t in sink_tasks {
        match t.await {
            Ok(Ok(())) => {}
            // A closed stdout (`beacond demo | head`) is a normal way for a reader to stop.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Ok(Err(e)) => {
                result = Err(DaemonError::Stage {
                    stage: "sink",
                    message: e.to_string(),
                })
            }
            Err(e) => {
                result = Err(DaemonError::Stage {
                    stage: "sink",
                    message: e.to_string(),
                })
            }
        }
    }
    tracing::info!("beacond stopped");
    result
}

/// Opens the customer cache and starts the sync stage, which loads the cache into the core's
/// directory first; returns the MQTT connection's side of it.
fn start_sync(
    cfg: &Config,
    settings: &mut MqttSettings,
    commands: mpsc::Sender<CoreCommand>,
    shutdown: Shutdown,
) -> Result<crate::sink::mqtt::SyncLink, DaemonError> {
    let stage = |message: String| DaemonError::Stage {
        stage: "identity.cache",
        message,
    };
    let (cache, aside) = Cache::open(
        &cfg.hub.data_dir.join("customers"),
        cfg.identity.cache_size_mb * 1024 * 1024,
    )
    .map_err(|e| stage(e.to_string()))?;
    if let Some((path, why)) = aside {
        tracing::error!(moved_to = %path.display(), error = %why,
            "customer cache would not open; moved aside, asking the platform for a new snapshot");
        settings.warn(format!(
            "customer cache would not open ({why}); moved to {} and rebuilt from a new snapshot",
            path.display()
        ));
    }
    let applied = cache.seq().map_err(|e| stage(e.to_string()))?;
    let key = match &cfg.identity.platform_public_key {
        Some(k) => Some(parse_public_key(k).map_err(|e| DaemonError::Stage {
            stage: "identity.platform_public_key",
            message: e,
        })?),
        None => {
            tracing::warn!(
                "identity.platform_public_key is not set: customer sync batches will be rejected"
            );
            None
        }
    };
    let state = SyncState::new(key, &cfg.hub.store_id, applied);
    let (in_tx, in_rx) = mpsc::channel(SYNC_QUEUE);
    let (req_tx, req_rx) = mpsc::channel(4);
    tokio::spawn(crate::identity::stage::run(
        cache, state, in_rx, req_tx, commands, shutdown,
    ));
    Ok(crate::sink::mqtt::SyncLink {
        inbound: in_tx,
        requests: req_rx,
    })
}

/// A short stable fingerprint of the effective config, published in the hub's status so the platform
/// can tell which hubs run which settings.
pub fn config_hash(cfg: &Config) -> String {
    use sha2::Digest;
    let text = toml::to_string(cfg).unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
}

/// The core task: adverts in, records out, woken for the engine's deadlines. A deadline is handled
/// only once the source's watermark has passed it, so it never overtakes an advert heard before it
/// that is still on its way; and exactly at its time, not at "now", so a backlog cannot make the
/// engine jump ahead.
async fn run_core(
    mut core: Core,
    mut offers: OfferStage,
    clock: Clock,
    inputs: Inputs,
    tx: mpsc::Sender<Record>,
    mut periodic: Periodic,
    mut shutdown: Shutdown,
) {
    let Inputs {
        adverts: mut rx,
        mut watermark,
        mut commands,
        command_tx: cmd_tx,
        progress,
        mut peers,
    } = inputs;
    let mut share_tick = peers.as_ref().map(|p| {
        let mut t = tokio::time::interval(p.every);
        // A core that was busy sends one batch with everything, not a burst of small ones.
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut peer_in = peers.as_mut().and_then(|p| p.inbound.take());
    let mut lateness: Option<String> = None;
    let mut events = Vec::new();
    let mut source_gone = false;
    'run: loop {
        let mark = if source_gone {
            crate::time::Timestamp(u64::MAX)
        } else {
            *watermark.borrow_and_update()
        };
        let deadline = [core.poll_timeout(), Some(periodic.next())]
            .into_iter()
            .flatten()
            .min();
        let due = deadline.filter(|d| *d <= mark);
        tokio::select! {
            biased;
            _ = shutdown.recv() => break,
            adv = rx.recv() => match adv {
                Some(a) => {
                    progress.advert();
                    core.handle_advert(&a, &mut events);
                    // Token tables for a new epoch are built off this task and sent back.
                    for job in core.poll_token_jobs(a.at) {
                        let back = cmd_tx.clone();
                        tokio::task::spawn_blocking(move || {
                            let _ = back.blocking_send(CoreCommand::Tokens(job.run()));
                        });
                    }
                }
                None => break,
            },
            Some(cmd) = commands.recv() => match cmd {
                CoreCommand::Change(c) => {
                    let purged = core.apply_change(c);
                    for id in &purged {
                        offers.forget(id);
                    }
                    if !purged.is_empty() {
                        // In order after every record already rendered about them.
                        if tx.send(Record::Purge(purged)).await.is_err() {
                            break 'run;
                        }
                    }
                }
                CoreCommand::SyncReport(r) => core.set_sync_report(r),
                CoreCommand::MqttTarget(s) => {
                    if tx.send(Record::MqttTarget(sink::NewTarget(s))).await.is_err() {
                        break 'run;
                    }
                }
                CoreCommand::Notice { key, message } => {
                    if tx.send(Record::Notice { key, message }).await.is_err() {
                        break 'run;
                    }
                }
                CoreCommand::Tokens(t) => core.install_tokens(t),
                CoreCommand::Reload(cfg) => {
                    // Visits in zones the new config drops end first and are sent while their zone
                    // still has its name: after the swap their zone index points past the new list.
                    let now = clock.now().min(mark);
                    let mut ended = Vec::new();
                    core.end_visits_in_dropped_zones(&cfg, now, &mut ended);
                    for e in &ended {
                        for r in records_of(&core, &mut offers, e) {
                            if tx.send(r).await.is_err() {
                                break 'run;
                            }
                        }
                    }
                    core.reconfigure(&cfg, now, &mut events);
                    offers.reload(&cfg);
                    tracing::info!(zones = cfg.zones.len(), "config reloaded: zones and presence settings applied");
                }
            },
            _ = sleep_until_some(due.map(|t| clock.instant_of(t))) => {
                if let Some(t) = due {
                    core.handle_timeout(t, &mut events);
                    let records = periodic.due(&core, t);
                    if !records.is_empty() {
                        // A periodic tick (stats, a minute by default) bounds how much entry
                        // history a crash or a power cut can take.
                        offers.flush();
                        // And says when a peer's observations keep coming too late to use.
                        let now = core.peer_lateness();
                        if now != lateness {
                            match &now {
                                Some(text) => tracing::warn!("{text}"),
                                None => tracing::info!("peers' observations arrive in time again"),
                            }
                            lateness = now.clone();
                            let notice = Record::Notice { key: PEER_LATENESS_NOTICE.into(), message: now };
                            if tx.send(notice).await.is_err() {
                                break 'run;
                            }
                        }
                    }
                    for r in records {
                        if tx.send(r).await.is_err() {
                            break 'run;
                        }
                    }
                    if periodic.save_due(t) {
                        save_learned(&mut periodic.learned, &core).await;
                    }
                }
            }
            _ = tick_some(&mut share_tick) => {
                if let (Some(p), Some(batch)) = (&peers, core.take_shared()) {
                    // Full: the connection is away, and this batch would be stale by its return.
                    let _ = p.outbound.try_send(batch);
                }
            }
            batch = crate::sink::mqtt::recv_some(&mut peer_in) => {
                if let Some(b) = batch {
                    let mark = if source_gone {
                        crate::time::Timestamp(u64::MAX)
                    } else {
                        *watermark.borrow()
                    };
                    for o in &b.obs {
                        core.handle_peer(&b.hub, o, mark, &mut events);
                    }
                }
            }
            changed = watermark.changed(), if deadline.is_some() && due.is_none() && !source_gone => {
                // A source that is gone sends nothing more: every deadline may run.
                source_gone = changed.is_err();
            }
        }
        for e in events.drain(..) {
            for r in records_of(&core, &mut offers, &e) {
                if tx.send(r).await.is_err() {
                    break 'run;
                }
            }
        }
    }
    // However the pipeline stopped, what the hubs learned and the offers' entry history are kept
    // for the next start.
    offers.flush();
    save_learned(&mut periodic.learned, &core).await;
}

/// The next tick of an optional interval; never without one.
async fn tick_some(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What the hubs learned before the last stop, given back to `core`; the file to keep it in from
/// now on.
fn restore_learned(cfg: &Config, core: &mut Core) -> LearnedFile {
    let mut file = LearnedFile::in_dir(&cfg.hub.data_dir);
    match file.load() {
        Ok(saved) if !saved.is_empty() => {
            let hubs = core.restore_margins(&saved);
            tracing::info!(hubs, file = %file.path().display(),
                "exit margins learned before the last stop restored");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "learned state not restored"),
    }
    file
}

/// Writes what the hubs have learned, off the core task: a write and two fsyncs on an SD card may
/// take a while. A failed write is logged and tried again at the next save.
async fn save_learned(learned: &mut Option<LearnedFile>, core: &Core) {
    let Some(mut file) = learned.take() else {
        return;
    };
    let memory = core.engine().margin_memory();
    let done = tokio::task::spawn_blocking(move || {
        let result = file.save(memory);
        (file, result)
    })
    .await;
    match done {
        Ok((file, result)) => {
            if let Err(e) = result {
                tracing::warn!(error = %e, "learned state not saved");
            }
            *learned = Some(file);
        }
        Err(e) => tracing::error!(error = %e, "saving learned state failed; not tried again"),
    }
}

/// The records for one pipeline event: the event itself, then the offer it triggers, if any.
fn records_of(core: &Core, offers: &mut OfferStage, e: &crate::presence::Event) -> Vec<Record> {
    let mut out = vec![sink::render(core, e)];
    if let Some(t) = offers.on_event(core, e) {
        tracing::info!(offer = %t.offer_id, zone = %t.zone, "offer fired");
        out.push(Record::Offer(t));
    }
    out
}

/// The offers stage, with its caps on disk when there are rules.
/// `now` is the source's time (simulated and recorded time are not the wall clock), for pruning.
fn open_offers(cfg: &Config, now: crate::time::Timestamp) -> Result<OfferStage, DaemonError> {
    let stage = OfferStage::new(cfg);
    if cfg.offers.is_empty() {
        return Ok(stage);
    }
    let err = |message: String| DaemonError::Stage {
        stage: "offers",
        message,
    };
    std::fs::create_dir_all(&cfg.hub.data_dir)
        .map_err(|e| err(format!("{}: {e}", cfg.hub.data_dir.display())))?;
    let (store, aside) = crate::offers::store::Store::open(&cfg.hub.data_dir.join("offers"))
        .map_err(|e| err(e.to_string()))?;
    if let Some((path, why)) = aside {
        tracing::error!(moved_to = %path.display(), error = %why,
            "offer caps would not open; moved aside, starting with no caps");
    }
    stage.with_store(store, now).map_err(|e| err(e.to_string()))
}

/// Re-reads the config on SIGHUP. A config with problems is rejected with every problem named by
/// file:line:col and the running one stays; a valid one goes to the core. Sections the running
/// pipeline cannot change in place are named, so nobody waits for a change that needs a restart.
async fn reload_on_hangup(
    path: std::path::PathBuf,
    mut current: Config,
    to: Reloadable,
    mut shutdown: Shutdown,
) {
    let Reloadable {
        commands,
        filters,
        heard,
    } = to;
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload will not work");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        tracing::info!(file = %path.display(), "SIGHUP: reloading the config");
        let new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("config reload rejected, the running config stays:\n{e}");
                let first = e.to_string().lines().next().unwrap_or_default().to_owned();
                if commands.send(reload_rejected(&first)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        // A new broker, credentials or topics: resolved (files read) before anything is applied, so
        // a bad password file rejects the whole reload.
        let mqtt_in_place = new.mqtt.enabled
            && current.mqtt.enabled
            && new.mqtt.spool_max_bytes == current.mqtt.spool_max_bytes;
        let mut target = None;
        if mqtt_in_place && new.mqtt != current.mqtt {
            match MqttSettings::from_config(&new, config_hash(&new)) {
                Ok(s) => target = Some(s),
                Err(e) => {
                    tracing::error!("config reload rejected, the running config stays: {e}");
                    if commands
                        .send(reload_rejected(&e.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
            }
        }
        if let Some(s) = target {
            if commands
                .send(CoreCommand::MqttTarget(Box::new(s)))
                .await
                .is_err()
            {
                return;
            }
        }
        let clear = CoreCommand::Notice {
            key: RELOAD_NOTICE.into(),
            message: None,
        };
        if commands.send(clear).await.is_err() {
            return;
        }
        // Applied in place: zones, presence and offers (the core), [scan.filters] (the source) and
        // [log] level. The rest of these sections is named for a restart.
        // The level first, so the lines about this very reload already follow it.
        if new.log.level != current.log.level {
            match crate::logging::set_level(&new.log.level) {
                Ok(true) => tracing::info!(level = %new.log.level, "log level reloaded"),
                Ok(false) => tracing::info!("RUST_LOG is set and wins over [log] level"),
                Err(e) => tracing::error!(error = %e, "cannot apply the new log level"),
            }
        }
        if new.scan.filters != current.scan.filters
            || new.identity.app_service_uuid != current.identity.app_service_uuid
        {
            filters.send_replace(crate::scan::filter_of(&new));
            tracing::info!("scan filters reloaded");
        }
        let scan_rest = |c: &Config| {
            let mut s = c.scan.clone();
            s.filters = Default::default();
            s
        };
        let identity_rest = |c: &Config| {
            let mut i = c.identity.clone();
            i.app_service_uuid = String::new();
            i
        };
        let restart_needed: Vec<&str> = [
            ("hub", new.hub != current.hub),
            ("scan", scan_rest(&new) != scan_rest(&current)),
            (
                "mqtt (enabled, spool_max_bytes)",
                !mqtt_in_place && new.mqtt != current.mqtt,
            ),
            ("identity", identity_rest(&new) != identity_rest(&current)),
            ("peers", new.peers != current.peers),
            ("health", new.health != current.health),
            ("log.format", new.log.format != current.log.format),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect();
        if !restart_needed.is_empty() {
            tracing::warn!(
                sections = ?restart_needed,
                "these sections changed and take effect at the next restart (systemctl restart beacond)"
            );
        }
        if commands
            .send(CoreCommand::Reload(Box::new(new.clone())))
            .await
            .is_err()
        {
            return;
        }
        if commands
            .send(unheard_zones_notice(&heard, &new))
            .await
            .is_err()
        {
            return;
        }
        current = new;
    }
}

/// The key of the retained status warning about zones the source does not hear.
const ZONES_NOTICE: &str = "zones";

/// Logs each zone of `cfg` that no hub of the source measures (a zone copied from another hub's
/// config is the usual one) and returns the retained status warning that lists them, or clears it.
fn unheard_zones_notice(heard: &crate::scan::Heard, cfg: &Config) -> CoreCommand {
    let unheard = heard.unheard_zones(cfg);
    for u in &unheard {
        tracing::warn!("{u}");
    }
    let message = (!unheard.is_empty()).then(|| {
        let ids: Vec<&str> = unheard
            .iter()
            .map(|u| cfg.zones[u.index].id.as_str())
            .collect();
        format!(
            "zone(s) {} are measured by a hub this hub does not hear: nobody is ever seen in them \
             (beacond check-config names what to change)",
            ids.join(", ")
        )
    });
    CoreCommand::Notice {
        key: ZONES_NOTICE.into(),
        message,
    }
}

/// The key of the retained status warning a rejected reload leaves until a good one.
const RELOAD_NOTICE: &str = "reload";

/// The warning for a reload rejected because of `why`, shown in the retained status.
fn reload_rejected(why: &str) -> CoreCommand {
    CoreCommand::Notice {
        key: RELOAD_NOTICE.into(),
        message: Some(format!(
            "config reload rejected, running the previous config: {why}"
        )),
    }
}

/// Where a reload's changes go.
struct Reloadable {
    /// Zones, presence, offers and notices, to the core.
    commands: mpsc::Sender<CoreCommand>,
    /// `[scan.filters]`, to the source.
    filters: tokio::sync::watch::Sender<crate::scan::filter::Filter>,
    /// The hubs the running source hears, to judge the new zones by.
    heard: crate::scan::Heard,
}

/// What the core task listens to.
struct Inputs {
    adverts: mpsc::Receiver<Advert>,
    /// How far the source has got: deadlines before it may run.
    watermark: tokio::sync::watch::Receiver<crate::time::Timestamp>,
    commands: mpsc::Receiver<CoreCommand>,
    /// For token tables built in the background to come back.
    command_tx: mpsc::Sender<CoreCommand>,
    /// Heartbeats for the systemd watchdog and /healthz.
    progress: Arc<crate::health::Progress>,
    /// Observations shared with peer hubs, when `[peers]` lists any.
    peers: Option<PeerIo>,
}

/// The core's side of sharing observations with peer hubs.
struct PeerIo {
    /// This hub's batches, to the MQTT connection.
    outbound: mpsc::Sender<crate::peers::Batch>,
    /// Peers' batches, from it.
    inbound: Option<mpsc::Receiver<crate::peers::Batch>>,
    /// How often a batch goes out, on the wall clock.
    every: std::time::Duration,
}

/// The status notice about peers whose observations come too late to use.
const PEER_LATENESS_NOTICE: &str = "peer_lateness";

/// Batches for peers waiting for the connection: a second of them; older ones are no use to a peer.
const PEER_OUT_QUEUE: usize = 4;
/// Peers' batches waiting for the core.
const PEER_IN_QUEUE: usize = 64;

/// Sets `core` to share observations with the peers `cfg` lists; the core's and the connection's
/// ends of the channels between them.
fn share_with_peers(
    cfg: &Config,
    core: &mut Core,
) -> Option<(PeerIo, crate::sink::mqtt::PeerLink)> {
    if cfg.peers.hubs.is_empty() || !cfg.mqtt.enabled {
        return None;
    }
    core.share_with(&cfg.hub.hub_id, &cfg.peers.hubs, cfg.peers.max_lag_ms);
    let (out_tx, out_rx) = mpsc::channel(PEER_OUT_QUEUE);
    let (in_tx, in_rx) = mpsc::channel(PEER_IN_QUEUE);
    // The batch interval is pipeline time: a simulated store at --speed N sends N times as often.
    let speed = match cfg.scan.source {
        crate::config::SourceKind::Bluez => 1.0,
        _ if cfg.scan.speed.is_finite() && cfg.scan.speed > 0.0 => cfg.scan.speed,
        _ => 1.0,
    };
    let every = std::time::Duration::from_secs_f64(
        (cfg.peers.batch_interval_ms as f64 / 1000.0 / speed).max(0.005),
    );
    tracing::info!(peers = %cfg.peers.hubs.join(", "), "sharing observations of known devices with peer hubs");
    Some((
        PeerIo {
            outbound: out_tx,
            inbound: Some(in_rx),
            every,
        },
        crate::sink::mqtt::PeerLink {
            peers: cfg.peers.hubs.clone(),
            outbound: out_rx,
            inbound: in_tx,
        },
    ))
}

/// The periodic `stats` and `beacons` records, and saving what the hubs learned, on pipeline time.
struct Periodic {
    stats_every: u64,
    beacons_every: u64,
    stats_start: crate::time::Timestamp,
    next_stats: crate::time::Timestamp,
    next_beacons: crate::time::Timestamp,
    prev: crate::pipeline::CoreStats,
    scan: tokio::sync::watch::Receiver<crate::scan::bluez::tracker::ScanCounters>,
    /// Where what the hubs learned is kept; none after saving it failed beyond repair.
    learned: Option<LearnedFile>,
    next_save: crate::time::Timestamp,
}

impl Periodic {
    fn new(
        start: crate::time::Timestamp,
        stats_every: u64,
        beacons_every: u64,
        scan: tokio::sync::watch::Receiver<crate::scan::bluez::tracker::ScanCounters>,
        learned: LearnedFile,
    ) -> Periodic {
        let (stats_every, beacons_every) = (stats_every.max(1000), beacons_every.max(1000));
        Periodic {
            stats_every,
            beacons_every,
            stats_start: start,
            next_stats: crate::time::Timestamp(start.0 + stats_every),
            next_beacons: crate::time::Timestamp(start.0 + beacons_every),
            prev: Default::default(),
            scan,
            learned: Some(learned),
            next_save: crate::time::Timestamp(start.0 + crate::learned::SAVE_EVERY_MS),
        }
    }

    /// Whether what the hubs learned is due to be saved at `now` (checked at each stats or beacons
    /// deadline, so within one of those of [`crate::learned::SAVE_EVERY_MS`]).
    fn save_due(&mut self, now: crate::time::Timestamp) -> bool {
        let due = now >= self.next_save;
        if due {
            self.next_save = crate::time::Timestamp(now.0 + crate::learned::SAVE_EVERY_MS);
        }
        due
    }

    fn next(&self) -> crate::time::Timestamp {
        self.next_stats.min(self.next_beacons)
    }

    /// The records due at `now`.
    fn due(&mut self, core: &Core, now: crate::time::Timestamp) -> Vec<Record> {
        let mut out = Vec::new();
        if now >= self.next_stats {
            let mut r = sink::stats_record(core, &self.prev, self.stats_start, now);
            if let Record::Stats(s) = &mut r {
                s.scan = Some(*self.scan.borrow());
            }
            out.push(r);
            self.prev = core.stats();
            self.stats_start = now;
            self.next_stats = crate::time::Timestamp(now.0 + self.stats_every);
        }
        if now >= self.next_beacons {
            out.push(sink::beacons_record(core, now));
            self.next_beacons = crate::time::Timestamp(now.0 + self.beacons_every);
        }
        out
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
