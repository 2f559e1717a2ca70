//! The core stages in one sans-IO value: decode → identity → presence. The daemon, `simulate`, `demo`
//! and the tests all push adverts through this same [`Core`].

use crate::decode::{decode_frames, Frame};
use crate::identity::{AnonymousHasher, BeaconId, Directory, Identity, Known};
use crate::presence::{Engine, Event, HubIdx, Observation};
use crate::scan::Advert;
use crate::time::Timestamp;

/// Counters of the core stages, for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Adverts handled.
    pub adverts: u64,
    /// Adverts whose payload did not decode (still counted as an anonymous device).
    pub decode_errors: u64,
    /// Adverts of the store's fixed beacons.
    pub fixed_beacon_adverts: u64,
    /// Adverts of known customers and tags.
    pub known_adverts: u64,
    /// Adverts of anonymous devices.
    pub anonymous_adverts: u64,
    /// Adverts from a hub the engine has no zones for.
    pub foreign_hub_adverts: u64,
}

/// Decode, resolve and decide, for adverts from a source with the given hubs.
#[derive(Debug)]
pub struct Core {
    engine: Engine,
    directory: Directory,
    anon: AnonymousHasher,
    hub_map: Vec<Option<HubIdx>>,
    stats: CoreStats,
}

impl Core {
    /// A core for a source whose adverts index `source_hubs`; `salt` keys the anonymous handles.
    pub fn new(engine: Engine, directory: Directory, source_hubs: &[String], salt: u64) -> Core {
        let hub_map = source_hubs.iter().map(|h| engine.hub_index(h)).collect();
        Core {
            engine,
            directory,
            anon: AnonymousHasher::new(salt),
            hub_map,
            stats: CoreStats::default(),
        }
    }

    /// The presence engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The identity directory.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Counters.
    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// Resolves an advert to the identity the engine tracks it under, without feeding the engine.
    /// `None` for the store's fixed beacons.
    pub fn resolve(&self, adv: &Advert) -> (Option<Identity>, Option<i8>, bool) {
        let mut known: Option<Known> = None;
        let mut power = None;
        let decoded = decode_frames(&adv.payload, |f: Frame| {
            if known.is_none() {
                if let Some(k) = BeaconId::of(&f).and_then(|id| self.directory.lookup(&id)) {
                    known = Some(k);
                    power = f.measured_power_1m();
                }
            }
        });
        let identity = match known {
            Some(Known::Fixed(_)) => None,
            Some(Known::Identity(i)) => Some(i),
            None => Some(Identity::Anonymous(self.anon.handle(&adv.address))),
        };
        (identity, power, decoded.is_ok())
    }

    /// Handles one advert at its own timestamp.
    pub fn handle_advert(&mut self, adv: &Advert, out: &mut Vec<Event>) {
        self.stats.adverts += 1;
        let (identity, power, decoded) = self.resolve(adv);
        if !decoded {
            self.stats.decode_errors += 1;
        }
        let Some(identity) = identity else {
            self.stats.fixed_beacon_adverts += 1;
            return;
        };
        if identity.is_anonymous() {
            self.stats.anonymous_adverts += 1;
        } else {
            self.stats.known_adverts += 1;
        }
        let Some(hub) = self.hub_map.get(adv.hub as usize).copied().flatten() else {
            self.stats.foreign_hub_adverts += 1;
            return;
        };
        let obs = Observation {
            identity,
            hub,
            rssi: adv.rssi,
            measured_power: power,
        };
        self.engine.handle_observation(adv.at, obs, out);
    }

    /// The next time the core must be woken, if any.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.engine.poll_timeout()
    }

    /// Handles every deadline up to `now`.
    pub fn handle_timeout(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        self.engine.handle_timeout(now, out);
    }

    /// Forgets an identity at once, with no event.
    pub fn forget(&mut self, identity: &Identity) -> bool {
        self.engine.forget(identity)
    }
}
