//! The durable outbox: every message is written here (one synced write per batch) before the MQTT
//! client sees it, and removed only when the broker acknowledged it. After a crash or power cut
//! everything accepted is still here and is sent on restart.
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

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
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

impl Spool {
    /// Opens (or creates) the spool in `dir`. A spool that will not open is moved aside to
    /// `dir.broken-<unix time>` and a new one started: losing the backlog is bad, refusing to run is
    /// worse. One in use by another process is left alone and reported.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, OpenReport), SpoolError> {
        match Self::open_inner(dir, max_bytes) {
            Ok(r) => Ok(r),
            Err(e @ SpoolError::Locked { .. }) => Err(e),
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
        let lock_path = dir.join("lock");
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
        };
        let mut report = OpenReport::default();
        let last = numbers.last().copied();
        for n in numbers {
            report.truncated_bytes += spool.replay(n, Some(n) == last)?;
        }
        match last {
            Some(n) if spool.segments[&n].size < spool.segment_bytes => spool.active = n,
            other => spool.start_segment(other.map_or(0, |n| n + 1))?,
        }
        if sled_files(dir) {
            report.migrated = spool.migrate_sled()?;
        }
        report.recovered = spool.live.len() as u64;
        spool.reclaim()?;
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
        self.by_priority[loc.priority as usize].insert(seq);
        self.bytes += loc.cost as u64;
        self.live.insert(seq, loc);
    }

    fn unindex(&mut self, seq: u64) -> Option<Loc> {
        let loc = self.live.remove(&seq)?;
        if let Some(seg) = self.segments.get_mut(&loc.segment) {
            seg.live -= 1;
        }
        self.by_priority[loc.priority as usize].remove(&seq);
        self.bytes -= loc.cost as u64;
        Some(loc)
    }

    /// Writes `buf` at the end of the active segment (starting a new one first if it is full);
    /// returns where it starts. Not synced.
    fn write_active(&mut self, buf: &[u8]) -> Result<u64, SpoolError> {
        if self.segments[&self.active].size >= self.segment_bytes {
            self.start_segment(self.active + 1)?;
        }
        let path = self.path.join(segment_name(self.active));
        let seg = self.segments.get_mut(&self.active).expect("active segment");
        let start = seg.size;
        seg.file
            .write_all_at(buf, start)
            .map_err(|source| SpoolError::Io { path, source })?;
        seg.size += buf.len() as u64;
        Ok(start)
    }

    fn sync_blocking(&self) -> Result<(), SpoolError> {
        self.segments[&self.active]
            .file
            .sync_data()
            .map_err(|source| self.io_err(source))
    }

    /// Appends messages in one synced write, dropping by priority to stay under `max_bytes`.
    /// Returns how many of `messages` were kept (an incoming message of the lowest priority is itself
    /// the first to go when nothing lower is stored).
    pub async fn append(&mut self, messages: Vec<Message>) -> Result<usize, SpoolError> {
        if self.segments[&self.active].size >= self.segment_bytes {
            self.start_segment(self.active + 1)?;
        }
        let mut buf = Vec::new();
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
            let at = frame(KIND_MESSAGE, &[&seq.to_le_bytes(), &record], &mut buf);
            // Indexed now, so the room made for the next message counts this one; the offset is
            // made absolute once the batch's place in the file is known.
            self.index(
                seq,
                Loc {
                    segment: self.active,
                    offset: at,
                    len: (record.len() + 9) as u32,
                    priority: m.priority,
                    cost: size,
                },
            );
            placed.push(seq);
            self.stats.appended += 1;
        }
        if !dropped.is_empty() {
            removal_record(&dropped, &mut buf);
        }
        let kept = placed.iter().filter(|s| self.live.contains_key(s)).count();
        if buf.is_empty() {
            return Ok(0);
        }
        let start = self.write_active(&buf)?;
        for seq in placed {
            if let Some(loc) = self.live.get_mut(&seq) {
                loc.offset += start;
            }
        }
        self.flush().await?;
        self.reclaim()?;
        Ok(kept)
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
            self.unindex(seq);
            dropped.push(seq);
            self.stats.dropped[victim_class as usize] += 1;
        }
        true
    }

    /// Removes acknowledged messages. Not synced: if the removal is lost in a crash, the message is
    /// sent again, which at-least-once delivery allows.
    pub fn remove(&mut self, seqs: &[u64]) -> Result<(), SpoolError> {
        let gone: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|&s| self.unindex(s).is_some())
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        self.stats.acknowledged += gone.len() as u64;
        let mut buf = Vec::new();
        removal_record(&gone, &mut buf);
        self.write_active(&buf)?;
        self.reclaim()
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
            let body = self.read_body(loc)?;
            if decode(&body[9..]).is_some_and(|m| m.customer.as_deref() == Some(customer)) {
                victims.push((seq, loc));
            }
        }
        let mut touched = BTreeSet::new();
        for &(seq, loc) in &victims {
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
        self.reclaim()?;
        Ok(victims.len() as u64)
    }

    /// Up to `n` entries at or after `seq`, in order.
    pub fn batch_from(&self, seq: u64, n: usize) -> Result<Vec<Entry>, SpoolError> {
        let mut out = Vec::with_capacity(n.min(1024));
        for (&seq, &loc) in self.live.range(seq..).take(n) {
            let body = self.read_body(loc)?;
            let message = decode(&body[9..]).ok_or_else(|| SpoolError::Corrupt {
                path: self.path.clone(),
                seq,
            })?;
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

    /// Makes everything written so far durable (after each batch, and at shutdown for removals).
    pub async fn flush(&self) -> Result<(), SpoolError> {
        let file = self.segments[&self.active]
            .file
            .try_clone()
            .map_err(|source| self.io_err(source))?;
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
                .await
                .unwrap();
            s.remove(&[0, 1]).unwrap();
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
        let (mut s, _) = Spool::open(&dir.path().join("s"), 1 << 20).unwrap();
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

    #[tokio::test]
    async fn a_write_torn_by_a_power_cut_is_cut_off_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let end = {
            let (mut s, _) = Spool::open(&path, 1 << 20).unwrap();
            s.append((0..5).map(|i| msg(Priority::Presence, i)).collect())
                .await
                .unwrap();
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
        s.append(vec![msg(Priority::Offers, 5)]).await.unwrap();
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
            .await
            .unwrap();
        }
        assert!(segment_files(&path).len() > 5);
        let seqs: Vec<u64> = all(&s).iter().map(|e| e.seq).collect();
        s.remove(&seqs[..390]).unwrap();
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
        s.append(vec![msg(Priority::Offers, 0)]).await.unwrap();
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
        s.append(vec![msg(Priority::Offers, 0)]).await.unwrap();
        let stuck = all(&s)[0].seq;
        // Everything after it is acknowledged; it stays (the broker never took it).
        for i in 1..400 {
            s.append(vec![msg(Priority::Presence, i)]).await.unwrap();
            let last = all(&s).last().unwrap().seq;
            s.remove(&[last]).unwrap();
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
            .await
            .unwrap();
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
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::vec((0u8..4, 0u8..3), 1..12).prop_map(Op::Append),
            3 => prop::collection::vec(any::<prop::sample::Index>(), 0..8).prop_map(Op::Remove),
            1 => (0u8..3).prop_map(Op::Purge),
            1 => Just(Op::Reopen),
            1 => (1u8..40).prop_map(Op::Torn),
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
                        prop_assert_eq!(rt.block_on(s.append(msgs.clone())).unwrap(), msgs.len());
                        for (i, m) in msgs.into_iter().enumerate() {
                            model.push((before + i as u64, m));
                        }
                    }
                    Op::Remove(picks) => {
                        if model.is_empty() { continue; }
                        let mut seqs: Vec<u64> = picks.iter().map(|i| model[i.index(model.len())].0).collect();
                        seqs.dedup();
                        s.remove(&seqs).unwrap();
                        model.retain(|(q, _)| !seqs.contains(q));
                    }
                    Op::Purge(c) => {
                        let c = format!("c{c}");
                        let expect = model.iter().filter(|(_, m)| m.customer.as_deref() == Some(&c)).count();
                        prop_assert_eq!(rt.block_on(s.purge_customer(&c)).unwrap(), expect as u64);
                        model.retain(|(_, m)| m.customer.as_deref() != Some(&c));
                    }
                    Op::Reopen => {
                        rt.block_on(s.flush()).unwrap();
                        drop(s);
                        let (s2, r) = open();
                        prop_assert_eq!(r.recovered, model.len() as u64);
                        s = s2;
                    }
                    Op::Torn(len) => {
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

    #[test]
    fn records_round_trip_and_garbage_is_rejected() {
        let m = msg(Priority::Presence, 4);
        assert_eq!(decode(&encode(&m)), Some(m));
        assert_eq!(decode(&[9, 1, 0]), None);
        assert_eq!(decode(&[2, 1, 0, 200, b'a']), None);
    }
}
