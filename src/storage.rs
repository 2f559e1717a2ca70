//! Opening the hub's on-disk stores the way a hub that nobody watches needs: a store that will not
//! open is moved aside and a fresh one started (refusing to run is worse than starting over), but one
//! that is merely in use by another process is left alone.

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
