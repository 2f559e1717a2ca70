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
    /// Sharing with peers: the hub's own observations of known devices put in the outbox.
    pub peer_shared: u64,
    /// Peers' observations the engine took.
    pub peer_applied: u64,
    /// Peers' observations too old to use (`[peers] max_lag_ms`).
    pub peer_late: u64,
    /// Peers' observations of customers or tags this hub does not know.
    pub peer_unknown: u64,
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
    sharing: Option<Sharing>,
}

/// A hub that shares observations with its store's other hubs: it hears them through the engine as
/// if its own radio did, and reports only the zones its own hub measures (each peer reports its
/// own).
#[derive(Clone, Debug)]
struct Sharing {
    own: String,
    peers: Vec<String>,
    max_lag_ms: u64,
    outbox: crate::peers::Outbox,
    /// Per peer, in the order of `peers`.
    lateness: Vec<crate::peers::Lateness>,
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
            sharing: None,
        }
    }

    /// Shares observations with `peers` as hub `own`: its own observations of known devices go to
    /// the outbox ([`Core::take_shared`]), peers' observations up to `max_lag_ms` old are applied
    /// ([`Core::handle_peer`]), and only events of `own`'s zones come out (a headcount still lists
    /// every zone; [`Core::reports_zone`] says which to publish).
    pub fn share_with(&mut self, own: &str, peers: &[String], max_lag_ms: u64) {
        self.sharing = Some(Sharing {
            own: own.to_owned(),
            peers: peers.to_vec(),
            max_lag_ms,
            outbox: crate::peers::Outbox::new(own),
            lateness: vec![Default::default(); peers.len()],
        });
    }

    /// What is wrong with the peers' observations: those of whom most came too late to use in the
    /// last minute; `None` when nothing is.
    pub fn peer_lateness(&self) -> Option<String> {
        let s = self.sharing.as_ref()?;
        let problems: Vec<String> = s
            .peers
            .iter()
            .zip(&s.lateness)
            .filter_map(|(hub, l)| l.problem(hub))
            .collect();
        (!problems.is_empty()).then(|| problems.join("; "))
    }

    /// Whether it shares observations with peers.
    pub fn shares(&self) -> bool {
        self.sharing.is_some()
    }

    /// Stops sharing: every zone is reported again.
    pub fn stop_sharing(&mut self) {
        self.sharing = None;
    }

    /// Whether events of zone `zone` (an engine index) are this hub's to report: all of them, unless
    /// it shares with peers, which report their own.
    pub fn reports_zone(&self, zone: crate::presence::ZoneIdx) -> bool {
        match &self.sharing {
            None => true,
            Some(s) => self
                .engine
                .zones()
                .get(zone as usize)
                .is_some_and(|z| self.engine.hubs()[z.hub as usize] == s.own),
        }
    }

    /// Drops the events from `from` on that are about zones a peer reports.
    fn keep_own(&self, out: &mut Vec<Event>, from: usize) {
        if self.sharing.is_none() {
            return;
        }
        let mut i = from;
        while i < out.len() {
            let keep = match &out[i] {
                Event::Visit(v) => self.reports_zone(v.zone),
                Event::Headcount(_) => true,
            };
            if keep {
                i += 1;
            } else {
                out.remove(i);
            }
        }
    }

    /// The own observations waiting to be sent to peers, as one batch.
    pub fn take_shared(&mut self) -> Option<crate::peers::Batch> {
        self.sharing.as_mut()?.outbox.take()
    }

    /// Applies one observation a peer shared. `mark` is this hub's own time (its source's
    /// watermark): a peer whose clock runs ahead is taken at `mark`, so it cannot move the engine
    /// past adverts this hub has yet to handle.
    pub fn handle_peer(
        &mut self,
        hub: &str,
        obs: &crate::peers::Shared,
        mark: Timestamp,
        out: &mut Vec<Event>,
    ) -> crate::peers::Applied {
        use crate::peers::{Applied, Who};
        let engine_now = self.engine.now();
        let Some(sharing) = &mut self.sharing else {
            return Applied::NotAPeer;
        };
        let Some(peer) = sharing.peers.iter().position(|p| p == hub) else {
            return Applied::NotAPeer;
        };
        let at = Timestamp(obs.t.min(mark.0));
        let late = engine_now.since(at) > sharing.max_lag_ms;
        // A source that has ended has no time of its own to judge lateness by.
        if mark.0 != u64::MAX {
            sharing.lateness[peer].note(obs.t, mark, late);
        }
        let Some(hub_idx) = self.engine.hub_index(hub) else {
            return Applied::NotAPeer;
        };
        if late {
            self.stats.peer_late += 1;
            return Applied::Late;
        }
        let identity = match &obs.who {
            Who::CustomerId(id) => self.directory.customer_by_id(id).map(Identity::Customer),
            Who::TagId(id) => self.directory.tag_by_id(id).map(Identity::Tag),
        };
        let Some(identity) = identity else {
            self.stats.peer_unknown += 1;
            return Applied::Unknown;
        };
        self.stats.peer_applied += 1;
        let from = out.len();
        self.engine.handle_observation(
            at,
            Observation {
                identity,
                hub: hub_idx,
                rssi: obs.rssi,
                measured_power: obs.power,
            },
            out,
        );
        self.keep_own(out, from);
        Applied::Yes
    }

    /// Puts an observation of a known device heard by this hub's own radio in the outbox.
    fn share(&mut self, adv: &Advert, hub: HubIdx, identity: Identity, power: Option<i8>) {
        let Some(sharing) = &mut self.sharing else {
            return;
        };
        if self.engine.hubs()[hub as usize] != sharing.own {
            return;
        }
        let who = match identity {
            Identity::Customer(k) => match self.directory.customer(k) {
                Some(c) => crate::peers::Who::CustomerId(c.id.clone()),
                None => return,
            },
            Identity::Tag(k) => match self.directory.tag(k) {
                Some(t) => crate::peers::Who::TagId(t.to_owned()),
                None => return,
            },
            // Never shared, in any form: see crate::peers.
            Identity::Anonymous(_) => return,
        };
        sharing.outbox.push(adv.at, who, adv.rssi, power);
        self.stats.peer_shared += 1;
    }

    /// Ends the visits in zones `cfg` drops (reason `reconfigured`), while their zones still have
    /// their names: render what lands in `out` before calling [`Core::reconfigure`].
    pub fn end_visits_in_dropped_zones(
        &mut self,
        cfg: &crate::config::Config,
        now: Timestamp,
        out: &mut Vec<Event>,
    ) {
        let from = out.len();
        self.engine
            .end_visits_in_dropped_zones(&cfg.zones, now, out);
        self.keep_own(out, from);
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
        let from = out.len();
        self.engine.reconfigure(
            &cfg.zones,
            crate::presence::EngineParams::from_config(&cfg.presence),
            &cfg.hub.hub_id,
            now,
            out,
        );
        self.keep_own(out, from);
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
        if let Some(s) = &mut self.sharing {
            s.outbox.forget_customer(id);
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
        self.share(adv, hub, identity, power);
        let obs = Observation {
            identity,
            hub,
            rssi: adv.rssi,
            measured_power: power,
        };
        let from = out.len();
        self.engine.handle_observation(adv.at, obs, out);
        self.keep_own(out, from);
    }

    /// The next time the core must be woken, if any.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.engine.poll_timeout()
    }

    /// Handles every deadline up to `now`.
    pub fn handle_timeout(&mut self, now: Timestamp, out: &mut Vec<Event>) {
        let from = out.len();
        self.engine.handle_timeout(now, out);
        self.keep_own(out, from);
    }

    /// Forgets an identity at once, with no event.
    pub fn forget(&mut self, identity: &Identity) -> bool {
        self.engine.forget(identity)
    }
}

#[cfg(test)]
mod sharing_tests {
    use super::*;
    use crate::peers::{Applied, Shared, Who};
    use crate::presence::{EngineParams, VisitKind};

    /// iBeacon e2c56db5-dffb-48d2-b060-d0f5a71096e0, major 1, minor 2, 1 m power −59 dBm.
    const FOB: &str = "1aff4c000215e2c56db5dffb48d2b060d0f5a71096e000010002c5";
    const T0: u64 = 1_800_000_000_000;

    /// Hub a's core, sharing with hub b; one zone on each hub, customer c-1 carries the fob.
    fn core() -> Core {
        let cfg = crate::config::Config::parse(
            "[hub]\nhub_id = \"a\"\n\
             [[zones]]\nid = \"za\"\nhub = \"a\"\nenter_rssi = -70\nexit_rssi = -80\nmin_enter_s = 1\n\
             [[zones]]\nid = \"zb\"\nhub = \"b\"\nenter_rssi = -70\nexit_rssi = -80\nmin_enter_s = 1\n",
        )
        .unwrap();
        let engine = Engine::new(&cfg.zones, EngineParams::from_config(&cfg.presence), "a");
        let mut dir = Directory::new();
        let uuid = uuid::Uuid::parse_str("e2c56db5-dffb-48d2-b060-d0f5a71096e0").unwrap();
        dir.add_customer(
            crate::identity::Customer {
                id: "c-1".into(),
                segments: vec![],
            },
            &[BeaconId::IBeacon {
                uuid: *uuid.as_bytes(),
                major: 1,
                minor: 2,
            }],
        );
        let mut core = Core::new(engine, dir, &["a".to_string(), "b".to_string()], 1);
        core.share_with("a", &["b".to_string()], 2000);
        core
    }

    fn advert(ms: u64, hub: u16, rssi: i16, payload: &str) -> Advert {
        Advert {
            at: Timestamp(T0 + ms),
            hub,
            address: [0xc0, 1, 2, 3, 4, 5],
            rssi,
            payload: crate::scan::Payload::from_slice(&hex::decode(payload).unwrap()),
        }
    }

    fn peer(ms: u64, rssi: i16) -> Shared {
        Shared {
            t: T0 + ms,
            who: Who::CustomerId("c-1".into()),
            rssi,
            power: Some(-59),
        }
    }

    fn visits(out: &[Event]) -> Vec<(String, &'static str)> {
        out.iter()
            .filter_map(|e| match e {
                Event::Visit(v) => Some((
                    ["za", "zb"][v.zone as usize].to_owned(),
                    match v.kind {
                        VisitKind::Enter => "enter",
                        VisitKind::Dwell { .. } => "dwell",
                        VisitKind::Exit { .. } => "exit",
                    },
                )),
                Event::Headcount(_) => None,
            })
            .collect()
    }

    #[test]
    fn only_known_devices_the_own_radio_hears_are_shared() {
        let mut core = core();
        let mut out = Vec::new();
        core.handle_advert(&advert(0, 0, -60, FOB), &mut out);
        // An anonymous phone, and the fob as a source's other hub heard it: neither is shared.
        core.handle_advert(&advert(10, 0, -60, "05ff4c001005"), &mut out);
        core.handle_advert(&advert(20, 1, -65, FOB), &mut out);
        let batch = core.take_shared().unwrap();
        assert_eq!(batch.hub, "a");
        assert_eq!(batch.obs, vec![peer(0, -60)]);
        assert_eq!(core.stats().peer_shared, 1);
        assert!(core.take_shared().is_none());
    }

    #[test]
    fn a_peer_pulls_the_customer_into_its_zone_and_reports_it_itself() {
        let mut core = core();
        let mut out = Vec::new();
        // Near hub a for 5 s: this hub reports the visit to its own zone.
        for s in 0..5 {
            core.handle_advert(&advert(s * 1000, 0, -60, FOB), &mut out);
            core.handle_peer(
                "b",
                &peer(s * 1000 + 500, -85),
                Timestamp(T0 + s * 1000 + 500),
                &mut out,
            );
        }
        assert_eq!(visits(&out), [("za".to_owned(), "enter")]);
        out.clear();
        // Then at hub b, as hub b tells it: the visit to za ends here, the one to zb is b's to report.
        for s in 5..30 {
            core.handle_advert(&advert(s * 1000, 0, -78, FOB), &mut out);
            core.handle_peer(
                "b",
                &peer(s * 1000 + 500, -55),
                Timestamp(T0 + s * 1000 + 500),
                &mut out,
            );
        }
        assert_eq!(visits(&out), [("za".to_owned(), "exit")]);
        assert_eq!(
            core.engine()
                .zone_of(&Identity::Customer(crate::identity::CustomerKey(0))),
            Some(1)
        );
        assert!(core.reports_zone(0) && !core.reports_zone(1));
        assert_eq!(core.stats().peer_applied, 30);
    }

    #[test]
    fn peers_observations_are_bounded_in_age_and_by_whom_they_name() {
        let mut core = core();
        let mut out = Vec::new();
        core.handle_advert(&advert(10_000, 0, -60, FOB), &mut out);
        let mark = Timestamp(T0 + 10_000);
        assert_eq!(
            core.handle_peer("b", &peer(7_999, -60), mark, &mut out),
            Applied::Late
        );
        assert_eq!(
            core.handle_peer("b", &peer(8_000, -60), mark, &mut out),
            Applied::Yes
        );
        let stranger = Shared {
            who: Who::CustomerId("c-2".into()),
            ..peer(9_000, -60)
        };
        assert_eq!(
            core.handle_peer("b", &stranger, mark, &mut out),
            Applied::Unknown
        );
        assert_eq!(
            core.handle_peer("c", &peer(9_000, -60), mark, &mut out),
            Applied::NotAPeer
        );
        assert_eq!(
            core.handle_peer("a", &peer(9_000, -60), mark, &mut out),
            Applied::NotAPeer
        );
        // A peer's clock ahead of this hub's is taken at this hub's time.
        assert_eq!(
            core.handle_peer("b", &peer(60_000, -60), mark, &mut out),
            Applied::Yes
        );
        assert_eq!(core.engine().now(), mark);
        let s = core.stats();
        assert_eq!((s.peer_late, s.peer_unknown, s.peer_applied), (1, 1, 2));
    }

    #[test]
    fn a_customer_who_opts_out_is_neither_sent_nor_taken_from_peers() {
        let mut core = core();
        let mut out = Vec::new();
        core.handle_advert(&advert(0, 0, -60, FOB), &mut out);
        core.apply_change(DirectoryChange::Delete(vec!["c-1".into()]));
        assert!(core.take_shared().is_none());
        // A peer that has not applied the deletion yet still sends them: this hub does not know
        // them any more.
        let mark = Timestamp(T0 + 100);
        assert_eq!(
            core.handle_peer("b", &peer(50, -60), mark, &mut out),
            Applied::Unknown
        );
    }

    #[test]
    fn a_peer_whose_observations_come_too_late_is_named() {
        let mut core = core();
        let mut out = Vec::new();
        assert_eq!(core.peer_lateness(), None);
        // Hub b's clock is 3 s behind: each observation is too late by the time it arrives.
        for s in 0..=61u64 {
            let now = s * 1000;
            core.handle_advert(&advert(now, 0, -60, FOB), &mut out);
            let mark = Timestamp(T0 + now);
            let behind = Shared {
                t: T0 + now - 3000,
                ..peer(0, -60)
            };
            assert_eq!(
                core.handle_peer("b", &behind, mark, &mut out),
                Applied::Late
            );
        }
        let said = core.peer_lateness().unwrap();
        assert!(
            said.starts_with("61 of 61 observations from peer hub b"),
            "{said}"
        );
        assert!(core
            .peer_lateness()
            .unwrap()
            .contains("check NTP on both hubs"));
    }

    #[test]
    fn without_sharing_peers_are_refused_and_every_zone_is_reported() {
        let mut core = core();
        core.stop_sharing();
        let mut out = Vec::new();
        let mark = Timestamp(T0);
        assert_eq!(
            core.handle_peer("b", &peer(0, -60), mark, &mut out),
            Applied::NotAPeer
        );
        assert!(core.reports_zone(1));
        core.handle_advert(&advert(0, 0, -60, FOB), &mut out);
        assert!(core.take_shared().is_none());
    }
}
