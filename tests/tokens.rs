//! The retailer app's rotating tokens, end to end through the core: published vectors, resolution
//! across epoch boundaries and ±1 epoch of phone clock skew, unknown tokens, and key changes or
//! deletions while a table is being built.

use beacond::config::Config;
use beacond::decode::encode::AdBuilder;
use beacond::decode::ServiceUuid;
use beacond::identity::record::{CustomerEntry, StoredKeys};
use beacond::identity::token::{self, Key};
use beacond::identity::{Directory, Identity};
use beacond::pipeline::{Core, DirectoryChange};
use beacond::presence::{Engine, EngineParams};
use beacond::scan::Advert;
use beacond::time::Timestamp;

const APP: &str = "6b1f3e2a-5c4d-4e8f-9a0b-1c2d3e4f5a6b";
/// 2026-11-25T10:03:00Z, the vectors' moment.
const AT: u64 = 1_795_600_980;

fn key_seq() -> Key {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8;
    }
    k
}

#[test]
fn published_vectors_hold() {
    // docs/app-token.md; computed independently with Python's hmac module.
    let k = key_seq();
    let day = token::day_of(AT);
    assert_eq!(day, 20_782);
    let dk = token::day_key(&k, day);
    assert_eq!(
        hex::encode(dk),
        "fa2ad84c99c409e65af0ebe8ab8f1aaa6e02a13bea1944b7388eca2e193c2628"
    );
    let e = token::epoch_of(AT, 600);
    assert_eq!(e, 2_992_668);
    assert_eq!(hex::encode(token::token(&dk, e, 600)), "1b328fa79d826711");
    assert_eq!(
        hex::encode(token::service_data(&token::token(&dk, e, 600))),
        "011b328fa79d826711"
    );
    // Last epoch of the day, first of the next (a new day key).
    assert_eq!(
        hex::encode(token::token(&dk, 2_992_751, 600)),
        "3e2c341eae064cba"
    );
    let next = token::day_key(&k, day + 1);
    assert_eq!(
        hex::encode(next),
        "33da70aca78a6866fd95dd598448a6ef1cf655c0ee8ff4342f3890a2eee239d8"
    );
    assert_eq!(
        hex::encode(token::token(&next, 2_992_752, 600)),
        "60fb5ee7415ba2ed"
    );
    // 5-minute epochs give other tokens from the same day key.
    assert_eq!(
        hex::encode(token::token(&dk, token::epoch_of(AT, 300), 300)),
        "9abd238085a6841a"
    );
}

fn core() -> Core {
    let cfg = Config::parse("[hub]\nhub_id = \"h\"\n[[zones]]\nid = \"z\"\n").unwrap();
    let engine = Engine::new(&cfg.zones, EngineParams::from_config(&cfg.presence), "h");
    Core::new(engine, Directory::new(), &["h".to_string()], 1)
        .with_app_tokens(uuid::Uuid::parse_str(APP).unwrap(), 600)
}

fn customer(id: &str, key: Key) -> CustomerEntry {
    CustomerEntry {
        id: id.into(),
        segments: vec![],
        beacons: vec![],
        keys: Some(StoredKeys::Customer(key)),
        updated_at: None,
    }
}

/// What the app of a customer with `key` advertises when its own clock says `phone_s`, heard by the
/// hub at `hub_s`.
fn advert(key: &Key, phone_s: u64, hub_s: u64) -> Advert {
    let dk = token::day_key(key, token::day_of(phone_s));
    let t = token::token(&dk, token::epoch_of(phone_s, 600), 600);
    let mut b = AdBuilder::new();
    b.flags(0x06)
        .unwrap()
        .service_data(
            ServiceUuid::from_uuid(uuid::Uuid::parse_str(APP).unwrap()),
            &token::service_data(&t),
        )
        .unwrap();
    Advert {
        at: Timestamp(hub_s * 1000),
        hub: 0,
        address: [0xc0, 1, 2, 3, 4, 5],
        rssi: -60,
        payload: b.as_bytes().into(),
    }
}

fn who(core: &Core, adv: &Advert) -> Option<String> {
    match core.resolve(adv).identity {
        Some(Identity::Customer(k)) => core.directory().customer(k).map(|c| c.id.clone()),
        _ => None,
    }
}

#[test]
fn tokens_resolve_across_epoch_boundaries_and_with_one_epoch_of_skew() {
    let mut c = core();
    let k = [42u8; 32];
    c.apply_change(DirectoryChange::Upsert(vec![customer("c-1", k)]));
    c.build_tokens_now(Timestamp(AT * 1000));
    // The boundary at the end of the day: epochs in two day keys.
    let midnight = (AT / 86_400 + 1) * 86_400;
    for hub_s in [AT, midnight - 1, midnight, midnight + 1, midnight + 599] {
        c.build_tokens_now(Timestamp(hub_s * 1000));
        for skew in [-600i64, 0, 600] {
            let phone = (hub_s as i64 + skew) as u64;
            assert_eq!(
                who(&c, &advert(&k, phone, hub_s)).as_deref(),
                Some("c-1"),
                "hub {hub_s} skew {skew}"
            );
        }
        // Two epochs off is too far: an old token must not follow a phone around.
        assert_eq!(who(&c, &advert(&k, hub_s + 1200, hub_s)), None);
        assert_eq!(who(&c, &advert(&k, hub_s - 1200, hub_s)), None);
    }
}

#[test]
fn unknown_tokens_are_anonymous_and_counted_and_deleted_customers_stop_resolving() {
    let mut c = core();
    let (k1, k2) = ([1u8; 32], [2u8; 32]);
    c.apply_change(DirectoryChange::Upsert(vec![customer("c-1", k1)]));
    c.build_tokens_now(Timestamp(AT * 1000));
    let mut events = Vec::new();
    c.handle_advert(&advert(&k2, AT, AT), &mut events);
    assert!(matches!(
        c.resolve(&advert(&k2, AT, AT)).identity,
        Some(Identity::Anonymous(_))
    ));
    c.handle_advert(&advert(&k1, AT, AT), &mut events);
    let s = c.stats();
    assert_eq!((s.app_tokens_unknown, s.app_tokens_resolved), (1, 1));

    // Deleted: the built tables still hold the token, the generation check drops it.
    let purged = c.apply_change(DirectoryChange::Delete(vec!["c-1".into()]));
    assert_eq!(purged, vec!["c-1".to_string()]);
    assert_eq!(who(&c, &advert(&k1, AT, AT)), None);
    // Another customer taking the freed slot is not resolved from the old customer's token.
    c.apply_change(DirectoryChange::Upsert(vec![customer("c-3", [3u8; 32])]));
    assert_eq!(who(&c, &advert(&k1, AT, AT)), None);
    assert_eq!(who(&c, &advert(&[3u8; 32], AT, AT)).as_deref(), Some("c-3"));
}

#[test]
fn a_change_while_a_table_is_being_built_is_not_lost() {
    let mut c = core();
    let old = [5u8; 32];
    c.apply_change(DirectoryChange::Upsert(vec![customer("c-1", old)]));
    let now = Timestamp(AT * 1000);
    // Jobs snapshot the keys now…
    let jobs = c.poll_token_jobs(now);
    assert_eq!(jobs.len(), 3, "previous, current and next epoch");
    // …the customer gets a new key and another customer arrives before the tables are installed…
    let new = [6u8; 32];
    c.apply_change(DirectoryChange::Upsert(vec![
        customer("c-1", new),
        customer("c-2", [7u8; 32]),
    ]));
    for j in jobs {
        let t = j.run();
        c.install_tokens(t);
    }
    // …and the installed (stale) tables do not win over what changed.
    assert_eq!(who(&c, &advert(&new, AT, AT)).as_deref(), Some("c-1"));
    assert_eq!(who(&c, &advert(&old, AT, AT)), None);
    assert_eq!(who(&c, &advert(&[7u8; 32], AT, AT)).as_deref(), Some("c-2"));
    // Asked once per epoch only.
    assert!(c.poll_token_jobs(now).is_empty());
}

#[test]
fn day_keys_resolve_on_their_day_only() {
    let mut c = core();
    let k = key_seq();
    let day = token::day_of(AT);
    let mut e = customer("c-1", k);
    e.keys = Some(StoredKeys::Days(vec![(day, token::day_key(&k, day))]));
    c.apply_change(DirectoryChange::Upsert(vec![e]));
    c.build_tokens_now(Timestamp(AT * 1000));
    assert_eq!(who(&c, &advert(&k, AT, AT)).as_deref(), Some("c-1"));
    let tomorrow = AT + 86_400;
    c.build_tokens_now(Timestamp(tomorrow * 1000));
    assert_eq!(who(&c, &advert(&k, tomorrow, tomorrow)), None);
}

#[test]
fn a_bulk_change_rebuilds_the_tables_and_drops_tables_built_before_it() {
    let mut c = core();
    let now = Timestamp(AT * 1000);
    let key_of = |i: u32, salt: u8| {
        let mut k = [salt; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        k
    };
    let all = |salt: u8| -> Vec<CustomerEntry> {
        (0..3000)
            .map(|i| customer(&format!("c-{i}"), key_of(i, salt)))
            .collect()
    };
    c.apply_change(DirectoryChange::Upsert(all(1)));
    let stale_jobs = c.poll_token_jobs(now);
    assert_eq!(stale_jobs.len(), 3);
    // A snapshot gives everyone new keys while those jobs run.
    c.apply_change(DirectoryChange::replace(all(2)));
    for j in stale_jobs {
        let t = j.run();
        c.install_tokens(t);
    }
    assert_eq!(who(&c, &advert(&key_of(5, 1), AT, AT)), None);
    // The tables are asked for again and built from the new keys.
    c.build_tokens_now(now);
    for i in [0, 1234, 2999] {
        assert_eq!(
            who(&c, &advert(&key_of(i, 2), AT, AT)),
            Some(format!("c-{i}"))
        );
        assert_eq!(who(&c, &advert(&key_of(i, 1), AT, AT)), None);
    }
}

fn load(part: Vec<CustomerEntry>, first: bool, last: bool, sweep: bool) -> DirectoryChange {
    DirectoryChange::Load {
        part,
        first,
        last,
        sweep,
    }
}

#[test]
fn a_snapshot_in_parts_forgets_only_the_customers_no_part_named() {
    let mut c = core();
    let key_of = |i: u32| {
        let mut k = [7u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        k
    };
    let range = |r: std::ops::Range<u32>| -> Vec<CustomerEntry> {
        r.map(|i| customer(&format!("c-{i}"), key_of(i))).collect()
    };
    c.apply_change(DirectoryChange::Upsert(range(0..3000)));
    // The snapshot names 0..2000 in two parts and an empty last one.
    assert!(c
        .apply_change(load(range(0..1000), true, false, true))
        .is_empty());
    assert!(c
        .apply_change(load(range(1000..2000), false, false, true))
        .is_empty());
    let mut purged = c.apply_change(load(vec![], false, true, true));
    purged.sort();
    let mut expected: Vec<String> = (2000..3000).map(|i| format!("c-{i}")).collect();
    expected.sort();
    assert_eq!(purged, expected);
    c.build_tokens_now(Timestamp(AT * 1000));
    assert_eq!(
        who(&c, &advert(&key_of(1999), AT, AT)),
        Some("c-1999".into())
    );
    assert_eq!(who(&c, &advert(&key_of(0), AT, AT)), Some("c-0".into()));
    assert_eq!(who(&c, &advert(&key_of(2000), AT, AT)), None);
}

#[test]
fn a_list_that_could_not_be_read_whole_forgets_nobody() {
    let mut c = core();
    let k = [9u8; 32];
    c.apply_change(DirectoryChange::Upsert(vec![customer("c-old", k)]));
    let purged = c.apply_change(load(vec![customer("c-new", [8u8; 32])], true, true, false));
    assert!(purged.is_empty());
    c.build_tokens_now(Timestamp(AT * 1000));
    assert_eq!(who(&c, &advert(&k, AT, AT)), Some("c-old".into()));
}
