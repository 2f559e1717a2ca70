//! Presence engine throughput: observations per second with 10,000 identities tracked, on the
//! supermarket's eight zones and hubs.
//!
//! Run: `cargo bench --bench presence`. Results go in docs/PERFORMANCE.md.

use std::hint::black_box;

use beacond::identity::{CustomerKey, Identity};
use beacond::presence::{Engine, EngineParams, Observation};
use beacond::scan::sim::Scenario;
use beacond::time::Timestamp;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const IDENTITIES: u64 = 10_000;
const BATCH: u64 = 100_000;

fn identity(i: u64) -> Identity {
    // A fifth known customers, the rest anonymous phones: a shop's mix.
    if i % 5 == 0 {
        Identity::Customer(CustomerKey(i as u32))
    } else {
        Identity::Anonymous(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

/// A deterministic stream: every identity is heard about once a second, by one of the hubs, with an
/// RSSI that wanders across the zone thresholds.
fn observation(n: u64, hubs: u16) -> (Timestamp, Observation) {
    let i = n % IDENTITIES;
    let x = n.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
    let obs = Observation {
        identity: identity(i),
        hub: (i % hubs as u64) as u16,
        rssi: -95 + (x % 40) as i16,
        measured_power: Some(-59),
    };
    // 10,000 identities each heard once a second: 10 observations per millisecond.
    (Timestamp(1_800_000_000_000 + n / 10), obs)
}

fn warmed_engine() -> (Engine, u64) {
    let sc = Scenario::load("builtin:supermarket").unwrap();
    let cfg = sc.as_config();
    let mut engine = Engine::new(
        &cfg.zones,
        EngineParams::from_config(&cfg.presence),
        &cfg.hub.hub_id,
    );
    let hubs = engine.hubs().len() as u16;
    let mut out = Vec::new();
    let mut n = 0;
    // Two passes over every identity so each is tracked with a settled filter.
    while n < 2 * IDENTITIES * hubs as u64 {
        let (t, o) = observation(n, hubs);
        engine.handle_observation(t, o, &mut out);
        out.clear();
        n += 1;
    }
    assert_eq!(engine.tracked().0 as u64, IDENTITIES);
    (engine, n)
}

fn bench(c: &mut Criterion) {
    let (engine, start) = warmed_engine();
    let hubs = engine.hubs().len() as u16;
    let mut g = c.benchmark_group("presence");
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function("observations_10k_tracked", |b| {
        b.iter_batched_ref(
            || (engine_clone(&engine), Vec::with_capacity(1024)),
            |(e, out)| {
                for n in start..start + BATCH {
                    let (t, o) = observation(n, hubs);
                    e.handle_observation(t, o, out);
                    out.clear();
                }
                black_box(e.tracked());
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn engine_clone(e: &Engine) -> Engine {
    e.clone()
}

criterion_group!(benches, bench);
criterion_main!(benches);
