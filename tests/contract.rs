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
fn observations_shared_with_peers_match_their_schema() {
    use beacond::peers::{Outbox, Who};
    use beacond::time::Timestamp;
    let doc = asyncapi();
    let v = validator(&doc, "observations");
    let mut o = Outbox::new("hub-a");
    o.push(
        Timestamp(1_800_000_000_000),
        Who::CustomerId("c-1".into()),
        -61,
        Some(-59),
    );
    o.push(
        Timestamp(1_800_000_000_100),
        Who::TagId("trolley-7".into()),
        -80,
        None,
    );
    let batch = o.take().unwrap().encode();
    check(&v, &batch, "observations");
    // Neither a customer nor a tag, or both: not a shape a hub sends or takes.
    let mut bad: Value = serde_json::from_slice(&batch).unwrap();
    bad["obs"][0].as_object_mut().unwrap().remove("customer_id");
    assert!(!v.is_valid(&bad));
    bad["obs"][0]["customer_id"] = "c-1".into();
    bad["obs"][0]["tag_id"] = "t".into();
    assert!(!v.is_valid(&bad));
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
            let mut with_peers = s.clone();
            if let beacond::sink::Record::Stats(st) = &mut with_peers {
                st.peers = Some(beacond::sink::PeerCounters {
                    shared: 120,
                    applied: 240,
                    late: 1,
                    unknown: 0,
                });
            }
            check(
                &stats,
                &settings.message(&with_peers, &mut seq).unwrap().payload,
                "stats with peers",
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
    check(
        &status,
        &last_will_payload(
            "store-1",
            "hub-1",
            beacond::time::Timestamp(1_800_000_000_000),
        ),
        "last will",
    );
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

/// The contract as released with beacond 0.1.0: schema 1, frozen.
fn released() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/contract/asyncapi-schema-1.yaml"
    );
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Which way a schema's payloads travel: what the hub publishes must keep every field, type and
/// bound a consumer may rely on; what it receives must keep being accepted.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    Published,
    Received,
}

/// Where `now` breaks a consumer (or, for a received schema, a producer) of `then`: one line
/// per break, naming the path.
fn breaks(then: &Value, now: &Value, path: &str, way: Way, out: &mut Vec<String>) {
    let mut broke = |what: String| out.push(format!("{path}: {what}"));
    if now.is_null() {
        broke("removed".into());
        return;
    }
    for key in ["type", "const", "format", "pattern", "$ref", "allOf"] {
        if !then[key].is_null() && then[key] != now[key] {
            broke(format!("{key} was {}, is {}", then[key], now[key]));
        }
    }
    let set = |v: &Value| -> Vec<Value> { v.as_array().cloned().unwrap_or_default() };
    let (wider, narrower) = match way {
        Way::Published => (now, then),
        Way::Received => (then, now),
    };
    // A published enum may not gain a value (a consumer's match would miss it); a received
    // one may not lose one (a producer sending it would be refused).
    if !then["enum"].is_null() {
        for v in set(&wider["enum"]) {
            if !set(&narrower["enum"]).contains(&v) {
                broke(format!("enum value {v} added or removed the wrong way"));
            }
        }
    }
    // Required published fields stay required; received ones never become required.
    for v in set(&narrower["required"]) {
        if !set(&wider["required"]).contains(&v) {
            broke(format!("{v} is no longer required, or newly required"));
        }
    }
    // Bounds: a published value stays within them, a received one keeps being accepted.
    for (key, lower) in [("minimum", true), ("minLength", true), ("maximum", false)] {
        let (w, n) = (wider[key].as_f64(), narrower[key].as_f64());
        if let Some(n) = n {
            let ok = w.is_some_and(|w| if lower { w >= n } else { w <= n });
            if !ok {
                broke(format!("{key} was {}, is {}", then[key], now[key]));
            }
        }
    }
    if let Some(props) = then["properties"].as_object() {
        for (name, schema) in props {
            let inner = format!("{path}.{name}");
            breaks(schema, &now["properties"][name], &inner, way, out);
        }
    }
    if !then["items"].is_null() {
        breaks(
            &then["items"],
            &now["items"],
            &format!("{path}[]"),
            way,
            out,
        );
    }
}

/// Every break of `then` by `now`, over the payload schemas.
fn contract_breaks(then: &Value, now: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let schemas = then["components"]["schemas"].as_object().unwrap();
    for (name, schema) in schemas {
        let way = match name.as_str() {
            "syncBody" | "customer" => Way::Received,
            _ => Way::Published,
        };
        let now = &now["components"]["schemas"][name];
        breaks(schema, now, name, way, &mut out);
    }
    out
}

#[test]
fn schema_1_only_grows_from_what_was_released() {
    let now = asyncapi();
    assert_eq!(
        now["info"]["version"], "1",
        "a new schema needs a new frozen copy"
    );
    let found = contract_breaks(&released(), &now);
    assert!(
        found.is_empty(),
        "docs/asyncapi.yaml breaks schema 1 as released; bump the schema instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_compatibility_check_finds_each_kind_of_break() {
    let then = released();
    let changed = |f: &dyn Fn(&mut Value)| {
        let mut now = then.clone();
        f(&mut now["components"]["schemas"]);
        contract_breaks(&then, &now)
    };
    // Additions a consumer can ignore are fine.
    assert_eq!(
        changed(
            &|s| s["presence"]["properties"]["zone_name"] = serde_json::json!({"type": "string"})
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        changed(&|s| {
            s["syncBody"]["properties"]["type"]["enum"]
                .as_array_mut()
                .unwrap()
                .push("patch".into())
        }),
        Vec::<String>::new()
    );
    let one = |found: Vec<String>, path: &str| {
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(path), "{found:?}");
    };
    one(
        changed(&|s| {
            s["presence"]["properties"]
                .as_object_mut()
                .unwrap()
                .remove("distance_m");
        }),
        "presence.distance_m: removed",
    );
    one(
        changed(&|s| s["presence"]["properties"]["rssi"]["type"] = "integer".into()),
        "presence.rssi: type",
    );
    one(
        changed(&|s| {
            s["presence"]["properties"]["reason"]["enum"]
                .as_array_mut()
                .unwrap()
                .push("teleported".into())
        }),
        "presence.reason: enum",
    );
    one(
        changed(&|s| {
            s["syncBody"]["properties"]["type"]["enum"]
                .as_array_mut()
                .unwrap()
                .retain(|v| v != "delta")
        }),
        "syncBody.type: enum",
    );
    one(
        changed(&|s| {
            s["headcount"]["properties"]["zones"]["items"]["properties"]["known"]["minimum"] =
                (-1).into()
        }),
        "headcount.zones[].known: minimum",
    );
    one(
        changed(&|s| {
            s["stats"]["required"]
                .as_array_mut()
                .unwrap()
                .retain(|v| v != "tracked")
        }),
        "stats: \"tracked\" is no longer required",
    );
}
