//! Observations a store's hubs share with each other, so each hub's engine decides on every hub's
//! signal as one engine hearing the whole store does (docs/presence.md, "As deployed").
//!
//! Sans-IO: the wire format, its checks and an outbox that batches a hub's own observations. The
//! core ([`crate::pipeline::Core`]) fills the outbox and applies peers' observations; the MQTT sink
//! carries the batches.
//!
//! Only opted-in customers and registered tags are ever shared, by the ids the hub's events already
//! publish. Anonymous devices are not shared in any form, not even as a salted handle: nothing that
//! could follow a person who has not opted in leaves the hub.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::time::Timestamp;

/// The batch schema this build writes and reads.
pub const SCHEMA: u32 = 1;

/// Observations in one batch at most: about ten seconds of a busy hub's known devices, far more than
/// one batch interval holds. A larger batch is refused whole rather than read in part.
pub const BATCH_MAX: usize = 4096;

/// Who a shared observation is about: an id the hub's events already publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Who {
    /// A customer who opted in, by platform id.
    CustomerId(String),
    /// A registered tag (not a person), by display id.
    TagId(String),
}

/// One advert a hub heard from a known device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shared {
    /// When the hub heard it: ms since the Unix epoch on that hub's clock.
    pub t: u64,
    /// Who it was.
    #[serde(flatten)]
    pub who: Who,
    /// Received signal strength, dBm.
    pub rssi: i16,
    /// The 1 m power the device's frame states, if it states one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<i8>,
}

/// What one hub sends on `{prefix}/{store}/{hub}/observations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The hub that heard them.
    pub hub: String,
    /// In the order heard.
    pub obs: Vec<Shared>,
}

/// Why a peer's batch was not applied.
#[derive(Debug, Error)]
pub enum PeerError {
    /// Not JSON of the batch's shape.
    #[error(
        "not a batch of shared observations ({0}); is another program publishing on the topic?"
    )]
    Json(#[from] serde_json::Error),
    /// Written by a beacond this build cannot read.
    #[error(
        "batch schema {0}, this beacond reads schema {SCHEMA}: upgrade the store's hubs together"
    )]
    Schema(u32),
    /// The batch names a different hub than its topic.
    #[error("batch from hub {named:?} on hub {topic:?}'s topic; check both hubs' [hub] hub_id")]
    Hub {
        /// The hub the payload names.
        named: String,
        /// The hub the topic names.
        topic: String,
    },
    /// More observations than [`BATCH_MAX`].
    #[error("batch of {0} observations, more than {BATCH_MAX}")]
    TooLarge(usize),
}

impl Batch {
    /// The payload to publish.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a batch always serializes")
    }

    /// Reads a batch that arrived on `topic_hub`'s topic, and checks it belongs there.
    pub fn decode(payload: &[u8], topic_hub: &str) -> Result<Batch, PeerError> {
        // The schema first, so a newer hub's batch is named as such and not as malformed.
        #[derive(Deserialize)]
        struct Head {
            schema: u32,
        }
        let head: Head = serde_json::from_slice(payload)?;
        if head.schema != SCHEMA {
            return Err(PeerError::Schema(head.schema));
        }
        let batch: Batch = serde_json::from_slice(payload)?;
        if batch.hub != topic_hub {
            return Err(PeerError::Hub {
                named: batch.hub,
                topic: topic_hub.to_owned(),
            });
        }
        if batch.obs.len() > BATCH_MAX {
            return Err(PeerError::TooLarge(batch.obs.len()));
        }
        Ok(batch)
    }
}

/// A hub's own observations of known devices, waiting for the next batch.
#[derive(Clone, Debug)]
pub struct Outbox {
    hub: String,
    obs: Vec<Shared>,
    dropped: u64,
}

impl Outbox {
    /// An empty outbox for `hub`'s observations.
    pub fn new(hub: &str) -> Outbox {
        Outbox {
            hub: hub.to_owned(),
            obs: Vec::new(),
            dropped: 0,
        }
    }

    /// Adds one observation; past [`BATCH_MAX`] waiting it is dropped and counted, since a batch
    /// nobody collected is too old for a peer to use anyway.
    pub fn push(&mut self, at: Timestamp, who: Who, rssi: i16, power: Option<i8>) {
        if self.obs.len() >= BATCH_MAX {
            self.dropped += 1;
            return;
        }
        self.obs.push(Shared {
            t: at.as_millis(),
            who,
            rssi,
            power,
        });
    }

    /// The waiting observations as a batch, if there are any.
    pub fn take(&mut self) -> Option<Batch> {
        if self.obs.is_empty() {
            return None;
        }
        Some(Batch {
            schema: SCHEMA,
            hub: self.hub.clone(),
            obs: std::mem::take(&mut self.obs),
        })
    }

    /// Drops what waits about customer `id`: they opted out, and nothing more about them may
    /// leave the hub.
    pub fn forget_customer(&mut self, id: &str) {
        self.obs
            .retain(|o| !matches!(&o.who, Who::CustomerId(c) if c == id));
    }

    /// Observations dropped because no batch was taken in time.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// What became of a peer's observation in the core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The engine has it.
    Yes,
    /// Heard longer ago than `[peers] max_lag_ms`: the engine has moved on.
    Late,
    /// A customer or tag this hub does not know (yet: the customer list may lag the peer's).
    Unknown,
    /// From a hub this hub is not set to hear.
    NotAPeer,
}

/// How long a peer's observations are judged together for lateness, ms of this hub's time.
pub const LATENESS_WINDOW_MS: u64 = 60_000;

/// How late one peer's observations arrive, by this hub's clock: a peer whose clock is behind
/// (no NTP) or a slow broker makes most of them too late to use, which the `late` counter shows
/// only in sum. Judged over windows of [`LATENESS_WINDOW_MS`].
#[derive(Clone, Debug, Default)]
pub struct Lateness {
    window_start: Option<Timestamp>,
    seen: u64,
    late: u64,
    least_delay_ms: Option<i64>,
    /// The last whole window: observations, of which late, and the least delay.
    last: Option<(u64, u64, i64)>,
}

impl Lateness {
    /// An observation heard at `t` by the peer's clock arrived at `mark` by this hub's; `late`:
    /// too old to use.
    pub fn note(&mut self, t: u64, mark: Timestamp, late: bool) {
        let start = *self.window_start.get_or_insert(mark);
        let delay = mark.0 as i64 - t as i64;
        self.seen += 1;
        self.late += u64::from(late);
        self.least_delay_ms = Some(self.least_delay_ms.map_or(delay, |d| d.min(delay)));
        if mark.since(start) >= LATENESS_WINDOW_MS {
            self.last = Some((self.seen, self.late, self.least_delay_ms.unwrap_or(0)));
            *self = Lateness {
                last: self.last,
                window_start: Some(mark),
                ..Lateness::default()
            };
        }
    }

    /// What to tell store IT about peer `hub`, when most of its observations in the last whole
    /// window came too late to use.
    pub fn problem(&self, hub: &str) -> Option<String> {
        let (seen, late, least) = self.last?;
        (late * 2 > seen).then(|| {
            format!(
                "{late} of {seen} observations from peer hub {hub} in the last minute came too late to \
                 use, the earliest {:.1} s after it heard them: its clock is behind this hub's, or \
                 the broker is slow; check NTP on both hubs (beacond doctor checks the clock)",
                least as f64 / 1000.0
            )
        })
    }
}

/// How long after connecting a peer with no retained status is named as unknown to the broker: its
/// status, if it has one, arrives with the subscription's acknowledgement.
pub const UNKNOWN_AFTER_MS: u64 = 30_000;

/// What the peers' retained statuses say, so a hub can tell store IT and the platform when a peer
/// it shares with is away (its customers are then decided on this hub's signal alone). Sans-IO:
/// fed the statuses and the time, asked for the notice.
#[derive(Clone, Debug)]
pub struct PeerWatch {
    peers: Vec<(String, Option<(bool, String)>)>,
    connected_at: Option<Timestamp>,
}

impl PeerWatch {
    /// Watching `peers`, none heard from yet.
    pub fn new(peers: &[String]) -> PeerWatch {
        PeerWatch {
            peers: peers.iter().map(|p| (p.clone(), None)).collect(),
            connected_at: None,
        }
    }

    /// Connected to the broker at `now`: the retained statuses come again.
    pub fn connected(&mut self, now: Timestamp) {
        self.connected_at = Some(now);
    }

    /// Peer `hub`'s status payload arrived.
    pub fn on_status(&mut self, hub: &str, payload: &[u8]) {
        let Some((_, state)) = self.peers.iter_mut().find(|(p, _)| p == hub) else {
            return;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        let online = v["state"] == "online";
        let reason = v["reason"].as_str().unwrap_or("no reason given").to_owned();
        *state = Some((online, reason));
    }

    /// What is wrong with the peers at `now`, for the hub's status; `None` when every peer is
    /// online (or it is too soon after connecting to say).
    pub fn notice(&self, now: Timestamp) -> Option<String> {
        let settled = self
            .connected_at
            .is_some_and(|c| now.since(c) >= UNKNOWN_AFTER_MS);
        let mut away = Vec::new();
        let mut unknown = Vec::new();
        for (hub, state) in &self.peers {
            match state {
                Some((true, _)) => {}
                Some((false, reason)) => away.push(format!("{hub} ({reason})")),
                None if settled => unknown.push(hub.as_str()),
                None => {}
            }
        }
        let mut parts = Vec::new();
        if !away.is_empty() {
            parts.push(format!(
                "peer hub(s) offline: {}; customers near them are decided on this hub's signal \
                 alone until they are back",
                away.join(", ")
            ));
        }
        if !unknown.is_empty() {
            parts.push(format!(
                "peer hub(s) {} never published on this broker: check [peers] hubs against \
                 their [hub] hub_id and store_id",
                unknown.join(", ")
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        let mut o = Outbox::new("hub-a");
        o.push(
            Timestamp(1_700_000_000_123),
            Who::CustomerId("c-1".into()),
            -61,
            Some(-59),
        );
        o.push(
            Timestamp(1_700_000_000_200),
            Who::TagId("trolley-7".into()),
            -80,
            None,
        );
        o.take().unwrap()
    }

    #[test]
    fn a_batch_reads_back_as_written_and_names_its_ids_plainly() {
        let b = batch();
        let bytes = b.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"schema":1,"hub":"hub-a","obs":[{"t":1700000000123,"customer_id":"c-1","rssi":-61,"power":-59},{"t":1700000000200,"tag_id":"trolley-7","rssi":-80}]}"#
        );
        assert_eq!(Batch::decode(&bytes, "hub-a").unwrap(), b);
    }

    #[test]
    fn an_empty_outbox_sends_nothing_and_a_taken_one_starts_again() {
        let mut o = Outbox::new("hub-a");
        assert!(o.take().is_none());
        o.push(Timestamp(1), Who::CustomerId("c".into()), -70, None);
        assert_eq!(o.take().unwrap().obs.len(), 1);
        assert!(o.take().is_none());
    }

    #[test]
    fn a_customer_who_opts_out_is_not_sent() {
        let mut o = Outbox::new("hub-a");
        o.push(Timestamp(1), Who::CustomerId("c-1".into()), -70, None);
        o.push(Timestamp(2), Who::CustomerId("c-2".into()), -70, None);
        o.push(Timestamp(3), Who::TagId("c-1".into()), -70, None);
        o.forget_customer("c-1");
        let left: Vec<Who> = o.take().unwrap().obs.into_iter().map(|s| s.who).collect();
        assert_eq!(
            left,
            [Who::CustomerId("c-2".into()), Who::TagId("c-1".into())]
        );
    }

    #[test]
    fn the_watch_names_peers_that_are_away_or_unknown() {
        let peers = ["hub-b".to_string(), "hub-c".to_string()];
        let mut w = PeerWatch::new(&peers);
        let t = Timestamp(1_000_000);
        assert_eq!(w.notice(t), None, "not connected yet");
        w.connected(t);
        w.on_status("hub-b", br#"{"state":"online"}"#);
        assert_eq!(w.notice(Timestamp(t.0 + UNKNOWN_AFTER_MS - 1)), None);
        assert_eq!(
            w.notice(Timestamp(t.0 + UNKNOWN_AFTER_MS)).unwrap(),
            "peer hub(s) hub-c never published on this broker: check [peers] hubs against their \
             [hub] hub_id and store_id"
        );
        w.on_status("hub-c", br#"{"state":"online"}"#);
        w.on_status(
            "hub-b",
            br#"{"state":"offline","reason":"connection lost"}"#,
        );
        // Not a peer, or not a status: ignored.
        w.on_status("hub-x", br#"{"state":"offline"}"#);
        w.on_status("hub-c", b"garbage");
        assert_eq!(
            w.notice(Timestamp(t.0 + UNKNOWN_AFTER_MS)).unwrap(),
            "peer hub(s) offline: hub-b (connection lost); customers near them are decided on \
             this hub's signal alone until they are back"
        );
        w.on_status("hub-b", br#"{"state":"online"}"#);
        assert_eq!(w.notice(Timestamp(t.0 + UNKNOWN_AFTER_MS)), None);
    }

    #[test]
    fn a_peer_whose_observations_mostly_come_too_late_is_named() {
        let mut l = Lateness::default();
        let t0 = 1_800_000_000_000u64;
        // A peer 3 s behind, for a window: every observation late.
        for s in 0..=60u64 {
            let mark = Timestamp(t0 + s * 1000);
            l.note(mark.0 - 3000, mark, true);
        }
        assert_eq!(
            l.problem("hub-b").unwrap(),
            "61 of 61 observations from peer hub hub-b in the last minute came too late to use, \
             the earliest 3.0 s after it heard them: its clock is behind this hub's, or the broker \
             is slow; check NTP on both hubs (beacond doctor checks the clock)"
        );
        // Its clock set right: the next window clears it.
        for s in 61..=121u64 {
            let mark = Timestamp(t0 + s * 1000);
            l.note(mark.0 - 100, mark, s % 3 == 0);
        }
        assert_eq!(l.problem("hub-b"), None);
        // Nothing judged before a whole window.
        let mut fresh = Lateness::default();
        fresh.note(t0 - 9000, Timestamp(t0), true);
        assert_eq!(fresh.problem("hub-b"), None);
    }

    #[test]
    fn a_full_outbox_drops_and_counts() {
        let mut o = Outbox::new("hub-a");
        for i in 0..BATCH_MAX as u64 + 3 {
            o.push(Timestamp(i), Who::CustomerId("c".into()), -70, None);
        }
        assert_eq!(o.dropped(), 3);
        assert_eq!(o.take().unwrap().obs.len(), BATCH_MAX);
    }

    #[test]
    fn batches_that_do_not_belong_are_refused_with_the_reason() {
        let good = batch().encode();
        let e = Batch::decode(&good, "hub-b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "batch from hub \"hub-a\" on hub \"hub-b\"'s topic; check both hubs' [hub] hub_id"
        );
        let newer = String::from_utf8(good)
            .unwrap()
            .replace("\"schema\":1", "\"schema\":2");
        assert!(matches!(
            Batch::decode(newer.as_bytes(), "hub-a"),
            Err(PeerError::Schema(2))
        ));
        assert!(matches!(
            Batch::decode(b"online", "hub-a"),
            Err(PeerError::Json(_))
        ));
        // Neither a customer nor a tag: the shape is wrong, not silently anonymous.
        let nobody = br#"{"schema":1,"hub":"hub-a","obs":[{"t":1,"rssi":-70}]}"#;
        assert!(matches!(
            Batch::decode(nobody, "hub-a"),
            Err(PeerError::Json(_))
        ));
        let mut big = batch();
        big.obs = vec![big.obs[0].clone(); BATCH_MAX + 1];
        assert!(matches!(
            Batch::decode(&big.encode(), "hub-a"),
            Err(PeerError::TooLarge(_))
        ));
    }
}
