//! Opening the hub's on-disk stores the way a hub that nobody watches needs: a store that will not
//! open is moved aside and a fresh one started (refusing to run is worse than starting over), but one
//! that is merely in use by another process is left alone. And flushing them so that what the hub
//! acted on survives a power cut ([`SledLog`]).

use std::path::{Path, PathBuf};

/// A database that was moved aside at open, and why.
pub type MovedAside = Option<(PathBuf, String)>;

/// Whether a sled error means another process holds the database's lock.
pub fn is_locked(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("acquire lock"))
}

/// Whether a failure is the disk's condition (full, over quota, read-only), not damage to the
/// store: moving the store aside would lose it for nothing, and a new one could not be made.
pub fn is_disk_condition(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if is_disk_condition_io(io))
}

/// [`is_disk_condition`] for a plain I/O error.
pub fn is_disk_condition_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::StorageFull | K::QuotaExceeded | K::ReadOnlyFilesystem
    )
}

/// What to do about [`is_disk_condition`], for the error messages of every store.
pub const DISK_ADVICE: &str = "nothing was moved or deleted: free space on the card (df -h) and \
    start beacond again (systemd retries every 5 s)";

/// How long a lock may take to go after its holder closed the database, ms.
const LOCK_GRACE_MS: u64 = 500;

/// Opens with `open`, trying again for a short while if the lock is held: sled lets go of its lock
/// file from background threads a moment after the last handle is dropped, so a successor opening
/// right after a close (a restart, a reopen, a CLI tool after the daemon stopped) would otherwise be
/// told the database is in use.
fn open_waiting_for_lock<T>(
    dir: &Path,
    open: &impl Fn(&Path) -> Result<T, sled::Error>,
) -> Result<T, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LOCK_GRACE_MS);
    loop {
        match open(dir) {
            Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Opens the database at `dir` with `open`; if it fails for any reason but a lock held by another
/// process or the disk's condition ([`is_disk_condition`]), moves `dir` to `dir.broken-<unix
/// time>` and opens a new one. `what` names it in the log.
pub fn open_or_move_aside<T>(
    dir: &Path,
    what: &str,
    open: impl Fn(&Path) -> Result<T, sled::Error>,
) -> Result<(T, MovedAside), sled::Error> {
    match open_waiting_for_lock(dir, &open) {
        Ok(db) => Ok((db, None)),
        Err(e) if is_locked(&e) || is_disk_condition(&e) => Err(e),
        Err(e) => {
            let aside = move_aside(dir, what, &e);
            let db = open(dir)?;
            Ok((db, Some((aside, e.to_string()))))
        }
    }
}

/// Moves a store that would not open to `dir.broken-<unix time>` (kept for inspection) and logs it;
/// returns where it went. `what` names the store in the log.
pub fn move_aside(dir: &Path, what: &str, error: &dyn std::fmt::Display) -> PathBuf {
    let aside = dir.with_extension(format!(
        "broken-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    ));
    tracing::error!(path = %dir.display(), moved_to = %aside.display(), error = %error,
        "{what} would not open; moved aside, starting a new one");
    let _ = std::fs::rename(dir, &aside);
    aside
}

/// sled's log file, held open to `fdatasync` after each flush: sled 0.34 makes a flush durable with
/// `sync_file_range`, which commits neither the file's size nor the card's write cache (sled issue
/// #1452), so on its own a power cut could take writes the hub has already acted on (an offer's
/// cap, an opt-out).
pub struct SledLog(std::fs::File);

impl SledLog {
    /// The log of the sled database at `dir` (sled 0.34 keeps it all in `dir/db`).
    pub fn open(dir: &Path) -> Result<SledLog, sled::Error> {
        std::fs::File::open(dir.join("db"))
            .map(SledLog)
            .map_err(sled::Error::Io)
    }

    /// Everything applied to `db` so far, on the card through a power cut: sled's flush, then an
    /// `fdatasync` for what `sync_file_range` leaves out.
    pub fn flush(&self, db: &sled::Db) -> Result<(), sled::Error> {
        db.flush()?;
        self.0.sync_data().map_err(sled::Error::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The file synced after each flush is the one sled's writes land in, so the `fdatasync` covers
    /// what `sync_file_range` leaves out (a sled that wrote elsewhere would fail here, not in a
    /// store after a power cut).
    #[test]
    fn the_file_synced_is_the_file_sled_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let log = SledLog::open(&path).unwrap();
        let files = || -> Vec<(u64, u64)> {
            walk(&path)
                .iter()
                .map(|p| std::fs::metadata(p).unwrap())
                .map(|m| (m.ino(), m.len()))
                .collect()
        };
        let before = files();
        for i in 0..200u32 {
            db.insert(i.to_be_bytes(), vec![7u8; 64]).unwrap();
        }
        log.flush(&db).unwrap();
        let grown: Vec<u64> = files()
            .into_iter()
            .filter(|f| !before.contains(f))
            .map(|(ino, _)| ino)
            .collect();
        assert_eq!(grown, vec![log.0.metadata().unwrap().ino()]);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
