//! The reference publisher: what a platform team runs (`beacond sync-publish`) to send signed sync
//! batches to a hub, and what the tests use to play the platform.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value;
use thiserror::Error;

use super::sync::{sign, BatchKind, WireBatch};

/// Why publishing failed.
#[derive(Debug, Error)]
pub enum PublishError {
    /// A batch file is not a valid batch.
    #[error("{file}: {message}")]
    Batch {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The key file is not a key.
    #[error("{file}: {message}")]
    Key {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The broker could not be reached or did not acknowledge.
    #[error("MQTT: {0}")]
    Mqtt(String),
}

/// Reads a signing key file: 64 hex digits (the Ed25519 seed), as `beacond sync-keygen` writes it.
pub fn read_signing_key(path: &std::path::Path) -> Result<SigningKey, PublishError> {
    let bad = |message: String| PublishError::Key {
        file: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed)
        .map_err(|_| bad("expected 64 hex digits (an Ed25519 secret key seed)".into()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Turns a batch file's JSON into signed payloads. A snapshot without `chunk`/`chunks` is split
/// into chunks of at most `chunk_size` customers (a 1 MiB MQTT packet holds about 3000).
pub fn prepare(
    key: &SigningKey,
    json: &str,
    file: &str,
    chunk_size: usize,
) -> Result<Vec<Vec<u8>>, PublishError> {
    let bad = |message: String| PublishError::Batch {
        file: file.to_owned(),
        message,
    };
    let batch: WireBatch = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let bodies: Vec<WireBatch> = match batch.kind {
        BatchKind::Snapshot if batch.chunk.is_none() && batch.chunks.is_none() => {
            let chunks: Vec<_> = if batch.customers.is_empty() {
                vec![Vec::new()]
            } else {
                batch
                    .customers
                    .chunks(chunk_size.max(1))
                    .map(<[_]>::to_vec)
                    .collect()
            };
            let n = chunks.len() as u32;
            chunks
                .into_iter()
                .enumerate()
                .map(|(i, customers)| WireBatch {
                    chunk: Some(i as u32),
                    chunks: Some(n),
                    customers,
                    ..batch.clone()
                })
                .collect()
        }
        _ => vec![batch],
    };
    Ok(bodies
        .iter()
        .map(|b| sign(key, &serde_json::to_vec(b).expect("JSON")))
        .collect())
}

/// Publishes payloads (QoS 1, in order) to `topic` on the broker at `url` (`mqtt://host:port`) and
/// waits for every acknowledgement.
pub async fn publish(url: &str, topic: &str, payloads: Vec<Vec<u8>>) -> Result<(), PublishError> {
    let u = url::Url::parse(url).map_err(|e| PublishError::Mqtt(format!("{url}: {e}")))?;
    if u.scheme() != "mqtt" {
        return Err(PublishError::Mqtt(format!(
            "{url}: the reference publisher speaks mqtt:// only"
        )));
    }
    let mut opts = MqttOptions::new(
        format!("beacond-sync-publish-{}", std::process::id()),
        u.host_str().unwrap_or("localhost"),
        u.port().unwrap_or(1883),
    );
    opts.set_max_packet_size(1024 * 1024, 4 * 1024 * 1024)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, payloads.len().max(1) + 10);
    let total = payloads.len();
    for p in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, p)
            .await
            .map_err(|e| PublishError::Mqtt(e.to_string()))?;
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked < total {
        let ev = tokio::time::timeout_at(deadline, events.poll())
            .await
            .map_err(|_| PublishError::Mqtt("timed out waiting for acknowledgements".into()))?
            .map_err(|e| PublishError::Mqtt(e.to_string()))?;
        if let Event::Incoming(Packet::PubAck(_)) = ev {
            acked += 1;
        }
    }
    let _ = client.disconnect().await;
    // Let the disconnect go out.
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(500), events.poll()).await {
        if let Event::Outgoing(Outgoing::Disconnect) = ev {
            break;
        }
    }
    Ok(())
}

/// The store id a batch file names, for building the topic.
pub fn store_of(json: &str) -> Option<String> {
    let v: Value = serde_json::from_str(json).ok()?;
    v.get("store")?.as_str().map(str::to_owned)
}
