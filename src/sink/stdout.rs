//! The `stdout` sink: one JSON object per line, for piping into other tools and for hubs without a
//! broker while they are being set up.

use std::io::Write;

use tokio::sync::mpsc;

use super::Record;

/// Writes every record as a JSON line until the channel closes.
pub async fn run(mut rx: mpsc::Receiver<Record>) -> std::io::Result<()> {
    while let Some(r) = rx.recv().await {
        if let Record::Purge(_) | Record::Notice { .. } | Record::MqttTarget(_) = r {
            continue;
        }
        let line = serde_json::to_string(&r).map_err(std::io::Error::other)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(())
}
