//! The `beacond` command line.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use beacond::config::{Config, ConfigError};

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
        /// The config file.
        #[arg(
            short,
            long,
            default_value = "/etc/beacond/beacond.toml",
            env = "BEACOND_CONFIG"
        )]
        config: PathBuf,
    },
    /// Check a config file: print a summary and exit 0, or every problem with FILE:LINE:COL and exit 2.
    CheckConfig {
        /// The config file.
        file: PathBuf,
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
    /// place (plain lines when piped). Stop it with Ctrl-C or --duration.
    Demo {
        /// A scenario file, or the name of a built-in one (boutique, supermarket, hard).
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
        /// A scenario file, or the name of a built-in one (boutique, supermarket, hard).
        scenario: String,
        /// Print one JSON object (engine metrics at the top level, the baseline under "baseline").
        #[arg(long)]
        json: bool,
        /// Override the scenario's smoothing filter.
        #[arg(long, value_enum)]
        filter: Option<FilterArg>,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum FilterArg {
    KalmanTrend,
    Kalman,
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
        Command::Run { config } => run(config),
        Command::CheckConfig { file } => Ok(check_config(&file)),
        Command::Decode { payloads } => decode(payloads),
        Command::Simulate {
            scenario,
            json,
            filter,
        } => simulate(&scenario, json, filter),
        Command::Demo {
            scenario,
            speed,
            duration,
            warm_start_min,
            mqtt,
        } => demo(&scenario, speed, duration, warm_start_min, mqtt),
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
    run_until_signal(cfg, beacond::daemon::RunOptions::default(), None)
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
    cfg.scan.speed = speed;
    if let Some(url) = mqtt {
        cfg.mqtt.enabled = true;
        cfg.mqtt.url = url;
        // The demo's spool is throwaway, like the demo.
        cfg.hub.data_dir =
            std::env::temp_dir().join(format!("beacond-demo-{}", std::process::id()));
        if let Err(problems) = Config::parse(&toml::to_string(&cfg)?) {
            for p in problems {
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

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) => {
            println!("{}: OK", path.display());
            println!("{}", cfg.summary());
            ExitCode::SUCCESS
        }
        Err(e @ ConfigError::Invalid { .. }) => {
            eprintln!("{e}");
            if let ConfigError::Invalid { problems, .. } = &e {
                eprintln!("{} problem(s) found", problems.len());
            }
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
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

fn simulate(arg: &str, json: bool, filter: Option<FilterArg>) -> anyhow::Result<ExitCode> {
    let scenario = match beacond::scan::sim::Scenario::load(&scenario_spec(arg)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let report = beacond::simulate::run(scenario, filter.map(Into::into), |_, _| {});
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
