//! The customer sync protocol, sans-IO: fed the payloads of `{prefix}/{store}/sync/customers` and
//! `now`, it says what to apply and when to ask the platform for what is missing. `docs/sync.md` is
//! the contract.
//!
//! A payload is `SIGNATURE_HEX '\n' BODY`: the platform's Ed25519 signature over the exact body bytes,
//! then the body (JSON). Checks run cheapest-first and a batch that fails any of them changes nothing:
//! signed at all → signature valid → well-formed → for this store → not older than what is applied.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::record::{CustomerEntry, CustomerRecord};
use crate::time::Timestamp;

/// Protocol version in every body.
pub const VERSION: u32 = 1;
/// First wait before asking again for a gap that was not filled; doubles up to [`RETRY_MAX_MS`].
const RETRY_FIRST_MS: u64 = 30_000;
/// Longest wait between requests for the same gap.
const RETRY_MAX_MS: u64 = 600_000;

/// A batch body on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireBatch {
    /// Protocol version: 1.
    pub v: u32,
    /// The store the batch is for; a batch for another store is rejected (a signed batch must not be
    /// replayable elsewhere).
    pub store: String,
    /// Sequence number, increasing by one per delta; a snapshot's states "everything up to here".
    pub seq: u64,
    /// `snapshot` or `delta`.
    #[serde(rename = "type")]
    pub kind: BatchKind,
    /// Snapshot only: this chunk's index, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
    /// Snapshot only: how many chunks the snapshot has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    /// Snapshot only: this chunk's customers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customers: Vec<CustomerRecord>,
    /// Delta only: customers added or changed (`opted_in: false` removes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<CustomerRecord>,
    /// Delta only: customer ids to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete: Vec<String>,
}

/// Kind of batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchKind {
    /// The full list, possibly in chunks.
    Snapshot,
    /// Changes since the previous sequence.
    Delta,
}

/// The request the hub publishes on `{prefix}/{store}/{hub}/sync/request`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The first sequence the hub is missing (1 when it has nothing: send a snapshot).
    pub from_seq: u64,
}

/// Why a batch was rejected. Each reason is a counter in `stats`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// No `identity.platform_public_key` is configured, so nothing can be trusted.
    #[error("identity.platform_public_key is not set in the config; no batch can be trusted")]
    NoKey,
    /// The payload does not start with a signature line.
    #[error("unsigned: the payload must start with 128 hex digits of signature and a newline")]
    Unsigned,
    /// The signature does not verify against the platform's key.
    #[error("bad signature: not signed by identity.platform_public_key, or altered")]
    BadSignature,
    /// Signed, but not a valid batch.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Signed for another store.
    #[error("for store {0:?}, not this one")]
    WrongStore(String),
    /// Already applied (or older than what is applied).
    #[error("replayed: seq {seq} is not newer than the applied {applied}")]
    Replayed {
        /// The batch's sequence.
        seq: u64,
        /// The applied one.
        applied: u64,
    },
    /// A delta that skips sequences: held back, the missing ones are requested.
    #[error(
        "gap: seq {seq} arrived but {expected} is next; asked the platform for the missing batches"
    )]
    Gap {
        /// The batch's sequence.
        seq: u64,
        /// The expected one.
        expected: u64,
    },
}

impl Reject {
    /// The counter name in `stats`.
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::NoKey => "no_key",
            Reject::Unsigned => "unsigned",
            Reject::BadSignature => "bad_signature",
            Reject::Malformed(_) => "malformed",
            Reject::WrongStore(_) => "wrong_store",
            Reject::Replayed { .. } => "replayed",
            Reject::Gap { .. } => "gap",
        }
    }
}

/// A batch that passed every check, to be applied to the cache and the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Apply these changes, then the applied sequence is `seq`.
    Delta {
        /// Sequence.
        seq: u64,
        /// Customers to add or change.
        upsert: Vec<CustomerEntry>,
        /// Customers to remove (including `opted_in: false` upserts).
        delete: Vec<String>,
    },
    /// Stage these customers; when `complete`, the staged snapshot replaces the cache.
    Chunk {
        /// Sequence.
        seq: u64,
        /// This chunk's index.
        chunk: u32,
        /// Chunks in the snapshot.
        chunks: u32,
        /// Whether this was the first chunk seen of the snapshot (start staging anew).
        first: bool,
        /// Whether every chunk has now arrived.
        complete: bool,
        /// This chunk's customers.
        customers: Vec<CustomerEntry>,
    },
}

/// Counters for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncStats {
    /// Batches applied (a snapshot counts once per chunk).
    pub accepted: u64,
    /// Rejected: no key configured.
    pub no_key: u64,
    /// Rejected: unsigned.
    pub unsigned: u64,
    /// Rejected: bad signature.
    pub bad_signature: u64,
    /// Rejected: malformed.
    pub malformed: u64,
    /// Rejected: for another store.
    pub wrong_store: u64,
    /// Rejected: replayed.
    pub replayed: u64,
    /// Held back: gap.
    pub gap: u64,
    /// Requests sent.
    pub requests: u64,
}

#[derive(Clone, Debug)]
struct Staging {
    seq: u64,
    have: Vec<bool>,
}

/// The protocol state.
#[derive(Clone, Debug)]
pub struct SyncState {
    key: Option<VerifyingKey>,
    store: String,
    applied: u64,
    staging: Option<Staging>,
    /// The newest sequence seen in an authentic batch: the hub wants everything up to it.
    newest_seen: u64,
    /// A request is due at this time (for the given `from_seq`).
    request_due: Option<Timestamp>,
    retry_ms: u64,
    stats: SyncStats,
}

/// Parses a public key as configured (64 hex digits).
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut b)
        .map_err(|_| "expected 64 hex digits (an Ed25519 public key)".to_string())?;
    VerifyingKey::from_bytes(&b).map_err(|_| "not a valid Ed25519 public key".to_string())
}

/// Signs `body` into a payload as the platform does (used by `beacond sync-publish` and tests).
pub fn sign(key: &SigningKey, body: &[u8]) -> Vec<u8> {
    let sig = key.sign(body);
    let mut out = hex::encode(sig.to_bytes()).into_bytes();
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

fn validate_all(
    records: &[CustomerRecord],
    field: &str,
    upsert: &mut Vec<CustomerEntry>,
    delete: &mut Vec<String>,
) -> Result<(), Reject> {
    for (i, r) in records.iter().enumerate() {
        let e = r
            .validate(&format!("{field}[{i}]"))
            .map_err(|e| Reject::Malformed(e.to_string()))?;
        if r.opted_in {
            upsert.push(e);
        } else {
            delete.push(e.id);
        }
    }
    Ok(())
}

impl SyncState {
    /// The state for a store, with the sequence the cache has applied.
    pub fn new(key: Option<VerifyingKey>, store: &str, applied: u64) -> SyncState {
        SyncState {
            key,
            store: store.to_owned(),
            applied,
            staging: None,
            newest_seen: applied,
            request_due: None,
            retry_ms: RETRY_FIRST_MS,
            stats: SyncStats::default(),
        }
    }

    /// Forgets what was applied, so the next request asks for everything (a snapshot): for a cache
    /// that could not be read back.
    pub fn start_over(&mut self) {
        self.applied = 0;
        self.newest_seen = 0;
    }

    /// The applied sequence.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Counters.
    pub fn stats(&self) -> SyncStats {
        self.stats
    }

    /// The connection to the broker is (re)established: ask at once for anything newer than what is
    /// applied (the platform answers with deltas, a snapshot, or nothing).
    pub fn handle_connected(&mut self, now: Timestamp) {
        self.request_due = Some(now);
        self.retry_ms = RETRY_FIRST_MS;
    }

    /// The cache could not take `accepted` (a card that cannot write): it is asked for again like
    /// a gap, first after `RETRY_FIRST_MS` and then with backoff, until a batch fills it.
    pub fn apply_failed(&mut self, now: Timestamp, accepted: &Accepted) {
        let (Accepted::Delta { seq, .. } | Accepted::Chunk { seq, .. }) = accepted;
        self.newest_seen = self.newest_seen.max(*seq);
        if self.request_due.is_none() {
            self.request_due = Some(Timestamp(now.0 + self.retry_ms));
            self.retry_ms = (self.retry_ms * 2).min(RETRY_MAX_MS);
        }
    }

    /// When [`SyncState::poll_request`] next has something to say.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.request_due
    }

    /// A request to publish now, if one is due. A gap is asked about again with backoff until filled.
    pub fn poll_request(&mut self, now: Timestamp) -> Option<SyncRequest> {
        let due = self.request_due?;
        if now < due {
            return None;
        }
        self.request_due = if self.missing() {
            let next = Timestamp(now.0 + self.retry_ms);
            self.retry_ms = (self.retry_ms * 2).min(RETRY_MAX_MS);
            Some(next)
        } else {
            None
        };
        self.stats.requests += 1;
        Some(SyncRequest {
            from_seq: self.applied + 1,
        })
    }

    fn missing(&self) -> bool {
        self.newest_seen > self.applied
    }

    /// Checks one payload. Nothing changes until the caller has applied the result and calls
    /// [`SyncState::commit`]; a rejection is already counted.
    pub fn check(&mut self, now: Timestamp, payload: &[u8]) -> Result<Accepted, Reject> {
        let r = self.check_inner(now, payload);
        match &r {
            Ok(_) => {}
            Err(e) => {
                let s = &mut self.stats;
                *match e {
                    Reject::NoKey => &mut s.no_key,
                    Reject::Unsigned => &mut s.unsigned,
                    Reject::BadSignature => &mut s.bad_signature,
                    Reject::Malformed(_) => &mut s.malformed,
                    Reject::WrongStore(_) => &mut s.wrong_store,
                    Reject::Replayed { .. } => &mut s.replayed,
                    Reject::Gap { .. } => &mut s.gap,
                } += 1;
            }
        }
        r
    }

    fn check_inner(&mut self, now: Timestamp, payload: &[u8]) -> Result<Accepted, Reject> {
        let key = self.key.ok_or(Reject::NoKey)?;
        let nl = payload
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(Reject::Unsigned)?;
        let (sig_hex, body) = (&payload[..nl], &payload[nl + 1..]);
        let mut sig = [0u8; 64];
        hex::decode_to_slice(sig_hex, &mut sig).map_err(|_| Reject::Unsigned)?;
        key.verify_strict(body, &Signature::from_bytes(&sig))
            .map_err(|_| Reject::BadSignature)?;
        let batch: WireBatch =
            serde_json::from_slice(body).map_err(|e| Reject::Malformed(e.to_string()))?;
        if batch.v != VERSION {
            return Err(Reject::Malformed(format!(
                "v: version {} is not supported (this hub speaks {VERSION})",
                batch.v
            )));
        }
        if batch.store != self.store {
            return Err(Reject::WrongStore(batch.store));
        }
        let seq = batch.seq;
        if seq <= self.applied {
            return Err(Reject::Replayed {
                seq,
                applied: self.applied,
            });
        }
        match batch.kind {
            BatchKind::Delta => {
                if batch.chunk.is_some() || batch.chunks.is_some() || !batch.customers.is_empty() {
                    return Err(Reject::Malformed(
                        "a delta has upsert and delete, not chunk, chunks or customers".into(),
                    ));
                }
                let (mut upsert, mut delete) = (Vec::new(), batch.delete);
                validate_all(&batch.upsert, "upsert", &mut upsert, &mut delete)?;
                self.newest_seen = self.newest_seen.max(seq);
                if seq != self.applied + 1 {
                    // While a snapshot is arriving it will close the gap; otherwise ask now.
                    if self.staging.is_none() && self.request_due.is_none() {
                        self.request_due = Some(now);
                        self.retry_ms = RETRY_FIRST_MS;
                    }
                    return Err(Reject::Gap {
                        seq,
                        expected: self.applied + 1,
                    });
                }
                Ok(Accepted::Delta {
                    seq,
                    upsert,
                    delete,
                })
            }
            BatchKind::Snapshot => {
                let (Some(chunk), Some(chunks)) = (batch.chunk, batch.chunks) else {
                    return Err(Reject::Malformed(
                        "a snapshot needs chunk and chunks".into(),
                    ));
                };
                if !batch.upsert.is_empty() || !batch.delete.is_empty() {
                    return Err(Reject::Malformed(
                        "a snapshot has customers, not upsert or delete".into(),
                    ));
                }
                if chunks == 0 || chunk >= chunks || chunks > 1_000_000 {
                    return Err(Reject::Malformed(format!(
                        "chunk {chunk} of {chunks}: chunk must be below chunks, chunks 1 to 1000000"
                    )));
                }
                let mut customers = Vec::with_capacity(batch.customers.len());
                let mut opted_out = Vec::new();
                validate_all(
                    &batch.customers,
                    "customers",
                    &mut customers,
                    &mut opted_out,
                )?;
                let first = match &self.staging {
                    Some(s) if s.seq == seq => {
                        if s.have.len() != chunks as usize {
                            return Err(Reject::Malformed(format!(
                                "chunks: {chunks}, but earlier chunks of snapshot {seq} said {}",
                                s.have.len()
                            )));
                        }
                        if s.have[chunk as usize] {
                            return Err(Reject::Replayed {
                                seq,
                                applied: self.applied,
                            });
                        }
                        false
                    }
                    Some(s) if s.seq > seq => {
                        return Err(Reject::Replayed {
                            seq,
                            applied: s.seq,
                        })
                    }
                    _ => true,
                };
                self.newest_seen = self.newest_seen.max(seq);
                let have = match (&self.staging, first) {
                    (Some(s), false) => s.have.iter().filter(|h| **h).count() + 1,
                    _ => 1,
                };
                Ok(Accepted::Chunk {
                    seq,
                    chunk,
                    chunks,
                    first,
                    complete: have == chunks as usize,
                    customers,
                })
            }
        }
    }

    /// Records that `accepted` was applied to the cache.
    pub fn commit(&mut self, now: Timestamp, accepted: &Accepted) {
        self.stats.accepted += 1;
        match accepted {
            Accepted::Delta { seq, .. } => self.applied = *seq,
            Accepted::Chunk {
                seq,
                chunk,
                chunks,
                first,
                complete,
                ..
            } => {
                if *complete {
                    self.applied = *seq;
                    self.staging = None;
                } else {
                    if *first || self.staging.is_none() {
                        self.staging = Some(Staging {
                            seq: *seq,
                            have: vec![false; *chunks as usize],
                        });
                    }
                    if let Some(s) = &mut self.staging {
                        s.have[*chunk as usize] = true;
                    }
                }
            }
        }
        if !self.missing() {
            self.request_due = None;
            self.retry_ms = RETRY_FIRST_MS;
        } else if self.staging.is_none() && self.request_due.is_none() {
            // A snapshot landed but deltas after it were held back: ask for them now.
            self.request_due = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keypair() -> (SigningKey, VerifyingKey) {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let vk = sk.verifying_key();
        (sk, vk)
    }

    fn delta(seq: u64, upsert: serde_json::Value, delete: &[&str]) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"v":1,"store":"s1","seq":seq,"type":"delta","upsert":upsert,"delete":delete}),
        )
        .unwrap()
    }

    fn chunk(seq: u64, i: u32, n: u32, ids: &[&str]) -> Vec<u8> {
        let customers: Vec<_> = ids.iter().map(|id| json!({"id": id})).collect();
        serde_json::to_vec(&json!({"v":1,"store":"s1","seq":seq,"type":"snapshot","chunk":i,"chunks":n,"customers":customers})).unwrap()
    }

    const T: Timestamp = Timestamp(1_000_000);

    #[test]
    fn snapshot_in_chunks_then_deltas() {
        let (sk, vk) = keypair();
        let mut s = SyncState::new(Some(vk), "s1", 0);
        let a = s.check(T, &sign(&sk, &chunk(10, 1, 2, &["b"]))).unwrap();
        assert!(matches!(
            a,
            Accepted::Chunk {
                first: true,
                complete: false,
                ..
            }
        ));
        s.commit(T, &a);
        // The same chunk again changes nothing.
        assert!(matches!(
            s.check(T, &sign(&sk, &chunk(10, 1, 2, &["b"]))),
            Err(Reject::Replayed { .. })
        ));
        let a = s.check(T, &sign(&sk, &chunk(10, 0, 2, &["a"]))).unwrap();
        assert!(matches!(
            a,
            Accepted::Chunk {
                first: false,
                complete: true,
                ..
            }
        ));
        s.commit(T, &a);
        assert_eq!(s.applied(), 10);
        let a = s
            .check(
                T,
                &sign(
                    &sk,
                    &delta(11, json!([{"id":"c","opted_in":false}]), &["a"]),
                ),
            )
            .unwrap();
        match &a {
            Accepted::Delta {
                seq,
                upsert,
                delete,
            } => {
                assert_eq!(*seq, 11);
                assert!(upsert.is_empty());
                assert_eq!(delete, &["a".to_string(), "c".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        s.commit(T, &a);
        assert_eq!(s.applied(), 11);
        assert_eq!(s.stats().accepted, 3);
    }

    #[test]
    fn unsigned_tampered_foreign_replayed_and_malformed_batches_are_rejected() {
        let (sk, vk) = keypair();
        let mut s = SyncState::new(Some(vk), "s1", 5);
        let body = delta(6, json!([{"id":"x"}]), &[]);
        assert_eq!(s.check(T, &body), Err(Reject::Unsigned));
        let mut tampered = sign(&sk, &body);
        let n = tampered.len();
        tampered[n - 3] ^= 1;
        assert_eq!(s.check(T, &tampered), Err(Reject::BadSignature));
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert_eq!(s.check(T, &sign(&other, &body)), Err(Reject::BadSignature));
        let foreign =
            serde_json::to_vec(&json!({"v":1,"store":"s2","seq":6,"type":"delta"})).unwrap();
        assert_eq!(
            s.check(T, &sign(&sk, &foreign)),
            Err(Reject::WrongStore("s2".into()))
        );
        assert!(matches!(
            s.check(T, &sign(&sk, &delta(5, json!([]), &["x"]))),
            Err(Reject::Replayed { seq: 5, applied: 5 })
        ));
        let bad = delta(6, json!([{"id":"x","beacons":["ibeacon:zz"]}]), &[]);
        match s.check(T, &sign(&sk, &bad)) {
            Err(Reject::Malformed(m)) => assert!(m.starts_with("upsert[0].beacons[0]"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.check(T, &sign(&sk, b"{not json")),
            Err(Reject::Malformed(_))
        ));
        let st = s.stats();
        assert_eq!(
            (
                st.unsigned,
                st.bad_signature,
                st.wrong_store,
                st.replayed,
                st.malformed,
                st.accepted
            ),
            (1, 2, 1, 1, 2, 0)
        );
        assert_eq!(s.applied(), 5);
        let mut keyless = SyncState::new(None, "s1", 0);
        assert_eq!(keyless.check(T, &sign(&sk, &body)), Err(Reject::NoKey));
    }

    #[test]
    fn a_gap_asks_for_the_missing_batches_and_asks_again_until_filled() {
        let (sk, vk) = keypair();
        let mut s = SyncState::new(Some(vk), "s1", 3);
        assert_eq!(s.poll_request(T), None);
        assert_eq!(
            s.check(T, &sign(&sk, &delta(6, json!([]), &["x"]))),
            Err(Reject::Gap {
                seq: 6,
                expected: 4
            })
        );
        assert_eq!(s.poll_request(T), Some(SyncRequest { from_seq: 4 }));
        assert_eq!(s.poll_request(T), None);
        let retry = s.poll_timeout().unwrap();
        assert_eq!(retry, Timestamp(T.0 + 30_000));
        assert_eq!(s.poll_request(retry), Some(SyncRequest { from_seq: 4 }));
        assert_eq!(s.poll_timeout(), Some(Timestamp(retry.0 + 60_000)));
        for seq in 4..=6 {
            let a = s
                .check(T, &sign(&sk, &delta(seq, json!([]), &["x"])))
                .unwrap();
            s.commit(T, &a);
        }
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.stats().requests, 2);
    }

    #[test]
    fn a_batch_the_cache_could_not_take_is_asked_for_again_until_applied() {
        let (sk, vk) = keypair();
        let mut s = SyncState::new(Some(vk), "s1", 3);
        let a = s
            .check(T, &sign(&sk, &delta(4, json!([]), &["x"])))
            .unwrap();
        // Not committed: the card refused the write.
        s.apply_failed(T, &a);
        assert_eq!(s.poll_request(T), None, "not at once: the card needs time");
        let due = s.poll_timeout().unwrap();
        assert_eq!(due, Timestamp(T.0 + 30_000));
        assert_eq!(s.poll_request(due), Some(SyncRequest { from_seq: 4 }));
        // Still not taken: again, later.
        assert_eq!(s.poll_timeout(), Some(Timestamp(due.0 + 60_000)));
        let a = s
            .check(due, &sign(&sk, &delta(4, json!([]), &["x"])))
            .unwrap();
        s.commit(due, &a);
        assert_eq!(s.applied(), 4);
        assert_eq!(s.poll_timeout(), None, "filled: nothing more to ask");
    }

    #[test]
    fn connecting_asks_once_from_the_applied_sequence() {
        let (_, vk) = keypair();
        let mut s = SyncState::new(Some(vk), "s1", 41);
        s.handle_connected(T);
        assert_eq!(s.poll_request(T), Some(SyncRequest { from_seq: 42 }));
        assert_eq!(s.poll_timeout(), None);
    }
}
