//! The core stages in one sans-IO value: decode → identity → presence. The daemon, `simulate`, `demo`
//! and the tests all push adverts through this same [`Core`].

use rustc_hash::FxHashMap;

use crate::decode::{decode_frames, EddystoneTlm, Frame, ServiceUuid};
use crate::identity::record::CustomerEntry;
use crate::identity::sync::SyncStats;
use crate::identity::token::{self, TokenJob, TokenTable, TokenWindow};
use crate::identity::{AnonymousHasher, BeaconId, Customer, Directory, Identity, Known};
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
    /// Adverts carrying the app's service data whose token resolved to a customer.
    pub app_tokens_resolved: u64,
    /// Adverts carrying the app's service data whose token matched nobody (dropped; the token is
    /// never logged).
    pub app_tokens_unknown: u64,
}

/// A change of the customer list, from the sync stage to the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryChange {
    /// Add or change these customers.
    Upsert(Vec<CustomerEntry>),
    /// Forget these customers now: directory, presence state, and (through the purge record) the
    /// spool.
    Delete(Vec<String>),
    /// One part of the whole customer list (the cache at start-up, or after a snapshot), in order:
    /// a million customers come a thousand at a time, so they never sit in memory twice over. The
    /// token tables are rebuilt once the last part is in.
    Load {
        /// These customers, added or changed.
        part: Vec<CustomerEntry>,
        /// The list starts here.
        first: bool,
        /// The list ends here.
        last: bool,
        /// With the last part: everyone no part named is forgotten as by `Delete` (a snapshot).
        /// False for a start-up load, and for a list that could not be read whole.
        sweep: bool,
    },
}

impl DirectoryChange {
    /// `all` as the whole customer list in one part: everyone else is forgotten as by `Delete`.
    pub fn replace(all: Vec<CustomerEntry>) -> DirectoryChange {
        DirectoryChange::Load {
            part: all,
            first: true,
            last: true,
            sweep: true,
        }
    }
}

/// What other stages tell the core.
#[derive(Debug)]
pub enum CoreCommand {
    /// The customer list changed.
    Change(DirectoryChange),
    /// The sync stage's latest counters.
    SyncReport(SyncReport),
    /// A token table built in the background.
    Tokens(TokenTable),
    /// A reloaded, validated config: zones and presence parameters take effect now.
    Reload(Box<crate::config::Config>),
    /// A new MQTT target from a reload, passed on to the MQTT sink in order.
    MqttTarget(Box<crate::sink::mqtt::Settings>),
    /// A running problem for the hub's status (or its end), passed on to the sinks in order.
    Notice {
        /// What it is about.
        key: String,
        /// The problem, or `None` once over.
        message: Option<String>,
    },
}

/// What the sync stage reports for `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Protocol counters.
    #[serde(flatten)]
    pub counters: SyncStats,
    /// The applied sequence.
    pub seq: u64,
    /// Customers in the cache.
    pub customers: u64,
}

/// What the hub knows about one of the store's fixed beacons: fleet health for the `beacons` topic.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BeaconHealth {
    /// Last time it was heard.
    pub last_seen: Timestamp,
    /// RSSI of the last advert, dBm.
    pub rssi: i16,
    /// Adverts heard.
    pub adverts: u64,
    /// From its last plain Eddystone-TLM frame: battery in mV.
    pub battery_mv: Option<u16>,
    /// From its last plain Eddystone-TLM frame: temperature in °C.
    pub temperature_c: Option<f32>,
    /// From its last plain Eddystone-TLM frame: uptime in seconds.
    pub uptime_s: Option<f64>,
}

/// Fixed beacons' addresses remembered at most, so a TLM frame (which carries no id) can be matched
/// to the beacon that sent it; far more than any store has.
const FIXED_ADDRESSES: usize = 4096;

/// Customers changed in one step beyond which the token tables are rebuilt rather than patched.
const OVERLAY_MAX: usize = 1000;

/// What an advert resolved to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resolved {
    /// Who the engine tracks it as; `None` for the store's fixed beacons.
    pub identity: Option<Identity>,
    /// The power at 1 m its frame states, for a known beacon.
    pub measured_power: Option<i8>,
    /// Whether the payload decoded.
    pub decoded: bool,
    /// The fixed beacon it identifies, if any.
    pub fixed: Option<u32>,
    /// Its Eddystone-TLM frame, if any.
    pub tlm: Option<EddystoneTlm>,
    /// Whether it carried the app's service data (resolved or not).
    pub app_token: bool,
}

/// Decode, resolve and decide, for adverts from a source with the given hubs.
#[derive(Debug)]
pub struct Core {
    engine: Engine,
    directory: Directory,
    anon: AnonymousHasher,
    hub_map: Vec<Option<HubIdx>>,
    source_hubs: Vec<String>,
    stats: CoreStats,
    fleet: FxHashMap<u32, BeaconHealth>,
    fixed_addresses: FxHashMap<[u8; 6], u32>,
    app_uuid: Option<ServiceUuid>,
    tokens: TokenWindow,
    sync: Option<SyncReport>,
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
            source_hubs: source_hubs.to_vec(),
            stats: CoreStats::default(),
            fleet: FxHashMap::default(),
            fixed_addresses: FxHashMap::default(),
            app_uuid: None,
            tokens: TokenWindow::new(600),
            sync: None,
        }
    }

    /// Ends the visits in zones `cfg` drops (reason `reconfigured`), while their zones still have
    /// their names: render what lands in `out` before calling [`Core::reconfigure`].
    pub fn end_visits_in_dropped_zones(
        &mut self,
        cfg: &crate::config::Config,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) {
        self.engine
            .end_visits_in_dropped_zones(&cfg.zones, now, out);
    }

    /// Applies reloaded zones and presence parameters at `now`, keeping who is where (see
    /// [`Engine::reconfigure`]); visits in removed zones end in `out` unless
    /// [`Core::end_visits_in_dropped_zones`] ended them already.
    pub fn reconfigure(
        &mut self,
        cfg: &crate::config::Config,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) {
        self.engine.reconfigure(
            &cfg.zones,
            crate::presence::EngineParams::from_config(&cfg.presence),
            &cfg.hub.hub_id,
            now,
            out,
        );
        // Hub indices may have moved with the zones.
        self.hub_map = self
            .source_hubs
            .iter()
            .map(|h| self.engine.hub_index(h))
            .collect();
    }

    /// The engine's hub for a source's hub index; `None` for a hub no zone uses.
    pub fn engine_hub(&self, source_hub: u16) -> Option<HubIdx> {
        self.hub_map.get(source_hub as usize).copied().flatten()
    }

    /// The core `cfg` describes (zones, presence parameters, the app's tokens), for a source whose
    /// adverts index `source_hubs`, starting with `directory`.
    pub fn for_config(
        cfg: &crate::config::Config,
        directory: Directory,
        source_hubs: &[String],
    ) -> Core {
        let engine = Engine::new(
            &cfg.zones,
            crate::presence::EngineParams::from_config(&cfg.presence),
            &cfg.hub.hub_id,
        );
        let app_uuid = uuid::Uuid::parse_str(&cfg.identity.app_service_uuid).unwrap_or_default();
        Core::new(engine, directory, source_hubs, rand::random())
            .with_app_tokens(app_uuid, cfg.identity.token_epoch_s as u32)
    }

    /// Recognises the retailer app's rotating tokens: service data under `app_uuid`, in epochs of
    /// `epoch_s` seconds.
    pub fn with_app_tokens(mut self, app_uuid: uuid::Uuid, epoch_s: u32) -> Core {
        self.app_uuid = Some(ServiceUuid::from_uuid(app_uuid));
        self.tokens = TokenWindow::new(epoch_s);
        self
    }

    /// Applies a change of the customer list at `now`. Returns the platform ids of the customers
    /// forgotten, so the caller can purge them downstream (the spool) after anything already sent
    /// down the pipeline about them.
    pub fn apply_change(&mut self, change: DirectoryChange) -> Vec<String> {
        let mut purged = Vec::new();
        match change {
            DirectoryChange::Upsert(u) => {
                // Few changes go into the overlay at once; a bulk change makes the tables stale
                // wholesale, and rebuilding them in the background is cheaper than a big overlay.
                let bulk = u.len() > OVERLAY_MAX;
                let changed = self.upsert_all(u, !bulk);
                if bulk {
                    self.tokens.rebuild();
                }
                for key in changed {
                    if let Some(entry) = self.directory.app_keys(key) {
                        let entry = entry.clone();
                        self.tokens.note_change(&entry);
                    }
                }
            }
            DirectoryChange::Delete(ids) => {
                for id in ids {
                    self.forget_customer(&id);
                    purged.push(id);
                }
            }
            DirectoryChange::Load {
                part,
                first,
                last,
                sweep,
            } => {
                if first {
                    self.directory.begin_marking();
                }
                self.upsert_all(part, false);
                if last {
                    if sweep {
                        for id in self.directory.unmarked() {
                            self.forget_customer(&id);
                            purged.push(id);
                        }
                    }
                    // Once, when the whole list is in: tables built from half of it would be
                    // thrown away a part later.
                    self.tokens.rebuild();
                }
            }
        }
        purged
    }

    /// Writes `entries` into the directory; returns the customers whose app keys changed, when
    /// `note_keys`.
    fn upsert_all(
        &mut self,
        entries: Vec<CustomerEntry>,
        note_keys: bool,
    ) -> Vec<crate::identity::CustomerKey> {
        let mut changed = Vec::new();
        for c in entries {
            let keys = c.keys.as_ref().map(|k| k.app_keys());
            let (key, keys_changed) = self.directory.upsert(
                Customer {
                    id: c.id,
                    segments: c.segments,
                },
                &c.beacons,
                keys,
            );
            if keys_changed && note_keys {
                changed.push(key);
            }
        }
        changed
    }

    fn forget_customer(&mut self, id: &str) {
        if let Some(key) = self.directory.remove(id) {
            self.engine.forget(&Identity::Customer(key));
        }
    }

    /// Token tables to build for the epoch of `now`, each asked for once. Run them anywhere (they
    /// hold a snapshot of the keys) and hand the results to [`Core::install_tokens`].
    pub fn poll_token_jobs(&mut self, now: Timestamp) -> Vec<TokenJob> {
        if self.app_uuid.is_none() {
            return Vec::new();
        }
        let epochs = self.tokens.advance(now.as_millis() / 1000);
        if epochs.is_empty() {
            return Vec::new();
        }
        let keys = self.directory.key_snapshot();
        epochs
            .into_iter()
            .map(|epoch| TokenJob {
                epoch,
                epoch_s: self.tokens.epoch_s(),
                keys: keys.clone(),
                generation: self.tokens.generation(),
            })
            .collect()
    }

    /// Installs a token table built from a [`TokenJob`].
    pub fn install_tokens(&mut self, table: TokenTable) {
        self.tokens.install(table);
    }

    /// Builds and installs the tables for `now` on this thread (for the simulator and tests, where
    /// nothing else runs meanwhile).
    pub fn build_tokens_now(&mut self, now: Timestamp) {
        for job in self.poll_token_jobs(now) {
            let t = job.run();
            self.install_tokens(t);
        }
    }

    /// The customer an app token belongs to, as the hub's clock says `now` (what [`Core::resolve`]
    /// does for an advert carrying the token).
    #[inline]
    pub fn resolve_token(
        &self,
        token: u64,
        now: Timestamp,
    ) -> Option<crate::identity::CustomerKey> {
        self.tokens
            .lookup(token, now.as_millis() / 1000)
            .and_then(|target| self.directory.resolve_target(target))
    }

    /// Heap bytes of the token tables.
    pub fn token_heap_bytes(&self) -> usize {
        self.tokens.heap_bytes()
    }

    /// Records the sync stage's counters for the next `stats`.
    pub fn set_sync_report(&mut self, report: SyncReport) {
        self.sync = Some(report);
    }

    /// The sync stage's counters, when a sync stage runs.
    pub fn sync_report(&self) -> Option<SyncReport> {
        self.sync
    }

    /// Health of every fixed beacon heard so far, by display id.
    pub fn fleet(&self) -> Vec<(String, BeaconHealth)> {
        let mut v: Vec<(String, BeaconHealth)> = self
            .fleet
            .iter()
            .filter_map(|(k, h)| Some((self.directory.fixed(*k)?.to_owned(), *h)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Folds a fixed beacon's advert (identified by its frame, or by an address it used before) into
    /// fleet health.
    fn note_fixed(&mut self, adv: &Advert, fixed: Option<u32>, tlm: Option<EddystoneTlm>) {
        let key = match fixed {
            Some(k) => {
                if self.fixed_addresses.len() >= FIXED_ADDRESSES {
                    self.fixed_addresses.clear();
                }
                self.fixed_addresses.insert(adv.address, k);
                k
            }
            None => match self.fixed_addresses.get(&adv.address) {
                Some(&k) => k,
                None => return,
            },
        };
        let h = self.fleet.entry(key).or_default();
        h.last_seen = adv.at;
        h.rssi = adv.rssi;
        h.adverts += 1;
        if let Some(EddystoneTlm::Plain {
            battery_mv,
            temperature_c,
            uptime_tenths,
            ..
        }) = tlm
        {
            h.battery_mv = (battery_mv > 0).then_some(battery_mv);
            h.temperature_c = temperature_c;
            h.uptime_s = Some(uptime_tenths as f64 / 10.0);
        }
    }

    /// The presence engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Gives the engine back what its hubs had learned of their exit margins before a restart
    /// ([`Engine::restore_margins`]); returns how many hubs took it.
    pub fn restore_margins(&mut self, saved: &[crate::presence::HubSags]) -> usize {
        self.engine.restore_margins(saved)
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
    pub fn resolve(&self, adv: &Advert) -> Resolved {
        let mut known: Option<Known> = None;
        let mut power = None;
        let mut tlm = None;
        let decoded = decode_frames(&adv.payload, |f: Frame| {
            if let Frame::EddystoneTlm(t) = f {
                tlm = Some(t);
            }
            if known.is_none() {
                if let Some(k) = BeaconId::of(&f).and_then(|id| self.directory.lookup(&id)) {
                    known = Some(k);
                    power = f.measured_power_1m();
                }
            }
        });
        let mut app_token = None;
        if let (Ok(ad), Some(app)) = (&decoded, self.app_uuid) {
            if known.is_none() {
                app_token = ad
                    .service_data()
                    .find(|(u, _)| *u == app)
                    .map(|(_, d)| token::parse_service_data(d.data));
            }
        }
        if let Some(t) = app_token.flatten() {
            if let Some(key) = self.resolve_token(t, adv.at) {
                known = Some(Known::Identity(Identity::Customer(key)));
            }
        }
        let (identity, fixed) = match known {
            Some(Known::Fixed(k)) => (None, Some(k)),
            Some(Known::Identity(i)) => (Some(i), None),
            // A TLM frame alone names nobody; if its address belongs to a fixed beacon it is that
            // beacon's telemetry, not a shopper.
            None if tlm.is_some() && self.fixed_addresses.contains_key(&adv.address) => {
                (None, None)
            }
            None => (
                Some(Identity::Anonymous(self.anon.handle(&adv.address))),
                None,
            ),
        };
        Resolved {
            identity,
            measured_power: power,
            decoded: decoded.is_ok(),
            fixed,
            tlm,
            app_token: app_token.is_some(),
        }
    }

    /// Handles one advert at its own timestamp.
    pub fn handle_advert(&mut self, adv: &Advert, out: &mut Vec<Event>) {
        self.stats.adverts += 1;
        let r = self.resolve(adv);
        if !r.decoded {
            self.stats.decode_errors += 1;
        }
        let power = r.measured_power;
        let Some(identity) = r.identity else {
            self.stats.fixed_beacon_adverts += 1;
            self.note_fixed(adv, r.fixed, r.tlm);
            return;
        };
        if r.app_token {
            if identity.is_anonymous() {
                self.stats.app_tokens_unknown += 1;
            } else {
                self.stats.app_tokens_resolved += 1;
            }
        }
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
