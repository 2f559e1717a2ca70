//! Recordings: what a hub heard, as JSON lines, written by `beacond record` and played back by the
//! `replay` source, so a problem seen in a store can be reproduced on a laptop.
//!
//! ```text
//! {"beacond_recording":1,"started":"2026-11-25T09:00:00.000Z","hubs":["hub-1"],"source":"bluez"}
//! {"at":1795597200123,"hub":0,"addr":"c2a9f1e04b7d","rssi":-61,"data":"1aff4c000215…"}
//! ```
//!
//! A recording may leave the hub, so it holds nothing that could identify a person who has not opted
//! in: addresses are replaced by pseudonyms keyed with a random secret that is never written (stable
//! within one recording, unlinkable across recordings), and a payload is kept only when it is a beacon
//! frame or the app's token service data. Everything else is kept as RSSI and pseudonym alone, which
//! is all the presence engine uses of an anonymous device anyway.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

use crate::decode::{decode_frames, Advertisement};
use crate::scan::{Advert, Payload};
use crate::time::Timestamp;

/// The recording format's version.
pub const FORMAT: u32 = 1;

/// A recording that cannot be read.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The recording.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A line is not what `beacond record` writes.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The recording.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what to do.
        message: String,
    },
}

/// The first line of a recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT`].
    pub beacond_recording: u32,
    /// When recording started.
    pub started: String,
    /// The hubs, by the index the lines use.
    pub hubs: Vec<String>,
    /// The source that was recorded.
    pub source: String,
}

#[derive(Serialize, Deserialize)]
struct Line {
    at: u64,
    #[serde(default)]
    hub: u16,
    addr: String,
    rssi: i16,
    #[serde(default)]
    data: String,
}

/// Writes a recording.
pub struct Recorder<W: Write> {
    out: W,
    key: [u8; 32],
    app_uuid: Option<uuid::Uuid>,
    /// Lines written.
    pub written: u64,
}

impl<W: Write> Recorder<W> {
    /// Starts a recording with its header. `app_uuid` is the app's token service, whose data is kept.
    pub fn new(
        mut out: W,
        hubs: &[String],
        source: &str,
        started: Timestamp,
        app_uuid: Option<uuid::Uuid>,
    ) -> std::io::Result<Recorder<W>> {
        let header = Header {
            beacond_recording: FORMAT,
            started: started.to_rfc3339(),
            hubs: hubs.to_vec(),
            source: source.into(),
        };
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        Ok(Recorder {
            out,
            key: rand::random(),
            app_uuid,
            written: 0,
        })
    }

    /// A stable pseudonym for `address` within this recording.
    fn pseudonym(&self, address: &[u8; 6]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(address);
        let mut b: [u8; 6] = mac.finalize().into_bytes()[..6]
            .try_into()
            .expect("6 bytes");
        // A random static address (top bits 11), so nothing mistakes it for a real public one.
        b[0] |= 0xc0;
        hex::encode(b)
    }

    /// Whether the payload is something beacond itself understands and may be kept.
    fn keep_payload(&self, payload: &[u8]) -> bool {
        let mut beacon = false;
        let decoded = decode_frames(payload, |_| beacon = true);
        if beacon {
            return true;
        }
        let Some(app) = self.app_uuid else {
            return false;
        };
        decoded.is_ok()
            && Advertisement::parse(payload)
                .map(|ad| ad.service_data().any(|(u, _)| u.to_uuid() == app))
                .unwrap_or(false)
    }

    /// Appends one advert.
    pub fn write(&mut self, adv: &Advert) -> std::io::Result<()> {
        let line = Line {
            at: adv.at.0,
            hub: adv.hub,
            addr: self.pseudonym(&adv.address),
            rssi: adv.rssi,
            data: if self.keep_payload(&adv.payload) {
                hex::encode(&adv.payload)
            } else {
                String::new()
            },
        };
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }

    /// Flushes what is written.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A recording being read, one advert at a time (recordings of a day do not need to fit in memory).
pub struct Recording {
    path: PathBuf,
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
    line_no: usize,
    /// The header.
    pub header: Header,
    first: Option<Advert>,
}

impl Recording {
    /// Opens a recording and reads its header and first advert.
    pub fn open(path: &Path) -> Result<Recording, ReplayError> {
        let io = |source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut lines = std::io::BufReader::new(file).lines();
        let first = lines.next().transpose().map_err(io)?.unwrap_or_default();
        let header: Header = serde_json::from_str(&first).map_err(|e| ReplayError::Line {
            path: path.to_path_buf(),
            line: 1,
            message: format!(
                "not a beacond recording header ({e}); make recordings with `beacond record FILE`"
            ),
        })?;
        if header.beacond_recording != FORMAT {
            return Err(ReplayError::Line {
                path: path.to_path_buf(),
                line: 1,
                message: format!(
                    "recording format {} is not supported by this beacond (it reads {FORMAT})",
                    header.beacond_recording
                ),
            });
        }
        let mut r = Recording {
            path: path.to_path_buf(),
            lines,
            line_no: 1,
            header,
            first: None,
        };
        r.first = r.next_advert()?;
        Ok(r)
    }

    /// When the recording's first advert was heard (or now, for an empty one).
    pub fn start(&self) -> Timestamp {
        self.first
            .as_ref()
            .map(|a| a.at)
            .unwrap_or_else(Timestamp::now)
    }

    /// The next advert, `None` at the end.
    pub fn next_advert(&mut self) -> Result<Option<Advert>, ReplayError> {
        if let Some(a) = self.first.take() {
            return Ok(Some(a));
        }
        loop {
            let Some(line) = self.lines.next() else {
                return Ok(None);
            };
            self.line_no += 1;
            let line = line.map_err(|source| ReplayError::Io {
                path: self.path.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |message: String| ReplayError::Line {
                path: self.path.clone(),
                line: self.line_no,
                message,
            };
            let l: Line = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            let addr = hex::decode(&l.addr)
                .ok()
                .and_then(|b| <[u8; 6]>::try_from(b).ok())
                .ok_or_else(|| bad(format!("addr {:?} is not 12 hex digits", l.addr)))?;
            let data = hex::decode(&l.data).map_err(|e| bad(format!("data is not hex ({e})")))?;
            if usize::from(l.hub) >= self.header.hubs.len().max(1) {
                return Err(bad(format!(
                    "hub {} is not in the header's hubs {:?}",
                    l.hub, self.header.hubs
                )));
            }
            return Ok(Some(Advert {
                at: Timestamp(l.at),
                hub: l.hub,
                address: addr,
                rssi: l.rssi,
                payload: Payload::from_slice(&data),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ibeacon() -> Payload {
        Payload::from_slice(
            &hex::decode("1aff4c000215e2c56db5dffb48d2b060d0f5a71096e000010002c5").unwrap(),
        )
    }

    #[test]
    fn a_recording_plays_back_what_was_heard_with_addresses_pseudonymised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let hubs = vec!["hub-1".to_string()];
        let mut rec = Recorder::new(
            std::fs::File::create(&path).unwrap(),
            &hubs,
            "bluez",
            Timestamp(5),
            None,
        )
        .unwrap();
        let phone = [1, 2, 3, 4, 5, 6];
        let other = Payload::from_slice(&hex::decode("05ff4c001005").unwrap());
        let adverts = [
            Advert {
                at: Timestamp(10),
                hub: 0,
                address: [9; 6],
                rssi: -60,
                payload: ibeacon(),
            },
            Advert {
                at: Timestamp(20),
                hub: 0,
                address: phone,
                rssi: -70,
                payload: other.clone(),
            },
            Advert {
                at: Timestamp(30),
                hub: 0,
                address: phone,
                rssi: -71,
                payload: other,
            },
        ];
        for a in &adverts {
            rec.write(a).unwrap();
        }
        rec.flush().unwrap();
        drop(rec);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("010203040506"), "a real address was written");
        assert!(
            !text.contains("4c001005"),
            "an unknown device's payload was kept"
        );
        let mut r = Recording::open(&path).unwrap();
        assert_eq!(r.header.hubs, hubs);
        assert_eq!(r.start(), Timestamp(10));
        let a = r.next_advert().unwrap().unwrap();
        assert_eq!((a.at, a.rssi, &a.payload), (Timestamp(10), -60, &ibeacon()));
        let b = r.next_advert().unwrap().unwrap();
        let c = r.next_advert().unwrap().unwrap();
        assert!(b.payload.is_empty());
        assert_eq!(b.address, c.address, "one device keeps one pseudonym");
        assert_ne!(b.address, phone);
        assert!(r.next_advert().unwrap().is_none());
    }

    #[test]
    fn a_bad_line_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(
            &path,
            "{\"beacond_recording\":1,\"started\":\"x\",\"hubs\":[\"h\"],\"source\":\"sim\"}\n\
             {\"at\":1,\"addr\":\"c00000000001\",\"rssi\":-50,\"data\":\"\"}\n\
             {\"at\":2,\"addr\":\"c00000000001\",\"rssi\":-50,\"data\":\"zz\"}\n",
        )
        .unwrap();
        let mut r = Recording::open(&path).unwrap();
        r.next_advert().unwrap();
        let e = r.next_advert().unwrap_err().to_string();
        assert!(
            e.ends_with("r.jsonl:3: data is not hex (Invalid character 'z' at position 0)"),
            "{e}"
        );
        std::fs::write(&path, "hello\n").unwrap();
        let e = Recording::open(&path).err().unwrap().to_string();
        assert!(
            e.contains("r.jsonl:1: not a beacond recording header"),
            "{e}"
        );
    }
}
