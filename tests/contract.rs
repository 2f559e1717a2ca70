//! Every payload the daemon produces validates against the JSON Schemas of docs/asyncapi.yaml, so
//! the published contract and the code cannot drift apart.

use beacond::scan::sim::Scenario;
use beacond::sink::mqtt::{last_will_payload, Settings};
use beacond::sink::render;
use serde_json::Value;

fn asyncapi() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/asyncapi.yaml"))
        .unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    // Rooted at the document, so references between schemas resolve.
    let root = serde_json::json!({
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap()
}

fn check(v: &jsonschema::Validator, payload: &[u8], what: &str) {
    let instance: Value = serde_json::from_slice(payload).unwrap();
    let errors: Vec<String> = v.iter_errors(&instance).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{what} does not match the contract: {errors:?}\n{instance}"
    );
}

#[test]
fn every_produced_payload_matches_the_asyncapi_schemas() {
    let doc = asyncapi();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let presence = validator(&doc, "presence");
    let headcount = validator(&doc, "headcount");
    let status = validator(&doc, "status");
    let stats = validator(&doc, "stats");
    let beacons = validator(&doc, "beacons");
    let offer = validator(&doc, "offer");

    let sc = Scenario::load("builtin:supermarket").unwrap();
    let mut cfg = sc.as_config();
    cfg.mqtt.enabled = true;
    let settings = Settings::from_config(&cfg, beacond::daemon::config_hash(&cfg)).unwrap();
    let topics = settings.topics().clone();
    let mut seq = beacond::sink::mqtt::Sequence::new();
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = beacond::sink::spool::Spool::open(&dir.path().join("s"), 1 << 20).unwrap();
    let mut counts = std::collections::HashMap::new();
    let mut periodic_checked = 0;
    let mut offers = beacond::offers::stage::OfferStage::new(&cfg);
    beacond::simulate::run(sc, None, |core, e| {
        // Periodic records, built from the same core at a few points of the run.
        if let beacond::presence::Event::Headcount(h) = e {
            let s = beacond::sink::stats_record(core, &Default::default(), h.start, h.end);
            check(
                &stats,
                &settings.message(&s, &mut seq).unwrap().payload,
                "stats",
            );
            let mut with_scan = s.clone();
            if let beacond::sink::Record::Stats(st) = &mut with_scan {
                st.scan = Some(beacond::scan::bluez::tracker::ScanCounters {
                    events: 10,
                    adverts: 8,
                    filtered_rssi: 1,
                    filtered_unlisted: 1,
                    sessions: 1,
                    ..Default::default()
                });
            }
            check(
                &stats,
                &settings.message(&with_scan, &mut seq).unwrap().payload,
                "stats with scan",
            );
            // As the MQTT sink sends it, with its spool and connection counters.
            let enriched = beacond::sink::mqtt::with_sink_counters(
                &settings.message(&s, &mut seq).unwrap().payload,
                &spool,
                &beacond::sink::mqtt::Health {
                    disk_free_bytes: spool.disk_free_bytes(),
                    ..Default::default()
                },
            );
            check(&stats, &enriched, "stats with sink counters");
            let b = beacond::sink::beacons_record(core, h.end);
            let m = settings.message(&b, &mut seq).unwrap();
            assert_eq!(m.topic, topics.beacons);
            check(&beacons, &m.payload, "beacons");
            periodic_checked += 1;
        }
        let m = settings.message(&render(core, e), &mut seq).unwrap();
        let (v, kind) = if m.topic == topics.presence {
            (&presence, "presence")
        } else if m.topic == topics.stats {
            (&headcount, "headcount")
        } else {
            panic!("unexpected topic {}", m.topic)
        };
        check(v, &m.payload, kind);
        let event = serde_json::from_slice::<Value>(&m.payload).unwrap()["event"].clone();
        *counts.entry(format!("{kind}/{event}")).or_insert(0) += 1;
        // The supermarket's offer rules, as the daemon runs them.
        if let Some(t) = offers.on_event(core, e) {
            let m = settings
                .message(&beacond::sink::Record::Offer(t), &mut seq)
                .unwrap();
            assert_eq!(m.topic, topics.offers);
            assert_eq!(m.qos, 1);
            check(&offer, &m.payload, "offer");
            let trigger =
                serde_json::from_slice::<Value>(&m.payload).unwrap()["reason"]["trigger"].clone();
            *counts.entry(format!("offer/{trigger}")).or_insert(0) += 1;
        }
    });
    for kind in [
        "presence/\"enter\"",
        "presence/\"dwell\"",
        "presence/\"exit\"",
        "headcount/null",
        "offer/\"enter\"",
        "offer/\"dwell\"",
        "offer/\"exit\"",
    ] {
        assert!(
            counts.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} produced: {counts:?}"
        );
    }
    assert!(periodic_checked > 10);
    check(&status, &settings.status("online", None), "online status");
    let mut warned = settings.clone();
    warned.warn("spool would not open; moved aside".into());
    check(
        &status,
        &warned.status("online", None),
        "online status with a warning",
    );
    check(
        &status,
        &settings.status("offline", Some("shutdown")),
        "offline status",
    );
    check(
        &status,
        &settings.status("offline", Some("reconfigured")),
        "offline status after moving brokers",
    );
    check(&status, &last_will_payload("store-1", "hub-1"), "last will");
}

#[test]
fn the_schemas_reject_what_the_contract_forbids() {
    let doc = asyncapi();
    let presence = validator(&doc, "presence");
    let ok: Value = serde_json::json!({
        "schema": 1, "event_id": "0190a3b4-0000-7000-8000-000000000000",
        "stream": "0190a3b4-0000-7000-8000-000000000001", "seq": 7, "store": "s", "hub": "h",
        "type": "presence", "event": "exit", "customer_id": "c", "zone": "z",
        "at": "2026-01-05T09:00:00.000Z", "entered_at": "2026-01-05T09:00:00.000Z",
        "first_seen": "2026-01-05T09:00:00.000Z", "last_seen": "2026-01-05T09:00:00.000Z",
        "rssi": -70.0, "distance_m": 2.0, "duration_s": 12.5, "reason": "signal"
    });
    assert!(presence.is_valid(&ok));
    // An exit without its duration, an unknown field, a timestamp that is not RFC 3339.
    let mut bad = ok.clone();
    bad.as_object_mut().unwrap().remove("duration_s");
    assert!(!presence.is_valid(&bad));
    let mut bad = ok.clone();
    bad["mac_address"] = "aa:bb:cc:dd:ee:ff".into();
    assert!(!presence.is_valid(&bad));
    let mut bad = ok.clone();
    bad["at"] = "yesterday".into();
    assert!(!presence.is_valid(&bad));
    // Without its number, or with a negative one, a gap could not be found.
    let mut bad = ok.clone();
    bad.as_object_mut().unwrap().remove("seq");
    assert!(!presence.is_valid(&bad));
    let mut bad = ok;
    bad["seq"] = (-1).into();
    assert!(!presence.is_valid(&bad));
}

#[test]
fn sync_batches_and_requests_match_their_schemas() {
    let doc = asyncapi();
    let body = validator(&doc, "syncBody");
    let key = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
    let file = serde_json::json!({"v":1,"store":"s","seq":3,"type":"snapshot","customers":[
        {"id":"c-1","segments":["a"],"beacons":["ibeacon:2f234454-cf6d-4a0f-adf2-f4911ba9ffa6:7:1",
         "eddystone:edd1ebeac04e5defa017:0123456789ab"],
         "app_day_keys":[{"day":"2026-11-25","key":"ab".repeat(32)}]},
        {"id":"c-2","app_key":"cd".repeat(32)},{"id":"c-3"}]});
    let payloads = beacond::identity::publish::prepare(&key, &file.to_string(), "f", 2).unwrap();
    assert_eq!(payloads.len(), 2);
    for p in payloads {
        let nl = p.iter().position(|b| *b == b'\n').unwrap();
        assert_eq!(nl, 128);
        let v: Value = serde_json::from_slice(&p[nl + 1..]).unwrap();
        assert!(body.is_valid(&v), "{v}");
    }
    let mut bad = file.clone();
    bad["customers"][0]["beacons"][0] = "ibeacon:nope".into();
    assert!(!body.is_valid(&bad));
    let req = validator(&doc, "syncRequest");
    let r = beacond::identity::sync::SyncRequest { from_seq: 12 };
    assert!(req.is_valid(&serde_json::to_value(r).unwrap()));
    assert!(!req.is_valid(&serde_json::json!({"from_seq": 0})));
}
