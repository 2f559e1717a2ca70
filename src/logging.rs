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

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `level`. Safe to call twice (the
/// second call is ignored), so tests and re-initialisation do not panic.
pub fn init(level: &str, format: LogFormat) -> Result<(), LogError> {
    let filter_text = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_owned());
    let filter = EnvFilter::builder()
        .parse(&filter_text)
        .map_err(|source| LogError::Filter {
            filter: filter_text.clone(),
            source,
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match resolve(format) {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Compact => {
            // The journal stamps every line itself; a second timestamp only costs SD card bytes.
            let b = builder.compact().with_ansi(false);
            if under_systemd() {
                b.without_time().try_init()
            } else {
                b.try_init()
            }
        }
        LogFormat::Human | LogFormat::Auto => builder.with_ansi(true).try_init(),
    };
    drop(result);
    Ok(())
}
