//! Whatever arrives on the sync topic — noise, truncated or bit-flipped batches, or validly signed
//! JSON of any shape — the protocol state never panics, and a rejected batch changes nothing.

use beacond::identity::sync::{sign, SyncState};
use beacond::time::Timestamp;
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[3u8; 32])
}

fn valid_body(seq: u64, ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"v":1,"store":"s","seq":seq,"type":"delta",
        "upsert": ids.iter().map(|i| serde_json::json!({"id": i})).collect::<Vec<_>>()}),
    )
    .unwrap()
}

/// Arbitrary JSON values, to sign as if the platform had a bug.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z_]{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("v".to_string()),
                    Just("store".to_string()),
                    Just("seq".to_string()),
                    Just("type".to_string()),
                    Just("chunk".to_string()),
                    Just("chunks".to_string()),
                    Just("customers".to_string()),
                    Just("upsert".to_string()),
                    Just("delete".to_string()),
                    Just("id".to_string()),
                    Just("beacons".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn noise_never_panics_and_changes_nothing(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut s = SyncState::new(Some(key().verifying_key()), "s", 7);
        prop_assert!(s.check(Timestamp(0), &bytes).is_err());
        prop_assert_eq!(s.applied(), 7);
    }

    #[test]
    fn a_corrupted_valid_batch_is_rejected(
        ids in prop::collection::vec("[a-z0-9-]{1,12}", 0..5),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
    ) {
        let payload = sign(&key(), &valid_body(8, &ids));
        let mut flipped = payload.clone();
        let i = flip.index(flipped.len());
        flipped[i] ^= 1 << bit;
        let mut s = SyncState::new(Some(key().verifying_key()), "s", 7);
        // A flip in the hex signature's case is the same signature; any other flip must be caught.
        let same_case = flipped[i].eq_ignore_ascii_case(&payload[i]) && i < 128;
        if !same_case {
            prop_assert!(s.check(Timestamp(0), &flipped).is_err());
        }
        let truncated = &payload[..cut.index(payload.len())];
        prop_assert!(s.check(Timestamp(0), truncated).is_err());
        prop_assert_eq!(s.applied(), 7);
        prop_assert!(s.check(Timestamp(0), &payload).is_ok());
    }

    #[test]
    fn signed_json_of_any_shape_never_panics(v in json_value(), seq in 0u64..20) {
        let mut body = v;
        if let serde_json::Value::Object(m) = &mut body {
            // Often close to a real batch, so the checks past parsing run too.
            m.entry("v").or_insert(1.into());
            m.entry("store").or_insert("s".into());
            m.entry("seq").or_insert(seq.into());
        }
        let mut s = SyncState::new(Some(key().verifying_key()), "s", 7);
        let payload = sign(&key(), &serde_json::to_vec(&body).unwrap());
        if let Ok(a) = s.check(Timestamp(0), &payload) {
            s.commit(Timestamp(0), &a);
            prop_assert!(s.applied() >= 7);
        } else {
            prop_assert_eq!(s.applied(), 7);
        }
    }
}
