//! The durable outbox: every message is kept here until the broker acknowledged it. The MQTT sink
//! [`accept`](Spool::accept)s messages into memory, sends them at once, and
//! [`persist`](Spool::persist)s what is still waiting a moment later (one synced write), so what a
//! healthy broker acknowledges at once never costs the SD card a write. After a crash or power cut
//! everything persisted is still here and is sent on restart.
//!
//! Bounded by `max_bytes`: when full, the lowest priority goes first (stats, then beacon health, then
//! the oldest presence events; offers last), and every drop is counted.
//!
//! On disk it is an append-only log in segment files (`seg-NNNNNNNNNN.log`, up to 4 MiB each): a
//! message is a record appended to the newest segment, a removal is a small record naming the
//! sequence numbers removed, and a segment goes away when everything in it has been removed. A hub
//! runs from an SD card, and this is what a card wears least from: a batch costs the bytes of its
//! records and one sync, where the key-value store used before rewrote 64 KiB segments on every
//! flush (90–210 KB written per event at 1–2 events/s; docs/PERFORMANCE.md). Each record carries
//! a CRC, so a write torn by a power cut is found at open and cut off.
//!
//! When the card refuses a write (full, or failing), nothing already accepted is dropped for it:
//! messages are held in memory (at most [`HELD_MAX_BYTES`]) and sent from there like the rest,
//! removals wait too, and both are written with the next write that succeeds. The error is kept
//! for `status` until then; a message held in memory is lost only if the daemon stops before the
//! card takes it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Drop order when the spool is full: lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Priority {
    /// Periodic counters and headcounts.
    Stats = 0,
    /// Fixed-beacon fleet health.
    Beacons = 1,
    /// Enter, dwell and exit.
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
    /// Messages written to the card (the rest of those acknowledged never were: the broker had
    /// them before their write was due).
    pub written: u64,
    /// Messages dropped because the spool was full, by priority.
    pub dropped: [u64; 4],
}

/// The spool could not do what was asked.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// Reading or writing the spool's files failed.
    #[error("spool at {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process has the spool open.
    #[error("spool at {} is in use by another process (is beacond already running?)", path.display())]
    Locked {
        /// The spool directory.
        path: PathBuf,
    },
    /// A spool left by an older beacond (sled) could not be read to carry its messages over.
    #[error("spool at {}: reading the previous format: {source}", path.display())]
    Migrate {
        /// The spool directory.
        path: PathBuf,
        /// Why.
        source: sled::Error,
    },
    /// A stored record could not be read.
    #[error("spool at {}: corrupt record {seq}", path.display())]
    Corrupt {
        /// The spool directory.
        path: PathBuf,
        /// Its sequence number.
        seq: u64,
    },
}

impl SpoolError {
    /// Whether it is the disk's condition (full, over quota, read-only), not damage to the spool.
    pub fn is_disk_condition(&self) -> bool {
        matches!(self, SpoolError::Io { source, .. } if crate::storage::is_disk_condition_io(source))
    }
}

/// The card as the spool sees it, for the status: each change is said once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskState {
    /// Room for what the spool may still take.
    #[default]
    Ok,
    /// Less free space than `max_bytes` minus what waits: a long broker outage would fill the card.
    Low,
    /// The card refuses writes (messages are held in memory).
    Failing,
}

impl DiskState {
    /// The next state from the previous one: `free` bytes free on the card, `need` what the spool
    /// may still take. Low is left only at 10 % above the need, so a card hovering at the line
    /// does not flip the status with every batch.
    pub fn next(self, failing: bool, free: Option<u64>, need: u64) -> DiskState {
        if failing {
            return DiskState::Failing;
        }
        let Some(free) = free else {
            return DiskState::Ok;
        };
        let low = match self {
            DiskState::Low => free < need + need / 10,
            _ => free < need,
        };
        if low {
            DiskState::Low
        } else {
            DiskState::Ok
        }
    }
}

/// What happened when the spool was opened.
#[derive(Debug, Default)]
pub struct OpenReport {
    /// Messages found from a previous run.
    pub recovered: u64,
    /// If the old spool would not open, where it was moved and why: the daemon keeps running on a new
    /// one and reports this in `status`.
    pub moved_aside: Option<(PathBuf, String)>,
    /// Bytes cut off the end of the newest segment: a write torn by a crash or power cut.
    pub truncated_bytes: u64,
    /// Messages carried over from a spool in the format of an older beacond.
    pub migrated: u64,
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

/// The bytes an entry counts for against `max_bytes`: its record plus its framing and index entry.
fn cost(record_len: usize) -> u32 {
    (record_len + 8 + 32) as u32
}

/// Segment files are started afresh past this size.
const SEGMENT_BYTES: u64 = 4 << 20;
/// Record header: body length (u32 LE) and the body's CRC-32 (u32 LE).
const HEADER: usize = 8;
/// A record whose content was erased (an opt-out): skipped on reading.
const KIND_ERASED: u8 = 0;
/// A message: its sequence number (u64 LE) and the encoded message.
const KIND_MESSAGE: u8 = 1;
/// A removal: a count (u32 LE) and that many sequence numbers (u64 LE).
const KIND_REMOVAL: u8 = 2;
/// The segment number of a [`Loc`] whose record is held in memory, not on disk.
const IN_MEMORY: u32 = u32::MAX;
/// The most held in memory while the card refuses writes (or `max_bytes`, if smaller): beyond it
/// the lowest priority held goes first, counted like any drop. 8 MiB is what a 1 GB hub can spare.
pub const HELD_MAX_BYTES: u64 = 8 << 20;

/// Where a live message's record body is.
#[derive(Clone, Copy, Debug)]
struct Loc {
    segment: u32,
    offset: u64,
    len: u32,
    priority: Priority,
    cost: u32,
}

struct Segment {
    file: File,
    size: u64,
    /// Live messages whose record is in this segment.
    live: u64,
}

/// The outbox.
pub struct Spool {
    path: PathBuf,
    /// Held (an exclusive advisory lock) for as long as the spool is open.
    _lock: File,
    segments: BTreeMap<u32, Segment>,
    active: u32,
    live: BTreeMap<u64, Loc>,
    by_priority: [BTreeSet<u64>; 4],
    next_seq: u64,
    bytes: u64,
    max_bytes: u64,
    /// Where a segment is considered full ([`SEGMENT_BYTES`]; smaller in tests).
    segment_bytes: u64,
    stats: SpoolStats,
    /// Encoded messages the card would not take yet, by number (their [`Loc`] says [`IN_MEMORY`]).
    held: BTreeMap<u64, Vec<u8>>,
    /// What `held` counts for (by [`cost`]).
    held_bytes: u64,
    /// Removals a failed write did not record: written with the next write.
    pending_removals: Vec<u64>,
    /// Why the last write failed, until a write of everything held succeeds.
    write_error: Option<String>,
    /// Makes every write fail as a full card does (tests of the failure path).
    #[cfg(test)]
    fail_writes: bool,
}

fn frame(kind: u8, content: &[&[u8]], out: &mut Vec<u8>) -> u64 {
    let len = 1 + content.iter().map(|c| c.len()).sum::<usize>();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    for c in content {
        crc.update(c);
    }
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    let body_at = out.len() as u64;
    out.push(kind);
    for c in content {
        out.extend_from_slice(c);
    }
    body_at
}

fn removal_record(seqs: &[u64], out: &mut Vec<u8>) {
    let mut content = Vec::with_capacity(4 + 8 * seqs.len());
    content.extend_from_slice(&(seqs.len() as u32).to_le_bytes());
    for s in seqs {
        content.extend_from_slice(&s.to_le_bytes());
    }
    frame(KIND_REMOVAL, &[&content], out);
}

fn segment_name(n: u32) -> String {
    format!("seg-{n:010}.log")
}

fn segment_number(name: &str) -> Option<u32> {
    name.strip_prefix("seg-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// The files an older beacond's sled spool kept in the directory.
fn sled_files(dir: &Path) -> bool {
    dir.join("conf").exists() || dir.join("db").exists()
}

/// The file in the spool's directory whose exclusive lock the open spool holds.
const LOCK_FILE: &str = "lock";

impl Spool {
    /// Whether another process (a running daemon) has the spool in `dir` open; changes nothing.
    pub fn in_use(dir: &Path) -> bool {
        std::fs::File::open(dir.join(LOCK_FILE))
            .is_ok_and(|f| fs2::FileExt::try_lock_exclusive(&f).is_err())
    }

    /// Opens (or creates) the spool in `dir`. A spool that will not open is moved aside to
    /// `dir.broken-<unix time>` and a new one started: losing the backlog is bad, refusing to run is
    /// worse. One in use by another process is left alone and reported.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, OpenReport), SpoolError> {
        match Self::open_inner(dir, max_bytes) {
            Ok(r) => Ok(r),
            Err(e @ SpoolError::Locked { .. }) => Err(e),
            // A full or read-only card has not damaged the spool: keep it for when there is room.
            Err(e @ SpoolError::Io { .. }) if e.is_disk_condition() => Err(e),
            Err(e) => {
                let aside = crate::storage::move_aside(dir, "spool", &e);
                let (spool, mut report) = Self::open_inner(dir, max_bytes)?;
                report.moved_aside = Some((aside, e.to_string()));
                Ok((spool, report))
            }
        }
    }

    fn open_inner(dir: &Path, max_bytes: u64) -> Result<(Spool, OpenReport), SpoolError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SpoolError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        fs2::FileExt::try_lock_exclusive(&lock).map_err(|_| SpoolError::Locked {
            path: dir.to_owned(),
        })?;
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            if let Some(n) = entry.file_name().to_str().and_then(segment_number) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let mut spool = Spool {
            path: dir.to_owned(),
            _lock: lock,
            segments: BTreeMap::new(),
            active: 0,
            live: BTreeMap::new(),
            by_priority: Default::default(),
            next_seq: 0,
            bytes: 0,
            max_bytes,
            segment_bytes: SEGMENT_BYTES,
            stats: SpoolStats::default(),
            held: BTreeMap::new(),
            held_bytes: 0,
            pending_removals: Vec::new(),
            write_error: None,
            #[cfg(test)]
            fail_writes: false,
        };
        let mut report = OpenReport::default();
        let last = numbers.last().copied();
        for n in numbers {
            report.truncated_bytes += spool.replay(n, Some(n) == last)?;
        }
        match last {
            Some(n) if spool.segments[&n].size < spool.segment_bytes => spool.active = n,
            other => {
                let n = other.map_or(0, |n| n + 1);
                // A full card must not stop the hub from starting, nor have the backlog moved aside
                // as if it were broken: the segment is started at the first write that can be made.
                if let Err(e) = spool.start_segment(n) {
                    spool.active = n;
                    spool.write_failed(e, Vec::new());
                }
            }
        }
        if sled_files(dir) {
            report.migrated = spool.migrate_sled()?;
        }
        report.recovered = spool.live.len() as u64;
        spool.reclaim_or_note();
        Ok((spool, report))
    }

    /// Reads segment `n` into the index; returns the bytes cut off a torn end.
    fn replay(&mut self, n: u32, newest: bool) -> Result<u64, SpoolError> {
        let path = self.path.join(segment_name(n));
        let io = |source| SpoolError::Io {
            path: path.clone(),
            source,
        };
        let data = std::fs::read(&path).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        self.segments.insert(
            n,
            Segment {
                file,
                size: data.len() as u64,
                live: 0,
            },
        );
        let mut at = 0usize;
        while at + HEADER <= data.len() {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
            let Some(body) = data.get(at + HEADER..at + HEADER + len) else {
                break;
            };
            if len == 0 || crc32fast::hash(body) != crc || !self.apply(n, at + HEADER, body) {
                break;
            }
            at += HEADER + len;
        }
        self.segments.get_mut(&n).expect("inserted above").size = at as u64;
        let cut = data.len() - at;
        if cut > 0 {
            if newest {
                // A write the crash or power cut tore: it was never acknowledged as durable.
                let seg = &self.segments[&n];
                seg.file.set_len(at as u64).map_err(io)?;
                seg.file.sync_data().map_err(io)?;
                tracing::warn!(segment = %path.display(), bytes = cut, "cut a torn write off the spool");
            } else {
                tracing::error!(segment = %path.display(), bytes = cut,
                    "unreadable records in the middle of the spool; skipping them");
            }
        }
        Ok(cut as u64)
    }

    /// Applies one record read at open; false if it makes no sense (treated as the end of the
    /// readable part).
    fn apply(&mut self, segment: u32, body_at: usize, body: &[u8]) -> bool {
        match body[0] {
            KIND_ERASED => true,
            KIND_MESSAGE => {
                let Some(seq) = body
                    .get(1..9)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
                else {
                    return false;
                };
                let Some(m) = decode(&body[9..]) else {
                    return false;
                };
                // A message copied forward by compaction is met twice: the later copy wins.
                self.unindex(seq);
                self.index(
                    seq,
                    Loc {
                        segment,
                        offset: body_at as u64,
                        len: body.len() as u32,
                        priority: m.priority,
                        cost: cost(body.len() - 9),
                    },
                );
                self.next_seq = self.next_seq.max(seq + 1);
                true
            }
            KIND_REMOVAL => {
                let Some(count) = body
                    .get(1..5)
                    .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                else {
                    return false;
                };
                let Some(seqs) = body.get(5..5 + 8 * count as usize) else {
                    return false;
                };
                for chunk in seqs.chunks_exact(8) {
                    let seq = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                    self.unindex(seq);
                    // Never reuse a number a removal names: that removal would take the new message.
                    self.next_seq = self.next_seq.max(seq + 1);
                }
                true
            }
            _ => false,
        }
    }

    fn start_segment(&mut self, n: u32) -> Result<(), SpoolError> {
        let path = self.path.join(segment_name(n));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| SpoolError::Io {
                path: path.clone(),
                source,
            })?;
        // The new file's name must survive a power cut along with what is written to it.
        if let Ok(d) = File::open(&self.path) {
            let _ = d.sync_all();
        }
        self.segments.insert(
            n,
            Segment {
                file,
                size: 0,
                live: 0,
            },
        );
        self.active = n;
        Ok(())
    }

    /// Carries the messages of an older beacond's sled spool over, then deletes its files.
    fn migrate_sled(&mut self) -> Result<u64, SpoolError> {
        let err = |source| SpoolError::Migrate {
            path: self.path.clone(),
            source,
        };
        let mut found = Vec::new();
        {
            let db = sled::Config::new().path(&self.path).open().map_err(err)?;
            let tree = db.open_tree("outbox").map_err(err)?;
            for item in tree.iter() {
                let (k, v) = item.map_err(err)?;
                let (Ok(key), Some(m)) = (<[u8; 8]>::try_from(k.as_ref()), decode(&v)) else {
                    continue;
                };
                found.push((u64::from_be_bytes(key), m));
            }
        }
        // Numbers continue after those already in the log, keeping the old order. A crash before the
        // old files are gone carries them over again next time: sent twice, which at-least-once
        // delivery allows.
        let base = self.next_seq;
        let records = found
            .iter()
            .map(|(seq, m)| (base + seq, m.priority, encode(m)))
            .collect();
        self.place_synced(records)?;
        for name in ["conf", "db", "blobs", "snap.tmp"] {
            let p = self.path.join(name);
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
        if let Ok(rd) = std::fs::read_dir(&self.path) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("snap.") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if !found.is_empty() {
            tracing::info!(
                messages = found.len(),
                "carried the spool over from the previous format"
            );
        }
        Ok(found.len() as u64)
    }

    fn index(&mut self, seq: u64, loc: Loc) {
        if let Some(seg) = self.segments.get_mut(&loc.segment) {
            seg.live += 1;
        }
        if loc.segment == IN_MEMORY {
            self.held_bytes += loc.cost as u64;
        }
        self.by_priority[loc.priority as usize].insert(seq);
        self.bytes += loc.cost as u64;
        self.live.insert(seq, loc);
    }

    fn unindex(&mut self, seq: u64) -> Option<Loc> {
        let loc = self.live.remove(&seq)?;
        if let Some(seg) = self.segments.get_mut(&loc.segment) {
            seg.live -= 1;
        }
        if loc.segment == IN_MEMORY {
            self.held.remove(&seq);
            self.held_bytes -= loc.cost as u64;
        }
        self.by_priority[loc.priority as usize].remove(&seq);
        self.bytes -= loc.cost as u64;
        Some(loc)
    }

    /// Writes `buf` at the end of the active segment (starting a new one first if it is full);
    /// returns where it starts. Not synced.
    /// A write that fails leaves the file as it was (what it wrote is cut off again).
    fn write_active(&mut self, buf: &[u8]) -> Result<u64, SpoolError> {
        match self.segments.get(&self.active) {
            // Not there: the card would not let it be created at open.
            None => self.start_segment(self.active)?,
            Some(seg) if seg.size >= self.segment_bytes => self.start_segment(self.active + 1)?,
            Some(_) => {}
        }
        let path = self.path.join(segment_name(self.active));
        #[cfg(test)]
        let fail = self.fail_writes;
        let seg = self.segments.get_mut(&self.active).expect("active segment");
        let start = seg.size;
        #[cfg(test)]
        if fail {
            return Err(SpoolError::Io {
                path,
                source: std::io::Error::from_raw_os_error(28),
            });
        }
        if let Err(source) = seg.file.write_all_at(buf, start) {
            // Part of it may be in the file: cut off, it cannot be taken for a record at the next
            // open, nor stay behind as garbage after the records written next.
            let _ = seg.file.set_len(start);
            return Err(SpoolError::Io { path, source });
        }
        seg.size += buf.len() as u64;
        Ok(start)
    }

    /// Undoes [`Self::write_active`]'s write at `start` (its sync failed: it may never reach the
    /// card, and it is written again with the next write).
    fn unwrite_active(&mut self, start: u64) {
        if let Some(seg) = self.segments.get_mut(&self.active) {
            seg.size = start;
            let _ = seg.file.set_len(start);
        }
    }

    /// Keeps a write's failure for `status`, logging it once (a full card must not also fill the
    /// journal that shares it), and holds `unwritten` in memory.
    fn write_failed(&mut self, e: SpoolError, unwritten: Vec<(u64, Vec<u8>)>) {
        self.held.extend(unwritten);
        if self.write_error.is_none() {
            tracing::error!(error = %e, held = self.held.len(),
                "cannot write the spool to disk; holding messages in memory until it can (free space on the card, or replace it)");
        }
        self.write_error = Some(e.to_string());
    }

    fn reclaim_or_note(&mut self) {
        if let Err(e) = self.reclaim() {
            self.write_failed(e, Vec::new());
        }
    }

    /// Writes everything held in memory, then `new` (numbered and indexed as held, newer than
    /// all held), and the pending removals, in one synced write. On failure all of it stays held,
    /// to be tried again with the next write.
    async fn write_held(&mut self, new: Vec<(u64, Vec<u8>)>) {
        // A message of `new` that made room for a later one is no longer live.
        let new: Vec<(u64, Vec<u8>)> = new
            .into_iter()
            .filter(|(seq, _)| self.live.contains_key(seq))
            .collect();
        if self.held.is_empty() && new.is_empty() && self.pending_removals.is_empty() {
            return;
        }
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(self.held.len() + new.len());
        for (&seq, record) in self.held.iter().chain(new.iter().map(|(s, r)| (s, r))) {
            offsets.push((
                seq,
                record.len(),
                frame(KIND_MESSAGE, &[&seq.to_le_bytes(), record], &mut buf),
            ));
        }
        if !self.pending_removals.is_empty() {
            removal_record(&self.pending_removals, &mut buf);
        }
        let start = match self.write_active(&buf) {
            Ok(start) => start,
            // A card with little room may be full of this segment's acknowledged records, and a
            // segment only goes once a newer one is active: start one, let the emptied go, and
            // try once more.
            Err(_) if self.start_segment_for_room() => match self.write_active(&buf) {
                Ok(start) => start,
                Err(e) => return self.write_failed(e, new),
            },
            Err(e) => return self.write_failed(e, new),
        };
        if let Err(e) = self.flush_active().await {
            self.unwrite_active(start);
            return self.write_failed(e, new);
        }
        // Moved in place: same numbers and priorities, so only where they are changes.
        let written = offsets.len();
        self.stats.written += written as u64;
        self.held.clear();
        self.held_bytes = 0;
        for (seq, len, at) in offsets {
            let loc = self.live.get_mut(&seq).expect("held messages are live");
            loc.segment = self.active;
            loc.offset = start + at;
            loc.len = (len + 9) as u32;
        }
        self.segments
            .get_mut(&self.active)
            .expect("written to")
            .live += written as u64;
        self.pending_removals.clear();
        if self.write_error.take().is_some() {
            tracing::info!(
                written,
                "the spool writes to disk again; what was held in memory is on disk"
            );
        }
        self.reclaim_or_note();
    }

    /// Starts a new segment after a failed write, unless the active one is empty (so a card that
    /// keeps refusing writes does not collect empty files); true if one was started.
    fn start_segment_for_room(&mut self) -> bool {
        if self.segments.get(&self.active).is_none_or(|s| s.size == 0) {
            return false;
        }
        if self.start_segment(self.active + 1).is_err() {
            return false;
        }
        self.reclaim_or_note();
        true
    }

    /// Keeps what is held in memory within its bound, lowest priority and oldest first (one pass
    /// per class: it runs after every append while the card refuses writes).
    fn bound_held(&mut self) {
        let max = self.max_bytes.min(HELD_MAX_BYTES);
        for class in Priority::ALL {
            if self.held_bytes <= max {
                return;
            }
            let mut excess = self.held_bytes - max;
            let victims: Vec<u64> = self
                .held
                .keys()
                .filter(|s| self.live[s].priority == class)
                .take_while(|s| {
                    let more = excess > 0;
                    excess = excess.saturating_sub(self.live[s].cost as u64);
                    more
                })
                .copied()
                .collect();
            for seq in victims {
                self.unindex(seq);
                self.stats.dropped[class as usize] += 1;
            }
        }
    }

    fn sync_blocking(&self) -> Result<(), SpoolError> {
        match self.segments.get(&self.active) {
            Some(seg) => seg.file.sync_data().map_err(|source| self.io_err(source)),
            None => Ok(()),
        }
    }

    /// Appends messages in one synced write, dropping by priority to stay under `max_bytes`.
    /// Returns how many of `messages` were kept (an incoming message of the lowest priority is itself
    /// the first to go when nothing lower is stored). A card that refuses the write does not lose
    /// them: they are held in memory (see the module's doc) and [`Self::write_error`] says why.
    pub async fn append(&mut self, messages: Vec<Message>) -> usize {
        let (placed, kept) = self.number(messages);
        self.write_held(placed).await;
        self.bound_held();
        kept
    }

    /// Takes messages into memory, numbered and bounded as [`Self::append`] does, without writing
    /// them: they can be sent at once, and [`Self::persist`] writes those still waiting. A message
    /// the broker acknowledges before then never costs the card a write. Returns how many were kept.
    pub fn accept(&mut self, messages: Vec<Message>) -> usize {
        let (placed, kept) = self.number(messages);
        self.held.extend(placed);
        self.bound_held();
        kept
    }

    /// Writes what [`Self::accept`] took and is still waiting (and anything held since a failed
    /// write), in one synced write; nothing at all when everything was acknowledged.
    pub async fn persist(&mut self) {
        self.write_held(Vec::new()).await;
        self.bound_held();
    }

    /// Messages in memory and not yet on the card: accepted and not yet persisted, or refused.
    pub fn unwritten(&self) -> usize {
        self.held.len()
    }

    /// Numbers and indexes `messages` as in memory, making room by priority; returns the encoded
    /// records of those still live and how many of `messages` were kept.
    fn number(&mut self, messages: Vec<Message>) -> (Vec<(u64, Vec<u8>)>, usize) {
        let mut placed = Vec::new();
        let mut dropped = Vec::new();
        for m in messages {
            let record = encode(&m);
            let size = cost(record.len());
            if !self.make_room(m.priority, size as u64, &mut dropped) {
                self.stats.dropped[m.priority as usize] += 1;
                continue;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            // Indexed as in memory until a write gives it a place on disk (its record travels in
            // `placed`, and goes to `held` unless written now): counted at once, so the room made
            // for the next message counts this one.
            self.index(
                seq,
                Loc {
                    segment: IN_MEMORY,
                    offset: 0,
                    len: 0,
                    priority: m.priority,
                    cost: size,
                },
            );
            placed.push((seq, record));
            self.stats.appended += 1;
        }
        self.pending_removals.extend(dropped);
        // A message of this batch that made room for a later one is no longer live.
        placed.retain(|(s, _)| self.live.contains_key(s));
        let kept = placed.len();
        (placed, kept)
    }

    /// Frees space for `size` bytes of priority `p`; false if the new message is what should go.
    fn make_room(&mut self, p: Priority, size: u64, dropped: &mut Vec<u64>) -> bool {
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
            // A victim on disk needs a removal record; one held in memory is simply gone.
            if self.unindex(seq).is_some_and(|l| l.segment != IN_MEMORY) {
                dropped.push(seq);
            }
            self.stats.dropped[victim_class as usize] += 1;
        }
        true
    }

    /// Removes acknowledged messages. Not synced: if the removal is lost in a crash, the message is
    /// sent again, which at-least-once delivery allows.
    /// One the card refuses is written with the next write; segments emptied are deleted anyway,
    /// which is how a full card gets its space back once the broker takes the backlog.
    pub fn remove(&mut self, seqs: &[u64]) {
        let mut on_disk = Vec::new();
        for &seq in seqs {
            if let Some(loc) = self.unindex(seq) {
                self.stats.acknowledged += 1;
                if loc.segment != IN_MEMORY {
                    on_disk.push(seq);
                }
            }
        }
        if on_disk.is_empty() {
            return;
        }
        self.pending_removals.extend(on_disk);
        let mut buf = Vec::new();
        removal_record(&self.pending_removals, &mut buf);
        match self.write_active(&buf) {
            Ok(_) => self.pending_removals.clear(),
            Err(e) => self.write_failed(e, Vec::new()),
        }
        self.reclaim_or_note();
    }

    /// Deletes segments from the oldest while nothing in them is live, and copies the last live
    /// messages out of the oldest when removed messages take up more than the spool's bound.
    /// Only ever the oldest goes: a removal record can name messages in older segments only, so
    /// deleting from the front never brings a removed message back.
    fn reclaim(&mut self) -> Result<(), SpoolError> {
        loop {
            let Some((&oldest, seg)) = self.segments.iter().next() else {
                return Ok(());
            };
            if oldest == self.active {
                return Ok(());
            }
            if seg.live > 0 {
                let on_disk: u64 = self.segments.values().map(|s| s.size).sum();
                if on_disk <= 2 * self.max_bytes.max(self.segment_bytes) + self.segment_bytes {
                    return Ok(());
                }
                self.copy_forward(oldest)?;
            }
            self.segments.remove(&oldest);
            let path = self.path.join(segment_name(oldest));
            std::fs::remove_file(&path).map_err(|source| SpoolError::Io { path, source })?;
        }
    }

    /// Rewrites segment `n`'s live messages at the end of the log (same numbers), synced.
    fn copy_forward(&mut self, n: u32) -> Result<(), SpoolError> {
        let seqs: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, l)| l.segment == n)
            .map(|(s, _)| *s)
            .collect();
        let mut records = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let loc = self.live[&seq];
            let body = self.read_body(loc)?;
            records.push((seq, loc.priority, body[9..].to_vec()));
        }
        self.place_synced(records)
    }

    /// Writes messages (number, priority, encoded message) at the end of the log, synced, and
    /// indexes them there; a number already indexed moves to its new place.
    fn place_synced(&mut self, records: Vec<(u64, Priority, Vec<u8>)>) -> Result<(), SpoolError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(records.len());
        for (seq, _, record) in &records {
            offsets.push(frame(KIND_MESSAGE, &[&seq.to_le_bytes(), record], &mut buf));
        }
        let start = self.write_active(&buf)?;
        self.sync_blocking()?;
        for ((seq, priority, record), at) in records.into_iter().zip(offsets) {
            self.unindex(seq);
            self.index(
                seq,
                Loc {
                    segment: self.active,
                    offset: start + at,
                    len: (record.len() + 9) as u32,
                    priority,
                    cost: cost(record.len()),
                },
            );
            self.next_seq = self.next_seq.max(seq + 1);
        }
        Ok(())
    }

    /// Message `seq` at `loc`, on disk or held in memory.
    fn read_message(&self, seq: u64, loc: Loc) -> Result<Message, SpoolError> {
        let corrupt = || SpoolError::Corrupt {
            path: self.path.clone(),
            seq,
        };
        if loc.segment == IN_MEMORY {
            return decode(self.held.get(&seq).ok_or_else(corrupt)?).ok_or_else(corrupt);
        }
        decode(&self.read_body(loc)?[9..]).ok_or_else(corrupt)
    }

    fn read_body(&self, loc: Loc) -> Result<Vec<u8>, SpoolError> {
        let mut body = vec![0u8; loc.len as usize];
        self.segments[&loc.segment]
            .file
            .read_exact_at(&mut body, loc.offset)
            .map_err(|source| self.io_err(source))?;
        Ok(body)
    }

    /// Removes every message about `customer` (an opt-out); returns how many. Their records are
    /// overwritten in place, so nothing about the customer stays on the card.
    pub async fn purge_customer(&mut self, customer: &str) -> Result<u64, SpoolError> {
        let mut victims = Vec::new();
        for (&seq, &loc) in &self.live {
            let m = self.read_message(seq, loc);
            if m.is_ok_and(|m| m.customer.as_deref() == Some(customer)) {
                victims.push((seq, loc));
            }
        }
        let mut touched = BTreeSet::new();
        for &(seq, loc) in &victims {
            if loc.segment == IN_MEMORY {
                self.unindex(seq);
                continue;
            }
            let mut erased = Vec::with_capacity(HEADER + loc.len as usize);
            frame(
                KIND_ERASED,
                &[&vec![0u8; loc.len as usize - 1]],
                &mut erased,
            );
            self.segments[&loc.segment]
                .file
                .write_all_at(&erased, loc.offset - HEADER as u64)
                .map_err(|source| self.io_err(source))?;
            touched.insert(loc.segment);
            self.unindex(seq);
        }
        for n in touched {
            self.segments[&n]
                .file
                .sync_data()
                .map_err(|source| self.io_err(source))?;
        }
        self.reclaim_or_note();
        Ok(victims.len() as u64)
    }

    /// Up to `n` entries at or after `seq`, in order.
    pub fn batch_from(&self, seq: u64, n: usize) -> Result<Vec<Entry>, SpoolError> {
        let mut out = Vec::with_capacity(n.min(1024));
        for (&seq, &loc) in self.live.range(seq..).take(n) {
            let message = self.read_message(seq, loc)?;
            out.push(Entry { seq, message });
        }
        Ok(out)
    }

    /// Messages waiting.
    pub fn depth(&self) -> u64 {
        self.live.len() as u64
    }

    /// Bytes waiting (as counted against `max_bytes`).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Counters.
    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    /// Bytes free on the card that holds the spool (for an unprivileged process), if it can tell.
    pub fn disk_free_bytes(&self) -> Option<u64> {
        fs2::available_space(&self.path).ok()
    }

    /// What the spool may still take before `max_bytes`: the room it needs on the card.
    pub fn room_needed(&self) -> u64 {
        self.max_bytes.saturating_sub(self.bytes)
    }

    /// Messages held in memory because the card refused them (while it does, what
    /// [`Self::accept`] took since is counted too: it waits for the same write).
    pub fn held(&self) -> u64 {
        match self.write_error {
            Some(_) => self.held.len() as u64,
            None => 0,
        }
    }

    /// Why the card refuses writes, while it does (cleared by a write of everything held).
    pub fn write_error(&self) -> Option<&str> {
        self.write_error.as_deref()
    }

    /// Makes everything accepted durable, as far as the card allows (at shutdown): what is held
    /// in memory is written, then removals are synced. Held messages the card still refuses are
    /// lost when the process ends, and logged as such.
    pub async fn flush(&mut self) -> Result<(), SpoolError> {
        self.write_held(Vec::new()).await;
        if !self.held.is_empty() {
            tracing::error!(
                messages = self.held.len(),
                "the card still refuses the spool's writes; messages held in memory are lost at exit"
            );
        }
        self.flush_active().await
    }

    /// Syncs the active segment.
    async fn flush_active(&self) -> Result<(), SpoolError> {
        let Some(seg) = self.segments.get(&self.active) else {
            return Ok(());
        };
        let file = seg.file.try_clone().map_err(|source| self.io_err(source))?;
        // A sync on an SD card can take tens of milliseconds: off the async workers.
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|e| self.io_err(std::io::Error::other(e)))?
            .map_err(|source| self.io_err(source))
    }

    fn io_err(&self, source: std::io::Error) -> SpoolError {
        SpoolError::Io {
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
            let (mut s, r) = Spool::open(&path, 1 << 20).unwrap();
            assert_eq!(r.recovered, 0);
            s.append((0..10).map(|i| msg(Priority::Presence, i)).collect())
                .await;
            s.remove(&[0, 1]);
        }
        let (s, r) = Spool::open(&path, 1 << 20).unwrap();
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
        let (mut s, _) = Spool::open(&dir.path().join("s"), cap).unwrap();
        s.append(first).await;
        assert_eq!(s.depth(), 10);
        // Full. An offer pushes out the stats message first, then the beacon message, then the
        // oldest presence event.
        s.append(vec![msg(Priority::Offers, 2)]).await;
        assert_eq!(s.stats().dropped, [1, 0, 0, 0]);
        s.append(vec![msg(Priority::Offers, 3), msg(Priority::Offers, 4)])
            .await;
        assert_eq!(s.stats().dropped, [1, 1, 1, 0]);
        // The oldest presence event (t/0) went; the next ones stayed.
        let presence: Vec<String> = all(&s)
            .into_iter()
            .filter(|e| e.message.priority == Priority::Presence)
            .map(|e| e.message.topic)
            .collect();
        assert_eq!(presence.first().map(String::as_str), Some("t/1"));
        // A stats message into a spool full of higher priorities is itself dropped.
        s.append(vec![msg(Priority::Stats, 9)]).await;
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
        let (mut s, _) = Spool::open(&dir.path().join("s"), 1 << 20).unwrap();
        s.append((0..9).map(|i| msg(Priority::Presence, i)).collect())
            .await;
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
        let (s, r) = Spool::open(&path, 1 << 20).unwrap();
        let (aside, _) = r.moved_aside.expect("moved aside");
        assert!(aside.exists());
        assert_eq!(s.depth(), 0);
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        v.sort();
        v
    }

    fn bytes_on_disk(dir: &Path) -> u64 {
        segment_files(dir)
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    }

    #[tokio::test]
    async fn what_is_acknowledged_before_its_write_is_due_never_reaches_the_card() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        {
            let (mut s, _) = Spool::open(&path, 1 << 20).unwrap();
            assert_eq!(
                s.accept((0..5).map(|i| msg(Priority::Presence, i)).collect()),
                5
            );
            // Sendable at once, from memory, and not on the card yet.
            assert_eq!(all(&s).len(), 5);
            assert_eq!(bytes_on_disk(&path), 0);
            assert_eq!(s.held(), 0, "not held for a refusing card");
            // The broker acknowledges three before the write is due: only two are written.
            s.remove(&[0, 1, 3]);
            s.persist().await;
            assert_eq!(s.stats().written, 2);
            assert_eq!(s.stats().acknowledged, 3);
            let on_disk = bytes_on_disk(&path);
            assert!(on_disk > 0);
            // Everything acknowledged: the next write due writes nothing at all.
            s.accept(vec![msg(Priority::Offers, 5)]);
            s.remove(&[5]);
            s.persist().await;
            assert_eq!(bytes_on_disk(&path), on_disk);
            assert_eq!(s.stats().written, 2);
            // A card that refuses the write: what waits is held, and counted as held, until it
            // takes it.
            s.fail_writes = true;
            s.accept(vec![msg(Priority::Offers, 6)]);
            s.persist().await;
            assert_eq!((s.held(), s.stats().written), (1, 2));
            s.fail_writes = false;
            s.persist().await;
            assert_eq!((s.held(), s.stats().written), (0, 3));
            s.remove(&[6]);
            // Dropped without a flush, as a crash would: what was written is there.
        }
        let (s, r) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(r.recovered, 2);
        let got = all(&s);
        assert_eq!(got[0].message, msg(Priority::Presence, 2));
        assert_eq!(got[1].message, msg(Priority::Presence, 4));
    }

    #[tokio::test]
    async fn a_write_torn_by_a_power_cut_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let end = {
            let (mut s, _) = Spool::open(&path, 1 << 20).unwrap();
            s.append((0..5).map(|i| msg(Priority::Presence, i)).collect())
                .await;
            s.segments[&s.active].size
        };
        // Half a record: a header that promises more than was written.
        let seg = segment_files(&path).pop().unwrap();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[200, 0, 0, 0, 1, 2, 3, 4, KIND_MESSAGE, 9], end)
            .unwrap();
        drop(f);
        let (mut s, r) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!((r.recovered, r.truncated_bytes), (5, 10));
        assert!(r.moved_aside.is_none());
        s.append(vec![msg(Priority::Offers, 5)]).await;
        drop(s);
        let (s, r) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!((r.recovered, r.truncated_bytes), (6, 0));
        assert_eq!(all(&s)[5].message, msg(Priority::Offers, 5));
    }

    #[tokio::test]
    async fn acknowledged_segments_are_deleted_and_numbers_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let (mut s, _) = Spool::open(&path, 1 << 24).unwrap();
        s.segment_bytes = 8 * 1024;
        for round in 0..20 {
            s.append(
                (0..20)
                    .map(|i| msg(Priority::Presence, round * 20 + i))
                    .collect(),
            )
            .await;
        }
        assert!(segment_files(&path).len() > 5);
        let seqs: Vec<u64> = all(&s).iter().map(|e| e.seq).collect();
        s.remove(&seqs[..390]);
        // Only what holds the ten live messages, and the active segment, are left.
        assert!(
            segment_files(&path).len() <= 2,
            "{:?}",
            segment_files(&path)
        );
        s.flush().await.unwrap();
        drop(s);
        let (mut s, r) = Spool::open(&path, 1 << 24).unwrap();
        assert_eq!(r.recovered, 10);
        s.append(vec![msg(Priority::Offers, 0)]).await;
        let got = all(&s);
        assert_eq!(got.len(), 11);
        assert!(got[10].seq > seqs[399], "a removed number was reused");
    }

    #[tokio::test]
    async fn a_message_stuck_in_the_oldest_segment_is_copied_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let (mut s, _) = Spool::open(&path, 8 * 1024).unwrap();
        s.segment_bytes = 4 * 1024;
        s.append(vec![msg(Priority::Offers, 0)]).await;
        let stuck = all(&s)[0].seq;
        // Everything after it is acknowledged; it stays (the broker never took it).
        for i in 1..400 {
            s.append(vec![msg(Priority::Presence, i)]).await;
            let last = all(&s).last().unwrap().seq;
            s.remove(&[last]);
        }
        let on_disk: u64 = segment_files(&path)
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum();
        assert!(
            on_disk <= 2 * 8 * 1024 + 2 * 4 * 1024,
            "{on_disk} bytes on disk"
        );
        drop(s);
        let (s, _) = Spool::open(&path, 8 * 1024).unwrap();
        let got = all(&s);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].seq, &got[0].message),
            (stuck, &msg(Priority::Offers, 0))
        );
    }

    #[tokio::test]
    async fn an_opt_out_leaves_no_trace_of_the_customer_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let (mut s, _) = Spool::open(&path, 1 << 20).unwrap();
        s.append((0..9).map(|i| msg(Priority::Presence, i)).collect())
            .await;
        let on_disk = |needle: &[u8]| {
            segment_files(&path).iter().any(|p| {
                std::fs::read(p)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
            })
        };
        assert!(on_disk(b"c1"));
        s.purge_customer("c1").await.unwrap();
        assert!(!on_disk(b"c1"));
        drop(s);
        let (s, r) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!((r.recovered, r.truncated_bytes), (6, 0));
        assert!(all(&s)
            .iter()
            .all(|e| e.message.customer.as_deref() != Some("c1")));
    }

    #[tokio::test]
    async fn a_second_opener_is_told_the_spool_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let (_s, _) = Spool::open(&path, 1 << 20).unwrap();
        let err = Spool::open(&path, 1 << 20).err().expect("locked");
        assert!(matches!(err, SpoolError::Locked { .. }), "{err}");
        assert!(!path.with_extension("broken").exists());
    }

    #[tokio::test]
    async fn a_spool_from_an_older_beacond_is_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        {
            let db = sled::Config::new().path(&path).open().unwrap();
            let tree = db.open_tree("outbox").unwrap();
            for i in 0..4u64 {
                tree.insert(
                    i.to_be_bytes(),
                    encode(&msg(Priority::Presence, i as usize)),
                )
                .unwrap();
            }
            db.flush().unwrap();
        }
        let (s, r) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!((r.migrated, r.recovered), (4, 4));
        let topics: Vec<String> = all(&s).into_iter().map(|e| e.message.topic).collect();
        assert_eq!(topics, ["t/0", "t/1", "t/2", "t/3"]);
        assert!(!path.join("conf").exists() && !path.join("db").exists());
        drop(s);
        let (_, r) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!((r.migrated, r.recovered), (0, 4));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Append(Vec<(u8, u8)>),
        Remove(Vec<prop::sample::Index>),
        Purge(u8),
        Reopen,
        /// A crash in the middle of the next write: reopen with half a record at the end.
        Torn(u8),
        /// The card starts (true) or stops (false) refusing writes.
        Refuse(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::vec((0u8..4, 0u8..3), 1..12).prop_map(Op::Append),
            3 => prop::collection::vec(any::<prop::sample::Index>(), 0..8).prop_map(Op::Remove),
            1 => (0u8..3).prop_map(Op::Purge),
            1 => Just(Op::Reopen),
            1 => (1u8..40).prop_map(Op::Torn),
            2 => any::<bool>().prop_map(Op::Refuse),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Against a plain list of what should be waiting, through appends, acknowledgements,
        /// opt-outs, restarts and torn writes, with small segments so that segments roll over and
        /// are deleted all the time.
        #[test]
        fn the_spool_keeps_exactly_what_was_accepted_and_not_removed(ops in prop::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("spool");
            let open = || {
                let (mut s, r) = Spool::open(&path, 1 << 30).unwrap();
                s.segment_bytes = 2048;
                (s, r)
            };
            let (mut s, _) = open();
            let mut model: Vec<(u64, Message)> = Vec::new();
            let mut n = 0;
            for op in ops {
                match op {
                    Op::Append(ms) => {
                        let msgs: Vec<Message> = ms.iter().map(|&(p, c)| {
                            n += 1;
                            Message {
                                priority: Priority::from_u8(p).unwrap(),
                                qos: 1,
                                topic: format!("t/{n}"),
                                customer: Some(format!("c{c}")),
                                payload: vec![b'x'; 40 + n % 50],
                            }
                        }).collect();
                        let before = s.next_seq;
                        prop_assert_eq!(rt.block_on(s.append(msgs.clone())), msgs.len());
                        for (i, m) in msgs.into_iter().enumerate() {
                            model.push((before + i as u64, m));
                        }
                    }
                    Op::Remove(picks) => {
                        if model.is_empty() { continue; }
                        let mut seqs: Vec<u64> = picks.iter().map(|i| model[i.index(model.len())].0).collect();
                        seqs.dedup();
                        s.remove(&seqs);
                        model.retain(|(q, _)| !seqs.contains(q));
                    }
                    Op::Purge(c) => {
                        let c = format!("c{c}");
                        let expect = model.iter().filter(|(_, m)| m.customer.as_deref() == Some(&c)).count();
                        prop_assert_eq!(rt.block_on(s.purge_customer(&c)).unwrap(), expect as u64);
                        model.retain(|(_, m)| m.customer.as_deref() != Some(&c));
                    }
                    Op::Refuse(on) => s.fail_writes = on,
                    Op::Reopen => {
                        // A restart once the card takes writes again (what is lost by stopping
                        // while it refuses them has a test of its own).
                        s.fail_writes = false;
                        rt.block_on(s.flush()).unwrap();
                        prop_assert_eq!(s.held(), 0);
                        drop(s);
                        let (s2, r) = open();
                        prop_assert_eq!(r.recovered, model.len() as u64);
                        s = s2;
                    }
                    Op::Torn(len) => {
                        s.fail_writes = false;
                        rt.block_on(s.flush()).unwrap();
                        let end = s.segments[&s.active].size;
                        let f = OpenOptions::new().write(true).open(path.join(segment_name(s.active))).unwrap();
                        let mut half = vec![0xA5u8; len as usize];
                        let k = half.len().min(4);
                        half[..k].copy_from_slice(&[200, 0, 0, 0][..k]);
                        f.write_all_at(&half, end).unwrap();
                        drop(f);
                        drop(s);
                        let (s2, r) = open();
                        prop_assert_eq!(r.truncated_bytes, len as u64);
                        s = s2;
                    }
                }
                let got: Vec<(u64, Message)> = all(&s).into_iter().map(|e| (e.seq, e.message)).collect();
                prop_assert_eq!(&got, &model);
            }
        }
    }

    #[tokio::test]
    async fn a_card_that_refuses_writes_loses_nothing_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let (mut s, _) = Spool::open(&path, 1 << 20).unwrap();
        s.append((0..3).map(|i| msg(Priority::Presence, i)).collect())
            .await;
        s.fail_writes = true;
        assert_eq!(
            s.append((3..7).map(|i| msg(Priority::Presence, i)).collect())
                .await,
            4
        );
        assert_eq!((s.depth(), s.held()), (7, 4));
        assert!(
            s.write_error().unwrap().contains("No space left"),
            "{:?}",
            s.write_error()
        );
        // Held messages are sent like the rest, in order with those on disk.
        let seqs: Vec<u64> = all(&s).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (0..7).collect::<Vec<_>>());
        assert_eq!(all(&s)[5].message, msg(Priority::Presence, 5));
        // Acknowledged: one on disk (its removal waits for the card), two held.
        s.remove(&[1, 3, 4]);
        assert_eq!((s.depth(), s.held()), (4, 2));
        assert_eq!(s.purge_customer("c2").await.unwrap(), 2);
        assert_eq!((s.depth(), s.held()), (2, 1));
        s.fail_writes = false;
        s.append(vec![msg(Priority::Offers, 7)]).await;
        assert_eq!((s.held(), s.write_error()), (0, None));
        drop(s);
        let (s, r) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!((r.recovered, r.truncated_bytes), (3, 0));
        let got: Vec<Message> = all(&s).into_iter().map(|e| e.message).collect();
        assert_eq!(
            got,
            vec![
                msg(Priority::Presence, 0),
                msg(Priority::Presence, 6),
                msg(Priority::Offers, 7)
            ]
        );
    }

    #[tokio::test]
    async fn stopping_while_the_card_refuses_writes_keeps_what_it_took() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let (mut s, _) = Spool::open(&path, 1 << 20).unwrap();
        s.append(vec![msg(Priority::Offers, 0)]).await;
        s.fail_writes = true;
        s.append(vec![msg(Priority::Offers, 1)]).await;
        s.flush().await.unwrap();
        assert_eq!(s.held(), 1, "still refused at exit");
        drop(s);
        // The held message is the one loss, and it was logged.
        let (s, r) = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(r.recovered, 1);
        assert_eq!(all(&s)[0].message, msg(Priority::Offers, 0));
    }

    #[tokio::test]
    async fn what_is_held_in_memory_is_bounded_lowest_priority_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(&dir.path().join("spool"), 1 << 30).unwrap();
        s.fail_writes = true;
        let each = cost(encode(&msg(Priority::Presence, 0)).len()) as u64;
        let n = (HELD_MAX_BYTES / each) as usize + 500;
        s.append(vec![msg(Priority::Offers, 0)]).await;
        s.append((1..n).map(|i| msg(Priority::Presence, i)).collect())
            .await;
        assert!(s.held_bytes <= HELD_MAX_BYTES);
        assert!(s.stats().dropped[Priority::Presence as usize] >= 499);
        let first = &all(&s)[..2];
        assert_eq!(first[0].message, msg(Priority::Offers, 0), "offers go last");
        assert!(first[1].seq > 400, "the oldest presence went first");
        assert_eq!(s.bytes(), s.held_bytes);
    }

    #[test]
    fn the_card_is_low_below_the_room_needed_and_stays_low_until_clearly_above() {
        use DiskState::*;
        let need = 1000;
        assert_eq!(Ok.next(false, Some(1000), need), Ok);
        assert_eq!(Ok.next(false, Some(999), need), Low);
        // Hovering at the line does not flip the status with every batch.
        assert_eq!(Low.next(false, Some(1050), need), Low);
        assert_eq!(Low.next(false, Some(1100), need), Ok);
        assert_eq!(Ok.next(true, Some(10_000), need), Failing);
        assert_eq!(Failing.next(false, Some(500), need), Low);
        assert_eq!(Failing.next(false, None, need), Ok);
    }

    #[tokio::test]
    async fn room_needed_is_what_the_spool_may_still_take() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(&dir.path().join("spool"), 10_000).unwrap();
        assert_eq!(s.room_needed(), 10_000);
        s.append(vec![msg(Priority::Offers, 0)]).await;
        assert_eq!(s.room_needed(), 10_000 - s.bytes());
        assert!(s.disk_free_bytes().is_some_and(|f| f > 0));
    }

    #[test]
    fn records_round_trip_and_garbage_is_rejected() {
        let m = msg(Priority::Presence, 4);
        assert_eq!(decode(&encode(&m)), Some(m));
        assert_eq!(decode(&[9, 1, 0]), None);
        assert_eq!(decode(&[2, 1, 0, 200, b'a']), None);
    }
}
