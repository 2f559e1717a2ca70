//! Identity stage: who is behind an advertisement.
//!
//! An advertisement resolves to a known customer (a loyalty fob registered to them, or — with the
//! customer-sync issue — the retailer app's rotating token), to a registered beacon (a tagged asset), or
//! to an anonymous device. Anonymous devices are keyed by a salted hash of their address that never
//! leaves the process: they only ever feed aggregate counts.

use std::hash::{Hash, Hasher};

use rustc_hash::FxHashMap;

use crate::decode::Frame;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// The in-memory lookup from identifiers to identities. Lookups are one hash probe.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    customers: Vec<Customer>,
    tags: Vec<String>,
    fixed: Vec<String>,
    by_beacon: FxHashMap<BeaconId, Known>,
}

impl Directory {
    /// An empty directory: everyone is anonymous.
    pub fn new() -> Directory {
        Directory::default()
    }

    /// Adds a customer and the beacons registered to them; returns their key.
    pub fn add_customer(&mut self, customer: Customer, beacons: &[BeaconId]) -> CustomerKey {
        let key = CustomerKey(self.customers.len() as u32);
        self.customers.push(customer);
        for b in beacons {
            self.by_beacon
                .insert(*b, Known::Identity(Identity::Customer(key)));
        }
        key
    }

    /// Registers a beacon that is not a person, under a display id.
    pub fn add_tag(&mut self, id: String, beacon: BeaconId) -> TagKey {
        let key = TagKey(self.tags.len() as u32);
        self.tags.push(id);
        self.by_beacon
            .insert(beacon, Known::Identity(Identity::Tag(key)));
        key
    }

    /// Registers one of the store's fixed beacons under a display id.
    pub fn add_fixed(&mut self, id: String, beacon: BeaconId) -> u32 {
        let key = self.fixed.len() as u32;
        self.fixed.push(id);
        self.by_beacon.insert(beacon, Known::Fixed(key));
        key
    }

    /// What a beacon id is registered as, if anything.
    pub fn lookup(&self, beacon: &BeaconId) -> Option<Known> {
        self.by_beacon.get(beacon).copied()
    }

    /// A fixed beacon's display id.
    pub fn fixed(&self, key: u32) -> Option<&str> {
        self.fixed.get(key as usize).map(String::as_str)
    }

    /// The customer with platform id `id`, if known.
    pub fn customer_by_id(&self, id: &str) -> Option<CustomerKey> {
        self.customers
            .iter()
            .position(|c| c.id == id)
            .map(|i| CustomerKey(i as u32))
    }

    /// A customer by key.
    pub fn customer(&self, key: CustomerKey) -> Option<&Customer> {
        self.customers.get(key.0 as usize)
    }

    /// A tag's display id by key.
    pub fn tag(&self, key: TagKey) -> Option<&str> {
        self.tags.get(key.0 as usize).map(String::as_str)
    }

    /// Number of customers.
    pub fn customer_count(&self) -> usize {
        self.customers.len()
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
