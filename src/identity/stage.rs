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
    // meanwhile and known customers resolve as their part arrives.
    let started = std::time::Instant::now();
    let Some(loaded) = send_cache(&cache, false, &core).await else {
        return;
    };
    tracing::info!(
        customers = loaded,
        seq = state.applied(),
        ms = started.elapsed().as_millis() as u64,
        "customer cache loaded"
    );
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
                            Ok(Applied::Changes(changes)) => {
                                state.commit(now, &accepted);
                                for c in changes {
                                    if core.send(CoreCommand::Change(c)).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            Ok(Applied::Snapshot) => {
                                state.commit(now, &accepted);
                                if send_cache(&cache, true, &core).await.is_none() {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::error!(error = %e,
                                    "cannot write customer sync to the cache; the batch will be asked for again");
                                state.apply_failed(now, &accepted);
                                // An opt-out takes effect at once even when the card cannot
                                // record it: nothing may identify them from now on. The cache
                                // gets it when the batch comes again.
                                if let Some(change) = opt_outs(&accepted) {
                                    if core.send(CoreCommand::Change(change)).await.is_err() {
                                        return;
                                    }
                                }
                            }
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

/// Customers per [`DirectoryChange::Load`] part. With the core's command queue full of them, about
/// 64 × 1024 customers wait in memory besides the directory.
pub const LOAD_PART: usize = 1024;

/// The cache's customers as [`DirectoryChange::Load`] parts, in order: a start-up load
/// (`replace` false), or the list after a snapshot, whose last part forgets everyone it left out.
/// A record that cannot be read is logged and skipped, and then the last part forgets nobody: a
/// customer the hub failed to read is not one the platform removed.
pub fn load_parts(cache: &Cache, replace: bool) -> impl Iterator<Item = DirectoryChange> + '_ {
    let mut records = cache.iter().peekable();
    let mut first = true;
    let mut unreadable = 0u64;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut part = Vec::with_capacity(LOAD_PART);
        while part.len() < LOAD_PART {
            match records.next() {
                Some(Ok(c)) => part.push(c),
                Some(Err(e)) => {
                    unreadable += 1;
                    tracing::error!(error = %e, "skipping a customer the cache cannot read");
                }
                None => break,
            }
        }
        let last = records.peek().is_none();
        done = last;
        if last && replace && unreadable > 0 {
            tracing::error!(
                unreadable,
                "customers left out of the snapshot are kept until the next one: the cache could not be read whole"
            );
        }
        let change = DirectoryChange::Load {
            part,
            first,
            last,
            sweep: replace && last && unreadable == 0,
        };
        first = false;
        Some(change)
    })
}

/// Sends the cache to the core in parts; the number of customers sent, or `None` once the core
/// has gone.
async fn send_cache(cache: &Cache, replace: bool, core: &mpsc::Sender<CoreCommand>) -> Option<u64> {
    let mut sent = 0u64;
    for change in load_parts(cache, replace) {
        if let DirectoryChange::Load { part, .. } = &change {
            sent += part.len() as u64;
        }
        core.send(CoreCommand::Change(change)).await.ok()?;
    }
    Some(sent)
}

/// What applying a batch asks of the core.
enum Applied {
    /// These changes.
    Changes(Vec<DirectoryChange>),
    /// A snapshot is complete in the cache: the core takes the cache's list in its place.
    Snapshot,
}

/// Applies an accepted batch to the cache; returns what the core must be told.
/// The opt-outs a batch carries, as the change that removes them from the core.
fn opt_outs(accepted: &Accepted) -> Option<DirectoryChange> {
    match accepted {
        Accepted::Delta { delete, .. } if !delete.is_empty() => {
            Some(DirectoryChange::Delete(delete.clone()))
        }
        _ => None,
    }
}

fn apply(
    cache: &mut Cache,
    staging: &mut Option<Staging>,
    accepted: &Accepted,
) -> Result<Applied, super::cache::CacheError> {
    match accepted {
        Accepted::Delta {
            seq,
            upsert,
            delete,
        } => {
            cache.apply_delta(*seq, upsert, delete)?;
            let mut out: Vec<DirectoryChange> = opt_outs(accepted).into_iter().collect();
            if !upsert.is_empty() {
                out.push(DirectoryChange::Upsert(upsert.clone()));
            }
            Ok(Applied::Changes(out))
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
                return Ok(Applied::Changes(Vec::new()));
            }
            let s = staging.take().expect("staging");
            let count = s.count();
            cache.commit_snapshot(s, *seq)?;
            tracing::info!(seq, customers = count, "customer snapshot applied");
            Ok(Applied::Snapshot)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::record::CustomerEntry;

    fn entries(n: usize) -> Vec<CustomerEntry> {
        (0..n)
            .map(|i| CustomerEntry {
                id: format!("c-{i:05}"),
                segments: vec![],
                beacons: vec![],
                keys: None,
                updated_at: None,
            })
            .collect()
    }

    /// (customers, first, last, sweep) of each part.
    fn shape(cache: &Cache, replace: bool) -> Vec<(usize, bool, bool, bool)> {
        load_parts(cache, replace)
            .map(|c| match c {
                DirectoryChange::Load {
                    part,
                    first,
                    last,
                    sweep,
                } => (part.len(), first, last, sweep),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_cache_goes_to_the_core_in_parts_and_only_a_snapshot_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, _) = Cache::open(&dir.path().join("customers"), 1 << 20).unwrap();
        cache
            .apply_delta(1, &entries(2 * LOAD_PART + 7), &[])
            .unwrap();
        assert_eq!(
            shape(&cache, true),
            [
                (LOAD_PART, true, false, false),
                (LOAD_PART, false, false, false),
                (7, false, true, true)
            ]
        );
        assert!(shape(&cache, false).iter().all(|p| !p.3));
    }

    #[test]
    fn an_empty_snapshot_still_sweeps_everyone() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, _) = Cache::open(&dir.path().join("customers"), 1 << 20).unwrap();
        assert_eq!(shape(&cache, true), [(0, true, true, true)]);
    }

    #[test]
    fn a_record_that_cannot_be_read_is_skipped_and_then_nobody_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, _) = Cache::open(&dir.path().join("customers"), 1 << 20).unwrap();
        cache.apply_delta(1, &entries(LOAD_PART + 1), &[]).unwrap();
        cache.insert_raw("c-00003x", &[0xff; 3]);
        let parts = shape(&cache, true);
        assert_eq!(parts.iter().map(|p| p.0).sum::<usize>(), LOAD_PART + 1);
        assert_eq!(parts.last().unwrap(), &(1, false, true, false));
    }
}
