//! The customer cache on the card over months of sync: a hub is left alone for months while the
//! platform rewrites its customers every day (each customer's next day key), adds and removes
//! some, and now and then resends everything as a snapshot. sled never rewrites in place, so what
//! matters is whether the cache's files settle or keep growing until the card is full.
//!
//! Run: `cargo bench --bench cache_growth`. Knobs (environment): `CUSTOMERS` (default 50,000),
//! `DAYS` (default 180), `SNAPSHOT_EVERY` days (default 30), `CHURN` customers added and as many
//! opted out a day (default 500). Every day, every customer gets a new day key in deltas of 3,000
//! (what fits in one sync payload); the cache is closed and opened again every 7 days, as a
//! restart does. Prints the cache's size on disk each 10 days. Results go in docs/PERFORMANCE.md.
//! Under `cargo test` it runs a small store for eight days instead.

use std::path::Path;

use beacond::identity::cache::Cache;
use beacond::identity::record::{CustomerEntry, StoredKeys};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn du(p: &Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            let (b, f) = du(&e.path());
            bytes += b;
            files += f;
        } else {
            bytes += m.len();
            files += 1;
        }
    }
    (bytes, files)
}

/// Customer `i` as the platform sends it on `day`: two day keys (today's and tomorrow's).
fn customer(i: u64, day: u32) -> CustomerEntry {
    let key = |d: u32| {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_be_bytes());
        k[8..12].copy_from_slice(&d.to_be_bytes());
        (d, k)
    };
    CustomerEntry {
        id: format!("c-{i:08}"),
        segments: vec!["club".into()],
        beacons: vec![],
        keys: Some(StoredKeys::Days(vec![key(day), key(day + 1)])),
        updated_at: Some("2026-12-07T08:00:00Z".into()),
    }
}

fn main() {
    // `cargo bench` passes --bench. `cargo test --all-targets` runs this too: there a small
    // store for a week and a day, so the bench still works when it is next needed.
    let real = std::env::args().any(|a| a == "--bench");
    let customers: u64 = env_or("CUSTOMERS", if real { 50_000 } else { 2_000 });
    let days: u32 = env_or("DAYS", if real { 180 } else { 8 });
    let snapshot_every: u32 = env_or("SNAPSHOT_EVERY", if real { 30 } else { 7 });
    let churn: u64 = env_or("CHURN", if real { 500 } else { 50 });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache");
    // The live ids are first..first + customers: each day the oldest `churn` opt out and as many
    // new ones join.
    let mut first = 0u64;
    let mut seq = 0u64;
    let mut cache = Cache::open(&path, 16 << 20).unwrap().0;
    let mut sizes = Vec::new();
    let start = std::time::Instant::now();
    println!(
        "{customers} customers, {days} days, a snapshot every {snapshot_every} days, {churn} \
         joining and leaving a day"
    );
    println!("day   cache bytes  files");
    for day in 0..days {
        if day % 7 == 0 && day > 0 {
            drop(cache);
            cache = Cache::open(&path, 16 << 20).unwrap().0;
        }
        if day % snapshot_every == 0 {
            let mut staging = cache.begin_snapshot().unwrap();
            for i in first..first + customers {
                staging.insert(&customer(i, day)).unwrap();
            }
            seq += 1;
            cache.commit_snapshot(staging, seq).unwrap();
        } else {
            let leaving: Vec<String> = (first..first + churn)
                .map(|i| format!("c-{i:08}"))
                .collect();
            first += churn;
            let ids: Vec<u64> = (first..first + customers).collect();
            for (n, chunk) in ids.chunks(3_000).enumerate() {
                let upsert: Vec<CustomerEntry> = chunk.iter().map(|&i| customer(i, day)).collect();
                let delete = if n == 0 { leaving.as_slice() } else { &[] };
                seq += 1;
                cache.apply_delta(seq, &upsert, delete).unwrap();
            }
        }
        cache.flush().unwrap();
        let (bytes, files) = du(&path);
        sizes.push(bytes);
        if day % 10 == 9 || day == 0 {
            println!("{:>3} {bytes:>13} {files:>6}", day + 1);
        }
    }
    assert_eq!(cache.stats().unwrap().customers, customers);
    let first_day = sizes[0];
    let max = *sizes.iter().max().unwrap();
    let second_half = &sizes[sizes.len() / 2..];
    let median = {
        let mut s = second_half.to_vec();
        s.sort_unstable();
        s[s.len() / 2]
    };
    println!(
        "after day 1: {:.1} MB; largest: {:.1} MB ({:.1}x); median over the second half: {:.1} MB; \
         {:.0} s",
        first_day as f64 / 1e6,
        max as f64 / 1e6,
        max as f64 / first_day as f64,
        median as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
}
