//! Offer cap state on disk (sled, `{data_dir}/offers`), so a restart, a crash or a power cut never
//! makes the hub fire the same offer twice within its cooldown. Writes are flushed before the
//! trigger is handed on (sled's flush and an `fdatasync` of its log); offers are rare, so an fsync
//! each costs nothing that matters. The entry history between offers is gathered by the stage
//! ([`super::stage`]) and written with the next offer or tick, not an fsync per enter.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{CapWrite, Caps, StoreVisit};

/// The cap store cannot be used.
#[derive(Debug, Error)]
pub enum StoreError {
    /// sled failed.
    #[error("offer caps at {path}: {source}")]
    Db {
        /// The store's directory.
        path: PathBuf,
        /// What failed.
        source: sled::Error,
    },
    /// Another process holds the store.
    #[error("offer caps at {0} are in use by another process; stop beacond first")]
    Locked(PathBuf),
    /// The disk is full or read-only: the store is kept as it is.
    #[error("offer caps at {path}: {source}; {}", crate::storage::DISK_ADVICE)]
    Disk {
        /// The store's directory.
        path: PathBuf,
        /// What failed.
        source: sled::Error,
    },
}

/// The persisted cap state.
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    /// Synced after each flush, so a sent offer's cap survives a power cut.
    log: crate::storage::SledLog,
}

fn key(kind: u8, a: &str, b: &str) -> Vec<u8> {
    let mut k = vec![kind];
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn split(k: &[u8]) -> Option<(String, String)> {
    let rest = k.get(1..)?;
    let i = rest.iter().position(|b| *b == 0)?;
    Some((
        String::from_utf8(rest[..i].to_vec()).ok()?,
        String::from_utf8(rest[i + 1..].to_vec()).ok()?,
    ))
}

impl Store {
    /// Opens (or creates) the store in `dir`. A store that will not open is moved aside and started
    /// empty, as the spool and the customer cache are; the report says so.
    pub fn open(dir: &Path) -> Result<(Store, crate::storage::MovedAside), StoreError> {
        let (db, aside) = crate::storage::open_or_move_aside(dir, "offer caps", |d| {
            sled::Config::new()
                .path(d)
                .cache_capacity(1024 * 1024)
                // Every decision is flushed explicitly; a timer flush only adds SD card wear.
                .flush_every_ms(None)
                .mode(sled::Mode::LowSpace)
                .open()
        })
        .map_err(|e| {
            if crate::storage::is_locked(&e) {
                StoreError::Locked(dir.to_owned())
            } else if crate::storage::is_disk_condition(&e) {
                StoreError::Disk {
                    path: dir.to_owned(),
                    source: e,
                }
            } else {
                StoreError::Db {
                    path: dir.to_owned(),
                    source: e,
                }
            }
        })?;
        let log = crate::storage::SledLog::open(dir).map_err(|source| StoreError::Db {
            path: dir.to_owned(),
            source,
        })?;
        Ok((
            Store {
                path: dir.to_owned(),
                db,
                log,
            },
            aside,
        ))
    }

    /// Everything stored.
    pub fn load(&self) -> Result<Caps, StoreError> {
        let mut caps = Caps::default();
        for item in self.db.iter() {
            let (k, v) = item.map_err(|source| StoreError::Db {
                path: self.path.clone(),
                source,
            })?;
            let Some((a, b)) = split(&k) else { continue };
            match k[0] {
                b'f' => {
                    if let Ok(t) = <[u8; 8]>::try_from(&v[..]) {
                        caps.last_fired.insert((a, b), u64::from_be_bytes(t));
                    }
                }
                b'd' => {
                    if let Ok(n) = <[u8; 4]>::try_from(&v[..]) {
                        caps.daily.insert((a, b), u32::from_be_bytes(n));
                    }
                }
                b'v' => {
                    if let Ok(visit) = serde_json::from_slice::<StoreVisit>(&v) {
                        caps.visits.insert(a, visit);
                    }
                }
                b'e' => {
                    if let Ok(list) = serde_json::from_slice::<Vec<(String, u64)>>(&v) {
                        caps.enters.insert(a, list);
                    }
                }
                _ => {}
            }
        }
        Ok(caps)
    }

    /// Persists `writes` durably (one batch, flushed).
    pub fn apply(&self, writes: &[CapWrite]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for w in writes {
            match w {
                CapWrite::Fired {
                    offer,
                    customer,
                    at,
                } => batch.insert(key(b'f', offer, customer), &at.to_be_bytes()),
                CapWrite::Daily { offer, date, count } => {
                    batch.insert(key(b'd', offer, date), &count.to_be_bytes())
                }
                CapWrite::Visit { customer, visit } => batch.insert(
                    key(b'v', customer, ""),
                    serde_json::to_vec(visit).expect("plain struct"),
                ),
                CapWrite::Enters { customer, enters } => batch.insert(
                    key(b'e', customer, ""),
                    serde_json::to_vec(enters).expect("plain list"),
                ),
            }
        }
        let db_err = |source| StoreError::Db {
            path: self.path.clone(),
            source,
        };
        self.db.apply_batch(batch).map_err(db_err)?;
        self.log.flush(&self.db).map_err(db_err)
    }

    /// Rewrites the store to hold exactly `caps` (after pruning at start-up), so it stays bounded.
    pub fn replace(&self, caps: &Caps) -> Result<(), StoreError> {
        let db_err = |source| StoreError::Db {
            path: self.path.clone(),
            source,
        };
        let mut batch = sled::Batch::default();
        for k in self.db.iter().keys() {
            batch.remove(k.map_err(db_err)?);
        }
        self.db.apply_batch(batch).map_err(db_err)?;
        let mut writes = Vec::new();
        for ((offer, customer), at) in &caps.last_fired {
            writes.push(CapWrite::Fired {
                offer: offer.clone(),
                customer: customer.clone(),
                at: *at,
            });
        }
        for ((offer, date), count) in &caps.daily {
            writes.push(CapWrite::Daily {
                offer: offer.clone(),
                date: date.clone(),
                count: *count,
            });
        }
        for (customer, visit) in &caps.visits {
            writes.push(CapWrite::Visit {
                customer: customer.clone(),
                visit: *visit,
            });
        }
        for (customer, enters) in &caps.enters {
            writes.push(CapWrite::Enters {
                customer: customer.clone(),
                enters: enters.clone(),
            });
        }
        self.apply(&writes)
    }

    /// Removes everything about a customer who opted out.
    pub fn forget_customer(&self, customer: &str) -> Result<(), StoreError> {
        let db_err = |source| StoreError::Db {
            path: self.path.clone(),
            source,
        };
        let mut batch = sled::Batch::default();
        for item in self.db.iter().keys() {
            let k = item.map_err(db_err)?;
            let hit = match (k[0], split(&k)) {
                (b'f', Some((_, c))) => c == customer,
                (b'v' | b'e', Some((c, _))) => c == customer,
                _ => false,
            };
            if hit {
                batch.remove(k);
            }
        }
        self.db.apply_batch(batch).map_err(db_err)?;
        self.log.flush(&self.db).map_err(db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_written_are_caps_read_after_a_reopen_and_opt_outs_are_erased() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offers");
        let writes = vec![
            CapWrite::Fired {
                offer: "wine".into(),
                customer: "c-1".into(),
                at: 42,
            },
            CapWrite::Fired {
                offer: "wine".into(),
                customer: "c-2".into(),
                at: 43,
            },
            CapWrite::Daily {
                offer: "wine".into(),
                date: "2026-11-25".into(),
                count: 7,
            },
            CapWrite::Visit {
                customer: "c-1".into(),
                visit: StoreVisit {
                    start: 1,
                    last: 2,
                    offers: 1,
                },
            },
            CapWrite::Enters {
                customer: "c-1".into(),
                enters: vec![("wine".into(), 40)],
            },
        ];
        {
            let (s, aside) = Store::open(&path).unwrap();
            assert!(aside.is_none());
            s.apply(&writes).unwrap();
            // A second process must not use it at the same time.
            assert!(matches!(Store::open(&path), Err(StoreError::Locked(_))));
        }
        let (s, _) = Store::open(&path).unwrap();
        let caps = s.load().unwrap();
        assert_eq!(caps.last_fired[&("wine".into(), "c-1".into())], 42);
        assert_eq!(caps.daily[&("wine".into(), "2026-11-25".into())], 7);
        assert_eq!(caps.visits["c-1"].offers, 1);
        assert_eq!(caps.enters["c-1"], vec![("wine".to_string(), 40)]);
        s.forget_customer("c-1").unwrap();
        let caps = s.load().unwrap();
        assert!(!caps.last_fired.contains_key(&("wine".into(), "c-1".into())));
        assert!(caps.last_fired.contains_key(&("wine".into(), "c-2".into())));
        assert!(caps.visits.is_empty() && caps.enters.is_empty());
        assert_eq!(caps.daily.len(), 1, "hub budgets are not the customer's");
        // replace() keeps exactly what it is given.
        let mut only = Caps::default();
        only.daily.insert(("x".into(), "2026-11-26".into()), 1);
        s.replace(&only).unwrap();
        assert_eq!(s.load().unwrap(), only);
    }
}
