//! Identity stage: who is behind an advertisement.
//!
//! An advertisement resolves to a known customer (a loyalty fob registered to them, or the retailer
//! app's rotating token, see [`token`]), to a registered beacon (a tagged asset), or to an anonymous
//! device. Anonymous devices are keyed by a salted hash of their address that never
//! leaves the process: they only ever feed aggregate counts.
//!
//! The platform owns the customer list: [`sync`] checks its signed batches, [`cache`] keeps the
//! durable copy in sled, and the [`Directory`] is the in-memory index the hot path reads.

pub mod cache;
pub mod publish;
pub mod record;
pub mod stage;
pub mod sync;
pub mod token;

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::decode::Frame;
use token::{AppKeys, Target};

/// A customer known to this hub, as an index into the [`Directory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerKey(pub u32);

/// A registered (non-customer) beacon, as an index into the [`Directory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagKey(pub u32);

/// Who an observation is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A customer who opted in.
    Customer(CustomerKey),
    /// A registered beacon that is not a person (e.g. an asset tag).
    Tag(TagKey),
    /// Anyone else: a salted hash of the device address, never published.
    Anonymous(u64),
}

impl Identity {
    /// Whether events may name this identity.
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Identity::Anonymous(_))
    }
}

/// A beacon's stable identifier, as decoded from its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BeaconId {
    /// iBeacon proximity UUID, major, minor.
    IBeacon {
        /// Proximity UUID.
        uuid: [u8; 16],
        /// Major.
        major: u16,
        /// Minor.
        minor: u16,
    },
    /// AltBeacon 20-byte id.
    AltBeacon([u8; 20]),
    /// Eddystone-UID namespace and instance.
    EddystoneUid {
        /// Namespace.
        namespace: [u8; 10],
        /// Instance.
        instance: [u8; 6],
    },
}

impl BeaconId {
    /// The identifier a frame carries, if it is an identifying frame.
    pub fn of(frame: &Frame) -> Option<BeaconId> {
        match frame {
            Frame::IBeacon(b) => Some(BeaconId::IBeacon {
                uuid: *b.uuid.as_bytes(),
                major: b.major,
                minor: b.minor,
            }),
            Frame::AltBeacon(b) => Some(BeaconId::AltBeacon(b.beacon_id)),
            Frame::EddystoneUid(b) => Some(BeaconId::EddystoneUid {
                namespace: b.namespace,
                instance: b.instance,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for BeaconId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BeaconId::IBeacon { uuid, major, minor } => write!(
                f,
                "ibeacon:{}:{major}:{minor}",
                uuid::Uuid::from_bytes(*uuid).hyphenated()
            ),
            BeaconId::AltBeacon(id) => write!(f, "altbeacon:{}", hex::encode(id)),
            BeaconId::EddystoneUid {
                namespace,
                instance,
            } => write!(
                f,
                "eddystone:{}:{}",
                hex::encode(namespace),
                hex::encode(instance)
            ),
        }
    }
}

/// A customer as the hub knows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Customer {
    /// The platform's customer id.
    pub id: String,
    /// Marketing segments, for offer rules.
    pub segments: Vec<String>,
}

/// What a registered beacon id stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// A customer or a tag: tracked by the presence engine.
    Identity(Identity),
    /// One of the store's own fixed beacons: infrastructure, fed to fleet health, never to presence
    /// (a shelf beacon is not a shopper and must not inflate headcounts).
    Fixed(u32),
}

/// App key material of one customer slot, shared with token table builders running in the
/// background: a snapshot of every slot is a vector of reference counts, not a copy of the keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// The slot and its generation when the material was set.
    pub target: Target,
    /// The material.
    pub keys: AppKeys,
}

/// What a beacon id is registered as, in half the room of [`Known`] (a million fobs: 16 MiB less).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Customer(u32),
    Tag(u32),
    Fixed(u32),
}

fn id_hash(id: &str) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(id)
}

/// Whether slot `k` holds the customer with platform id `id`.
fn holds(slots: &[Option<Slot>], k: u32, id: &str) -> bool {
    slots[k as usize]
        .as_ref()
        .is_some_and(|s| s.customer.id == id)
}

#[derive(Clone, Debug)]
struct Slot {
    customer: Customer,
    beacons: SmallVec<[BeaconId; 1]>,
}

/// The in-memory lookup from identifiers to identities. Lookups are one hash probe.
///
/// Customer keys are slots that stay stable while a customer is known (the presence engine's state is
/// keyed by them); a deleted customer's slot gets a new generation before it is reused, so nothing
/// that remembered the old key (a token table) can resolve to the next occupant.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    slots: Vec<Option<Slot>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    /// Slot numbers, found by the id in their slot: the id is kept once, not again as a key.
    by_id: HashTable<u32>,
    app_keys: Vec<Option<Arc<KeyEntry>>>,
    tags: Vec<String>,
    fixed: Vec<String>,
    by_beacon: FxHashMap<BeaconId, Link>,
    /// Per slot, the load it was last written in: a full list arrives in parts, and whoever no part
    /// wrote is who the list left out.
    marks: Vec<u32>,
    mark: u32,
}

impl Directory {
    /// An empty directory: everyone is anonymous.
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Adds a customer and the beacons registered to them; returns their key.
    pub fn add_customer(&mut self, customer: Customer, beacons: &[BeaconId]) -> CustomerKey {
        self.upsert(customer, beacons, None).0
    }

    /// Adds or replaces a customer (by platform id) with their beacons and app key material; returns
    /// their key, which is the same as before for a customer already known, and whether their app key
    /// material changed.
    pub fn upsert(
        &mut self,
        customer: Customer,
        beacons: &[BeaconId],
        keys: Option<AppKeys>,
    ) -> (CustomerKey, bool) {
        let hash = id_hash(&customer.id);
        let slots = &self.slots;
        let known = self
            .by_id
            .find(hash, |&k| holds(slots, k, &customer.id))
            .copied();
        let key = match known {
            Some(k) => {
                let k = CustomerKey(k);
                self.unlink_beacons(k);
                k
            }
            None => match self.free.pop() {
                Some(i) => CustomerKey(i),
                None => {
                    self.slots.push(None);
                    self.generations.push(0);
                    self.app_keys.push(None);
                    self.marks.push(0);
                    CustomerKey(self.slots.len() as u32 - 1)
                }
            },
        };
        let i = key.0 as usize;
        for b in beacons {
            self.by_beacon.insert(*b, Link::Customer(key.0));
        }
        let old_keys = self.app_keys[i].as_ref().map(|e| &e.keys);
        let keys_changed = old_keys != keys.as_ref();
        if keys_changed {
            // New material: tokens built from the old one must stop resolving.
            self.generations[i] = self.generations[i].wrapping_add(1);
            let target = Target {
                slot: key.0,
                generation: self.generations[i],
            };
            self.app_keys[i] = keys.map(|keys| Arc::new(KeyEntry { target, keys }));
        }
        self.slots[i] = Some(Slot {
            customer,
            beacons: beacons.iter().copied().collect(),
        });
        self.marks[i] = self.mark;
        if known.is_none() {
            // Only now that the slot holds the id: growing the table rehashes through the slots.
            let slots = &self.slots;
            self.by_id.insert_unique(hash, key.0, |&k| {
                id_hash(&slots[k as usize].as_ref().expect("indexed").customer.id)
            });
        }
        (key, keys_changed)
    }

    /// Starts a full list arriving in parts: [`Directory::unmarked`] then names the customers no
    /// [`Directory::upsert`] since has written.
    pub fn begin_marking(&mut self) {
        self.mark = self.mark.wrapping_add(1);
    }

    /// The customers not written since [`Directory::begin_marking`].
    pub fn unmarked(&self) -> Vec<String> {
        self.slots
            .iter()
            .zip(&self.marks)
            .filter(|(s, m)| s.is_some() && **m != self.mark)
            .filter_map(|(s, _)| s.as_ref().map(|s| s.customer.id.clone()))
            .collect()
    }

    /// Removes a customer by platform id; returns the key they had.
    pub fn remove(&mut self, id: &str) -> Option<CustomerKey> {
        let slots = &self.slots;
        let (k, _) = self
            .by_id
            .find_entry(id_hash(id), |&k| holds(slots, k, id))
            .ok()?
            .remove();
        let key = CustomerKey(k);
        self.unlink_beacons(key);
        let i = key.0 as usize;
        self.slots[i] = None;
        self.app_keys[i] = None;
        self.generations[i] = self.generations[i].wrapping_add(1);
        self.free.push(key.0);
        Some(key)
    }

    fn unlink_beacons(&mut self, key: CustomerKey) {
        if let Some(slot) = &self.slots[key.0 as usize] {
            for b in &slot.beacons {
                if self.by_beacon.get(b) == Some(&Link::Customer(key.0)) {
                    self.by_beacon.remove(b);
                }
            }
        }
    }

    /// Registers a beacon that is not a person, under a display id.
    pub fn add_tag(&mut self, id: String, beacon: BeaconId) -> TagKey {
        let key = TagKey(self.tags.len() as u32);
        self.tags.push(id);
        self.by_beacon.insert(beacon, Link::Tag(key.0));
        key
    }

    /// Registers one of the store's fixed beacons under a display id.
    pub fn add_fixed(&mut self, id: String, beacon: BeaconId) -> u32 {
        let key = self.fixed.len() as u32;
        self.fixed.push(id);
        self.by_beacon.insert(beacon, Link::Fixed(key));
        key
    }

    /// What a beacon id is registered as, if anything.
    pub fn lookup(&self, beacon: &BeaconId) -> Option<Known> {
        self.by_beacon.get(beacon).map(|l| match *l {
            Link::Customer(k) => Known::Identity(Identity::Customer(CustomerKey(k))),
            Link::Tag(k) => Known::Identity(Identity::Tag(TagKey(k))),
            Link::Fixed(k) => Known::Fixed(k),
        })
    }

    /// The customer a token table entry points at, if that slot still holds the same key material.
    pub fn resolve_target(&self, t: Target) -> Option<CustomerKey> {
        let i = t.slot as usize;
        (self.generations.get(i) == Some(&t.generation) && self.slots[i].is_some())
            .then_some(CustomerKey(t.slot))
    }

    /// Every customer's app key material, for building a token table in the background.
    pub fn key_snapshot(&self) -> Vec<Arc<KeyEntry>> {
        self.app_keys.iter().flatten().cloned().collect()
    }

    /// A customer's app key material.
    pub fn app_keys(&self, key: CustomerKey) -> Option<&KeyEntry> {
        self.app_keys.get(key.0 as usize)?.as_deref()
    }

    /// A fixed beacon's display id.
    pub fn fixed(&self, key: u32) -> Option<&str> {
        self.fixed.get(key as usize).map(String::as_str)
    }

    /// The customer with platform id `id`, if known.
    pub fn customer_by_id(&self, id: &str) -> Option<CustomerKey> {
        let slots = &self.slots;
        self.by_id
            .find(id_hash(id), |&k| holds(slots, k, id))
            .map(|&k| CustomerKey(k))
    }

    /// A customer by key.
    pub fn customer(&self, key: CustomerKey) -> Option<&Customer> {
        self.slots
            .get(key.0 as usize)?
            .as_ref()
            .map(|s| &s.customer)
    }

    /// Every known customer's platform id.
    pub fn customer_ids(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().flatten().map(|s| s.customer.id.as_str())
    }

    /// A tag's display id by key.
    pub fn tag(&self, key: TagKey) -> Option<&str> {
        self.tags.get(key.0 as usize).map(String::as_str)
    }

    /// The tag with display id `id`, if registered. Tags are the store's few asset beacons, so a
    /// scan is cheaper than keeping a second index.
    pub fn tag_by_id(&self, id: &str) -> Option<TagKey> {
        self.tags
            .iter()
            .position(|t| t == id)
            .map(|i| TagKey(i as u32))
    }

    /// Number of customers.
    pub fn customer_count(&self) -> usize {
        self.by_id.len()
    }
}

/// Turns device addresses into anonymous handles with a per-process random salt, so a handle cannot be
/// matched across restarts or hubs.
#[derive(Clone, Debug)]
pub struct AnonymousHasher {
    salt: u64,
}

impl AnonymousHasher {
    /// A hasher with the given salt (the daemon draws it at random at start).
    pub fn new(salt: u64) -> AnonymousHasher {
        AnonymousHasher { salt }
    }

    /// The anonymous handle of an address.
    pub fn handle(&self, address: &[u8; 6]) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        self.salt.hash(&mut h);
        address.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fob(i: u32) -> BeaconId {
        BeaconId::IBeacon {
            uuid: [7; 16],
            major: (i >> 16) as u16,
            minor: i as u16,
        }
    }

    fn customer(i: u32) -> Customer {
        Customer {
            id: format!("c-{i}"),
            segments: vec![],
        }
    }

    #[test]
    fn ids_and_fobs_find_their_slot_through_growth_removal_and_reuse() {
        let mut d = Directory::new();
        let keys: Vec<CustomerKey> = (0..10_000)
            .map(|i| d.add_customer(customer(i), &[fob(i)]))
            .collect();
        // Again, with a new fob: same slot, the old fob forgotten.
        let (k, _) = d.upsert(customer(42), &[fob(90_042)], None);
        assert_eq!(k, keys[42]);
        assert_eq!(d.lookup(&fob(42)), None);
        assert_eq!(
            d.lookup(&fob(90_042)),
            Some(Known::Identity(Identity::Customer(k)))
        );
        for i in (0..10_000).step_by(2) {
            assert_eq!(d.remove(&format!("c-{i}")), Some(keys[i as usize]));
        }
        assert_eq!(d.remove("c-0"), None);
        assert_eq!(d.customer_count(), 5_000);
        // New customers take the freed slots; everyone is still found by id and by fob.
        for i in 10_000..15_000 {
            d.add_customer(customer(i), &[fob(i)]);
        }
        assert_eq!(d.customer_count(), 10_000);
        for i in (1..15_000).filter(|i| i % 2 == 1 || *i >= 10_000) {
            let id = format!("c-{i}");
            let k = d.customer_by_id(&id).unwrap_or_else(|| panic!("{id}"));
            assert_eq!(d.customer(k).map(|c| c.id.as_str()), Some(id.as_str()));
            if i != 42 {
                assert_eq!(
                    d.lookup(&fob(i)),
                    Some(Known::Identity(Identity::Customer(k)))
                );
            }
        }
        assert_eq!(d.customer_by_id("c-2"), None);
        assert_eq!(d.lookup(&fob(2)), None);
        assert_eq!(d.customer_ids().count(), 10_000);
    }

    #[test]
    fn tags_and_fixed_beacons_keep_their_kind() {
        let mut d = Directory::new();
        let t = d.add_tag("trolley-1".into(), fob(1));
        let f = d.add_fixed("door".into(), fob(2));
        assert_eq!(d.lookup(&fob(1)), Some(Known::Identity(Identity::Tag(t))));
        assert_eq!(d.lookup(&fob(2)), Some(Known::Fixed(f)));
        assert_eq!(d.tag(t), Some("trolley-1"));
        assert_eq!(d.fixed(f), Some("door"));
    }
}
