//! The daemon: one page that wires sources → core stages → sinks with bounded channels and one
//! shutdown signal.

use thiserror::Error;

use crate::config::Config;
use crate::shutdown::Shutdown;

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

/// Runs the pipeline described by `cfg` until `shutdown` fires.
pub async fn run(cfg: Config, mut shutdown: Shutdown) -> Result<(), DaemonError> {
    tracing::info!(
        store = %cfg.hub.store_id,
        hub = %cfg.hub.hub_id,
        source = %cfg.scan.source,
        zones = cfg.zones.len(),
        "beacond started"
    );
    shutdown.recv().await;
    tracing::info!("beacond stopped");
    Ok(())
}
