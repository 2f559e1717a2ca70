//! Rotating app tokens: how the retailer's app is recognised without advertising anything static.
//!
//! The derivation (specified with test vectors in `docs/app-token.md`):
//!
//! ```text
//! day       = floor(unix_seconds / 86400)                       (UTC days)
//! epoch     = floor(unix_seconds / epoch_s)                     (epoch_s divides 86400)
//! day_key   = HMAC-SHA256(customer_key, "beacond/day/v1"   ‖ be32(day))
//! token     = HMAC-SHA256(day_key,      "beacond/token/v1" ‖ be32(epoch_s) ‖ be32(epoch))[0..8]
//! advert    = service data under the app's 128-bit UUID: 0x01 ‖ token
//! ```
//!
//! The platform may give a hub only day keys (today's and tomorrow's), never the long-term customer
//! key, so a stolen hub lets nobody follow a phone beyond a day or two.
//!
//! The hub resolves a token with one probe into a [`TokenTable`] built per epoch: sorted tokens with a
//! bucket index on their top bits (tokens are uniformly random, so each bucket holds about one), which
//! costs 12 bytes per customer plus 4 per bucket instead of a general hash map's ~32.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use smallvec::SmallVec;

/// A 256-bit key: a customer's long-term app key or one day's key.
pub type Key = [u8; 32];

/// Bytes of a token on air.
pub const TOKEN_LEN: usize = 8;
/// The first byte of the service data: the format, so a future format can coexist.
pub const FORMAT_V1: u8 = 0x01;
/// Seconds in a UTC day, the unit of day keys.
pub const DAY_S: u64 = 86_400;

const DAY_LABEL: &[u8] = b"beacond/day/v1";
const TOKEN_LABEL: &[u8] = b"beacond/token/v1";

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// The UTC day of a Unix time in seconds.
pub fn day_of(unix_s: u64) -> u32 {
    (unix_s / DAY_S) as u32
}

/// The epoch of a Unix time in seconds.
pub fn epoch_of(unix_s: u64, epoch_s: u32) -> u32 {
    (unix_s / epoch_s as u64) as u32
}

/// The UTC day an epoch falls in.
pub fn day_of_epoch(epoch: u32, epoch_s: u32) -> u32 {
    (epoch as u64 * epoch_s as u64 / DAY_S) as u32
}

/// One day's key, derived from a customer's long-term key.
pub fn day_key(customer_key: &Key, day: u32) -> Key {
    hmac(customer_key, &[DAY_LABEL, &day.to_be_bytes()])
}

/// The token for `epoch`, from that epoch's day key.
pub fn token(day_key: &Key, epoch: u32, epoch_s: u32) -> [u8; TOKEN_LEN] {
    let mac = hmac(
        day_key,
        &[TOKEN_LABEL, &epoch_s.to_be_bytes(), &epoch.to_be_bytes()],
    );
    let mut t = [0u8; TOKEN_LEN];
    t.copy_from_slice(&mac[..TOKEN_LEN]);
    t
}

/// The service data an app advertises for `token`.
pub fn service_data(token: &[u8; TOKEN_LEN]) -> [u8; 1 + TOKEN_LEN] {
    let mut d = [0u8; 1 + TOKEN_LEN];
    d[0] = FORMAT_V1;
    d[1..].copy_from_slice(token);
    d
}

/// The token in service data, if the data is in a format this hub knows.
pub fn parse_service_data(data: &[u8]) -> Option<u64> {
    match data {
        [FORMAT_V1, rest @ ..] if rest.len() == TOKEN_LEN => {
            Some(u64::from_be_bytes(rest.try_into().ok()?))
        }
        _ => None,
    }
}

/// The app key material the hub holds for one customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppKeys {
    /// The long-term key: every day key can be derived (for platforms that trust their hubs).
    Customer(Key),
    /// Day keys only, by UTC day: the hub can resolve the customer on those days and no others.
    /// Two inline (the platform sends today and tomorrow): a third would cost every one of a million
    /// customers 36 bytes, so more than two go to the heap.
    Days(SmallVec<[(u32, Key); 2]>),
}

impl AppKeys {
    /// The key for `day`, if this material covers it.
    pub fn day_key(&self, day: u32) -> Option<Key> {
        match self {
            AppKeys::Customer(k) => Some(day_key(k, day)),
            AppKeys::Days(days) => days.iter().find(|(d, _)| *d == day).map(|(_, k)| *k),
        }
    }

    /// The token this customer's app advertises in `epoch`, if the material covers that day.
    pub fn token(&self, epoch: u32, epoch_s: u32) -> Option<u64> {
        let k = self.day_key(day_of_epoch(epoch, epoch_s))?;
        Some(u64::from_be_bytes(token(&k, epoch, epoch_s)))
    }
}

/// What a table entry points at: a customer slot and the slot's generation when the table was built,
/// so a token of a customer who has since been deleted (and whose slot may hold someone else) misses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The customer's slot.
    pub slot: u32,
    /// The slot's generation.
    pub generation: u32,
}

/// Every token of one epoch, for O(1) lookup.
#[derive(Clone, Debug, Default)]
pub struct TokenTable {
    epoch: u32,
    /// The [`TokenWindow`] generation of the job that built it.
    generation: u64,
    shift: u32,
    /// `index[b]..index[b + 1]` are the positions of tokens whose top bits are `b`.
    index: Vec<u32>,
    tokens: Vec<u64>,
    targets: Vec<Target>,
}

impl TokenTable {
    /// Builds the table of `epoch` from every customer's key material.
    pub fn build<'a>(
        epoch: u32,
        epoch_s: u32,
        customers: impl Iterator<Item = (Target, &'a AppKeys)>,
    ) -> TokenTable {
        let mut pairs: Vec<(u64, Target)> = customers
            .filter_map(|(t, keys)| Some((keys.token(epoch, epoch_s)?, t)))
            .collect();
        pairs.sort_unstable_by_key(|p| p.0);
        // About one token per bucket; at least 16 buckets so tiny tables stay valid.
        let bits = (pairs.len().max(16).next_power_of_two().trailing_zeros()).min(24);
        let shift = 64 - bits;
        let mut index = vec![0u32; (1usize << bits) + 1];
        let mut pos = 0usize;
        for (b, slot) in index.iter_mut().enumerate() {
            while pos < pairs.len() && ((pairs[pos].0 >> shift) as usize) < b {
                pos += 1;
            }
            *slot = pos as u32;
        }
        let (tokens, targets) = pairs.into_iter().unzip();
        TokenTable {
            epoch,
            generation: 0,
            shift,
            index,
            tokens,
            targets,
        }
    }

    /// The epoch this table is for.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the table has no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Heap bytes the table holds.
    pub fn heap_bytes(&self) -> usize {
        self.index.capacity() * 4 + self.tokens.capacity() * 8 + self.targets.capacity() * 8
    }

    /// The customer whose token this is in this table's epoch.
    #[inline]
    pub fn lookup(&self, token: u64) -> Option<Target> {
        let b = (token >> self.shift) as usize;
        let (lo, hi) = (self.index[b] as usize, self.index[b + 1] as usize);
        let i = self.tokens[lo..hi].iter().position(|t| *t == token)?;
        Some(self.targets[lo + i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        [b; 32]
    }

    #[test]
    fn table_finds_every_token_and_nothing_else() {
        let keys: Vec<AppKeys> = (0..5000u32)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..4].copy_from_slice(&i.to_be_bytes());
                AppKeys::Customer(k)
            })
            .collect();
        let epoch = 2_940_000;
        let table = TokenTable::build(
            epoch,
            600,
            keys.iter().enumerate().map(|(i, k)| {
                (
                    Target {
                        slot: i as u32,
                        generation: 7,
                    },
                    k,
                )
            }),
        );
        assert_eq!(table.len(), 5000);
        for (i, k) in keys.iter().enumerate() {
            let t = k.token(epoch, 600).unwrap();
            assert_eq!(table.lookup(t).map(|t| t.slot), Some(i as u32));
            // The neighbouring epoch's token is a different token.
            let other = k.token(epoch + 1, 600).unwrap();
            assert_eq!(table.lookup(other), None);
        }
        assert_eq!(table.lookup(0), None);
        assert_eq!(table.lookup(u64::MAX), None);
    }

    #[test]
    fn empty_table_misses() {
        let t = TokenTable::build(1, 600, std::iter::empty());
        assert!(t.is_empty());
        assert_eq!(t.lookup(12345), None);
        assert_eq!(t.lookup(u64::MAX), None);
    }

    #[test]
    fn day_keys_cover_only_their_days() {
        let k = key(9);
        let today = 20_417;
        let days = AppKeys::Days(smallvec::smallvec![(today, day_key(&k, today))]);
        let epoch_in_day = today * (86_400 / 600) + 5;
        assert_eq!(
            days.token(epoch_in_day, 600),
            AppKeys::Customer(k).token(epoch_in_day, 600)
        );
        assert_eq!(days.token(epoch_in_day + 144, 600), None);
    }

    #[test]
    fn more_day_keys_than_fit_inline_still_resolve() {
        let k = key(3);
        let stored = crate::identity::record::StoredKeys::Days(
            (20_416..20_420).map(|d| (d, day_key(&k, d))).collect(),
        );
        let keys = stored.app_keys();
        for d in 20_416..20_420 {
            assert_eq!(keys.day_key(d), Some(day_key(&k, d)), "day {d}");
        }
        assert_eq!(keys.day_key(20_420), None);
    }

    #[test]
    fn service_data_round_trips_and_rejects_other_formats() {
        let t = token(&key(1), 5, 600);
        let d = service_data(&t);
        assert_eq!(parse_service_data(&d), Some(u64::from_be_bytes(t)));
        let mut wrong = d;
        wrong[0] = 2;
        assert_eq!(parse_service_data(&wrong), None);
        assert_eq!(parse_service_data(&d[..8]), None);
    }
}

/// The token tables a hub holds: the previous, current and next epoch (a phone's clock may be an
/// epoch off), plus an overlay for customers whose key material changed after a table was built.
/// Tables are built elsewhere ([`TokenJob`]) and installed whole, so a lookup never sees half a table.
#[derive(Clone, Debug)]
pub struct TokenWindow {
    epoch_s: u32,
    tables: Vec<std::sync::Arc<TokenTable>>,
    overlay: rustc_hash::FxHashMap<(u32, u64), Target>,
    requested: Vec<u32>,
    current: u32,
    /// Bumped by [`TokenWindow::rebuild`]: tables from jobs of an older generation are stale.
    generation: u64,
}

/// Work for a background thread: one epoch's table from a snapshot of every customer's keys.
#[derive(Clone, Debug)]
pub struct TokenJob {
    /// The epoch.
    pub epoch: u32,
    /// Seconds per epoch.
    pub epoch_s: u32,
    /// Every customer's key material at the time of the request.
    pub keys: Vec<std::sync::Arc<super::KeyEntry>>,
    /// The window's generation when the job was made.
    pub generation: u64,
}

impl TokenJob {
    /// Builds the table.
    pub fn run(self) -> TokenTable {
        let mut t = TokenTable::build(
            self.epoch,
            self.epoch_s,
            self.keys.iter().map(|e| (e.target, &e.keys)),
        );
        t.generation = self.generation;
        t
    }
}

impl TokenWindow {
    /// An empty window for epochs of `epoch_s` seconds.
    pub fn new(epoch_s: u32) -> TokenWindow {
        TokenWindow {
            epoch_s,
            tables: Vec::new(),
            overlay: Default::default(),
            requested: Vec::new(),
            current: 0,
            generation: 0,
        }
    }

    /// Seconds per epoch.
    pub fn epoch_s(&self) -> u32 {
        self.epoch_s
    }

    /// The generation jobs made now carry.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn wanted(current: u32) -> [u32; 3] {
        [current.saturating_sub(1), current, current + 1]
    }

    /// Moves the window to the epoch of `unix_s`, dropping tables and overlay entries it no longer
    /// needs. Returns the epochs whose tables should be built (each is returned once).
    pub fn advance(&mut self, unix_s: u64) -> Vec<u32> {
        let e = epoch_of(unix_s, self.epoch_s);
        if e != self.current {
            self.current = e;
            let lo = e.saturating_sub(1);
            self.tables
                .retain(|t| t.epoch() >= lo && t.epoch() <= e + 1);
            self.overlay.retain(|(ep, _), _| *ep >= lo);
            self.requested.retain(|ep| *ep >= lo);
        }
        let mut out = Vec::new();
        for ep in Self::wanted(e) {
            if !self.tables.iter().any(|t| t.epoch() == ep) && !self.requested.contains(&ep) {
                self.requested.push(ep);
                out.push(ep);
            }
        }
        out
    }

    /// Drops every table and the overlay: the next [`TokenWindow::advance`] asks for all of them again.
    /// Until they are installed, tokens do not resolve (a fraction of a second per epoch table). Jobs
    /// already running come back with an older generation and are dropped.
    pub fn rebuild(&mut self) {
        self.tables.clear();
        self.overlay.clear();
        self.requested.clear();
        self.generation += 1;
    }

    /// Installs a built table (a table for an epoch that has passed meanwhile is dropped).
    pub fn install(&mut self, table: TokenTable) {
        if table.generation < self.generation {
            return;
        }
        let ep = table.epoch();
        self.requested.retain(|e| *e != ep);
        if ep + 1 < self.current {
            return;
        }
        self.tables.retain(|t| t.epoch() != ep);
        self.tables.push(std::sync::Arc::new(table));
    }

    /// A customer's key material changed: their tokens for the epochs around now resolve from the
    /// overlay at once, whatever the tables (built from older material) say.
    pub fn note_change(&mut self, entry: &super::KeyEntry) {
        let e = self.current;
        for ep in e.saturating_sub(1)..=e + 2 {
            if let Some(t) = entry.keys.token(ep, self.epoch_s) {
                self.overlay.insert((ep, t), entry.target);
            }
        }
    }

    /// Who advertised `token` when the hub's clock says `unix_s`, before checking the directory.
    #[inline]
    pub fn lookup(&self, token: u64, unix_s: u64) -> Option<Target> {
        let e = epoch_of(unix_s, self.epoch_s);
        for ep in [e, e.saturating_sub(1), e + 1] {
            if let Some(t) = self.overlay.get(&(ep, token)) {
                return Some(*t);
            }
            if let Some(t) = self.tables.iter().find(|t| t.epoch() == ep) {
                if let Some(hit) = t.lookup(token) {
                    return Some(hit);
                }
            }
        }
        None
    }

    /// Heap bytes of the installed tables.
    pub fn heap_bytes(&self) -> usize {
        self.tables.iter().map(|t| t.heap_bytes()).sum::<usize>() + self.overlay.len() * 24
    }
}
