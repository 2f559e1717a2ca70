//! The durable customer cache: sled under `data_dir/customers`.
//!
//! Layout: the default tree holds `active`, the name of the tree with the current customers. A
//! customer tree holds `\0seq` (the last applied sync sequence, big-endian u64), `\0count` (customers,
//! so nothing ever walks the tree to count) and `c<id>` → the customer (postcard). A delta is one sled
//! batch on the active tree — customers, count and sequence together, so a power cut leaves either
//! all of it or none. A snapshot is written into a fresh tree and made active by one write of
//! `active`: readers of the old tree never see a half-built state.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::record::{CustomerEntry, CustomerRecord};
use crate::storage::MovedAside;

const ACTIVE: &[u8] = b"active";
const SEQ: &[u8] = b"\0seq";
const COUNT: &[u8] = b"\0count";
const TREE_PREFIX: &str = "customers-";

/// Why the cache failed.
#[derive(Debug, Error)]
pub enum CacheError {
    /// sled failed.
    #[error("customer cache {path}: {source}")]
    Db {
        /// The cache directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// The disk is full or read-only: the cache is kept as it is.
    #[error("customer cache {path}: {source}; {}", crate::storage::DISK_ADVICE)]
    Disk {
        /// The cache directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// Another process (a running daemon) holds the cache.
    #[error("customer cache {0} is in use by another process; stop beacond first (systemctl stop beacond)")]
    Locked(PathBuf),
    /// A stored customer does not decode.
    #[error("customer cache {path}: stored customer {id:?} is corrupt")]
    Corrupt {
        /// The cache directory.
        path: PathBuf,
        /// The key.
        id: String,
    },
    /// An import file is not valid.
    #[error("{file}:{line}: {message}")]
    Import {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Counts for `cache stats` and the daemon's `stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Customers in the cache.
    pub customers: u64,
    /// The last applied sync sequence (0: none yet).
    pub seq: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

/// The first line of an export: what the customers that follow are a copy of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    /// Format version (1).
    pub beacond_customer_export: u32,
    /// The sync sequence the customers are at.
    pub seq: u64,
    /// How many customer lines follow.
    pub customers: u64,
}

/// The cache.
pub struct Cache {
    path: PathBuf,
    db: sled::Db,
    /// Synced after each flush, so an applied opt-out survives a power cut.
    log: crate::storage::SledLog,
    active: sled::Tree,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("path", &self.path).finish()
    }
}

fn db_error(path: &Path, source: sled::Error) -> CacheError {
    let path = path.to_owned();
    if crate::storage::is_disk_condition(&source) {
        CacheError::Disk { path, source }
    } else {
        CacheError::Db { path, source }
    }
}

fn customer_key(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1);
    k.push(b'c');
    k.extend_from_slice(id.as_bytes());
    k
}

fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<u64, sled::Error> {
    Ok(tree
        .get(key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0))
}

impl Cache {
    /// Opens (or creates) the cache at `dir` with a page cache of `cache_bytes`. A cache that will
    /// not open is moved aside (the platform's next snapshot rebuilds it) and reported.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<(Cache, MovedAside), CacheError> {
        let db_err = |source| db_error(dir, source);
        let (db, aside) = crate::storage::open_or_move_aside(dir, "customer cache", |d| {
            sled::Config::new()
                .path(d)
                .cache_capacity(cache_bytes)
                // Each applied batch is flushed explicitly; a timer flush only adds SD card wear.
                .flush_every_ms(None)
                .mode(sled::Mode::LowSpace)
                .open()
        })
        .map_err(|e| {
            if crate::storage::is_locked(&e) {
                CacheError::Locked(dir.to_owned())
            } else {
                db_err(e)
            }
        })?;
        let name = match db.get(ACTIVE).map_err(db_err)? {
            Some(n) => n.to_vec(),
            None => {
                db.insert(ACTIVE, b"customers-initial".as_slice())
                    .map_err(db_err)?;
                b"customers-initial".to_vec()
            }
        };
        let active = db.open_tree(&name).map_err(db_err)?;
        // A snapshot that was being staged when the hub stopped is abandoned: the platform sends a
        // new one when asked.
        for t in db.tree_names() {
            if t.starts_with(TREE_PREFIX.as_bytes()) && *t != *name {
                db.drop_tree(&t).map_err(db_err)?;
            }
        }
        let log = crate::storage::SledLog::open(dir).map_err(db_err)?;
        Ok((
            Cache {
                path: dir.to_owned(),
                db,
                log,
                active,
            },
            aside,
        ))
    }

    fn err(&self, source: sled::Error) -> CacheError {
        db_error(&self.path, source)
    }

    /// The last applied sync sequence; 0 when the cache has never been synced.
    pub fn seq(&self) -> Result<u64, CacheError> {
        read_u64(&self.active, SEQ).map_err(|e| self.err(e))
    }

    /// Counts.
    pub fn stats(&self) -> Result<CacheStats, CacheError> {
        Ok(CacheStats {
            customers: read_u64(&self.active, COUNT).map_err(|e| self.err(e))?,
            seq: self.seq()?,
            disk_bytes: self.db.size_on_disk().map_err(|e| self.err(e))?,
        })
    }

    /// One customer.
    pub fn get(&self, id: &str) -> Result<Option<CustomerEntry>, CacheError> {
        match self.active.get(customer_key(id)).map_err(|e| self.err(e))? {
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|_| CacheError::Corrupt {
                    path: self.path.clone(),
                    id: id.to_owned(),
                }),
            None => Ok(None),
        }
    }

    /// Every customer, in id order.
    pub fn iter(&self) -> impl Iterator<Item = Result<CustomerEntry, CacheError>> + '_ {
        self.active.scan_prefix(b"c").map(move |item| {
            let (k, v) = item.map_err(|e| self.err(e))?;
            postcard::from_bytes(&v).map_err(|_| CacheError::Corrupt {
                path: self.path.clone(),
                id: String::from_utf8_lossy(&k[1..]).into_owned(),
            })
        })
    }

    /// Applies a delta and records `seq`, atomically and durably. Deleting an unknown id is not an
    /// error (the platform may repeat an opt-out).
    pub fn apply_delta(
        &self,
        seq: u64,
        upsert: &[CustomerEntry],
        delete: &[String],
    ) -> Result<(), CacheError> {
        let mut count = read_u64(&self.active, COUNT).map_err(|e| self.err(e))? as i64;
        let mut batch = sled::Batch::default();
        // Counting needs to know what exists, including ids repeated within the batch.
        let mut seen = std::collections::HashMap::new();
        for c in upsert {
            let k = customer_key(&c.id);
            let existed = match seen.get(&k) {
                Some(&e) => e,
                None => self.active.contains_key(&k).map_err(|e| self.err(e))?,
            };
            if !existed {
                count += 1;
            }
            seen.insert(k.clone(), true);
            batch.insert(k, postcard::to_stdvec(c).expect("postcard"));
        }
        for id in delete {
            let k = customer_key(id);
            let existed = match seen.get(&k) {
                Some(&e) => e,
                None => self.active.contains_key(&k).map_err(|e| self.err(e))?,
            };
            if existed {
                count -= 1;
            }
            seen.insert(k.clone(), false);
            batch.remove(k);
        }
        batch.insert(COUNT, &(count.max(0) as u64).to_be_bytes());
        batch.insert(SEQ, &seq.to_be_bytes());
        self.active.apply_batch(batch).map_err(|e| self.err(e))?;
        self.log.flush(&self.db).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// A new snapshot being written beside the active customers.
    pub fn begin_snapshot(&self) -> Result<Staging, CacheError> {
        // Every staging gets a tree of its own, never the active one's name.
        let name = format!(
            "{TREE_PREFIX}{}",
            self.db.generate_id().map_err(|e| self.err(e))?
        );
        let tree = self.db.open_tree(&name).map_err(|e| self.err(e))?;
        Ok(Staging {
            path: self.path.clone(),
            name,
            tree,
            count: 0,
        })
    }

    /// Makes a fully staged snapshot the active customers, at sequence `seq`.
    pub fn commit_snapshot(&mut self, staging: Staging, seq: u64) -> Result<(), CacheError> {
        let mut batch = sled::Batch::default();
        batch.insert(COUNT, &staging.count.to_be_bytes());
        batch.insert(SEQ, &seq.to_be_bytes());
        staging.tree.apply_batch(batch).map_err(|e| self.err(e))?;
        // sled cannot rename a tree: the staged tree's name becomes the active one instead.
        self.db
            .insert(ACTIVE, staging.name.as_bytes())
            .map_err(|e| self.err(e))?;
        self.log.flush(&self.db).map_err(|e| self.err(e))?;
        let old = std::mem::replace(&mut self.active, staging.tree);
        let old_name = old.name();
        drop(old);
        self.db.drop_tree(&old_name).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Writes every customer as JSON lines after an [`ExportHeader`] line.
    pub fn export(&self, out: &mut impl Write) -> Result<u64, CacheError> {
        let stats = self.stats()?;
        let header = ExportHeader {
            beacond_customer_export: 1,
            seq: stats.seq,
            customers: stats.customers,
        };
        writeln!(out, "{}", serde_json::to_string(&header).expect("JSON"))?;
        let mut n = 0;
        for c in self.iter() {
            writeln!(
                out,
                "{}",
                serde_json::to_string(&c?.to_record()).expect("JSON")
            )?;
            n += 1;
        }
        out.flush()?;
        Ok(n)
    }

    /// Replaces the customers with an export (as `export` writes it), atomically: a file with any
    /// bad line changes nothing. `file` names the input in errors.
    pub fn import(&mut self, input: impl BufRead, file: &str) -> Result<u64, CacheError> {
        let bad = |line: usize, message: String| CacheError::Import {
            file: file.to_owned(),
            line,
            message,
        };
        let mut lines = input.lines().enumerate();
        let header: ExportHeader = match lines.next() {
            Some((_, l)) => serde_json::from_str(&l?).map_err(|e| {
                bad(
                    1,
                    format!("not a beacond customer export header ({e}); create one with `beacond cache export`"),
                )
            })?,
            None => return Err(bad(1, "empty file".into())),
        };
        let mut entries = Vec::new();
        for (i, l) in lines {
            let l = l?;
            if l.trim().is_empty() {
                continue;
            }
            let r: CustomerRecord =
                serde_json::from_str(&l).map_err(|e| bad(i + 1, e.to_string()))?;
            entries.push(
                r.validate("customer")
                    .map_err(|e| bad(i + 1, e.to_string()))?,
            );
        }
        let mut staging = self.begin_snapshot()?;
        for c in &entries {
            staging.insert(c)?;
        }
        let n = staging.count;
        self.commit_snapshot(staging, header.seq)?;
        Ok(n)
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), CacheError> {
        self.log.flush(&self.db).map_err(|e| self.err(e))
    }
}

/// A snapshot being staged.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    name: String,
    tree: sled::Tree,
    count: u64,
}

impl Staging {
    /// Stages one customer (a repeated id replaces the earlier one).
    pub fn insert(&mut self, c: &CustomerEntry) -> Result<(), CacheError> {
        if self
            .tree
            .insert(
                customer_key(&c.id),
                postcard::to_stdvec(c).expect("postcard"),
            )
            .map_err(|source| CacheError::Db {
                path: self.path.clone(),
                source,
            })?
            .is_none()
        {
            self.count += 1;
        }
        Ok(())
    }

    /// Customers staged so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
impl Cache {
    /// Writes `bytes` as the record of `id`, bypassing encoding: a record damaged on disk.
    pub(crate) fn insert_raw(&self, id: &str, bytes: &[u8]) {
        let mut k = b"c".to_vec();
        k.extend_from_slice(id.as_bytes());
        self.active.insert(k, bytes).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> CustomerEntry {
        CustomerEntry {
            id: id.into(),
            segments: vec!["s".into()],
            beacons: vec![],
            keys: None,
            updated_at: None,
        }
    }

    #[test]
    fn deltas_and_snapshots_survive_reopen_and_count_without_walking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("customers");
        {
            let (mut c, aside) = Cache::open(&path, 1 << 20).unwrap();
            assert!(aside.is_none());
            assert_eq!(c.seq().unwrap(), 0);
            let mut s = c.begin_snapshot().unwrap();
            for id in ["a", "b", "c", "a"] {
                s.insert(&entry(id)).unwrap();
            }
            c.commit_snapshot(s, 5).unwrap();
            c.apply_delta(6, &[entry("d"), entry("a")], &["b".into(), "zz".into()])
                .unwrap();
        }
        let (c, _) = Cache::open(&path, 1 << 20).unwrap();
        let st = c.stats().unwrap();
        assert_eq!((st.customers, st.seq), (3, 6));
        let ids: Vec<String> = c.iter().map(|e| e.unwrap().id).collect();
        assert_eq!(ids, ["a", "c", "d"]);
        assert_eq!(c.get("b").unwrap(), None);
        assert_eq!(c.get("d").unwrap(), Some(entry("d")));
    }

    #[test]
    fn export_then_import_reproduces_the_cache_and_a_bad_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = Cache::open(&dir.path().join("a"), 1 << 20).unwrap();
        a.apply_delta(9, &[entry("x"), entry("y")], &[]).unwrap();
        let mut buf = Vec::new();
        assert_eq!(a.export(&mut buf).unwrap(), 2);
        let (mut b, _) = Cache::open(&dir.path().join("b"), 1 << 20).unwrap();
        assert_eq!(b.import(buf.as_slice(), "export.jsonl").unwrap(), 2);
        assert_eq!(b.stats().unwrap().seq, 9);
        assert_eq!(b.get("x").unwrap(), Some(entry("x")));

        let mut broken = buf.clone();
        broken.extend_from_slice(b"{\"id\":\"z\",\"beacons\":[\"nope\"]}\n");
        let e = b.import(broken.as_slice(), "export.jsonl").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("export.jsonl:4: customer.beacons[0]"),
            "{e}"
        );
        assert_eq!(b.stats().unwrap().customers, 2);
    }

    #[test]
    fn a_cache_that_will_not_open_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("customers");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("conf"), b"garbage that is not a sled config").unwrap();
        std::fs::write(path.join("db"), vec![0xffu8; 4096]).unwrap();
        let (c, aside) = Cache::open(&path, 1 << 20).unwrap();
        assert!(aside.is_some());
        assert_eq!(c.stats().unwrap().customers, 0);
    }
}
