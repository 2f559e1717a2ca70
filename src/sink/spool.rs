//! The durable outbox: every message is written here (sled, flushed per batch) before the MQTT client
//! sees it, and removed only when the broker acknowledged it. After a crash or power cut everything
//! accepted is still here and is sent on restart.
//!
//! Bounded by `max_bytes`: when full, the lowest priority goes first (stats, then beacon health, then
//! the oldest presence events; offers last), and every drop is counted.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Drop order when the spool is full: lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Priority {
    /// Periodic counters.
    Stats = 0,
    /// Fixed-beacon fleet health.
    Beacons = 1,
    /// Enter, dwell, exit and headcounts.
    Presence = 2,
    /// Offer triggers.
    Offers = 3,
}

impl Priority {
    const ALL: [Priority; 4] = [
        Priority::Stats,
        Priority::Beacons,
        Priority::Presence,
        Priority::Offers,
    ];

    fn from_u8(v: u8) -> Option<Priority> {
        Priority::ALL.get(v as usize).copied()
    }

    /// The wire name, for stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Stats => "stats",
            Priority::Beacons => "beacons",
            Priority::Presence => "presence",
            Priority::Offers => "offers",
        }
    }
}

/// A message to keep until the broker has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Drop class.
    pub priority: Priority,
    /// 0 or 1.
    pub qos: u8,
    /// Full topic.
    pub topic: String,
    /// The customer it is about, if any: lets an opt-out purge it.
    pub customer: Option<String>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A stored message and its place in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Position; increases with every append, so order is preserved.
    pub seq: u64,
    /// The message.
    pub message: Message,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Messages appended.
    pub appended: u64,
    /// Messages removed after acknowledgement.
    pub acknowledged: u64,
    /// Messages dropped because the spool was full, by priority.
    pub dropped: [u64; 4],
}

/// The spool could not do what was asked.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// sled failed.
    #[error("spool at {}: {source}", path.display())]
    Db {
        /// The spool directory.
        path: PathBuf,
        /// Why.
        source: sled::Error,
    },
    /// A stored record could not be read (it is skipped and removed).
    #[error("spool at {}: corrupt record {seq}", path.display())]
    Corrupt {
        /// The spool directory.
        path: PathBuf,
        /// Its key.
        seq: u64,
    },
}

/// What happened when the spool was opened.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Messages found from a previous run.
    pub recovered: u64,
    /// If the old spool would not open, where it was moved and why: the daemon keeps running on a new
    /// one and reports this in `status`.
    pub moved_aside: Option<(PathBuf, String)>,
}

/// The outbox.
pub struct Spool {
    path: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    next_seq: u64,
    bytes: u64,
    max_bytes: u64,
    sizes: HashMap<u64, (Priority, u32)>,
    by_priority: [BTreeSet<u64>; 4],
    stats: SpoolStats,
}

fn encode(m: &Message) -> Vec<u8> {
    let cust = m.customer.as_deref().unwrap_or("");
    let mut v = Vec::with_capacity(6 + m.topic.len() + cust.len() + m.payload.len());
    v.push(m.priority as u8);
    v.push(m.qos);
    v.extend_from_slice(&(m.topic.len() as u16).to_be_bytes());
    v.extend_from_slice(m.topic.as_bytes());
    v.extend_from_slice(&(cust.len() as u16).to_be_bytes());
    v.extend_from_slice(cust.as_bytes());
    v.extend_from_slice(&m.payload);
    v
}

fn decode(v: &[u8]) -> Option<Message> {
    let priority = Priority::from_u8(*v.first()?)?;
    let qos = *v.get(1)?;
    let tl = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) as usize;
    let topic = std::str::from_utf8(v.get(4..4 + tl)?).ok()?.to_owned();
    let at = 4 + tl;
    let cl = u16::from_be_bytes([*v.get(at)?, *v.get(at + 1)?]) as usize;
    let cust = std::str::from_utf8(v.get(at + 2..at + 2 + cl)?).ok()?;
    let payload = v.get(at + 2 + cl..)?.to_vec();
    Some(Message {
        priority,
        qos,
        topic,
        customer: (!cust.is_empty()).then(|| cust.to_owned()),
        payload,
    })
}

/// sled writes whole segments when it flushes: small segments keep a flush of a few events from
/// costing an SD card megabytes.
const SEGMENT_SIZE: usize = 64 * 1024;

/// The bytes an entry counts for against `max_bytes`: its record plus sled's per-key overhead.
fn cost(record_len: usize) -> u32 {
    (record_len + 8 + 32) as u32
}

impl Spool {
    /// Opens (or creates) the spool in `dir` with a page cache of `cache_bytes`. A spool that will not
    /// open is moved aside to `dir.broken-<unix time>` and a new one started: losing the backlog is
    /// bad, refusing to run is worse.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        cache_bytes: u64,
    ) -> Result<(Spool, OpenReport), SpoolError> {
        let mut report = OpenReport::default();
        let (db, aside) =
            crate::storage::open_or_move_aside(dir, "spool", |d| Self::open_db(d, cache_bytes))
                .map_err(|source| SpoolError::Db {
                    path: dir.to_owned(),
                    source,
                })?;
        report.moved_aside = aside;
        let tree = db.open_tree("outbox").map_err(|source| SpoolError::Db {
            path: dir.to_owned(),
            source,
        })?;
        let mut spool = Spool {
            path: dir.to_owned(),
            db,
            tree,
            next_seq: 0,
            bytes: 0,
            max_bytes,
            sizes: HashMap::new(),
            by_priority: Default::default(),
            stats: SpoolStats::default(),
        };
        // One pass at start to rebuild the in-memory index (never `len()`, which walks the tree anyway).
        let mut corrupt = Vec::new();
        for item in spool.tree.iter() {
            let (k, v) = item.map_err(|source| SpoolError::Db {
                path: dir.to_owned(),
                source,
            })?;
            let Ok(key) = <[u8; 8]>::try_from(k.as_ref()) else {
                corrupt.push(k);
                continue;
            };
            let seq = u64::from_be_bytes(key);
            match decode(&v) {
                Some(m) => {
                    spool.index(seq, m.priority, cost(v.len()));
                    spool.next_seq = spool.next_seq.max(seq + 1);
                    report.recovered += 1;
                }
                None => corrupt.push(k),
            }
        }
        for k in corrupt {
            tracing::warn!(spool = %dir.display(), "removing an unreadable spool record");
            let _ = spool.tree.remove(k);
        }
        Ok((spool, report))
    }

    fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
        sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Explicit flushes per batch make the writes durable; the background flusher only adds
            // SD card wear.
            .flush_every_ms(None)
            .mode(sled::Mode::LowSpace)
            .segment_size(SEGMENT_SIZE)
            .open()
    }

    fn index(&mut self, seq: u64, p: Priority, size: u32) {
        self.sizes.insert(seq, (p, size));
        self.by_priority[p as usize].insert(seq);
        self.bytes += size as u64;
    }

    fn unindex(&mut self, seq: u64) -> Option<Priority> {
        let (p, size) = self.sizes.remove(&seq)?;
        self.by_priority[p as usize].remove(&seq);
        self.bytes -= size as u64;
        Some(p)
    }

    /// Appends messages in one atomic, flushed batch, dropping by priority to stay under `max_bytes`.
    /// Returns how many of `messages` were kept (an incoming message of the lowest priority is itself
    /// the first to go when nothing lower is stored).
    pub async fn append(&mut self, messages: Vec<Message>) -> Result<usize, SpoolError> {
        let mut batch = sled::Batch::default();
        let mut kept = 0;
        for m in messages {
            let record = encode(&m);
            let size = cost(record.len());
            if !self.make_room(m.priority, size as u64, &mut batch) {
                self.stats.dropped[m.priority as usize] += 1;
                continue;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            batch.insert(&seq.to_be_bytes(), record);
            self.index(seq, m.priority, size);
            self.stats.appended += 1;
            kept += 1;
        }
        self.commit(batch).await?;
        Ok(kept)
    }

    /// Applies a batch atomically and makes it durable.
    async fn commit(&self, batch: sled::Batch) -> Result<(), SpoolError> {
        self.tree
            .apply_batch(batch)
            .map_err(|source| self.db_err(source))?;
        self.flush().await
    }

    /// Frees space for `size` bytes of priority `p`; false if the new message is what should go.
    fn make_room(&mut self, p: Priority, size: u64, batch: &mut sled::Batch) -> bool {
        while self.bytes + size > self.max_bytes {
            let Some(victim_class) = Priority::ALL
                .iter()
                .find(|c| !self.by_priority[**c as usize].is_empty())
                .copied()
            else {
                // Larger than the whole spool: nothing to drop but itself.
                return false;
            };
            if victim_class > p {
                return false;
            }
            let seq = *self.by_priority[victim_class as usize]
                .first()
                .expect("non-empty class");
            self.unindex(seq);
            batch.remove(&seq.to_be_bytes());
            self.stats.dropped[victim_class as usize] += 1;
        }
        true
    }

    /// Removes acknowledged messages. Not flushed: if the removal is lost in a crash, the message is
    /// sent again, which at-least-once delivery allows.
    pub fn remove(&mut self, seqs: &[u64]) -> Result<(), SpoolError> {
        let mut batch = sled::Batch::default();
        for &seq in seqs {
            if self.unindex(seq).is_some() {
                batch.remove(&seq.to_be_bytes());
                self.stats.acknowledged += 1;
            }
        }
        self.tree
            .apply_batch(batch)
            .map_err(|source| self.db_err(source))
    }

    /// Removes every message about `customer` (an opt-out); returns how many.
    pub async fn purge_customer(&mut self, customer: &str) -> Result<u64, SpoolError> {
        let mut victims = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item.map_err(|source| self.db_err(source))?;
            if decode(&v).is_some_and(|m| m.customer.as_deref() == Some(customer)) {
                if let Ok(key) = <[u8; 8]>::try_from(k.as_ref()) {
                    victims.push(u64::from_be_bytes(key));
                }
            }
        }
        let mut batch = sled::Batch::default();
        for &seq in &victims {
            self.unindex(seq);
            batch.remove(&seq.to_be_bytes());
        }
        self.commit(batch).await?;
        Ok(victims.len() as u64)
    }

    /// Up to `n` entries at or after `seq`, in order, from one range scan.
    pub fn batch_from(&self, seq: u64, n: usize) -> Result<Vec<Entry>, SpoolError> {
        let mut out = Vec::with_capacity(n.min(1024));
        for item in self.tree.range(seq.to_be_bytes()..).take(n) {
            let (k, v) = item.map_err(|source| self.db_err(source))?;
            let Ok(key) = <[u8; 8]>::try_from(k.as_ref()) else {
                continue;
            };
            let seq = u64::from_be_bytes(key);
            let message = decode(&v).ok_or_else(|| SpoolError::Corrupt {
                path: self.path.clone(),
                seq,
            })?;
            out.push(Entry { seq, message });
        }
        Ok(out)
    }

    /// Messages waiting.
    pub fn depth(&self) -> u64 {
        self.sizes.len() as u64
    }

    /// Bytes waiting (as counted against `max_bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Counters.
    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    /// Flushes pending removals (at shutdown).
    pub async fn flush(&self) -> Result<(), SpoolError> {
        self.db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|source| self.db_err(source))
    }

    fn db_err(&self, source: sled::Error) -> SpoolError {
        SpoolError::Db {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(p: Priority, n: usize) -> Message {
        Message {
            priority: p,
            qos: 1,
            topic: format!("t/{n}"),
            customer: (p == Priority::Presence).then(|| format!("c{}", n % 3)),
            payload: vec![b'x'; 200],
        }
    }

    fn all(s: &Spool) -> Vec<Entry> {
        s.batch_from(0, usize::MAX).unwrap()
    }

    #[tokio::test]
    async fn messages_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        {
            let (mut s, r) = Spool::open(&path, 1 << 20, 1 << 20).unwrap();
            assert_eq!(r.recovered, 0);
            s.append((0..10).map(|i| msg(Priority::Presence, i)).collect())
                .await
                .unwrap();
            s.remove(&[0, 1]).unwrap();
        }
        let (s, r) = Spool::open(&path, 1 << 20, 1 << 20).unwrap();
        assert_eq!(r.recovered, 8);
        let got = all(&s);
        assert_eq!(got.len(), 8);
        assert_eq!(got[0].message, msg(Priority::Presence, 2));
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    #[tokio::test]
    async fn a_full_spool_drops_by_priority_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let first: Vec<Message> = [msg(Priority::Stats, 0), msg(Priority::Beacons, 1)]
            .into_iter()
            .chain((0..6).map(|i| msg(Priority::Presence, i)))
            .chain([msg(Priority::Offers, 0), msg(Priority::Offers, 1)])
            .collect();
        let cap: u64 = first.iter().map(|m| cost(encode(m).len()) as u64).sum();
        let (mut s, _) = Spool::open(&dir.path().join("s"), cap, 1 << 20).unwrap();
        s.append(first).await.unwrap();
        assert_eq!(s.depth(), 10);
        // Full. An offer pushes out the stats message first, then the beacon message, then the
        // oldest presence event.
        s.append(vec![msg(Priority::Offers, 2)]).await.unwrap();
        assert_eq!(s.stats().dropped, [1, 0, 0, 0]);
        s.append(vec![msg(Priority::Offers, 3), msg(Priority::Offers, 4)])
            .await
            .unwrap();
        assert_eq!(s.stats().dropped, [1, 1, 1, 0]);
        // The oldest presence event (t/0) went; the next ones stayed.
        let presence: Vec<String> = all(&s)
            .into_iter()
            .filter(|e| e.message.priority == Priority::Presence)
            .map(|e| e.message.topic)
            .collect();
        assert_eq!(presence.first().map(String::as_str), Some("t/1"));
        // A stats message into a spool full of higher priorities is itself dropped.
        s.append(vec![msg(Priority::Stats, 9)]).await.unwrap();
        assert_eq!(s.stats().dropped[0], 2);
        assert!(s.bytes() <= cap);
        // Offers are never dropped while anything lower remains.
        let offers = all(&s)
            .iter()
            .filter(|e| e.message.priority == Priority::Offers)
            .count();
        assert_eq!(offers, 5);
    }

    #[tokio::test]
    async fn an_opt_out_purges_that_customer_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(&dir.path().join("s"), 1 << 20, 1 << 20).unwrap();
        s.append((0..9).map(|i| msg(Priority::Presence, i)).collect())
            .await
            .unwrap();
        assert_eq!(s.purge_customer("c1").await.unwrap(), 3);
        assert!(all(&s)
            .iter()
            .all(|e| e.message.customer.as_deref() != Some("c1")));
        assert_eq!(s.depth(), 6);
    }

    #[tokio::test]
    async fn a_spool_that_will_not_open_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        // A file where the directory should be: sled cannot open it.
        std::fs::write(&path, b"not a database").unwrap();
        let (s, r) = Spool::open(&path, 1 << 20, 1 << 20).unwrap();
        let (aside, _) = r.moved_aside.expect("moved aside");
        assert!(aside.exists());
        assert_eq!(s.depth(), 0);
    }

    #[test]
    fn records_round_trip_and_garbage_is_rejected() {
        let m = msg(Priority::Presence, 4);
        assert_eq!(decode(&encode(&m)), Some(m));
        assert_eq!(decode(&[9, 1, 0]), None);
        assert_eq!(decode(&[2, 1, 0, 200, b'a']), None);
    }
}
