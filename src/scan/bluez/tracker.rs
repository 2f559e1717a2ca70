//! The bluez source's event-handling core, sans-IO: BlueZ device events in, [`Advert`]s out, plus the
//! decisions the I/O side carries out (which D-Bus device objects to remove, when the watchdog acts).
//!
//! BlueZ reports a device's merged property map, not raw packets: an RSSI change, or new manufacturer
//! or service data. Each such report means the radio heard the device, so each becomes one advert built
//! from the device's latest data and RSSI, stamped with *our* time.

use std::collections::HashMap;

use rustc_hash::FxBuildHasher;
use serde::Serialize;

use crate::decode::ad::{
    AD_MANUFACTURER, AD_SERVICE_DATA128, AD_SERVICE_DATA16, AD_SERVICE_DATA32,
};
use crate::decode::ServiceUuid;
use crate::scan::filter::{Filter, Verdict};
use crate::scan::{Advert, Payload};
use crate::time::Timestamp;

/// A BLE device address.
pub type Address = [u8; 6];

/// Manufacturer data by company id, as BlueZ holds it.
pub type ManufacturerData = Vec<(u16, Vec<u8>)>;
/// Service data by 128-bit UUID, as BlueZ holds it.
pub type ServiceData = Vec<(uuid::Uuid, Vec<u8>)>;

/// What BlueZ told us about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A device object appeared (or was there when discovery started), with what it holds.
    Discovered {
        /// Its RSSI, if BlueZ has one.
        rssi: Option<i16>,
        /// Manufacturer data by company id.
        manufacturer: Vec<(u16, Vec<u8>)>,
        /// Service data by 128-bit UUID.
        service_data: Vec<(uuid::Uuid, Vec<u8>)>,
    },
    /// A new RSSI.
    Rssi(i16),
    /// New manufacturer data.
    Manufacturer(Vec<(u16, Vec<u8>)>),
    /// New service data.
    ServiceData(Vec<(uuid::Uuid, Vec<u8>)>),
}

/// The tracker's counters, reported in `stats.scan`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScanCounters {
    /// Device reports from BlueZ.
    pub events: u64,
    /// Adverts let into the pipeline.
    pub adverts: u64,
    /// Dropped: weaker than `min_rssi`.
    pub filtered_rssi: u64,
    /// Dropped: not in the configured lists.
    pub filtered_unlisted: u64,
    /// Dropped: data before any RSSI, or a payload that cannot be rebuilt.
    pub incomplete: u64,
    /// Devices tracked now.
    pub devices: u64,
    /// Device objects removed from BlueZ after they went quiet or to make room.
    pub devices_removed: u64,
    /// Discovery restarts by the watchdog.
    pub watchdog_restarts: u64,
    /// Adapter power cycles by the watchdog.
    pub watchdog_power_cycles: u64,
    /// Times discovery was (re)started because bluetoothd or the adapter came back.
    pub sessions: u64,
    /// Times no usable adapter was found.
    pub adapter_missing: u64,
}

#[derive(Clone, Debug, Default)]
struct Device {
    last_seen: Timestamp,
    rssi: Option<i16>,
    payload: Payload,
    has_data: bool,
}

/// Tracks the devices BlueZ reports, bounded in number and in time.
#[derive(Debug)]
pub struct Tracker {
    devices: HashMap<Address, Device, FxBuildHasher>,
    capacity: usize,
    forget_after_ms: u64,
    filter: Filter,
    removals: Vec<Address>,
    /// Counters.
    pub counters: ScanCounters,
}

impl Tracker {
    /// A tracker holding at most `capacity` devices, forgetting one `forget_after_s` after it was last
    /// heard.
    pub fn new(capacity: usize, forget_after_s: f64, filter: Filter) -> Tracker {
        Tracker {
            devices: HashMap::default(),
            capacity: capacity.max(16),
            forget_after_ms: (forget_after_s * 1000.0) as u64,
            filter,
            removals: Vec::new(),
            counters: ScanCounters::default(),
        }
    }

    /// Devices tracked now.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether no device is tracked.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The most devices this tracker holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Handles one report about `address` at `now`; returns the advert it amounts to, if any.
    pub fn handle(&mut self, now: Timestamp, address: Address, ev: DeviceEvent) -> Option<Advert> {
        self.counters.events += 1;
        if !self.devices.contains_key(&address) && self.devices.len() >= self.capacity {
            self.make_room();
        }
        let d = self.devices.entry(address).or_default();
        d.last_seen = now;
        let rebuilt = match ev {
            DeviceEvent::Discovered {
                rssi,
                manufacturer,
                service_data,
            } => {
                if rssi.is_some() {
                    d.rssi = rssi;
                }
                Some((manufacturer, service_data))
            }
            DeviceEvent::Rssi(r) => {
                d.rssi = Some(r);
                None
            }
            // BlueZ sends the whole map of the one property that changed; keep the other one.
            DeviceEvent::Manufacturer(m) => {
                let (_, s) = split(&d.payload);
                Some((m, s))
            }
            DeviceEvent::ServiceData(s) => {
                let (m, _) = split(&d.payload);
                Some((m, s))
            }
        };
        if let Some((m, s)) = rebuilt {
            match merged_payload(&m, &s) {
                Some(p) => {
                    d.has_data = !p.is_empty();
                    d.payload = p;
                }
                None => {
                    self.counters.incomplete += 1;
                    return None;
                }
            }
        }
        let (Some(rssi), true) = (d.rssi, d.has_data) else {
            self.counters.incomplete += 1;
            return None;
        };
        match self.filter.check(rssi, &d.payload) {
            Verdict::Pass => {}
            Verdict::WeakSignal => {
                self.counters.filtered_rssi += 1;
                return None;
            }
            Verdict::NotListed => {
                self.counters.filtered_unlisted += 1;
                return None;
            }
        }
        self.counters.adverts += 1;
        Some(Advert {
            at: now,
            hub: 0,
            address,
            rssi,
            payload: d.payload.clone(),
        })
    }

    /// Applies new filters (a reload) from the next report on.
    pub fn set_filter(&mut self, filter: Filter) {
        self.filter = filter;
    }

    /// BlueZ dropped the device object itself (it timed out there, or someone removed it).
    pub fn removed(&mut self, address: &Address) {
        self.devices.remove(address);
    }

    /// Forgets every device not heard for `forget_after_s` at `now`; their BlueZ objects are queued for
    /// removal.
    pub fn expire(&mut self, now: Timestamp) {
        let horizon = now.0.saturating_sub(self.forget_after_ms);
        let removals = &mut self.removals;
        self.devices.retain(|a, d| {
            let keep = d.last_seen.0 > horizon;
            if !keep {
                removals.push(*a);
            }
            keep
        });
        self.counters.devices = self.devices.len() as u64;
    }

    /// Full: forget the quietest tenth at once, so a flood of new addresses costs O(1) per address.
    fn make_room(&mut self) {
        let mut seen: Vec<(u64, Address)> = self
            .devices
            .iter()
            .map(|(a, d)| (d.last_seen.0, *a))
            .collect();
        let n = (self.capacity / 10).max(1);
        seen.select_nth_unstable(n - 1);
        for (_, a) in &seen[..n] {
            self.devices.remove(a);
            self.removals.push(*a);
        }
    }

    /// The device objects to remove from BlueZ now; the caller counts them as removed once done.
    pub fn take_removals(&mut self) -> Vec<Address> {
        std::mem::take(&mut self.removals)
    }

    /// Forgets everything (a new BlueZ session: its device objects are new).
    pub fn clear(&mut self) {
        self.devices.clear();
        self.removals.clear();
        self.counters.devices = 0;
    }
}

/// Splits a payload this tracker built back into its manufacturer and service data.
fn split(payload: &[u8]) -> (ManufacturerData, ServiceData) {
    let mut m = Vec::new();
    let mut s = Vec::new();
    if let Ok(ad) = crate::decode::Advertisement::parse(payload) {
        m.extend(ad.manufacturer_data().map(|(c, d)| (c, d.data.to_vec())));
        s.extend(
            ad.service_data()
                .map(|(u, d)| (u.to_uuid(), d.data.to_vec())),
        );
    }
    (m, s)
}

/// Rebuilds AD structures from BlueZ's property maps, in a stable order (BlueZ's maps have none).
/// `None` if a value cannot fit one AD structure.
pub fn merged_payload(
    manufacturer: &[(u16, Vec<u8>)],
    service_data: &[(uuid::Uuid, Vec<u8>)],
) -> Option<Payload> {
    let mut out = Payload::new();
    let mut push = |ty: u8, parts: &[&[u8]]| -> Option<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 1;
        out.push(u8::try_from(len).ok()?);
        out.push(ty);
        for p in parts {
            out.extend_from_slice(p);
        }
        Some(())
    };
    let mut m: Vec<_> = manufacturer.iter().collect();
    m.sort_by_key(|(c, _)| *c);
    for (c, d) in m {
        push(AD_MANUFACTURER, &[&c.to_le_bytes(), d])?;
    }
    let mut s: Vec<_> = service_data.iter().collect();
    s.sort_by_key(|(u, _)| *u);
    for (u, d) in s {
        match ServiceUuid::from_uuid(*u) {
            ServiceUuid::U16(v) => push(AD_SERVICE_DATA16, &[&v.to_le_bytes(), d])?,
            ServiceUuid::U32(v) => push(AD_SERVICE_DATA32, &[&v.to_le_bytes(), d])?,
            ServiceUuid::U128(b) => {
                let mut le = b;
                le.reverse();
                push(AD_SERVICE_DATA128, &[&le, d])?
            }
        }
    }
    Some(out)
}

/// What the scan watchdog asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchdogAction {
    /// Stop and start discovery.
    RestartDiscovery,
    /// Power the adapter off and on, then start discovery.
    PowerCycle,
    /// Nothing helped: exit non-zero so systemd restarts the daemon.
    GiveUp,
}

/// Discovery can stop silently after hours, and nothing tells us. Silence is the only symptom, so each
/// `timeout` of it escalates one step; any report resets.
#[derive(Clone, Debug)]
pub struct Watchdog {
    timeout_ms: u64,
    since: Timestamp,
    step: u8,
}

impl Watchdog {
    /// A watchdog that acts after `timeout_s` of silence, counted from `now`.
    pub fn new(timeout_s: u64, now: Timestamp) -> Watchdog {
        Watchdog {
            timeout_ms: timeout_s.max(1) * 1000,
            since: now,
            step: 0,
        }
    }

    /// The radio heard something at `now`.
    pub fn heard(&mut self, now: Timestamp) {
        self.since = now;
        self.step = 0;
    }

    /// Discovery was (re)started at `now` for another reason: give it a full timeout.
    pub fn restarted(&mut self, now: Timestamp) {
        self.since = now;
    }

    /// When the watchdog must next be asked.
    pub fn poll_timeout(&self) -> Timestamp {
        Timestamp(self.since.0 + self.timeout_ms)
    }

    /// The action due at `now`, if any.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Option<WatchdogAction> {
        if now < self.poll_timeout() {
            return None;
        }
        self.since = now;
        self.step = self.step.saturating_add(1);
        Some(match self.step {
            1 => WatchdogAction::RestartDiscovery,
            2 => WatchdogAction::PowerCycle,
            _ => WatchdogAction::GiveUp,
        })
    }
}

/// Parses the address out of a BlueZ device id (`hci0/dev_AA_BB_CC_DD_EE_FF`, or a full object path).
pub fn address_of(device_id: &str) -> Option<Address> {
    let hex = device_id.rsplit('/').next()?.strip_prefix("dev_")?;
    let mut out = [0u8; 6];
    let mut parts = hex.split('_');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The D-Bus object path of `address` under `adapter` (`hci0`).
pub fn device_path(adapter: &str, address: &Address) -> String {
    let hex: Vec<String> = address.iter().map(|b| format!("{b:02X}")).collect();
    format!("/org/bluez/{adapter}/dev_{}", hex.join("_"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScanFilters;

    fn ibeacon_data() -> Vec<u8> {
        hex::decode("0215e2c56db5dffb48d2b060d0f5a71096e000010002c5").unwrap()
    }

    fn tracker() -> Tracker {
        Tracker::new(100, 30.0, Filter::new(&ScanFilters::default(), None))
    }

    const A: Address = [0x33, 0x22, 0x33, 0x44, 0x55, 0x66];

    #[test]
    fn data_then_rssi_updates_become_adverts_with_our_time() {
        let mut t = tracker();
        let disc = DeviceEvent::Discovered {
            rssi: None,
            manufacturer: vec![(0x004c, ibeacon_data())],
            service_data: vec![],
        };
        assert_eq!(t.handle(Timestamp(1000), A, disc), None, "no RSSI yet");
        let a = t
            .handle(Timestamp(2000), A, DeviceEvent::Rssi(-61))
            .unwrap();
        assert_eq!((a.at, a.rssi, a.address), (Timestamp(2000), -61, A));
        let mut frames = Vec::new();
        crate::decode::decode_frames(&a.payload, |f| frames.push(f)).unwrap();
        assert!(
            matches!(frames[0], crate::decode::Frame::IBeacon(b) if b.major == 1 && b.minor == 2)
        );
        let b = t
            .handle(Timestamp(2500), A, DeviceEvent::Rssi(-70))
            .unwrap();
        assert_eq!(b.payload, a.payload);
        assert_eq!(t.counters.adverts, 2);
        assert_eq!(t.counters.incomplete, 1);
    }

    #[test]
    fn service_data_and_manufacturer_data_are_kept_side_by_side() {
        let mut t = tracker();
        let feaa = ServiceUuid::U16(0xfeaa).to_uuid();
        t.handle(Timestamp(0), A, DeviceEvent::Rssi(-50));
        t.handle(
            Timestamp(1),
            A,
            DeviceEvent::Manufacturer(vec![(0x0059, vec![1, 2])]),
        );
        let a = t
            .handle(
                Timestamp(2),
                A,
                DeviceEvent::ServiceData(vec![(feaa, vec![0x10, 0, 0])]),
            )
            .unwrap();
        let ad = crate::decode::Advertisement::parse(&a.payload).unwrap();
        assert_eq!(ad.manufacturer_data().count(), 1);
        assert_eq!(
            ad.service_data().next().unwrap().0,
            ServiceUuid::U16(0xfeaa)
        );
    }

    #[test]
    fn filtered_reports_are_counted_not_passed() {
        let f = ScanFilters {
            min_rssi: -80,
            company_ids: vec![0x004c],
            ..Default::default()
        };
        let mut t = Tracker::new(100, 30.0, Filter::new(&f, None));
        t.handle(
            Timestamp(0),
            A,
            DeviceEvent::Manufacturer(vec![(0x0059, vec![1])]),
        );
        assert!(t.handle(Timestamp(1), A, DeviceEvent::Rssi(-50)).is_none());
        t.handle(
            Timestamp(2),
            A,
            DeviceEvent::Manufacturer(vec![(0x004c, ibeacon_data())]),
        );
        assert!(t.handle(Timestamp(3), A, DeviceEvent::Rssi(-90)).is_none());
        assert!(t.handle(Timestamp(4), A, DeviceEvent::Rssi(-60)).is_some());
        assert_eq!(t.counters.filtered_unlisted, 1);
        assert_eq!(t.counters.filtered_rssi, 1);
    }

    #[test]
    fn quiet_devices_expire_and_are_queued_for_removal() {
        let mut t = tracker();
        t.handle(Timestamp(0), A, DeviceEvent::Rssi(-50));
        let b = [1, 2, 3, 4, 5, 6];
        t.handle(Timestamp(20_000), b, DeviceEvent::Rssi(-50));
        t.expire(Timestamp(31_000));
        assert_eq!(t.len(), 1);
        assert_eq!(t.take_removals(), vec![A]);
        assert!(t.take_removals().is_empty());
    }

    #[test]
    fn a_full_tracker_forgets_its_quietest_devices() {
        let mut t = Tracker::new(100, 3600.0, Filter::open());
        for i in 0..1000u32 {
            let mut a = [0u8; 6];
            a[..4].copy_from_slice(&i.to_le_bytes());
            t.handle(Timestamp(i as u64), a, DeviceEvent::Rssi(-50));
            assert!(t.len() <= 100);
        }
        let removed = t.take_removals();
        assert_eq!(removed.len(), 900);
        // The newest ones are still there.
        let mut newest = [0u8; 6];
        newest[..4].copy_from_slice(&999u32.to_le_bytes());
        assert!(!removed.contains(&newest));
    }

    #[test]
    fn the_watchdog_escalates_on_silence_and_resets_on_a_report() {
        let mut w = Watchdog::new(90, Timestamp(0));
        assert_eq!(w.handle_timeout(Timestamp(89_999)), None);
        assert_eq!(
            w.handle_timeout(Timestamp(90_000)),
            Some(WatchdogAction::RestartDiscovery)
        );
        assert_eq!(w.poll_timeout(), Timestamp(180_000));
        assert_eq!(
            w.handle_timeout(Timestamp(180_000)),
            Some(WatchdogAction::PowerCycle)
        );
        w.heard(Timestamp(200_000));
        assert_eq!(
            w.handle_timeout(Timestamp(290_000)),
            Some(WatchdogAction::RestartDiscovery)
        );
        assert_eq!(
            w.handle_timeout(Timestamp(380_000)),
            Some(WatchdogAction::PowerCycle)
        );
        assert_eq!(
            w.handle_timeout(Timestamp(470_000)),
            Some(WatchdogAction::GiveUp)
        );
    }

    #[test]
    fn device_ids_and_paths_round_trip() {
        assert_eq!(address_of("hci0/dev_33_22_33_44_55_66"), Some(A));
        assert_eq!(address_of("/org/bluez/hci1/dev_33_22_33_44_55_66"), Some(A));
        assert_eq!(address_of("hci0/dev_33_22"), None);
        assert_eq!(address_of("hci0"), None);
        assert_eq!(
            device_path("hci0", &A),
            "/org/bluez/hci0/dev_33_22_33_44_55_66"
        );
    }
}
