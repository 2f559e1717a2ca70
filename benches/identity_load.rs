//! Customer identity at a million customers: applying a signed snapshot (verify, parse, stage in sled,
//! swap, load into the core's directory), reopening the cache, building one epoch's token table on one
//! core, resolving a token, and the memory all of it takes.
//!
//! Run: `cargo bench --bench identity_load` (CUSTOMERS=1000000 by default). Results go in
//! docs/PERFORMANCE.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use beacond::config::Config;
use beacond::identity::cache::Cache;
use beacond::identity::stage::load_parts;
use beacond::identity::sync::{sign, Accepted, SyncState};
use beacond::identity::token::{self, TokenJob};
use beacond::identity::Directory;
use beacond::pipeline::Core;
use beacond::presence::{Engine, EngineParams};
use beacond::time::Timestamp;
use ed25519_dalek::SigningKey;
use serde_json::json;

/// Resident memory of this process in bytes (Linux `/proc/self/statm`).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

const NOW_S: u64 = 1_795_600_980;

/// Live heap bytes, and the most they reached since [`reset_peak`]: what a hub must have free,
/// which RSS (it keeps what malloc does not give back) only bounds from above.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        grew(new as isize - l.size() as isize);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> u64 {
    LIVE.load(Ordering::Relaxed).max(0) as u64
}

fn reset_peak() -> u64 {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    live()
}

fn peak() -> u64 {
    PEAK.load(Ordering::Relaxed).max(0) as u64
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let chunk = 1000;
    let sk = SigningKey::from_bytes(&[7u8; 32]);
    let today = token::day_of(NOW_S);
    let day = |d: u32| beacond::identity::record::format_day(d);

    // The platform's side, not timed: signed chunks with two day keys per customer.
    let chunks = n.div_ceil(chunk);
    let payloads: Vec<Vec<u8>> = (0..chunks)
        .map(|c| {
            let customers: Vec<_> = (c * chunk..((c + 1) * chunk).min(n))
                .map(|i| {
                    let mut k = [0u8; 32];
                    k[..8].copy_from_slice(&(i as u64).to_be_bytes());
                    json!({"id": format!("c-{i:07}"), "segments": ["club"],
                           "beacons": [format!("ibeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6:{}:{}", i / 65536, i % 65536)],
                           "app_day_keys": [
                               {"day": day(today), "key": hex::encode(token::day_key(&k, today))},
                               {"day": day(today + 1), "key": hex::encode(token::day_key(&k, today + 1))}]})
                })
                .collect();
            let body = json!({"v":1,"store":"s","seq":1,"type":"snapshot","chunk":c,"chunks":chunks,
                              "customers": customers});
            sign(&sk, body.to_string().as_bytes())
        })
        .collect();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    println!(
        "{n} customers in {chunks} signed chunks, {:.0} MiB",
        mib(bytes as u64)
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers");
    let cfg = Config::parse("[hub]\nhub_id = \"h\"\n[[zones]]\nid = \"z\"\n").unwrap();
    let new_core = || {
        let engine = Engine::new(&cfg.zones, EngineParams::from_config(&cfg.presence), "h");
        Core::new(engine, Directory::new(), &["h".to_string()], 1).with_app_tokens(
            uuid::Uuid::parse_str("6b1f3e2a-5c4d-4e8f-9a0b-1c2d3e4f5a6b").unwrap(),
            600,
        )
    };

    // 1. Apply the snapshot as the sync stage does.
    let rss0 = rss();
    let live0 = reset_peak();
    let t = Instant::now();
    {
        let (mut cache, _) = Cache::open(&path, 32 << 20).unwrap();
        let mut state = SyncState::new(Some(sk.verifying_key()), "s", 0);
        let mut staging = None;
        let now = Timestamp(NOW_S * 1000);
        for p in &payloads {
            let a = state.check(now, p).unwrap();
            if let Accepted::Chunk {
                first,
                complete,
                customers,
                seq,
                ..
            } = &a
            {
                if *first {
                    staging = Some(cache.begin_snapshot().unwrap());
                }
                let s = staging.as_mut().unwrap();
                for c in customers {
                    s.insert(c).unwrap();
                }
                if *complete {
                    cache
                        .commit_snapshot(staging.take().unwrap(), *seq)
                        .unwrap();
                }
            }
            state.commit(now, &a);
        }
        let staged = t.elapsed();
        let cache_live = live();
        // As the sync stage hands it over: the cache's list in parts.
        let mut core = new_core();
        for part in load_parts(&cache, true) {
            core.apply_change(part);
        }
        println!(
            "  heap: the core holds {:.0} MiB live after the snapshot; peak {:.0} MiB above the start \
             (the open cache itself {:.0} MiB)",
            mib(live() - cache_live),
            mib(peak() - live0),
            mib(cache_live - live0)
        );
        println!(
            "apply snapshot: {:.1} s (verify+parse+stage+swap {:.1} s, load into the directory {:.1} s)",
            t.elapsed().as_secs_f64(),
            staged.as_secs_f64(),
            (t.elapsed() - staged).as_secs_f64()
        );
        println!(
            "  directory RSS: {:.0} MiB; cache on disk: {:.0} MiB",
            mib(rss().saturating_sub(rss0)),
            mib(cache.stats().unwrap().disk_bytes)
        );
    }

    // 2. Reopen: the daemon's start.
    let t = Instant::now();
    let (cache, _) = Cache::open(&path, 32 << 20).unwrap();
    let opened = t.elapsed();
    let mut core = new_core();
    for part in load_parts(&cache, false) {
        core.apply_change(part);
    }
    println!(
        "reopen: open {:.3} s, read into the directory {:.1} s (total {:.1} s)",
        opened.as_secs_f64(),
        (t.elapsed() - opened).as_secs_f64(),
        t.elapsed().as_secs_f64()
    );

    // 3. One epoch's token table, on this thread.
    let now = Timestamp(NOW_S * 1000);
    let jobs: Vec<TokenJob> = core.poll_token_jobs(now);
    let mut best = f64::MAX;
    let mut tables = Vec::new();
    for job in jobs {
        let t = Instant::now();
        let table = job.run();
        best = best.min(t.elapsed().as_secs_f64());
        tables.push(table);
    }
    let table_bytes = tables[0].heap_bytes();
    for t in tables {
        core.install_tokens(t);
    }
    println!(
        "token table, one epoch, {n} keys: {best:.2} s on one core, {:.1} MiB ({:.1} B per customer); \
         three epochs held: {:.1} MiB",
        mib(table_bytes as u64),
        table_bytes as f64 / n as f64,
        mib(core.token_heap_bytes() as u64)
    );

    // 4. Resolve: tokens of customers spread over the table, through the core's full lookup (window,
    // overlay, generation check).
    let probes: Vec<u64> = (0..1000u64)
        .map(|i| {
            let idx = (i * 997) % n as u64;
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&idx.to_be_bytes());
            let dk = token::day_key(&k, today);
            u64::from_be_bytes(token::token(&dk, token::epoch_of(NOW_S, 600), 600))
        })
        .collect();
    let rounds = 2000;
    let t = Instant::now();
    let mut hits = 0u64;
    for _ in 0..rounds {
        for p in &probes {
            hits += core.resolve_token(*p, now).is_some() as u64;
        }
    }
    let per = t.elapsed().as_secs_f64() / (rounds * probes.len()) as f64;
    assert_eq!(hits, rounds as u64 * probes.len() as u64);
    println!("resolve a token: {:.0} ns", per * 1e9);
    println!("process RSS at the end: {:.0} MiB", mib(rss()));
}
