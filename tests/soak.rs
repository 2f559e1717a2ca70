//! Soak, accelerated: hours of a busy street's random addresses through the bluez source's
//! event-handling core and the pipeline, on a simulated clock. Tracked state must stay bounded and
//! memory flat — a hub runs for months.
//!
//! Memory is measured by a counting allocator around the system one (live bytes), so this file holds
//! one test only: other tests in the same binary would allocate concurrently and blur the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use beacond::config::{Config, ScanFilters};
use beacond::pipeline::Core;
use beacond::presence::{Engine, EngineParams};
use beacond::scan::bluez::tracker::{DeviceEvent, Tracker};
use beacond::scan::filter::Filter;
use beacond::time::Timestamp;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A phone's random address: a fresh one per device, as iOS and Android rotate them.
fn address(n: u64) -> [u8; 6] {
    let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = h.to_le_bytes();
    [b[0] | 0xc0, b[1], b[2], b[3], b[4], b[5]]
}

#[test]
fn a_hundred_thousand_random_addresses_leave_state_and_memory_bounded() {
    let toml = "[hub]\nstore_id = \"s\"\nhub_id = \"hub-1\"\n\
                [presence]\nmax_tracked = 2000\n\
                [[zones]]\nid = \"entrance\"\nhub = \"hub-1\"\nenter_rssi = -75\nexit_rssi = -85\n\
                absence_timeout_s = 20.0\n";
    let cfg: Config = Config::parse(toml).unwrap();
    let engine = Engine::new(
        &cfg.zones,
        EngineParams::from_config(&cfg.presence),
        "hub-1",
    );
    let mut core = Core::new(engine, Default::default(), &["hub-1".into()], 7);
    // What `scan::open` gives the bluez source for this config: forget after the longest absence
    // timeout plus 10 s, at most max(max_tracked, 1024) devices.
    let mut tracker = Tracker::new(2000, 30.0, Filter::new(&ScanFilters::default(), None));
    let mut events = Vec::new();
    let mut removed = 0usize;
    let mut peak_tracked = 0usize;
    let start = 1_795_597_200_000u64;
    // 100,000 phones over about three simulated hours (9 a second), each heard every second for a
    // minute: about 550 in range at once, six million reports in all. Apple's manufacturer data on
    // half of them, nothing beacond knows on the other half.
    const DEVICES: u64 = 100_000;
    const ARRIVALS_PER_S: u64 = 9;
    const LIFETIME_S: u64 = 60;
    let seconds = DEVICES / ARRIVALS_PER_S + LIFETIME_S + 60;
    let mut baseline = None;
    let mut after_half = 0;
    for s in 0..seconds {
        let now_s = start + s * 1000;
        let first = (s.saturating_sub(LIFETIME_S)) * ARRIVALS_PER_S;
        let last = ((s + 1) * ARRIVALS_PER_S).min(DEVICES);
        for n in first..last {
            let at = Timestamp(now_s + (n % 1000));
            let a = address(n);
            let ev = if (n + s) % 10 == 0 {
                DeviceEvent::Manufacturer(vec![(0x004c, vec![0x10, 0x05, (n % 256) as u8])])
            } else {
                DeviceEvent::Rssi(-60 - (n % 30) as i16)
            };
            if let Some(adv) = tracker.handle(at, a, ev) {
                core.handle_advert(&adv, &mut events);
            }
        }
        let now = Timestamp(now_s + 999);
        tracker.expire(now);
        removed += tracker.take_removals().len();
        core.handle_timeout(now, &mut events);
        events.clear();
        peak_tracked = peak_tracked.max(tracker.len());
        assert!(tracker.len() <= tracker.capacity());
        assert!(core.engine().tracked().0 <= 2000);
        // Memory once the street is in its steady state, and again at the end of the day.
        if s == 600 {
            baseline = Some(live());
        }
        if last == DEVICES && after_half == 0 {
            after_half = live();
        }
    }
    // Everyone is gone: the tracker forgot them all and asked BlueZ to remove each.
    assert_eq!(tracker.len(), 0);
    assert_eq!(removed as u64, DEVICES);
    // In range (61 s × 9/s) plus those not yet forgotten (30 s × 9/s): about 820, whatever the hour.
    assert!((750..=900).contains(&peak_tracked), "peak {peak_tracked}");
    assert_eq!(tracker.counters.events, DEVICES * LIFETIME_S + DEVICES);
    let baseline = baseline.unwrap();
    let growth = after_half - baseline;
    eprintln!(
        "live heap: {} KiB at 10 min, {} KiB after 100k devices, peak tracked {peak_tracked}",
        baseline / 1024,
        after_half / 1024
    );
    assert!(
        growth < 512 * 1024,
        "memory grew {growth} bytes between 10 min and 100k devices"
    );

    // A flood: 20,000 new addresses within one second fill the tracker; it stays at capacity by
    // forgetting the quietest, never grows past it.
    let t = Timestamp(start + seconds * 1000 + 60_000);
    let before = live();
    for n in 0..20_000u64 {
        tracker.handle(t, address(DEVICES + n), DeviceEvent::Rssi(-70));
        assert!(tracker.len() <= tracker.capacity());
    }
    removed = tracker.take_removals().len();
    assert_eq!(removed + tracker.len(), 20_000);
    assert!(
        live() - before < 1024 * 1024,
        "flood grew the heap by {}",
        live() - before
    );
}
