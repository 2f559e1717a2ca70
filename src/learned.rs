//! What the hub has learned about its store, kept on disk (`{data_dir}/learned.json`) so a restart
//! does not start the learning over.
//!
//! Today that is each hub's exit margin ([`crate::presence::margin`]): the sags of its last visits
//! of 30 s or more. Without this file a hub that restarts (an upgrade, a power cut) exits every visit
//! at `exit_margin_db` until it has seen 20 more of them. The file is small (a few KB) and rewritten
//! whole, at most every [`SAVE_EVERY_MS`] of pipeline time and when the daemon stops, so it costs the
//! SD card nothing that matters. Losing it loses nothing but time: a file that is missing, damaged
//! or from a newer beacond is set aside in the log and the hubs learn afresh.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::presence::HubSags;

/// How often, at most, what was learned is written, ms of pipeline time: a crash loses at most
/// this much learning, a few visits per hub.
pub const SAVE_EVERY_MS: u64 = 10 * 60 * 1000;

/// The layout this beacond writes and reads.
const FORMAT: u32 = 1;

/// The learned-state file cannot be read or written.
#[derive(Debug, Error)]
pub enum LearnedError {
    /// Reading failed (permissions, a failing card).
    #[error("{path}: {source}; the hubs learn their exit margins afresh")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not what beacond writes.
    #[error(
        "{path}: not a learned-state file ({source}); the hubs learn their exit margins afresh \
         and the file is replaced at the next save"
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and why it did not parse.
        source: serde_json::Error,
    },
    /// A newer beacond wrote it (a downgrade).
    #[error(
        "{path}: format {found} is newer than this beacond reads ({FORMAT}); the hubs learn their \
         exit margins afresh and the file is replaced at the next save"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// The format it says it has.
        found: u32,
    },
    /// Writing failed; what was learned stays in memory and is written again at the next save.
    #[error("{path}: {source}; what the hubs learned is kept in memory and saved again later")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct Contents {
    format: u32,
    /// Per hub, the sags its exit margin is learned from.
    exit_margins: Vec<HubSags>,
}

/// The file, and what was last written to it.
#[derive(Debug)]
pub struct LearnedFile {
    path: PathBuf,
    saved: Vec<HubSags>,
    /// The file on disk did not load: replace it at the next save even if nothing was learned, so
    /// the warning is not repeated at every start.
    unreadable: bool,
}

impl LearnedFile {
    /// The file `learned.json` in `data_dir`; nothing is read or written yet.
    pub fn in_dir(data_dir: &Path) -> LearnedFile {
        LearnedFile {
            path: data_dir.join("learned.json"),
            saved: Vec::new(),
            unreadable: false,
        }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file holds: nothing when there is no file yet.
    pub fn load(&mut self) -> Result<Vec<HubSags>, LearnedError> {
        let result = self.read();
        self.unreadable = matches!(
            result,
            Err(LearnedError::Parse { .. } | LearnedError::Format { .. })
        );
        result
    }

    fn read(&mut self) -> Result<Vec<HubSags>, LearnedError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(LearnedError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        // The format first, so a newer layout is named as such rather than as damage.
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let parse = |source| LearnedError::Parse {
            path: self.path.clone(),
            source,
        };
        let head: Head = serde_json::from_slice(&text).map_err(parse)?;
        if head.format != FORMAT {
            return Err(LearnedError::Format {
                path: self.path.clone(),
                found: head.format,
            });
        }
        let contents: Contents = serde_json::from_slice(&text).map_err(parse)?;
        self.saved = contents.exit_margins.clone();
        Ok(contents.exit_margins)
    }

    /// Writes `exit_margins` unless it is what the file already holds. The file is replaced whole
    /// (written beside it, synced, renamed over it), so a power cut leaves the old file or the new
    /// one, never half of one. Returns whether it wrote.
    pub fn save(&mut self, exit_margins: Vec<HubSags>) -> Result<bool, LearnedError> {
        if exit_margins == self.saved && !self.unreadable {
            return Ok(false);
        }
        let err = |source| LearnedError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(err)?;
        let contents = Contents {
            format: FORMAT,
            exit_margins,
        };
        // Whole, then one write: serde_json writes to a file a few bytes a call (a thousand calls
        // for the supermarket's eight hubs).
        let mut bytes = serde_json::to_vec(&contents).map_err(|e| err(e.into()))?;
        bytes.push(b'\n');
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
        tmp.write_all(&bytes).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        // The rename is only durable once the directory is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        self.saved = contents.exit_margins;
        self.unreadable = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sags(hub: &str, n: usize) -> HubSags {
        HubSags {
            hub: hub.into(),
            sags_db: (0..n).map(|i| i as f32 * 0.25).collect(),
        }
    }

    #[test]
    fn what_is_saved_loads_back_and_is_not_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut f = LearnedFile::in_dir(&data);
        assert_eq!(f.load().unwrap(), vec![], "no file yet: nothing learned");
        let memory = vec![sags("hub-deli", 64), sags("hub-wine", 3)];
        assert!(f.save(memory.clone()).unwrap(), "the data dir is made");
        assert!(!f.save(memory.clone()).unwrap(), "unchanged: not written");
        let mut again = LearnedFile::in_dir(&data);
        assert_eq!(again.load().unwrap(), memory);
        assert!(!again.save(memory).unwrap(), "what was loaded is on disk");
        // Only the file itself is left behind, no temporary beside it.
        let names: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["learned.json"]);
    }

    #[test]
    fn a_damaged_or_newer_file_is_named_and_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = LearnedFile::in_dir(dir.path());
        std::fs::write(
            f.path(),
            "{\"format\": 1, \"exit_margins\": [{\"hub\": 3}]}",
        )
        .unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(
            e.contains("learned.json: not a learned-state file")
                && e.contains("line 1 column")
                && e.contains("learn their exit margins afresh"),
            "{e}"
        );
        std::fs::write(f.path(), "{\"format\": 2, \"whatever\": true}").unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(
            e.contains("format 2 is newer than this beacond reads (1)"),
            "{e}"
        );
        // Replaced at the next save even with nothing learned, so the next start is quiet.
        assert!(f.save(vec![]).unwrap());
        assert_eq!(f.load().unwrap(), vec![]);
        assert!(!f.save(vec![]).unwrap());
        assert!(f.save(vec![sags("hub-1", 2)]).unwrap());
        assert_eq!(f.load().unwrap(), vec![sags("hub-1", 2)]);
    }
}
