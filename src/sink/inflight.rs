//! Which spool entry a broker's PUBACK acknowledges, sans-IO.
//!
//! rumqttc gives no per-message token: the only link between a message handed to the client and the
//! packet id it goes out with is the order of the client's `Outgoing::Publish` events, which follow
//! the order in which messages were handed over. [`InFlight`] keeps that order, pairs each event
//! with its spool entry, and turns PUBACKs into spool entries to remove. It also notices when the
//! events stop matching what was handed over, so the connection can start over instead of removing
//! entries on the strength of other messages' PUBACKs.

use std::collections::{HashMap, VecDeque};

/// What the event stream said that cannot be what was handed over: the pairing is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an outgoing publish with packet id {pkid} does not match the message handed over next")]
pub struct Misaligned {
    /// The event's packet id.
    pub pkid: u16,
}

/// One message handed to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handed {
    /// A spool entry: seq, QoS.
    Entry(u64, u8),
    /// A message that is not in the spool (status, sync request, observations for peers), at this
    /// QoS.
    Other(u8),
}

impl Handed {
    fn qos(self) -> u8 {
        match self {
            Handed::Entry(_, q) | Handed::Other(q) => q,
        }
    }
}

/// Messages handed to the MQTT client on this connection and not yet acknowledged.
#[derive(Debug, Default)]
pub struct InFlight {
    /// What was handed to the client, in order.
    handed: VecDeque<Handed>,
    /// Sent QoS 1 spool entries by packet id, until their PUBACK.
    unacked: HashMap<u16, u64>,
    /// The next spool seq to hand over.
    cursor: u64,
    /// Acknowledged spool entries, not yet removed: removed in batches, since one spool write per
    /// PUBACK costs more than the publish itself.
    acked: Vec<u64>,
}

impl InFlight {
    /// Nothing in flight.
    pub fn new() -> InFlight {
        InFlight::default()
    }

    /// A new connection (or a new broker): what was in flight on the old one is gone with its clean
    /// session, so the spool is sent again from its start. What was acknowledged stays acknowledged.
    pub fn restart(&mut self) {
        self.handed.clear();
        self.unacked.clear();
        self.cursor = 0;
    }

    /// Messages in flight, handed over or sent and waiting for their PUBACK.
    pub fn len(&self) -> usize {
        self.handed.len() + self.unacked.len()
    }

    /// Nothing in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The spool seq to read from for the next messages to hand over.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Spool entry `seq`, at QoS `qos`, was handed to the client.
    pub fn handed_entry(&mut self, seq: u64, qos: u8) {
        self.handed.push_back(Handed::Entry(seq, qos));
        self.cursor = seq + 1;
    }

    /// A message that is not in the spool, at QoS `qos`, was handed to the client.
    pub fn handed_other(&mut self, qos: u8) {
        self.handed.push_back(Handed::Other(qos));
    }

    /// The client sent the next message with packet id `pkid` (0 for QoS 0). A QoS 0 entry counts
    /// as delivered once written. QoS 0 goes out with packet id 0 and QoS 1 never does, so a
    /// mismatch proves the event is not for the message handed over next.
    pub fn on_outgoing(&mut self, pkid: u16) -> Result<(), Misaligned> {
        let entry = self.handed.front().copied();
        if entry.is_some_and(|h| h.qos() == 0) != (pkid == 0) {
            return Err(Misaligned { pkid });
        }
        self.handed.pop_front();
        match entry {
            Some(Handed::Entry(seq, 0)) => self.acked.push(seq),
            Some(Handed::Entry(seq, _)) => {
                self.unacked.insert(pkid, seq);
            }
            _ => {}
        }
        Ok(())
    }

    /// The broker acknowledged packet id `pkid`.
    pub fn on_puback(&mut self, pkid: u16) {
        if let Some(seq) = self.unacked.remove(&pkid) {
            self.acked.push(seq);
        }
    }

    /// After a [`Misaligned`]: nothing in flight can be paired with its PUBACK any more, so none of
    /// it counts as acknowledged; the connection must start over (and [`restart`](Self::restart)).
    pub fn forget(&mut self) {
        self.handed.clear();
        self.unacked.clear();
    }

    /// The acknowledged entries to remove from the spool now: once half a window has gathered, or
    /// when nothing else is waiting for a PUBACK.
    pub fn take_acked(&mut self, window: usize) -> Option<Vec<u64>> {
        let due =
            self.acked.len() >= window / 2 || (!self.acked.is_empty() && self.unacked.is_empty());
        due.then(|| std::mem::take(&mut self.acked))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_puback_removes_the_entry_it_was_sent_for() {
        let mut f = InFlight::new();
        f.handed_other(1); // the status
        f.handed_entry(10, 1);
        f.handed_entry(11, 0);
        f.handed_entry(12, 1);
        assert_eq!(f.cursor(), 13);
        assert_eq!(f.len(), 4);
        for pkid in [1, 2, 0, 3] {
            f.on_outgoing(pkid).unwrap();
        }
        // The QoS 0 entry is done once written; the QoS 1 ones wait for their PUBACK.
        assert_eq!(f.take_acked(64), None, "entries 10 and 12 still wait");
        f.on_puback(3);
        f.on_puback(1); // the status: not in the spool
        assert_eq!(f.take_acked(64), None);
        f.on_puback(2);
        assert_eq!(f.take_acked(64), Some(vec![11, 12, 10]));
        assert!(f.is_empty());
    }

    /// Observations for peer hubs go out at QoS 0 beside the spool: they take their place in the
    /// order without acknowledging an entry, and without being taken for a stray.
    #[test]
    fn a_qos_0_message_beside_the_spool_keeps_the_pairing() {
        let mut f = InFlight::new();
        f.handed_entry(10, 1);
        f.handed_other(0);
        f.handed_entry(11, 1);
        for pkid in [1, 0, 2] {
            f.on_outgoing(pkid).unwrap();
        }
        f.on_puback(2);
        f.on_puback(1);
        assert_eq!(f.take_acked(64), Some(vec![11, 10]));
        assert!(f.is_empty());
        // Taken for a QoS 1 message, its packet id 0 gives the mismatch away.
        f.handed_other(1);
        assert!(f.on_outgoing(0).is_err());
    }

    #[test]
    fn a_puback_of_an_unknown_or_old_packet_acknowledges_nothing() {
        let mut f = InFlight::new();
        f.handed_entry(5, 1);
        f.on_outgoing(7).unwrap();
        f.on_puback(8);
        f.restart();
        // The old connection's PUBACK for 7 arrives late: entry 5 is sent again, not removed.
        f.on_puback(7);
        assert_eq!(f.take_acked(64), None);
        assert_eq!(f.cursor(), 0, "the spool is sent again from its start");
    }

    #[test]
    fn acknowledged_entries_are_removed_in_batches_of_half_a_window() {
        let mut f = InFlight::new();
        for seq in 0..40 {
            f.handed_entry(seq, 1);
            f.on_outgoing(seq as u16 + 1).unwrap();
        }
        for pkid in 1..32 {
            f.on_puback(pkid);
            assert_eq!(f.take_acked(64), None, "only {pkid} acknowledged");
        }
        f.on_puback(32);
        assert_eq!(f.take_acked(64).unwrap().len(), 32);
    }

    /// The event of the old connection that rumqttc yields after a reconnect (a publish whose write
    /// failed) would shift every pairing by one; the first QoS 0 message where a QoS 1 one is due
    /// (or the other way round) gives it away, and nothing is acknowledged on its strength.
    #[test]
    fn a_stray_outgoing_event_is_caught_at_the_first_qos_mismatch() {
        let mut f = InFlight::new();
        f.handed_other(1); // the status, QoS 1
        f.handed_entry(1, 1);
        f.handed_entry(2, 0);
        f.handed_entry(3, 1);
        f.on_outgoing(41).unwrap(); // stray: taken for the status
        f.on_outgoing(42).unwrap(); // the status: taken for entry 1
        assert_eq!(
            f.on_outgoing(43),
            Err(Misaligned { pkid: 43 }),
            "entry 1's packet where QoS 0 entry 2 is due"
        );
        f.forget();
        f.on_puback(42);
        assert_eq!(
            f.take_acked(64),
            None,
            "the status's PUBACK removes nothing"
        );
        assert!(f.is_empty());
    }
}
