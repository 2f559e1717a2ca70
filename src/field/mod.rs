//! The field engineer's tools: `beacond scan` (what the hub hears, live), `beacond record` (keep it
//! for later) and `beacond calibrate` (measure a zone). They run the daemon's own sources and core,
//! so what they show is what the daemon decides; they never publish anything.

pub mod calibrate;
pub mod view;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::identity::cache::Cache;
use crate::pipeline::{Core, DirectoryChange};
use crate::scan::{Advert, Clock, Opened, SourceError, SourceIo};
use crate::shutdown::Shutdown;
use crate::time::Timestamp;
use calibrate::{CalibrateError, PhaseStats};
use view::{SortKey, View};

/// How often tools refresh (wall clock).
const REFRESH: Duration = Duration::from_millis(500);

/// A field tool that cannot go on.
#[derive(Debug, Error)]
pub enum FieldError {
    /// The source.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Calibration.
    #[error(transparent)]
    Calibrate(#[from] CalibrateError),
    /// Writing output or a file.
    #[error("{0}")]
    Io(String),
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> FieldError {
    move |e| FieldError::Io(format!("{what}: {e}"))
}

/// A source and the core it feeds, for a tool.
pub struct ToolSource {
    /// The core (decode → identity → presence), as the daemon runs it.
    pub core: Core,
    /// The source's clock.
    pub clock: Clock,
    /// The hubs the adverts name.
    pub hubs: Vec<String>,
    /// The source's kind.
    pub kind: &'static str,
    /// Said once at start (e.g. why customers are not named).
    pub note: Option<String>,
    adverts: mpsc::Receiver<Advert>,
    watermark: watch::Receiver<Timestamp>,
    task: Option<tokio::task::JoinHandle<Result<(), SourceError>>>,
    tick: tokio::time::Interval,
    events: Vec<crate::presence::Event>,
}

/// What a tool gets next.
pub enum Next {
    /// An advert, already handled by the core.
    Advert(Advert),
    /// Time passed (source time).
    Tick(Timestamp),
    /// The source ended.
    End,
}

impl ToolSource {
    /// Opens and starts the source `cfg` names, with the customers of the local cache when it can be
    /// read (not while the daemon holds it).
    pub fn start(cfg: &Config, shutdown: Shutdown) -> Result<ToolSource, FieldError> {
        let opened = crate::scan::open(cfg)?;
        let hubs = opened.hubs(&cfg.hub.hub_id);
        let kind = opened.kind();
        let mut note = None;
        let mut core = Core::for_config(cfg, opened.directory(), &hubs);
        if !matches!(opened, Opened::Sim(_)) {
            match load_customers(&cfg.hub.data_dir) {
                Ok(Some(all)) => {
                    core.apply_change(DirectoryChange::Upsert(all));
                }
                Ok(None) => {}
                Err(why) => note = Some(why),
            }
        }
        let start = opened.start();
        core.build_tokens_now(start);
        let (adv_tx, adverts) = mpsc::channel(4096);
        let (mark_tx, watermark) = watch::channel(start);
        let (counters_tx, _) = watch::channel(Default::default());
        let (clock, task) = opened.spawn(
            start,
            cfg.scan.speed,
            crate::scan::filter_of(cfg),
            SourceIo {
                adverts: adv_tx,
                watermark: mark_tx,
                counters: counters_tx,
                filters: None,
            },
            shutdown,
        );
        Ok(ToolSource {
            core,
            clock,
            hubs,
            kind,
            note,
            adverts,
            watermark,
            task: Some(task),
            tick: tokio::time::interval(REFRESH),
            events: Vec::new(),
        })
    }

    /// Waits for the next advert or refresh.
    pub async fn next(&mut self) -> Result<Next, FieldError> {
        tokio::select! {
            biased;
            adv = self.adverts.recv() => match adv {
                Some(a) => {
                    self.core.handle_advert(&a, &mut self.events);
                    self.events.clear();
                    Ok(Next::Advert(a))
                }
                None => {
                    if let Some(task) = self.task.take() {
                        if let Ok(Err(e)) = task.await {
                            return Err(e.into());
                        }
                    }
                    Ok(Next::End)
                }
            },
            _ = self.tick.tick() => {
                let now = self.clock.now().min(*self.watermark.borrow());
                self.core.handle_timeout(now, &mut self.events);
                self.events.clear();
                Ok(Next::Tick(now))
            }
        }
    }
}

/// The customers in the local cache; `Ok(None)` when there is none, `Err` with a note when it
/// cannot be read now.
fn load_customers(
    data_dir: &Path,
) -> Result<Option<Vec<crate::identity::record::CustomerEntry>>, String> {
    let dir = data_dir.join("customers");
    if !dir.exists() {
        return Ok(None);
    }
    let (cache, _) = Cache::open(&dir, 8 * 1024 * 1024).map_err(|e| {
        format!("customers are not named: {e} (app tokens and fobs show as beacons or anonymous)")
    })?;
    let all = cache
        .iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("customers are not named: {e}"))?;
    Ok(Some(all))
}

/// How `beacond scan` shows what it hears.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// One JSON object per changed row per refresh instead of the table.
    pub json: bool,
    /// Row order.
    pub sort: SortKey,
    /// Keep rows whose id, kind or zone contains this.
    pub filter: Option<String>,
    /// Stop after this many seconds (wall clock).
    pub duration: Option<f64>,
    /// Redraw in place (a terminal) instead of printing each table after the last.
    pub redraw: bool,
    /// Rows shown in the table.
    pub max_rows: usize,
}

/// `beacond scan`: the live view, until the source ends, `duration` passes or shutdown.
pub async fn scan(
    cfg: &Config,
    opts: &ScanOptions,
    out: &mut (dyn Write + Send),
    mut shutdown: Shutdown,
) -> Result<(), FieldError> {
    let mut src = ToolSource::start(cfg, shutdown.clone())?;
    if let Some(n) = &src.note {
        tracing::warn!("{n}");
    }
    let deadline = opts
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let mut view = View::new();
    let filter = opts.filter.as_deref();
    loop {
        let next = tokio::select! {
            n = src.next() => n?,
            _ = shutdown.recv() => Next::End,
            _ = sleep_until_some(deadline) => Next::End,
        };
        let text = match next {
            Next::Advert(a) => {
                view.observe(&src.core, &a);
                continue;
            }
            Next::Tick(now) => {
                view.tick(now);
                if opts.json {
                    json_lines(view.take_changed(opts.sort, filter))
                } else {
                    let table = view.table(opts.sort, filter, now, opts.max_rows);
                    let head = format!(
                        "beacond scan — source {}, {} heard, {}\n",
                        src.kind,
                        view.len(),
                        now.to_rfc3339()
                    );
                    if opts.redraw {
                        // Home and clear: the table is redrawn in place.
                        format!("\x1b[H\x1b[2J{head}{table}")
                    } else {
                        format!("{head}{table}\n")
                    }
                }
            }
            Next::End => {
                if opts.json {
                    view.tick(src.clock.now());
                    let rest = json_lines(view.take_changed(opts.sort, filter));
                    let _ = emit(out, &rest)?;
                }
                return Ok(());
            }
        };
        if !emit(out, &text)? {
            return Ok(());
        }
    }
}

fn json_lines(rows: Vec<serde_json::Value>) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

/// Writes and flushes `text`; false when the reader has gone (`beacond scan --json | head`), which
/// is a normal way to stop.
fn emit(out: &mut (dyn Write + Send), text: &str) -> Result<bool, FieldError> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(FieldError::Io(format!("writing the scan: {e}"))),
    }
}

/// `beacond record FILE`: writes what the source hears until it ends, `duration` passes or shutdown;
/// returns the number of adverts written.
pub async fn record(
    cfg: &Config,
    file: &Path,
    duration: Option<f64>,
    mut shutdown: Shutdown,
) -> Result<u64, FieldError> {
    let mut src = ToolSource::start(cfg, shutdown.clone())?;
    let f = std::fs::File::create(file).map_err(io(file.display()))?;
    let app = uuid::Uuid::parse_str(&cfg.identity.app_service_uuid).ok();
    let mut rec = crate::scan::replay::Recorder::new(
        std::io::BufWriter::new(f),
        &src.hubs,
        src.kind,
        src.clock.now(),
        app,
    )
    .map_err(io(file.display()))?;
    let deadline =
        duration.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    loop {
        let next = tokio::select! {
            n = src.next() => n?,
            _ = shutdown.recv() => Next::End,
            _ = sleep_until_some(deadline) => Next::End,
        };
        match next {
            Next::Advert(a) => rec.write(&a).map_err(io(file.display()))?,
            // Flushed as it goes: a recording stopped by a power cut keeps what came before.
            Next::Tick(_) => rec.flush().map_err(io(file.display()))?,
            Next::End => break,
        }
    }
    rec.flush().map_err(io(file.display()))?;
    Ok(rec.written)
}

/// How `beacond calibrate` runs.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// The zone to calibrate.
    pub zone: String,
    /// The reference device's id as `beacond scan` shows it; the strongest at 1 m when absent.
    pub device: Option<String>,
    /// Seconds per phase (source time).
    pub seconds: f64,
    /// The edge's distance from the hub in metres, for the path-loss exponent.
    pub edge_m: Option<f64>,
    /// Do not wait for Enter between phases (recordings, scripts).
    pub no_prompt: bool,
    /// Edit the zone in this config file.
    pub write: Option<PathBuf>,
}

const PHASES: [(&str, &str); 3] = [
    (
        "at 1 m",
        "Hold the reference device 1 m from the hub, in the open",
    ),
    (
        "edge",
        "Hold it at the zone's edge, where a customer should count as in",
    ),
    (
        "outside",
        "Hold it just outside the zone, where a customer should count as out",
    ),
];

/// `beacond calibrate`: three phases of RSSI from one device, then the suggested zone values.
pub async fn calibrate(
    cfg: &Config,
    opts: &CalibrateOptions,
    input: &mut (dyn BufRead + Send),
    out: &mut (dyn Write + Send),
    mut shutdown: Shutdown,
) -> Result<calibrate::Suggestion, FieldError> {
    let w = |e: std::io::Error| FieldError::Io(format!("writing: {e}"));
    let mut src = ToolSource::start(cfg, shutdown.clone())?;
    let mut target = opts.device.clone();
    let mut stats = Vec::new();
    let mut pending: Option<Advert> = None;
    for (i, (phase, how)) in PHASES.iter().enumerate() {
        writeln!(out, "\nPhase {}/3 ({phase}): {how}.", i + 1).map_err(w)?;
        if !opts.no_prompt {
            write!(out, "Press Enter when it is in place… ").map_err(w)?;
            out.flush().map_err(w)?;
            let mut line = String::new();
            input
                .read_line(&mut line)
                .map_err(|e| FieldError::Io(format!("reading the answer: {e}")))?;
        }
        writeln!(out, "Listening for {} s…", opts.seconds).map_err(w)?;
        out.flush().map_err(w)?;
        let mut samples: std::collections::HashMap<String, Vec<i16>> = Default::default();
        let mut start: Option<Timestamp> = None;
        loop {
            let next = match pending.take() {
                Some(a) => Next::Advert(a),
                None => tokio::select! {
                    n = src.next() => n?,
                    _ = shutdown.recv() => Next::End,
                },
            };
            match next {
                Next::Advert(a) => {
                    // A phase starts with the first advert after the engineer is ready.
                    let t0 = *start.get_or_insert(a.at);
                    if a.at.secs_since(t0) >= opts.seconds {
                        pending = Some(a);
                        break;
                    }
                    if let Some(label) = label_of(&src.core, &a) {
                        samples.entry(label).or_default().push(a.rssi);
                    }
                }
                Next::Tick(now) => {
                    if start.is_some_and(|t0| now.secs_since(t0) >= opts.seconds) {
                        break;
                    }
                }
                Next::End => break,
            }
        }
        if target.is_none() {
            // At 1 m the reference device is the strongest thing the hub hears.
            target = samples
                .iter()
                .filter(|(_, v)| v.len() >= calibrate::MIN_SAMPLES)
                .max_by_key(|(_, v)| {
                    let mut v = (*v).clone();
                    v.sort();
                    v[v.len() / 2]
                })
                .map(|(k, _)| k.clone());
            if let Some(t) = &target {
                writeln!(
                    out,
                    "Reference device: {t} (the strongest at 1 m; name another with --device)"
                )
                .map_err(w)?;
            }
        }
        let got = target
            .as_ref()
            .and_then(|t| samples.remove(t))
            .unwrap_or_default();
        let s = PhaseStats::of(phase, &got)?;
        writeln!(
            out,
            "  {} readings: median {:.0} dBm, 10–90 % {:.0} to {:.0}",
            s.n, s.median, s.p10, s.p90
        )
        .map_err(w)?;
        stats.push(s);
    }
    let s = calibrate::suggest(
        &stats[0],
        &stats[1],
        &stats[2],
        opts.edge_m,
        cfg.presence.exit_margin_db,
    );
    writeln!(out, "\nSuggested for zone {:?}:", opts.zone).map_err(w)?;
    for r in &s.reasoning {
        writeln!(out, "  - {r}").map_err(w)?;
    }
    for warning in &s.warnings {
        writeln!(out, "  ! {warning}").map_err(w)?;
    }
    writeln!(out, "\n{}", calibrate::snippet(&opts.zone, &s)).map_err(w)?;
    if let Some(file) = &opts.write {
        let text = std::fs::read_to_string(file).map_err(io(file.display()))?;
        let name = file.display().to_string();
        let new = calibrate::write_zone(&text, &name, &opts.zone, &s)?;
        // Never leave a config the daemon would refuse: check it as check-config would.
        if let Err(rejected) = Config::parse(&new) {
            let msgs: Vec<String> = rejected
                .problems
                .iter()
                .map(|p| format!("{}:{}: {}: {}", p.at.line, p.at.col, p.key, p.message))
                .collect();
            return Err(FieldError::Io(format!(
                "{name}: not written, the result would not be valid: {}",
                msgs.join("; ")
            )));
        }
        let tmp = file.with_extension("toml.calibrate-tmp");
        std::fs::write(&tmp, &new).map_err(io(tmp.display()))?;
        std::fs::rename(&tmp, file).map_err(io(file.display()))?;
        writeln!(
            out,
            "Wrote zone {:?} in {name}. Apply it with `systemctl reload beacond`.",
            opts.zone
        )
        .map_err(w)?;
    }
    Ok(s)
}

/// The id `beacond scan` shows for an advert.
fn label_of(core: &Core, adv: &Advert) -> Option<String> {
    view::identify(core, adv).map(|(label, ..)| label)
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
