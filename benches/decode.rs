//! Decode throughput on a realistic mix of what a shop's radio hears: mostly phones (Apple
//! continuity and Android adverts that are not beacons), then the store's beacons of every frame type.
//!
//! Run: `cargo bench --bench decode`. Results go in docs/PERFORMANCE.md.

use beacond::decode::{decode_frames, Frame};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

/// (payload, how many of it in the mix)
const MIX: &[(&str, usize)] = &[
    // Apple continuity "nearby" from iPhones: the most common advert in any shop.
    ("02011A020A0C0AFF4C001005031C1A2B3C", 30),
    // Android phone with a 16-bit service list and a name.
    ("0201060303AAFD0709506978656C37", 10),
    // Microsoft CDP beacon from laptops.
    (
        "1EFF0600010920021B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F6071",
        5,
    ),
    // iBeacon (ble_monitor vector).
    (
        "02011A1AFF4C000215E2C56DB5DFFB48D2B060D0F5A71096E000640000C5",
        15,
    ),
    // AltBeacon (android-beacon-library vector).
    (
        "02011a1bff1801beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c50900",
        5,
    ),
    // Eddystone-UID, -URL, -TLM, -EID.
    (
        "0201060303AAFE1716AAFE00F8E157BD5DF90AAD1DC2FB0000000000010000",
        10,
    ),
    ("0303AAFE0A16AAFE10EB0261626307", 5),
    ("0201060303AAFE1116AAFE20000C6F1E000002006D41DB9AB6", 10),
    ("0201060303AAFE0D16AAFE30E8A9B76A71C5F89290", 5),
    // The retailer app: 128-bit service data with a rotating token.
    (
        "0201061B216B5A4F3E2D1C0B9A8F4E4D5C2A3E1F6B0102030405060708090A",
        5,
    ),
];

fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (hex_payload, n) in MIX {
        let raw = hex::decode(hex_payload).unwrap();
        assert!(decode_frames(&raw, |_| {}).is_ok(), "{hex_payload}");
        out.extend(std::iter::repeat_n(raw, *n));
    }
    // Interleave so branch prediction sees a shop, not runs of one type.
    let len = out.len();
    let mut mixed = Vec::with_capacity(len);
    let mut i = 0usize;
    for _ in 0..len {
        i = (i + 37) % len;
        mixed.push(out[i].clone());
    }
    mixed
}

fn bench(c: &mut Criterion) {
    let corpus = corpus();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(corpus.len() as u64));
    g.bench_function("mixed_corpus", |b| {
        b.iter(|| {
            let mut frames = 0usize;
            let mut power = 0i32;
            for raw in &corpus {
                let r = decode_frames(black_box(raw), |f: Frame| {
                    frames += 1;
                    power += f.measured_power_1m().unwrap_or(0) as i32;
                });
                black_box(&r);
            }
            black_box((frames, power))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
