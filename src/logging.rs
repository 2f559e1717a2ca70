//! Logging setup: a tracing env-filter from `RUST_LOG` or `[log] level`, a human format on a terminal,
//! and a compact colourless one under systemd, where the journal adds its own timestamps.

use std::io::IsTerminal;

use thiserror::Error;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Logging could not be set up.
#[derive(Debug, Error)]
pub enum LogError {
    /// The filter does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The filter text.
        filter: String,
        /// Why.
        source: tracing_subscriber::filter::ParseError,
    },
}

/// Whether stderr goes to the systemd journal (systemd sets `JOURNAL_STREAM` for its services).
pub fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// The format `auto` resolves to here.
pub fn resolve(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if under_systemd() || !std::io::stderr().is_terminal() => {
            LogFormat::Compact
        }
        LogFormat::Auto => LogFormat::Human,
        other => other,
    }
}

/// The handle that swaps the filter of the installed subscriber (a reload changes `[log] level`).
static RELOAD: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level`. Safe to call twice (the
/// second call is ignored), so tests and re-initialisation do not panic.
pub fn init(level: &str, format: LogFormat) -> Result<(), LogError> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter_text = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    let filter = parse(&filter_text)?;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match resolve(format) {
        LogFormat::Json => base.json().boxed(),
        LogFormat::Compact => {
            // The journal stamps every line itself; a second timestamp only costs SD card bytes.
            let b = base.compact().with_ansi(false);
            if under_systemd() {
                b.without_time().boxed()
            } else {
                b.boxed()
            }
        }
        LogFormat::Human | LogFormat::Auto => base.with_ansi(true).boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = RELOAD.set(handle);
    }
    Ok(())
}

fn parse(text: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::builder()
        .parse(text)
        .map_err(|source| LogError::Filter {
            filter: text.to_owned(),
            source,
        })
}

/// Applies a new `[log] level` to the running subscriber. `Ok(false)` when `RUST_LOG` is set (it
/// wins, as at start) or logging was not set up by [`init`].
pub fn set_level(level: &str) -> Result<bool, LogError> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(false);
    }
    let Some(handle) = RELOAD.get() else {
        return Ok(false);
    };
    let filter = parse(level)?;
    Ok(handle.reload(filter).is_ok())
}
