//! The `bluez` source: the Bluetooth adapter through BlueZ, with btleplug for discovery and its event
//! stream, and a few direct D-Bus calls for what btleplug does not do (see [`Bus`]).
//!
//! Everything that decides lives in [`tracker`] and is tested without D-Bus; this module only carries
//! events in and decisions out. It is built to run for months: it survives bluetoothd restarts, an
//! adapter that is unplugged or powered off, and discovery that stops silently (the watchdog).

pub mod tracker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use btleplug::api::{
    Central, CentralEvent, CentralState, Manager as _, Peripheral as _, ScanFilter,
};
use btleplug::platform::{Adapter, Manager};
use dbus::nonblock::stdintf::org_freedesktop_dbus::Properties;
use dbus::nonblock::{Proxy, SyncConnection};
use futures_util::StreamExt;
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::scan::filter::Filter;
use crate::scan::Advert;
use crate::shutdown::Shutdown;
use crate::time::Timestamp;
use tracker::{
    address_of, device_path, DeviceEvent, ScanCounters, Tracker, Watchdog, WatchdogAction,
};

/// How long to wait for one D-Bus call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often to check on bluetoothd and the adapter, expire devices and advance the watermark.
const TICK: Duration = Duration::from_millis(250);
/// Checks of bluetoothd's name and the adapter's state, every this many ticks.
const HEALTH_EVERY: u32 = 8;
/// Retry delays when there is no bus, no bluetoothd or no adapter.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What to say when nobody owns `org.bluez` (also `beacond doctor`'s finding).
pub const BLUETOOTHD_MISSING: &str = "bluetoothd is not running (nobody owns org.bluez on the \
    system bus); start it with `systemctl start bluetooth`";

/// What to say when the adapter `wanted` (`auto`: any) is not among `adapters` (a list for people,
/// or "none"); also `beacond doctor`'s finding.
pub fn adapter_missing(wanted: &str, adapters: &str) -> String {
    if wanted == "auto" {
        format!(
            "no Bluetooth adapter found (adapters: {adapters}); plug one in or check `bluetoothctl list`"
        )
    } else {
        format!(
            "adapter {wanted:?} not found (adapters: {adapters}); fix [scan] adapter or use \"auto\""
        )
    }
}

/// Why the source stopped for good.
#[derive(Debug, Error)]
pub enum BluezError {
    /// The watchdog restarted discovery and power-cycled the adapter and still heard nothing.
    #[error(
        "no advertisement for {0} s after restarting discovery and power-cycling the adapter; \
         exiting so that systemd restarts beacond (check the adapter with `bluetoothctl show`)"
    )]
    Silent(u64),
}

/// How the source runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `auto` or an adapter name (`hci1`).
    pub adapter: String,
    /// Seconds of silence before the watchdog acts.
    pub watchdog_s: u64,
    /// Seconds after which a quiet device is forgotten and its BlueZ object removed.
    pub forget_after_s: f64,
    /// The most devices tracked at once.
    pub max_devices: usize,
    /// What is let through.
    pub filter: Filter,
}

/// The few direct D-Bus calls btleplug does not offer, on our own connection to the system bus.
#[derive(Clone)]
pub struct Bus {
    conn: Arc<SyncConnection>,
}

impl Bus {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` if set).
    pub async fn connect() -> Result<Bus, dbus::Error> {
        let (resource, conn) = dbus_tokio::connection::new_system_sync()?;
        tokio::spawn(async move {
            let err = resource.await;
            tracing::debug!(error = %err, "own D-Bus connection closed");
        });
        Ok(Bus { conn })
    }

    fn proxy<'a>(&'a self, dest: &'a str, path: String) -> Proxy<'a, Arc<SyncConnection>> {
        Proxy::new(dest, path, CALL_TIMEOUT, self.conn.clone())
    }

    /// The unique name that owns `org.bluez` now: a new owner means bluetoothd restarted.
    pub async fn bluez_owner(&self) -> Option<String> {
        let p = self.proxy("org.freedesktop.DBus", "/org/freedesktop/DBus".into());
        let r: Result<(String,), _> = p
            .method_call("org.freedesktop.DBus", "GetNameOwner", ("org.bluez",))
            .await;
        r.ok().map(|(s,)| s)
    }

    async fn adapter_flag(&self, adapter: &str, name: &str) -> Option<bool> {
        self.proxy("org.bluez", format!("/org/bluez/{adapter}"))
            .get("org.bluez.Adapter1", name)
            .await
            .ok()
    }

    async fn set_powered(&self, adapter: &str, on: bool) -> Result<(), dbus::Error> {
        self.proxy("org.bluez", format!("/org/bluez/{adapter}"))
            .set("org.bluez.Adapter1", "Powered", on)
            .await
    }

    /// Every adapter BlueZ has, by name (`hci0`), with whether it is powered; changes nothing.
    pub async fn adapters(&self) -> Result<Vec<(String, bool)>, dbus::Error> {
        use dbus::nonblock::stdintf::org_freedesktop_dbus::ObjectManager;
        let objects = self
            .proxy("org.bluez", "/".into())
            .get_managed_objects()
            .await?;
        let mut found: Vec<(String, bool)> = objects
            .iter()
            .filter_map(|(path, interfaces)| {
                let adapter = interfaces.get("org.bluez.Adapter1")?;
                let name = path.rsplit('/').next()?.to_owned();
                let powered = dbus::arg::prop_cast::<bool>(adapter, "Powered").copied();
                Some((name, powered.unwrap_or(false)))
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// Asks BlueZ to drop a device object (`Adapter1.RemoveDevice`).
    pub async fn remove_device(&self, adapter: &str, path: &str) -> Result<(), dbus::Error> {
        let path = dbus::Path::new(path).map_err(|e| dbus::Error::new_failed(&e))?;
        self.proxy("org.bluez", format!("/org/bluez/{adapter}"))
            .method_call("org.bluez.Adapter1", "RemoveDevice", (path,))
            .await
    }
}

/// Why a session with one adapter ended.
enum SessionEnd {
    Shutdown,
    /// bluetoothd went away, restarted, or the adapter disappeared: set everything up again.
    Lost(String),
    GiveUp(u64),
}

/// Runs the source until shutdown. Adverts go to `out`; `watermark` follows our clock so the core may
/// run deadlines up to now; `counters` is refreshed for `stats`.
pub async fn run(
    settings: Settings,
    io: crate::scan::SourceIo,
    mut shutdown: Shutdown,
) -> Result<(), BluezError> {
    let crate::scan::SourceIo {
        adverts: out,
        watermark,
        counters,
        filters,
    } = io;
    let mut retry = RETRY_MIN;
    // One btleplug manager and one bus connection for the process: each holds a D-Bus connection
    // whose task lives as long as the connection, so making new ones per session would leak.
    let (manager, bus) = loop {
        match (Manager::new().await, Bus::connect().await) {
            (Ok(m), Ok(b)) => break (m, b),
            (Err(e), _) => tracing::error!(error = %e, retry_s = retry.as_secs(),
                "cannot reach BlueZ on the D-Bus system bus; is dbus running? retrying"),
            (_, Err(e)) => tracing::error!(error = %e, retry_s = retry.as_secs(),
                "cannot connect to the D-Bus system bus; retrying"),
        }
        if wait(&mut shutdown, &mut retry).await {
            return Ok(());
        }
    };
    // Real time only moves forward: the core may run deadlines up to now even while there is no
    // adapter or nothing to hear, so stats and exits keep coming.
    let ticker = {
        let watermark = watermark.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                let now = Timestamp::now();
                watermark.send_replace(Timestamp(now.0.saturating_sub(TICK.as_millis() as u64)));
            }
        })
    };
    let links = Links {
        out,
        watermark: &watermark,
        counters: &counters,
        filters,
    };
    let result = scan(settings, &manager, &bus, links, &mut shutdown).await;
    ticker.abort();
    result
}

/// The source's channels to the pipeline.
struct Links<'a> {
    out: mpsc::Sender<Advert>,
    watermark: &'a watch::Sender<Timestamp>,
    counters: &'a watch::Sender<ScanCounters>,
    filters: Option<watch::Receiver<Filter>>,
}

async fn scan(
    settings: Settings,
    manager: &Manager,
    bus: &Bus,
    mut links: Links<'_>,
    shutdown: &mut Shutdown,
) -> Result<(), BluezError> {
    let mut retry = RETRY_MIN;
    let mut tracker = Tracker::new(
        settings.max_devices,
        settings.forget_after_s,
        settings.filter.clone(),
    );
    loop {
        let adapter = match pick_adapter(manager, bus, &settings.adapter).await {
            Ok(a) => a,
            Err(why) => {
                tracker.counters.adapter_missing += 1;
                links.counters.send_replace(tracker.counters);
                tracing::error!(adapter = %settings.adapter, retry_s = retry.as_secs(), "{why}");
                if wait(shutdown, &mut retry).await {
                    return Ok(());
                }
                continue;
            }
        };
        retry = RETRY_MIN;
        let end = session(&settings, bus, adapter, &mut tracker, &mut links, shutdown).await;
        match end {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::GiveUp(s) => return Err(BluezError::Silent(s)),
            SessionEnd::Lost(why) => {
                tracing::warn!("{why}; setting up discovery again");
                tracker.clear();
                if wait(shutdown, &mut retry).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Sleeps `retry` (doubling it up to [`RETRY_MAX`]); true if shutdown came first.
async fn wait(shutdown: &mut Shutdown, retry: &mut Duration) -> bool {
    let d = *retry;
    *retry = (*retry * 2).min(RETRY_MAX);
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.recv() => true,
    }
}

/// An adapter we scan with, and its name (`hci0`) for our own D-Bus calls.
struct Picked {
    adapter: Adapter,
    name: String,
}

async fn pick_adapter(manager: &Manager, bus: &Bus, wanted: &str) -> Result<Picked, String> {
    if bus.bluez_owner().await.is_none() {
        return Err(BLUETOOTHD_MISSING.into());
    }
    let adapters = manager
        .adapters()
        .await
        .map_err(|e| format!("cannot list Bluetooth adapters: {e}"))?;
    let mut found = Vec::new();
    for a in adapters {
        let info = a.adapter_info().await.unwrap_or_default();
        // "hci0 (usb:v1D6Bp0245d050A)"
        let name = info
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let powered = matches!(a.adapter_state().await, Ok(CentralState::PoweredOn));
        found.push((name, powered, a));
    }
    let names: Vec<&str> = found.iter().map(|(n, _, _)| n.as_str()).collect();
    let names = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    let pick = if wanted == "auto" {
        match found.iter().position(|(_, p, _)| *p) {
            Some(i) => Some(i),
            None if !found.is_empty() => {
                // Unpowered is the state after rfkill or a fresh boot on some images; power it.
                let name = &found[0].0;
                tracing::warn!(adapter = %name, "no adapter is powered; powering on {name}");
                bus.set_powered(name, true).await.map_err(|e| {
                    format!(
                        "adapter {name} is off and cannot be powered on ({e}); check `rfkill list`"
                    )
                })?;
                Some(0)
            }
            None => None,
        }
    } else {
        found.iter().position(|(n, _, _)| n == wanted)
    };
    let Some(i) = pick else {
        return Err(adapter_missing(wanted, &names));
    };
    let (name, powered, adapter) = found.swap_remove(i);
    if !powered && wanted != "auto" {
        bus.set_powered(&name, true).await.map_err(|e| {
            format!("adapter {name} is off and cannot be powered on ({e}); check `rfkill list`")
        })?;
    }
    Ok(Picked { adapter, name })
}

async fn session(
    settings: &Settings,
    bus: &Bus,
    picked: Picked,
    tracker: &mut Tracker,
    links: &mut Links<'_>,
    shutdown: &mut Shutdown,
) -> SessionEnd {
    let (out, watermark, counters) = (&links.out, links.watermark, links.counters);
    let Picked { adapter, name } = picked;
    let owner = bus.bluez_owner().await;
    let mut events = match adapter.events().await {
        Ok(e) => e,
        Err(e) => return SessionEnd::Lost(format!("cannot subscribe to adapter {name}: {e}")),
    };
    if let Err(e) = adapter.start_scan(ScanFilter::default()).await {
        return SessionEnd::Lost(format!("cannot start discovery on {name}: {e}"));
    }
    tracker.counters.sessions += 1;
    tracing::info!(adapter = %name, "discovery started");
    // The watchdog measures silences, so it runs on the monotonic clock: NTP setting the system clock
    // forward after boot is not a silence.
    let started = std::time::Instant::now();
    let mono = move || Timestamp(started.elapsed().as_millis() as u64);
    let mut dog = Watchdog::new(settings.watchdog_s, mono());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        let ev = tokio::select! {
            _ = shutdown.recv() => {
                let _ = adapter.stop_scan().await;
                return SessionEnd::Shutdown;
            }
            ev = events.next() => match ev {
                Some(ev) => ev,
                None => return SessionEnd::Lost(format!("the event stream of {name} ended")),
            },
            _ = tick.tick() => {
                let now = Timestamp::now();
                if let Some(rx) = links.filters.as_mut().filter(|rx| rx.has_changed().unwrap_or(false)) {
                    tracker.set_filter(rx.borrow_and_update().clone());
                }
                tracker.expire(now);
                for a in tracker.take_removals() {
                    // A device BlueZ already dropped is fine: the goal is that it is gone.
                    match bus.remove_device(&name, &device_path(&name, &a)).await {
                        Ok(()) => tracker.counters.devices_removed += 1,
                        Err(e) => tracing::debug!(error = %e, "could not remove a device object"),
                    }
                }
                ticks += 1;
                if ticks % HEALTH_EVERY == 0 {
                    if let Some(end) = health_check(bus, &adapter, &name, &owner, &mut dog, mono()).await {
                        return end;
                    }
                }
                if let Some(action) = dog.handle_timeout(mono()) {
                    if let Some(end) = act(bus, &adapter, &name, action, tracker, settings.watchdog_s).await {
                        return end;
                    }
                }
                counters.send_replace(tracker.counters);
                continue;
            }
        };
        let now = Timestamp::now();
        let Some((address, report)) = report_of(&adapter, ev).await else {
            continue;
        };
        dog.heard(mono());
        if let Some(adv) = tracker.handle(now, address, report) {
            tokio::select! {
                sent = out.send(adv) => if sent.is_err() { return SessionEnd::Shutdown },
                _ = shutdown.recv() => return SessionEnd::Shutdown,
            }
            watermark.send_replace(Timestamp(now.0.saturating_sub(1)));
        }
    }
}

/// bluetoothd restarted (new owner) or left, the adapter went away, or discovery stopped behind our
/// back: each needs discovery set up again. `now` is the watchdog's monotonic time.
async fn health_check(
    bus: &Bus,
    adapter: &Adapter,
    name: &str,
    owner: &Option<String>,
    dog: &mut Watchdog,
    now: Timestamp,
) -> Option<SessionEnd> {
    let now_owner = bus.bluez_owner().await;
    if now_owner.is_none() {
        return Some(SessionEnd::Lost("bluetoothd went away".into()));
    }
    if now_owner != *owner {
        return Some(SessionEnd::Lost("bluetoothd restarted".into()));
    }
    match bus.adapter_flag(name, "Powered").await {
        None => return Some(SessionEnd::Lost(format!("adapter {name} disappeared"))),
        Some(false) => return Some(SessionEnd::Lost(format!("adapter {name} was powered off"))),
        Some(true) => {}
    }
    if bus.adapter_flag(name, "Discovering").await == Some(false) {
        tracing::warn!(adapter = %name, "discovery was stopped by someone else; starting it again");
        let _ = adapter.start_scan(ScanFilter::default()).await;
        dog.restarted(now);
    }
    None
}

async fn act(
    bus: &Bus,
    adapter: &Adapter,
    name: &str,
    action: WatchdogAction,
    tracker: &mut Tracker,
    watchdog_s: u64,
) -> Option<SessionEnd> {
    match action {
        WatchdogAction::RestartDiscovery => {
            tracker.counters.watchdog_restarts += 1;
            tracing::warn!(adapter = %name, silent_s = watchdog_s, "no advertisement heard; restarting discovery");
            let _ = adapter.stop_scan().await;
            if let Err(e) = adapter.start_scan(ScanFilter::default()).await {
                return Some(SessionEnd::Lost(format!(
                    "cannot restart discovery on {name}: {e}"
                )));
            }
        }
        WatchdogAction::PowerCycle => {
            tracker.counters.watchdog_power_cycles += 1;
            tracing::warn!(adapter = %name, silent_s = 2 * watchdog_s,
                "still no advertisement after restarting discovery; power-cycling the adapter");
            let _ = adapter.stop_scan().await;
            let _ = bus.set_powered(name, false).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(e) = bus.set_powered(name, true).await {
                return Some(SessionEnd::Lost(format!(
                    "cannot power {name} on again: {e}"
                )));
            }
            if let Err(e) = adapter.start_scan(ScanFilter::default()).await {
                return Some(SessionEnd::Lost(format!(
                    "cannot restart discovery on {name}: {e}"
                )));
            }
        }
        WatchdogAction::GiveUp => {
            tracing::error!(adapter = %name, silent_s = 3 * watchdog_s,
                "no advertisement after restarting discovery and power-cycling; giving up");
            return Some(SessionEnd::GiveUp(3 * watchdog_s));
        }
    }
    None
}

/// Turns a btleplug event into a report about one address. A discovery reads the device's properties
/// once, since the event itself carries none.
async fn report_of(adapter: &Adapter, ev: CentralEvent) -> Option<(tracker::Address, DeviceEvent)> {
    let sorted = |m: HashMap<u16, Vec<u8>>| m.into_iter().collect::<Vec<_>>();
    let sorted_s = |m: HashMap<uuid::Uuid, Vec<u8>>| m.into_iter().collect::<Vec<_>>();
    match ev {
        CentralEvent::DeviceDiscovered(id) => {
            let address = address_of(&id.to_string())?;
            let p = adapter.peripheral(&id).await.ok()?;
            let props = p.properties().await.ok()??;
            Some((
                address,
                DeviceEvent::Discovered {
                    rssi: props.rssi,
                    manufacturer: sorted(props.manufacturer_data),
                    service_data: sorted_s(props.service_data),
                },
            ))
        }
        CentralEvent::RssiUpdate { id, rssi } => {
            Some((address_of(&id.to_string())?, DeviceEvent::Rssi(rssi)))
        }
        CentralEvent::ManufacturerDataAdvertisement {
            id,
            manufacturer_data,
        } => Some((
            address_of(&id.to_string())?,
            DeviceEvent::Manufacturer(sorted(manufacturer_data)),
        )),
        CentralEvent::ServiceDataAdvertisement { id, service_data } => Some((
            address_of(&id.to_string())?,
            DeviceEvent::ServiceData(sorted_s(service_data)),
        )),
        _ => None,
    }
}
