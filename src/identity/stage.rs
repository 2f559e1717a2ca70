//! The sync stage: the I/O around [`SyncState`]. Batches arrive from the MQTT connection, are
//! checked, written to the [`Cache`], and only then handed to the core as directory changes — so
//! what the core knows is always something the cache would give back after a power cut.

use tokio::sync::mpsc;

use super::cache::{Cache, Staging};
use super::sync::{Accepted, SyncState};
use crate::pipeline::{CoreCommand, DirectoryChange, SyncReport};
use crate::shutdown::Shutdown;
use crate::sink::mqtt::SyncInput;
use crate::time::Timestamp;

/// Runs until shutdown or until the connection goes away.
pub async fn run(
    mut cache: Cache,
    mut state: SyncState,
    mut inbound: mpsc::Receiver<SyncInput>,
    requests: mpsc::Sender<Vec<u8>>,
    core: mpsc::Sender<CoreCommand>,
    mut shutdown: Shutdown,
) {
    // Loading a large cache takes seconds (a million customers: about 3 s); the pipeline runs
    // meanwhile and known customers resolve once this arrives.
    let started = std::time::Instant::now();
    match cache.iter().collect::<Result<Vec<_>, _>>() {
        Ok(all) => {
            tracing::info!(
                customers = all.len(),
                seq = state.applied(),
                ms = started.elapsed().as_millis() as u64,
                "customer cache loaded"
            );
            if core
                .send(CoreCommand::Change(DirectoryChange::Upsert(all)))
                .await
                .is_err()
            {
                return;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the customer cache; asking the platform for a snapshot")
        }
    }
    let mut staging: Option<Staging> = None;
    loop {
        let due = state.poll_timeout();
        tokio::select! {
            _ = shutdown.recv() => break,
            input = inbound.recv() => match input {
                None => break,
                Some(SyncInput::Connected) => state.handle_connected(Timestamp::now()),
                Some(SyncInput::Batch(payload)) => {
                    let now = Timestamp::now();
                    match state.check(now, &payload) {
                        Ok(accepted) => match apply(&mut cache, &mut staging, &accepted) {
                            Ok(changes) => {
                                state.commit(now, &accepted);
                                for c in changes {
                                    if core.send(CoreCommand::Change(c)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Err(e) => tracing::error!(error = %e,
                                "cannot write customer sync to the cache; the batch will be asked for again"),
                        },
                        // A rejection names the reason, never the payload's bytes.
                        Err(e) => tracing::warn!(reason = e.reason(), "customer sync batch rejected: {e}"),
                    }
                }
            },
            _ = sleep_until_unix(due) => {}
        }
        while let Some(req) = state.poll_request(Timestamp::now()) {
            tracing::info!(
                from_seq = req.from_seq,
                "asking the platform for customer sync"
            );
            let _ = requests.try_send(serde_json::to_vec(&req).expect("JSON"));
        }
        let customers = cache.stats().map(|s| s.customers).unwrap_or(0);
        let report = SyncReport {
            counters: state.stats(),
            seq: state.applied(),
            customers,
        };
        if core.send(CoreCommand::SyncReport(report)).await.is_err() {
            return;
        }
    }
    let _ = cache.flush();
}

/// Applies an accepted batch to the cache; returns the changes for the core.
fn apply(
    cache: &mut Cache,
    staging: &mut Option<Staging>,
    accepted: &Accepted,
) -> Result<Vec<DirectoryChange>, super::cache::CacheError> {
    match accepted {
        Accepted::Delta {
            seq,
            upsert,
            delete,
        } => {
            cache.apply_delta(*seq, upsert, delete)?;
            let mut out = Vec::new();
            if !delete.is_empty() {
                out.push(DirectoryChange::Delete(delete.clone()));
            }
            if !upsert.is_empty() {
                out.push(DirectoryChange::Upsert(upsert.clone()));
            }
            Ok(out)
        }
        Accepted::Chunk {
            seq,
            first,
            complete,
            customers,
            ..
        } => {
            if *first || staging.is_none() {
                *staging = Some(cache.begin_snapshot()?);
            }
            let s = staging.as_mut().expect("staging");
            for c in customers {
                s.insert(c)?;
            }
            if !*complete {
                return Ok(Vec::new());
            }
            let s = staging.take().expect("staging");
            let count = s.count();
            cache.commit_snapshot(s, *seq)?;
            tracing::info!(seq, customers = count, "customer snapshot applied");
            let all = cache.iter().collect::<Result<Vec<_>, _>>()?;
            Ok(vec![DirectoryChange::Replace(all)])
        }
    }
}

async fn sleep_until_unix(due: Option<Timestamp>) {
    match due {
        Some(t) => {
            let wait = t.since(Timestamp::now());
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await
        }
        None => std::future::pending().await,
    }
}
