//! Property tests: decoding arbitrary bytes never panics, and every encodable frame decodes back to
//! itself.

use beacond::decode::encode::{encode_frame, AdBuilder};
use beacond::decode::json::{decode_to_json, parse_hex_line};
use beacond::decode::{
    decode_frames, AltBeacon, EddystoneEid, EddystoneTlm, EddystoneUid, EddystoneUrl, Frame,
    IBeacon,
};
use proptest::prelude::*;

fn url_body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![0x00u8..=0x0D, 0x21u8..=0x7E], 1..=17)
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<[u8; 16]>(), any::<u16>(), any::<u16>(), any::<i8>()).prop_map(
            |(u, major, minor, p)| {
                Frame::IBeacon(IBeacon {
                    uuid: uuid::Uuid::from_bytes(u),
                    major,
                    minor,
                    measured_power: p,
                })
            }
        ),
        (any::<u16>(), any::<[u8; 20]>(), any::<i8>(), any::<u8>())
            .prop_filter("Apple 0x02 frames are iBeacons", |(m, id, _, _)| !(*m
                == 0x004C
                && id[0] == 0x02))
            .prop_map(|(m, id, r, x)| Frame::AltBeacon(AltBeacon {
                manufacturer_id: m,
                beacon_id: id,
                reference_rssi: r,
                mfg_reserved: x
            })),
        (any::<i8>(), any::<[u8; 10]>(), any::<[u8; 6]>()).prop_map(|(t, n, i)| {
            Frame::EddystoneUid(EddystoneUid {
                tx_power: t,
                namespace: n,
                instance: i,
            })
        }),
        (any::<i8>(), 0u8..4, url_body())
            .prop_map(|(t, s, b)| Frame::EddystoneUrl(EddystoneUrl::new(t, s, &b).unwrap())),
        (
            any::<u16>(),
            prop::option::of(-128i16..=127),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(b, t, a, u)| {
                Frame::EddystoneTlm(EddystoneTlm::Plain {
                    battery_mv: b,
                    // Whole and half degrees are exact in 8.8 fixed point.
                    temperature_c: t.map(|t| t as f32 / 2.0),
                    adv_count: a,
                    uptime_tenths: u,
                })
            }),
        (any::<[u8; 12]>(), any::<u16>(), any::<u16>()).prop_map(|(e, s, m)| Frame::EddystoneTlm(
            EddystoneTlm::Encrypted {
                etlm: e,
                salt: s,
                mic: m
            }
        )),
        (any::<i8>(), any::<[u8; 8]>()).prop_map(|(t, e)| Frame::EddystoneEid(EddystoneEid {
            tx_power: t,
            eid: e
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..80)) {
        let _ = decode_frames(&raw, |_| {});
        let _ = decode_to_json(&raw);
    }

    /// Well-formed AD structures with random types and contents: also no panic, and if decoding
    /// succeeds every structure is visited.
    #[test]
    fn random_structures_never_panic(
        parts in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..28)), 0..6)
    ) {
        let mut raw = Vec::new();
        for (t, d) in &parts {
            raw.push((d.len() + 1) as u8);
            raw.push(*t);
            raw.extend(d);
        }
        let _ = decode_to_json(&raw);
    }

    #[test]
    fn arbitrary_text_never_panics_the_hex_reader(s in ".{0,64}") {
        let _ = parse_hex_line(&s);
    }

    #[test]
    fn every_frame_round_trips(f in frame()) {
        let raw = encode_frame(&f).unwrap();
        let mut got = Vec::new();
        decode_frames(raw.as_bytes(), |x| got.push(x)).unwrap();
        prop_assert_eq!(got, vec![f]);
    }

    /// Frames survive being placed after other structures, e.g. a name from the scan response.
    #[test]
    fn frames_round_trip_behind_other_structures(f in frame(), name in "[a-z]{0,3}") {
        let mut b = AdBuilder::new();
        if !name.is_empty() {
            b.local_name(&name, true).unwrap();
        }
        if b.frame_data(&f).is_ok() {
            let mut got = Vec::new();
            decode_frames(b.as_bytes(), |x| got.push(x)).unwrap();
            prop_assert_eq!(got, vec![f]);
        }
    }
}
