//! The `beacond` command line.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use beacond::config::{Config, ConfigError};

mod manual;

/// beacond: Bluetooth LE presence for in-store hubs.
///
/// Scans beacons and opted-in app advertisements, decides who is in which zone, fires offer
/// triggers and publishes everything over MQTT to the central platform.
#[derive(Parser, Debug)]
#[command(name = "beacond", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon with a config file (what systemd starts).
    Run {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Check a config file: print a summary and exit 0, or every problem with FILE:LINE:COL and exit 2.
    ///
    /// A valid file can still carry warnings, printed after the summary as FILE:LINE:COL: warning:
    /// with the exit staying 0: a zone measured by a hub that this hub's source does not hear (a
    /// hub's radio hears only that hub), or a scenario or recording that cannot be read.
    CheckConfig {
        /// The config file.
        file: PathBuf,
        /// Instead of the summary, print the config as the daemon would use it, as TOML: every key
        /// the file leaves out at its default, and what each zone inherits from [presence] and
        /// [hub] written out.
        #[arg(long)]
        effective: bool,
    },
    /// Decode advertising payloads given as hex: one JSON object per input, in order.
    ///
    /// Payloads come from the arguments, or one per line on stdin when there are none. Spaces and
    /// colons between bytes are tolerated. A line that cannot be decoded gives {"error": "..."} naming
    /// the byte offset; the command goes on and exits 1 at the end if any line failed.
    Decode {
        /// Hex payloads; read stdin when none are given.
        payloads: Vec<String>,
    },
    /// Run the simulated store demo: the daemon's own pipeline on a built-in scenario, live.
    ///
    /// Shows who entered which zone, dwell marks and exits, under a per-zone headcount redrawn in
    /// place (plain lines when piped). When the scenario ends it plays again, time running on, until
    /// Ctrl-C or --duration stops it.
    Demo {
        /// A scenario file, or the name of a built-in one (boutique, supermarket, hard, pharmacy,
        /// electronics).
        #[arg(long, default_value = "supermarket")]
        scenario: String,
        /// How many times faster than real time.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Stop after this many seconds (wall clock).
        #[arg(long)]
        duration: Option<f64>,
        /// Simulated minutes to run at once before the live view starts, so the store is busy.
        #[arg(long, default_value_t = 10.0)]
        warm_start_min: f64,
        /// Also publish to this MQTT broker (mqtt://host:port).
        #[arg(long)]
        mqtt: Option<String>,
    },
    /// Run a store scenario through the real pipeline with a simulated clock, as fast as the CPU
    /// allows, and score the presence engine and a naive baseline against the ground truth.
    Simulate {
        /// A scenario file, or the name of a built-in one (boutique, supermarket, hard, pharmacy,
        /// electronics).
        scenario: String,
        /// Print one JSON object (engine metrics at the top level, the baseline under "baseline").
        #[arg(long)]
        json: bool,
        /// Override the scenario's smoothing filter.
        #[arg(long, value_enum)]
        filter: Option<FilterArg>,
        /// Draw shoppers and radio from this seed instead of the scenario's: the same store with
        /// other people in it, to check a tuning on runs it was not made on.
        #[arg(long)]
        seed: Option<u64>,
        /// Run the store for this many hours instead of the scenario's own duration, shoppers
        /// arriving at the same rate: a p50 over one hour of a small store rests on a few dozen
        /// visits, so compare tunings on a long run.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
        hours: Option<u64>,
        /// Instead of running the store, calibrate its zones as a field engineer would with
        /// `beacond calibrate` (a reference fob at 1 m, walked around each area's edge and just
        /// outside it) and compare the suggestion with the scenario's thresholds.
        #[arg(long, conflicts_with_all = ["filter", "hours"])]
        calibrate: bool,
        /// Change one setting of the scenario for this run, e.g. `--set radio.shadowing_sigma_db=1.5`,
        /// `--set zones.enter_rssi=-72` (every zone), `--set zones[1].enter_rssi=-70`,
        /// `--set presence.exit_margin_db=6`. Repeatable; later ones win.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Score the store as deployed with one beacond per hub: each hub's engine hears only its
        /// own radio and decides only its own zones (engine and baseline alike), instead of one
        /// engine hearing every hub.
        #[arg(long, conflicts_with = "calibrate")]
        per_hub: bool,
        /// With `--per-hub`: the hubs share their observations of known devices (`[peers]`), each
        /// arriving at the other hubs this many ms after it was heard. Each hub's engine then holds
        /// every zone and reports its own.
        #[arg(long, value_name = "MS", requires = "per_hub",
              value_parser = clap::value_parser!(u64).range(0..=60_000))]
        share_lag_ms: Option<u64>,
    },
    /// Compute the retailer app's rotating token (the reference for app developers;
    /// docs/app-token.md specifies it).
    Token {
        /// The customer's long-term app key, 64 hex digits.
        #[arg(long, required_unless_present = "day_key", conflicts_with = "day_key")]
        key: Option<String>,
        /// Or that day's key, 64 hex digits (what the platform syncs to hubs).
        #[arg(long)]
        day_key: Option<String>,
        /// The moment, RFC 3339 (e.g. 2026-11-25T10:03:00Z). Default: now.
        #[arg(long)]
        at: Option<String>,
        /// Seconds per epoch (identity.token_epoch_s).
        #[arg(long, default_value_t = 600)]
        epoch_s: u32,
    },
    /// Inspect or copy the customer cache in the data directory (stop the daemon first).
    Cache {
        /// The config's hub.data_dir holds the cache.
        #[command(flatten)]
        config: ConfigPath,
        /// Use this data directory instead of the config's.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Sign sync batch files and publish them to a hub's broker, as the platform does (a reference
    /// for platform teams).
    SyncPublish {
        /// The platform's secret key file (64 hex digits; `beacond sync-keygen` makes one).
        #[arg(long)]
        key: PathBuf,
        /// The broker.
        #[arg(long, default_value = "mqtt://localhost:1883")]
        url: String,
        /// The topic prefix (mqtt.topic_prefix).
        #[arg(long, default_value = "beacond")]
        prefix: String,
        /// Split snapshots without chunk fields into chunks of this many customers.
        #[arg(long, default_value_t = 1000)]
        chunk_size: usize,
        /// Print the signed payloads (one per line pair) instead of publishing.
        #[arg(long)]
        print: bool,
        /// Batch files (JSON bodies as docs/sync.md describes), sent in order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// What the hub hears, live: a table refreshed in place (or --json lines) of every beacon,
    /// customer and anonymous device, with raw and smoothed RSSI, distance, zone and rate.
    ///
    /// Runs with no config at all (first adapter, no filters, no zones); give --config to see the
    /// zones the daemon would assign, or --source sim to try it without hardware.
    Scan {
        #[command(flatten)]
        source: SourceArgs,
        /// Row order.
        #[arg(long, value_enum, default_value = "rssi")]
        sort: beacond::field::view::SortKey,
        /// Only rows whose id, kind or zone contains this text.
        #[arg(long = "match")]
        filter: Option<String>,
        /// One JSON object per line for each row heard since the last refresh, instead of the table.
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Rows shown in the table.
        #[arg(long, default_value_t = 40)]
        rows: usize,
    },
    /// Record what the hub hears to FILE (JSON lines), to replay it later with
    /// `--source replay --replay FILE` or `[scan] source = "replay"`.
    ///
    /// Addresses are replaced by pseudonyms and only payloads beacond understands are kept, so a
    /// recording can leave the hub.
    Record {
        /// The recording to write.
        file: PathBuf,
        #[command(flatten)]
        source: SourceArgs,
        /// Stop after this many seconds (otherwise Ctrl-C, or the end of a simulation).
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Calibrate a zone with a reference phone or beacon: RSSI at 1 m, at the zone's edge and
    /// outside it, then the measured power, enter and exit thresholds it suggests, with reasons.
    Calibrate {
        /// The zone's id in the config.
        #[arg(long)]
        zone: String,
        #[command(flatten)]
        source: SourceArgs,
        /// The reference device's id as `beacond scan` shows it (default: the strongest at 1 m).
        #[arg(long)]
        device: Option<String>,
        /// Seconds of listening per phase.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// The edge's distance from the hub in metres, to suggest the path-loss exponent too.
        #[arg(long)]
        edge_m: Option<f64>,
        /// Do not wait for Enter between phases (for a recording made phase after phase).
        #[arg(long)]
        yes: bool,
        /// Edit the zone in the --config file in place (comments kept; checked before writing).
        #[arg(long)]
        write: bool,
    },
    /// How the running daemon is doing, from its health endpoint ([health] listen): exit 0 when
    /// healthy, 1 when not, 2 when it cannot be asked.
    Status {
        #[command(flatten)]
        config: ConfigPath,
        /// Print the daemon's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Check this hub before (or while) the daemon runs: the config, the data directory, the health
    /// endpoint, Bluetooth, the MQTT broker (a real login), whether another hub is online under
    /// this hub's id, whether the `[peers]` hubs are online there, the TLS certificates' dates,
    /// customer sync and the clock, each with what to do when it is wrong.
    ///
    /// Changes nothing: no adapter is powered on, no store is created, and the broker login uses
    /// its own client id, so it is safe next to a running daemon. On a hub:
    /// `sudo CREDENTIALS_DIRECTORY=/etc/beacond/credentials beacond doctor` (the password as
    /// systemd hands it to the daemon). Exit 0 when nothing failed (warnings allowed), 1 when a
    /// check failed, 2 when the config is bad.
    Doctor {
        #[command(flatten)]
        config: ConfigPath,
        /// One JSON object: {"config": FILE, "ok": bool, "checks": [{"check", "status", "detail"}]}.
        #[arg(long)]
        json: bool,
    },
    /// Gather what support needs into one .tar.gz to attach to a ticket: versions, the effective
    /// config, doctor's findings, the running daemon's status and metrics, what it learned, the
    /// service's state and its journal. Nothing in it identifies a person.
    ///
    /// No customer data goes in (not the customer cache, the spool, the offer caps or a
    /// recording; of the data directory only file names and sizes), nor the MQTT password file,
    /// and Bluetooth device addresses and anonymous handles in the journal are masked. README.txt
    /// inside lists what each file holds and what could not be gathered. On a hub:
    /// `sudo CREDENTIALS_DIRECTORY=/etc/beacond/credentials beacond support-bundle` (root reads
    /// the journal; the credentials are for doctor's broker login). Exit 0 when it was written.
    SupportBundle {
        #[command(flatten)]
        config: ConfigPath,
        /// Where to write it [default: ./beacond-support-STORE-HUB-TIME.tar.gz].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// How far back the journal goes, as journalctl --since takes it.
        #[arg(long, default_value = "3 days ago")]
        since: String,
        /// Skip doctor's checks (they log in to the broker, which can take 10 s).
        #[arg(long)]
        no_doctor: bool,
    },
    /// Offer rules: see what they would do.
    Offers {
        #[command(subcommand)]
        action: OffersAction,
    },
    /// Make a platform signing key for testing sync: writes the secret to FILE, prints the public key
    /// to put in identity.platform_public_key.
    SyncKeygen {
        /// Where to write the secret key (created with mode 0600).
        file: PathBuf,
    },
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    ///
    /// The Debian package installs those for bash, zsh and fish. Elsewhere, e.g.:
    /// `beacond completions bash > ~/.local/share/bash-completion/completions/beacond`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (beacond.1 and one per command) into DIR.
    ///
    /// The Debian package installs them; for a hub installed from a bare binary,
    /// `sudo beacond man /usr/local/share/man/man1`.
    Man {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

/// The daemon's config file, where every command that reads it looks by default.
#[derive(clap::Args, Debug)]
struct ConfigPath {
    /// The config file.
    #[arg(
        short,
        long,
        default_value = "/etc/beacond/beacond.toml",
        env = "BEACOND_CONFIG"
    )]
    config: PathBuf,
}

/// Where a field tool listens: the config's source, or one chosen here.
#[derive(clap::Args, Debug)]
struct SourceArgs {
    /// A config file (zones, filters, adapter, customer cache). Without one: defaults.
    #[arg(short, long, env = "BEACOND_CONFIG")]
    config: Option<PathBuf>,
    /// Listen to this source instead of the config's.
    #[arg(long, value_enum)]
    source: Option<SourceArg>,
    /// For --source sim: a scenario file or built-in name (and its zones, without --config).
    #[arg(long)]
    scenario: Option<String>,
    /// For --source replay: the recording.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Playback speed for sim and replay.
    #[arg(long)]
    speed: Option<f64>,
    /// For bluez: "auto" or an adapter name like hci1.
    #[arg(long)]
    adapter: Option<String>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SourceArg {
    Bluez,
    Replay,
    Sim,
}

impl SourceArgs {
    /// The config a field tool runs with; `Err` with the exit code after printing why.
    fn config(&self) -> Result<Config, ExitCode> {
        use beacond::config::SourceKind;
        let source = self.source.map(|s| match s {
            SourceArg::Bluez => SourceKind::Bluez,
            SourceArg::Replay => SourceKind::Replay,
            SourceArg::Sim => SourceKind::Sim,
        });
        let mut cfg = match &self.config {
            Some(path) => Config::load(path).map_err(|e| {
                eprintln!("{e}");
                ExitCode::from(2)
            })?,
            None if source == Some(SourceKind::Sim) => {
                let spec = scenario_spec(self.scenario.as_deref().unwrap_or("supermarket"));
                match beacond::scan::sim::Scenario::load(&spec) {
                    Ok(s) => s.as_config(),
                    Err(e) => {
                        eprintln!("{e}");
                        return Err(ExitCode::from(2));
                    }
                }
            }
            None => Config::default(),
        };
        if let Some(s) = source {
            cfg.scan.source = s;
        }
        if let Some(sc) = &self.scenario {
            cfg.scan.sim_scenario = scenario_spec(sc);
        }
        if let Some(r) = &self.replay {
            cfg.scan.replay_file = Some(r.clone());
        }
        if let Some(sp) = self.speed {
            if !(sp.is_finite() && sp > 0.0) {
                eprintln!("beacond: --speed must be a positive number, got {sp}");
                return Err(ExitCode::from(2));
            }
            cfg.scan.speed = sp;
        }
        if let Some(a) = &self.adapter {
            cfg.scan.adapter = a.clone();
        }
        Ok(cfg)
    }
}

#[derive(Subcommand, Debug)]
enum OffersAction {
    /// Which rules fire for one customer's simulated visit, and why the others do not (zone,
    /// trigger, segment, days, hours, quiet hours, cooldown, budget, visit limit, priority).
    Explain {
        /// The customer (in the simulated store: cust-00001, cust-00002, …).
        #[arg(long)]
        customer: String,
        /// The simulated store (its zones, shoppers and, without --config, its offer rules).
        #[arg(long, default_value = "supermarket")]
        scenario: String,
        /// Take the [[offers]], [offer_limits] and hub.timezone of this config instead.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Pretend the customer is in these segments (comma-separated).
        #[arg(long, value_delimiter = ',')]
        segments: Option<Vec<String>>,
    },
}

#[derive(Subcommand, Debug)]
enum CacheAction {
    /// Customers, applied sync sequence, bytes on disk.
    Stats,
    /// One customer as JSON.
    Get {
        /// The platform's customer id.
        id: String,
    },
    /// Every customer as JSON lines (after a header line), to stdout or a file.
    Export {
        /// Output file; stdout when absent.
        file: Option<PathBuf>,
    },
    /// Replace the cache with an export, atomically (a bad line changes nothing).
    Import {
        /// The export file.
        file: PathBuf,
    },
}

/// `--filter`: spelt as in the config file's `[presence] filter` (and the docs), so a value copied
/// from one works in the other; the hyphenated spelling is accepted too.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum FilterArg {
    #[value(name = "kalman_trend", alias = "kalman-trend")]
    KalmanTrend,
    Kalman,
    #[value(name = "trimmed_mean", alias = "trimmed-mean")]
    TrimmedMean,
    Ewma,
}

impl From<FilterArg> for beacond::config::SmoothingFilter {
    fn from(f: FilterArg) -> Self {
        match f {
            FilterArg::KalmanTrend => Self::KalmanTrend,
            FilterArg::Kalman => Self::Kalman,
            FilterArg::TrimmedMean => Self::TrimmedMean,
            FilterArg::Ewma => Self::Ewma,
        }
    }
}

/// A scenario argument: a file if one exists at that path, else a built-in name.
fn scenario_spec(arg: &str) -> String {
    if arg.starts_with("builtin:") || std::path::Path::new(arg).exists() {
        arg.to_owned()
    } else {
        format!("builtin:{arg}")
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config.config),
        Command::CheckConfig { file, effective } => Ok(check_config(&file, effective)),
        Command::Decode { payloads } => decode(payloads),
        Command::Simulate {
            scenario,
            json,
            filter,
            seed,
            hours,
            calibrate,
            sets,
            per_hub,
            share_lag_ms,
        } => {
            if calibrate {
                simulate_calibrate(&scenario, json, seed, &sets)
            } else {
                use beacond::simulate::Deployment;
                let deployment = match (per_hub, share_lag_ms) {
                    (true, Some(lag_ms)) => Deployment::PerHubSharing { lag_ms },
                    (true, None) => Deployment::PerHub,
                    (false, _) => Deployment::Shared,
                };
                simulate(&scenario, json, filter, seed, hours, &sets, deployment)
            }
        }
        Command::Demo {
            scenario,
            speed,
            duration,
            warm_start_min,
            mqtt,
        } => demo(&scenario, speed, duration, warm_start_min, mqtt),
        Command::Token {
            key,
            day_key,
            at,
            epoch_s,
        } => token(key, day_key, at, epoch_s),
        Command::Cache {
            config,
            data_dir,
            action,
        } => cache(config.config, data_dir, action),
        Command::SyncPublish {
            key,
            url,
            prefix,
            chunk_size,
            print,
            files,
        } => sync_publish(&key, &url, &prefix, chunk_size, print, &files),
        Command::SyncKeygen { file } => sync_keygen(&file),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            manual::completions(&mut Cli::command(), shell, &mut std::io::stdout().lock());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            use clap::CommandFactory;
            manual::write_pages(Cli::command(), &dir)
                .map(|_| ExitCode::SUCCESS)
                .with_context(|| format!("writing man pages to {}", dir.display()))
        }
        Command::Status { config, json } => status(&config.config, json),
        Command::Doctor { config, json } => doctor(&config.config, json),
        Command::SupportBundle {
            config,
            output,
            since,
            no_doctor,
        } => support_bundle(
            beacond::support::Options {
                config: config.config,
                since,
                doctor: !no_doctor,
            },
            output,
        ),
        Command::Offers {
            action:
                OffersAction::Explain {
                    customer,
                    scenario,
                    config,
                    segments,
                },
        } => offers_explain(&customer, &scenario, config.as_deref(), segments),
        Command::Scan {
            source,
            sort,
            filter,
            json,
            duration,
            rows,
        } => field_scan(&source, sort, filter, json, duration, rows),
        Command::Record {
            file,
            source,
            duration,
        } => field_record(&source, &file, duration),
        Command::Calibrate {
            zone,
            source,
            device,
            seconds,
            edge_m,
            yes,
            write,
        } => {
            let opts = beacond::field::CalibrateOptions {
                zone,
                device,
                seconds,
                edge_m,
                no_prompt: yes,
                write: if write { source.config.clone() } else { None },
            };
            if write && source.config.is_none() {
                eprintln!("beacond calibrate: --write needs --config FILE to edit");
                return ExitCode::from(2);
            }
            field_calibrate(&source, &opts)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("beacond: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> anyhow::Result<ExitCode> {
    let cfg = match Config::load(&path) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    beacond::logging::init(&cfg.log.level, cfg.log.format)?;
    let opts = beacond::daemon::RunOptions {
        config_path: Some(path),
        ..Default::default()
    };
    run_until_signal(cfg, opts, None)
}

fn demo(
    arg: &str,
    speed: f64,
    duration: Option<f64>,
    warm_start_min: f64,
    mqtt: Option<String>,
) -> anyhow::Result<ExitCode> {
    if !(speed.is_finite() && speed > 0.0) {
        eprintln!("beacond demo: --speed must be a positive number, got {speed}");
        return Ok(ExitCode::from(2));
    }
    let spec = scenario_spec(arg);
    let scenario = match beacond::scan::sim::Scenario::load(&spec) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut cfg = scenario.as_config();
    cfg.scan.source = beacond::config::SourceKind::Sim;
    cfg.scan.sim_scenario = spec;
    cfg.scan.sim_repeat = true;
    cfg.scan.speed = speed;
    // The demo's spool, offer caps and learned margins are throwaway, like the demo: the directory
    // goes when the demo ends.
    let data_dir = tempfile::Builder::new()
        .prefix("beacond-demo-")
        .tempdir()
        .context("making the demo's data directory")?;
    cfg.hub.data_dir = data_dir.path().to_owned();
    if let Some(url) = mqtt {
        cfg.mqtt.enabled = true;
        cfg.mqtt.url = url;
        if let Err(rejected) = Config::parse(&toml::to_string(&cfg)?) {
            for p in rejected.problems {
                eprintln!("beacond demo: --mqtt: {}", p.message);
            }
            return Ok(ExitCode::from(2));
        }
    }
    // The feed is the demo's output; only problems go to the log.
    beacond::logging::init("warn", beacond::config::LogFormat::Auto)?;
    println!(
        "beacond demo: {} — {}\nsimulated time starts {} min into the scenario, {}× real time. Ctrl-C stops.\n",
        scenario.name,
        scenario.description,
        warm_start_min,
        speed
    );
    let opts = beacond::daemon::RunOptions {
        config_path: None,
        sink: beacond::daemon::SinkKind::Terminal,
        warm_start_s: warm_start_min.max(0.0) * 60.0,
    };
    run_until_signal(cfg, opts, duration)
}

/// Runs the daemon pipeline until it ends, a signal arrives, or `duration` seconds pass.
fn run_until_signal(
    cfg: Config,
    opts: beacond::daemon::RunOptions,
    duration: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let (trigger, shutdown) = beacond::shutdown::channel();
        let daemon = tokio::spawn(beacond::daemon::run_with(cfg, opts, shutdown));
        tokio::pin!(daemon);
        let limit = async {
            match duration {
                Some(s) => tokio::time::sleep(std::time::Duration::from_secs_f64(s.max(0.0))).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            sig = beacond::shutdown::os_signal() => {
                tracing::info!(signal = sig.unwrap_or("signal"), "shutting down");
                beacond::health::stopping();
                trigger.fire();
                daemon.await.context("daemon task")??;
            }
            _ = limit => {
                trigger.fire();
                daemon.await.context("daemon task")??;
            }
            res = &mut daemon => res.context("daemon task")??,
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn check_config(path: &std::path::Path, effective: bool) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) if effective => {
            println!(
                "# {}, as beacond {} uses it: defaults and inherited values written out.",
                path.display(),
                env!("CARGO_PKG_VERSION")
            );
            print!("{}", cfg.effective().to_toml());
            ExitCode::SUCCESS
        }
        Ok(cfg) => {
            // A warning names a mistake that runs anyway (a zone nobody can enter), so the exit
            // stays 0: a reload or a package upgrade must not stop on it.
            print!("{}", beacond::doctor::config_accepted(&cfg, path));
            ExitCode::SUCCESS
        }
        Err(e) => config_rejected(&e),
    }
}

/// Prints why a config file was rejected, every problem and how many, as check-config does.
fn config_rejected(e: &ConfigError) -> ExitCode {
    eprintln!("{}", e.report());
    ExitCode::from(2)
}

fn support_bundle(
    opts: beacond::support::Options,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let now = chrono::DateTime::from_timestamp_millis(beacond::time::Timestamp::now().0 as i64)
        .unwrap_or_default();
    let bundle = runtime.block_on(beacond::support::gather(&opts, now));
    let path = output.unwrap_or_else(|| PathBuf::from(format!("{}.tar.gz", bundle.name)));
    match beacond::support::write(&bundle, &path, now.timestamp().max(0) as u64) {
        Ok(size) => {
            println!("wrote {} ({size} bytes):", path.display());
            for line in &bundle.contents {
                println!("  {line}");
            }
            println!("Attach it to the support ticket; README.txt inside says what it holds.");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("beacond support-bundle: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn doctor(path: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    use beacond::doctor::Status;
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => return Ok(config_rejected(&e)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let findings = runtime.block_on(beacond::doctor::check(&cfg, path));
    let failed = findings.iter().filter(|f| f.status == Status::Fail).count();
    let warned = findings.iter().filter(|f| f.status == Status::Warn).count();
    if json {
        println!("{}", beacond::doctor::report(path, &findings));
    } else {
        for f in &findings {
            let status = match f.status {
                Status::Ok => "ok",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("{status:<5} {:<10} {}", f.check, f.detail);
        }
        println!("{failed} failed, {warned} warning(s)");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn decode(payloads: Vec<String>) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = false;
    let mut answer = |line: &str, out: &mut dyn Write| -> std::io::Result<()> {
        let v = beacond::decode::json::decode_line(line).unwrap_or_else(|e| {
            failed = true;
            serde_json::json!({ "error": e })
        });
        writeln!(out, "{v}")
    };
    if payloads.is_empty() {
        // Bytes, not `lines()`: a line of invalid UTF-8 must get its own error object, not end the run.
        for line in std::io::stdin().lock().split(b'\n') {
            let line = line.context("reading stdin")?;
            answer(&String::from_utf8_lossy(&line), &mut out)?;
        }
    } else {
        for p in &payloads {
            answer(p, &mut out)?;
        }
    }
    out.flush()?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn simulate(
    arg: &str,
    json: bool,
    filter: Option<FilterArg>,
    seed: Option<u64>,
    hours: Option<u64>,
    sets: &[String],
    deployment: beacond::simulate::Deployment,
) -> anyhow::Result<ExitCode> {
    let Some(mut scenario) = load_scenario(arg, seed, sets) else {
        return Ok(ExitCode::from(2));
    };
    if let Some(h) = hours {
        scenario.lengthen(h * 3600);
    }
    let report =
        beacond::simulate::run_deployed(scenario, filter.map(Into::into), deployment, |_, _| {});
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::SUCCESS)
}

/// The scenario `arg` names, with `seed` instead of its own and `sets` applied; `None` after saying
/// what is wrong.
fn load_scenario(
    arg: &str,
    seed: Option<u64>,
    sets: &[String],
) -> Option<beacond::scan::sim::Scenario> {
    match beacond::scan::sim::Scenario::load_with(&scenario_spec(arg), sets) {
        Ok(mut s) => {
            if let Some(seed) = seed {
                s.seed = seed;
            }
            Some(s)
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

fn simulate_calibrate(
    arg: &str,
    json: bool,
    seed: Option<u64>,
    sets: &[String],
) -> anyhow::Result<ExitCode> {
    use beacond::scan::sim::survey;
    let Some(scenario) = load_scenario(arg, seed, sets) else {
        return Ok(ExitCode::from(2));
    };
    let zones = match survey::survey(&scenario) {
        Ok(z) => z,
        Err(e) => {
            eprintln!("{}: {e}", scenario.name);
            return Ok(ExitCode::from(2));
        }
    };
    let off = |z: &survey::ZoneSurvey| {
        (z.configured.0 - z.suggestion.enter_rssi).abs() > survey::TOLERANCE_DB
            || (z.configured.1 - z.suggestion.exit_rssi).abs() > survey::TOLERANCE_DB
    };
    if json {
        let v: Vec<serde_json::Value> = zones
            .iter()
            .map(|z| {
                serde_json::json!({
                    "zone": z.zone,
                    "configured": {"enter_rssi": z.configured.0, "exit_rssi": z.configured.1},
                    "suggested": {
                        "measured_power": z.suggestion.measured_power,
                        "enter_rssi": z.suggestion.enter_rssi,
                        "exit_rssi": z.suggestion.exit_rssi,
                        "path_loss_exponent": z.suggestion.path_loss_exponent,
                    },
                    "phases": z.phases.iter().map(|p| serde_json::json!({
                        "n": p.n, "median": p.median, "p10": p.p10, "p90": p.p90,
                    })).collect::<Vec<_>>(),
                    "warnings": z.suggestion.warnings,
                    "matches": !off(z),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"scenario": scenario.name, "zones": v})
        );
    } else {
        println!(
            "{}: calibrated as `beacond calibrate` would (seed {})",
            scenario.name, scenario.seed
        );
        for z in &zones {
            println!(
                "\nzone {:?}: configured enter {} / exit {}, suggested {} / {}{}",
                z.zone,
                z.configured.0,
                z.configured.1,
                z.suggestion.enter_rssi,
                z.suggestion.exit_rssi,
                if off(z) {
                    format!("  (differs by more than {} dB)", survey::TOLERANCE_DB)
                } else {
                    String::new()
                }
            );
            for r in &z.suggestion.reasoning {
                println!("  - {r}");
            }
            for w in &z.suggestion.warnings {
                println!("  ! {w}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn usage(message: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("beacond: {message}");
    Ok(ExitCode::from(2))
}

fn token(
    key: Option<String>,
    day_key: Option<String>,
    at: Option<String>,
    epoch_s: u32,
) -> anyhow::Result<ExitCode> {
    use beacond::identity::token;
    if epoch_s == 0 || 86_400 % epoch_s != 0 {
        return usage(format!(
            "--epoch-s {epoch_s} must divide 86400 (e.g. 300, 600, 900)"
        ));
    }
    let unix_s = match at {
        Some(a) => match chrono::DateTime::parse_from_rfc3339(&a) {
            Ok(t) if t.timestamp() >= 0 => t.timestamp() as u64,
            _ => {
                return usage(format!(
                    "--at {a:?} is not an RFC 3339 time after 1970 (e.g. 2026-11-25T10:03:00Z)"
                ))
            }
        },
        None => beacond::time::Timestamp::now().as_millis() / 1000,
    };
    let parse = |flag: &str, h: &str| -> Result<token::Key, String> {
        let mut k = [0u8; 32];
        hex::decode_to_slice(h.trim(), &mut k)
            .map_err(|_| format!("{flag} must be 64 hex digits"))?;
        Ok(k)
    };
    let (day, epoch) = (token::day_of(unix_s), token::epoch_of(unix_s, epoch_s));
    let dk = match (key, day_key) {
        (Some(k), _) => match parse("--key", &k) {
            Ok(k) => token::day_key(&k, day),
            Err(e) => return usage(e),
        },
        (None, Some(d)) => match parse("--day-key", &d) {
            Ok(k) => k,
            Err(e) => return usage(e),
        },
        (None, None) => return usage("give --key or --day-key"),
    };
    let t = token::token(&dk, epoch, epoch_s);
    let out = serde_json::json!({
        "at": beacond::time::Timestamp(unix_s * 1000).to_rfc3339(),
        "day": beacond::identity::record::format_day(day),
        "day_number": day,
        "epoch_s": epoch_s,
        "epoch": epoch,
        "day_key": hex::encode(dk),
        "token": hex::encode(t),
        "service_data": hex::encode(token::service_data(&t)),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn cache(
    config: PathBuf,
    data_dir: Option<PathBuf>,
    action: CacheAction,
) -> anyhow::Result<ExitCode> {
    use beacond::identity::cache::Cache;
    let (dir, cache_mb) = match data_dir {
        Some(d) => (d, 32),
        None => match Config::load(&config) {
            Ok(cfg) => (cfg.hub.data_dir, cfg.identity.cache_size_mb),
            Err(e) => {
                eprintln!("{e}");
                eprintln!("(or give --data-dir)");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let path = dir.join("customers");
    if !path.exists() && !matches!(action, CacheAction::Import { .. }) {
        return usage(format!(
            "no customer cache at {} (has the daemon synced yet?)",
            path.display()
        ));
    }
    let (mut cache, aside) = match Cache::open(&path, cache_mb * 1024 * 1024) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    if let Some((to, why)) = aside {
        eprintln!(
            "beacond: the cache would not open ({why}); moved to {} and started empty",
            to.display()
        );
    }
    match action {
        CacheAction::Stats => println!("{}", serde_json::to_string_pretty(&cache.stats()?)?),
        CacheAction::Get { id } => match cache.get(&id)? {
            Some(c) => println!("{}", serde_json::to_string_pretty(&c.to_record())?),
            None => {
                eprintln!("beacond: no customer {id:?} in the cache");
                return Ok(ExitCode::FAILURE);
            }
        },
        CacheAction::Export { file } => {
            let n = match file {
                Some(f) => {
                    let mut w = std::io::BufWriter::new(
                        std::fs::File::create(&f).with_context(|| f.display().to_string())?,
                    );
                    cache.export(&mut w)?
                }
                None => cache.export(&mut std::io::BufWriter::new(std::io::stdout().lock()))?,
            };
            eprintln!("exported {n} customers");
        }
        CacheAction::Import { file } => {
            let f = std::fs::File::open(&file).with_context(|| file.display().to_string())?;
            match cache.import(std::io::BufReader::new(f), &file.display().to_string()) {
                Ok(n) => eprintln!("imported {n} customers"),
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("nothing was changed");
                    return Ok(ExitCode::from(2));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sync_publish(
    key: &std::path::Path,
    url: &str,
    prefix: &str,
    chunk_size: usize,
    print: bool,
    files: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    use beacond::identity::publish;
    let sk = match publish::read_signing_key(key) {
        Ok(k) => k,
        Err(e) => return usage(e),
    };
    let mut by_topic: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| f.display().to_string())?;
        let name = f.display().to_string();
        let payloads = match publish::prepare(&sk, &text, &name, chunk_size) {
            Ok(p) => p,
            Err(e) => return usage(e),
        };
        let store = publish::store_of(&text).unwrap_or_default();
        by_topic.push((format!("{prefix}/{store}/sync/customers"), payloads));
    }
    if print {
        let mut out = std::io::stdout().lock();
        for (_, payloads) in &by_topic {
            for p in payloads {
                out.write_all(p)?;
                out.write_all(b"\n")?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for (topic, payloads) in by_topic {
        let n = payloads.len();
        if let Err(e) = runtime.block_on(publish::publish(url, &topic, payloads)) {
            eprintln!("beacond: {e}");
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("published {n} signed message(s) to {topic}");
    }
    Ok(ExitCode::SUCCESS)
}

fn sync_keygen(file: &std::path::Path) -> anyhow::Result<ExitCode> {
    use std::os::unix::fs::OpenOptionsExt;
    let seed: [u8; 32] = rand::random();
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("{} (it must not exist yet)", file.display()))?;
    writeln!(f, "{}", hex::encode(seed))?;
    println!("{}", hex::encode(sk.verifying_key().to_bytes()));
    eprintln!(
        "secret key written to {}; put the line above in identity.platform_public_key",
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs a field tool on a fresh runtime until it ends or a signal arrives.
fn field_tool<T>(
    run: impl FnOnce(
        beacond::shutdown::Shutdown,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, beacond::field::FieldError>> + Send>,
    >,
) -> anyhow::Result<Result<T, beacond::field::FieldError>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(async {
        let (trigger, shutdown) = beacond::shutdown::channel();
        let tool = run(shutdown);
        tokio::pin!(tool);
        tokio::select! {
            r = &mut tool => r,
            _ = beacond::shutdown::os_signal() => {
                trigger.fire();
                tool.await
            }
        }
    }))
}

fn field_scan(
    source: &SourceArgs,
    sort: beacond::field::view::SortKey,
    filter: Option<String>,
    json: bool,
    duration: Option<f64>,
    rows: usize,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let mut cfg = match source.config() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    // A live view runs until it is stopped; the simulated store keeps going until then too.
    cfg.scan.sim_repeat = true;
    beacond::logging::init("warn", beacond::config::LogFormat::Auto)?;
    let opts = beacond::field::ScanOptions {
        json,
        sort,
        filter,
        duration,
        redraw: std::io::stdout().is_terminal(),
        max_rows: rows,
    };
    let r = field_tool(move |shutdown| {
        Box::pin(async move {
            let mut out = std::io::stdout();
            beacond::field::scan(&cfg, &opts, &mut out, shutdown).await
        })
    })?;
    finish(r.map(|_| ()))
}

fn field_record(
    source: &SourceArgs,
    file: &std::path::Path,
    duration: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let cfg = match source.config() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    beacond::logging::init("warn", beacond::config::LogFormat::Auto)?;
    let file = file.to_path_buf();
    let path = file.clone();
    let r = field_tool(move |shutdown| {
        Box::pin(async move { beacond::field::record(&cfg, &file, duration, shutdown).await })
    })?;
    if let Ok(n) = &r {
        eprintln!("beacond record: {n} adverts written to {}", path.display());
    }
    finish(r.map(|_| ()))
}

fn field_calibrate(
    source: &SourceArgs,
    opts: &beacond::field::CalibrateOptions,
) -> anyhow::Result<ExitCode> {
    let cfg = match source.config() {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if !cfg.zones.iter().any(|z| z.id == opts.zone) {
        eprintln!(
            "beacond calibrate: no zone {:?} in the config; zones: {}",
            opts.zone,
            cfg.zones
                .iter()
                .map(|z| z.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    beacond::logging::init("warn", beacond::config::LogFormat::Auto)?;
    let opts = opts.clone();
    let r = field_tool(move |shutdown| {
        Box::pin(async move {
            let mut input = std::io::BufReader::new(std::io::stdin());
            let mut out = std::io::stdout();
            beacond::field::calibrate(&cfg, &opts, &mut input, &mut out, shutdown).await
        })
    })?;
    finish(r.map(|_| ()))
}

/// A field tool's result as an exit code: its error on stderr and 1.
fn finish(r: Result<(), beacond::field::FieldError>) -> anyhow::Result<ExitCode> {
    match r {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("beacond: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn offers_explain(
    customer: &str,
    scenario: &str,
    config: Option<&std::path::Path>,
    segments: Option<Vec<String>>,
) -> anyhow::Result<ExitCode> {
    let mut sc = match beacond::scan::sim::Scenario::load(&scenario_spec(scenario)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut timezone = "UTC".to_owned();
    if let Some(path) = config {
        let cfg = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::from(2));
            }
        };
        let zones: Vec<&str> = sc.zones.iter().map(|z| z.id.as_str()).collect();
        for o in &cfg.offers {
            if let Some(z) = o.zones.iter().find(|z| !zones.contains(&z.as_str())) {
                eprintln!(
                    "beacond offers explain: offer {:?} uses zone {z:?}, which scenario {} does not have (zones: {}); it will never match",
                    o.id,
                    sc.name,
                    zones.join(", ")
                );
            }
        }
        sc.offers = cfg.offers;
        sc.offer_limits = cfg.offer_limits;
        timezone = cfg.hub.timezone;
    }
    if sc.offers.is_empty() {
        eprintln!("beacond offers explain: no [[offers]] rules to explain");
        return Ok(ExitCode::from(2));
    }
    match beacond::offers::stage::explain(sc, customer, segments, &timezone) {
        Some(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "beacond offers explain: customer {customer:?} has no presence event in the simulated store; simulated customers are cust-00001, cust-00002, …"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn status(path: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let Some(addr) = cfg.health.listen else {
        eprintln!(
            "beacond status: {} has no [health] listen; set listen = \"127.0.0.1:9187\" and reload",
            path.display()
        );
        return Ok(ExitCode::from(2));
    };
    let v = match beacond::health::ask(&addr) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("beacond status: {e}; is beacond running (systemctl status beacond)?");
            return Ok(ExitCode::from(2));
        }
    };
    let healthy = v["healthy"].as_bool().unwrap_or(false);
    if json {
        println!("{v}");
    } else {
        println!(
            "beacond {} — {} (up {} s)",
            v["version"].as_str().unwrap_or("?"),
            if healthy {
                "healthy".to_owned()
            } else {
                format!(
                    "UNHEALTHY: {}",
                    v["unhealthy_reason"].as_str().unwrap_or("?")
                )
            },
            v["uptime_s"]
        );
        println!(
            "source {}: {} adverts ({} /s), {} decode errors",
            v["source"].as_str().unwrap_or("?"),
            v["adverts_total"],
            v["adverts_per_s"],
            v["decode_errors_total"]
        );
        println!(
            "tracked {} ({} anonymous); offers fired {}",
            v["tracked"], v["tracked_anonymous"], v["offers_total"]
        );
        if let Some(z) = v["zones"].as_object().filter(|z| !z.is_empty()) {
            let zones: Vec<String> = z.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!("zones (devices last interval): {}", zones.join(", "));
        }
        if let Some(m) = v["mqtt"].as_object() {
            println!(
                "mqtt {}, {} reconnects, spool {} waiting",
                if m["connected"].as_bool() == Some(true) {
                    "connected"
                } else {
                    "DISCONNECTED"
                },
                m["reconnects"],
                m["spool_depth"]
            );
            if let Some(e) = m.get("spool_write_error").and_then(|e| e.as_str()) {
                println!(
                    "SPOOL CANNOT WRITE TO DISK: {e}; {} messages held in memory (free space on the card, or replace it)",
                    m["spool_held"]
                );
            } else if let Some(free) = m.get("disk_free_bytes").and_then(|f| f.as_u64()) {
                println!(
                    "disk {} MiB free{}",
                    free >> 20,
                    if m["disk_low"].as_bool() == Some(true) {
                        " — LOW: less than the spool may need; free space, or lower [mqtt] spool_max_bytes"
                    } else {
                        ""
                    }
                );
            }
        }
        if let Some(w) = v["mqtt"]["tls_warning"].as_str() {
            println!("TLS: {w}");
        }
        if let Some(w) = v["mqtt"]["twin_warning"].as_str() {
            println!("DUPLICATE HUB: {w}");
        }
        if !v["sync_seq"].is_null() {
            println!("customers {} (sync seq {})", v["customers"], v["sync_seq"]);
        }
        if let Some(p) = v["peers"].as_object() {
            println!(
                "peers: {} observations shared, {} of peers' used, {} too late, {} of unknown customers",
                p["shared"], p["applied"], p["late"], p["unknown"]
            );
        }
        if let Some(sc) = v["scan"].as_object() {
            println!(
                "scan: {} watchdog restarts, {} power cycles, {} BlueZ devices removed",
                sc["watchdog_restarts"], sc["watchdog_power_cycles"], sc["devices_removed"]
            );
        }
        let margins: Vec<beacond::presence::HubExitMargin> =
            serde_json::from_value(v["exit_margins"].clone()).unwrap_or_default();
        if !margins.is_empty() {
            println!("exit margin:");
            for m in &margins {
                println!("  {m}");
            }
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
