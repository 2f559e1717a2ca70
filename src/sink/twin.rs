//! Another daemon publishing as this hub: two hubs with one `hub_id`, the usual result of copying
//! one hub's SD card to set up the next. With the same client id the broker lets only one of them
//! on at a time, so they throw each other off forever; with different ones both publish to the
//! same topics. Either way the platform cannot tell their events apart, and nothing fails loudly.
//!
//! The hub subscribes to its own retained status topic and watches who else says "online" there.
//! Pure: fed what arrives and `now`, it says when a twin is found and when it has gone quiet.

use serde_json::Value;

use crate::time::Timestamp;

/// How long without a sighting before the warning is withdrawn: far longer than the reconnect
/// backoff (at most a minute) by which two hubs sharing a client id take turns.
pub const QUIET_MS: u64 = 15 * 60 * 1000;

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Twin {
    /// Another daemon publishes as this hub; what to tell store IT.
    Found(String),
    /// None has been seen for [`QUIET_MS`].
    Gone,
}

/// Watches this hub's status topic for another daemon's.
#[derive(Clone, Debug)]
pub struct TwinWatch {
    /// This daemon's `started_at` as it publishes it: its statuses and its Last Will carry it.
    own_started_at: String,
    /// Its own `online` came back from the broker: from then on the retained status is its own
    /// until somebody else's replaces it.
    stored: bool,
    /// Retained statuses of another daemon found on subscribing after that; see `on_status`.
    retained_sightings: u32,
    last_sighting_ms: Option<u64>,
    found: bool,
}

impl TwinWatch {
    /// A watch for the daemon that started at `started` (and says so in its status).
    pub fn new(started: Timestamp) -> TwinWatch {
        TwinWatch {
            own_started_at: started.to_rfc3339(),
            stored: false,
            retained_sightings: 0,
            last_sighting_ms: None,
            found: false,
        }
    }

    /// A status payload that arrived on this hub's status topic at `now`, `retained` as the
    /// broker flagged it (the hub subscribes before it says it is online, so a retained one is
    /// the last word before this connection).
    ///
    /// A dead daemon publishes nothing new: its last status, or its Last Will fired late, is the
    /// retained one this daemon finds when it first connects, and its own `online` replaces it.
    /// So what counts is another daemon's status (any `started_at` but this one's) that is
    /// either sent live and says `online` (a daemon connected right now), or retained on a later
    /// connection, after this daemon's own `online` was stored: somebody published over it since.
    /// Twice for the retained kind, so one odd message (a platform tool tidying topics) is not
    /// enough; two hubs that share a client id and throw each other off find it within a few
    /// rounds.
    pub fn on_status(&mut self, now: Timestamp, payload: &[u8], retained: bool) -> Option<Twin> {
        let v: Value = serde_json::from_slice(payload).ok()?;
        let online = v["state"] == "online";
        // A Last Will from before started_at was in it (an older beacond) is not this one's.
        if v["started_at"].as_str() == Some(self.own_started_at.as_str()) {
            if online && !retained {
                self.stored = true;
            }
            return None;
        }
        if retained {
            if !self.stored {
                return None;
            }
            self.retained_sightings += 1;
            if self.retained_sightings < 2 && !self.found {
                return None;
            }
        } else if !online {
            // A live Last Will may be a dead run's, fired late.
            return None;
        }
        self.last_sighting_ms = Some(now.0);
        if self.found {
            return None;
        }
        self.found = true;
        let describe = |key: &str| v[key].as_str().unwrap_or("?").to_owned();
        Some(Twin::Found(format!(
            "another beacond publishes as store {} hub {} (started {}): two hubs share this \
             hub_id, e.g. a copied SD card. Give each its own [hub] hub_id and restart it; until \
             then they take turns on the broker and the platform cannot tell their events apart",
            describe("store"),
            describe("hub"),
            describe("started_at"),
        )))
    }

    /// At `now`: [`Twin::Gone`] once nothing has been seen of the twin for [`QUIET_MS`].
    pub fn poll(&mut self, now: Timestamp) -> Option<Twin> {
        let last = self.last_sighting_ms?;
        if !self.found || now.0.saturating_sub(last) < QUIET_MS {
            return None;
        }
        self.found = false;
        self.retained_sightings = 0;
        self.last_sighting_ms = None;
        Some(Twin::Gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_800_000_000_000;

    fn status(state: &str, started: u64) -> Vec<u8> {
        serde_json::json!({
            "schema": 1, "state": state, "store": "s1", "hub": "h1", "version": "0.1.0",
            "started_at": Timestamp(started).to_rfc3339(), "config_hash": "0011223344556677",
            "at": Timestamp(started + 100).to_rfc3339(),
        })
        .to_string()
        .into_bytes()
    }

    /// A watch whose own `online` has come back from the broker.
    fn stored() -> TwinWatch {
        let mut w = TwinWatch::new(Timestamp(START));
        assert_eq!(
            w.on_status(Timestamp(START), &status("online", START), false),
            None
        );
        w
    }

    #[test]
    fn its_own_statuses_and_a_dead_run_are_not_a_twin() {
        let mut w = TwinWatch::new(Timestamp(START));
        let now = Timestamp(START + 5_000);
        // The run before this one, found on connecting, whatever it last said; an older
        // beacond's Last Will without started_at; a late Last Will sent live.
        let old = START - 3_600_000;
        for payload in [
            status("online", old),
            status("offline", old),
            br#"{"schema":1,"state":"offline","reason":"connection lost","store":"s1","hub":"h1"}"#
                .to_vec(),
        ] {
            assert_eq!(w.on_status(now, &payload, true), None);
            assert_eq!(w.on_status(now, &payload, true), None);
        }
        assert_eq!(w.on_status(now, &status("offline", old), false), None);
        // Its own online echoed, and on every later connection its own status or Last Will.
        assert_eq!(w.on_status(now, &status("online", START), false), None);
        for _ in 0..3 {
            assert_eq!(w.on_status(now, &status("online", START), true), None);
            assert_eq!(w.on_status(now, &status("offline", START), true), None);
        }
        assert_eq!(w.on_status(now, b"not json", false), None);
        assert_eq!(w.poll(Timestamp(START + 2 * QUIET_MS)), None);
    }

    #[test]
    fn a_twin_connected_now_is_found_at_once() {
        let mut w = TwinWatch::new(Timestamp(START));
        let other = status("online", START + 1_000);
        match w.on_status(Timestamp(START + 1_300), &other, false) {
            Some(Twin::Found(text)) => {
                assert!(text.contains("store s1 hub h1"), "{text}");
                assert!(text.contains("[hub] hub_id"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        // Said once, not at every sighting.
        assert_eq!(w.on_status(Timestamp(START + 1_400), &other, false), None);
    }

    #[test]
    fn a_twin_taking_turns_is_found_on_the_second_retained_sighting() {
        let mut w = stored();
        // Its online, or its Last Will when the broker let this hub back on.
        let other = START - 60_000;
        assert_eq!(
            w.on_status(Timestamp(START + 1), &status("online", other), true),
            None
        );
        assert!(matches!(
            w.on_status(Timestamp(START + 2), &status("offline", other), true),
            Some(Twin::Found(_))
        ));
    }

    #[test]
    fn the_warning_is_withdrawn_after_a_quiet_spell_at_the_boundary() {
        let mut w = stored();
        let seen = START + 10_000;
        let other = status("online", START + 1);
        assert!(w.on_status(Timestamp(seen), &other, false).is_some());
        // Seen again later: the quiet spell counts from the last sighting.
        let again = seen + QUIET_MS / 2;
        assert_eq!(w.on_status(Timestamp(again), &other, true), None);
        assert_eq!(w.poll(Timestamp(again + QUIET_MS - 1)), None);
        assert_eq!(w.poll(Timestamp(again + QUIET_MS)), Some(Twin::Gone));
        assert_eq!(w.poll(Timestamp(again + 2 * QUIET_MS)), None);
        // Back again: one retained sighting is not enough any more, a live one is.
        let later = Timestamp(again + 3 * QUIET_MS);
        assert!(w.on_status(later, &other, true).is_none());
        assert!(w.on_status(later, &other, false).is_some());
    }
}
