//! Published test vectors for every frame type, and round trips through the encoders.
//! Each vector's source is cited next to it (see also ../shared/references.md of the product side).

use beacond::decode::encode::{encode_frame, AdBuilder};
use beacond::decode::json::decode_to_json;
use beacond::decode::{
    decode_frames, AltBeacon, DecodeError, EddystoneEid, EddystoneTlm, EddystoneUid, EddystoneUrl,
    Frame, FrameProblem, IBeacon, ServiceUuid,
};
use serde_json::json;

fn frames(hex_payload: &str) -> Vec<Frame> {
    let raw = hex::decode(hex_payload).unwrap();
    let mut out = Vec::new();
    decode_frames(&raw, |f| out.push(f)).unwrap();
    out
}

fn one_frame_json(hex_payload: &str) -> serde_json::Value {
    let v = decode_to_json(&hex::decode(hex_payload).unwrap()).unwrap();
    let frames = v["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 1, "{v}");
    frames[0].clone()
}

// Source: custom-components/ble_monitor, test/test_ibeacon_parser.py
#[test]
fn ibeacon_vector() {
    let f = one_frame_json("02011A1AFF4C000215E2C56DB5DFFB48D2B060D0F5A71096E000640000C5");
    assert_eq!(
        f,
        json!({"type":"ibeacon","uuid":"e2c56db5-dffb-48d2-b060-d0f5a71096e0","major":100,"minor":0,
               "measured_power":-59})
    );
}

// Major and minor are unsigned: a popular decoder reports negative majors above 32767.
#[test]
fn ibeacon_major_minor_are_unsigned() {
    let f = one_frame_json("02011A1AFF4C000215E2C56DB5DFFB48D2B060D0F5A71096E0FFFE8001C5");
    assert_eq!(f["major"], 65534);
    assert_eq!(f["minor"], 32769);
}

// Source: AltBeacon/android-beacon-library, AltBeaconParserTest.java
#[test]
fn altbeacon_vector() {
    let f = one_frame_json("02011a1bff1801beac2f234454cf6d4a0fadf2f4911ba9ffa600010002c50900");
    assert_eq!(
        f,
        json!({"type":"altbeacon","manufacturer_id":0x0118,
               "beacon_id":"2f234454cf6d4a0fadf2f4911ba9ffa600010002","reference_rssi":-59,
               "mfg_reserved":9})
    );
}

// Source: custom-components/ble_monitor, test_eddystone_tlm_parser.py
#[test]
fn eddystone_tlm_vector() {
    let f = one_frame_json("0201060303AAFE1116AAFE20000C6F1E000002006D41DB9AB6");
    assert_eq!(
        f,
        json!({"type":"eddystone_tlm","encrypted":false,"battery_mv":3183,"temperature_c":30.0,
               "adv_count":131181,"uptime_s":110491103.0})
    );
}

// Source: google/eddystone, eddystone-url/implementations/RFduino
#[test]
fn eddystone_url_vector() {
    let f = one_frame_json("0303AAFE0A16AAFE10EB0261626307");
    assert_eq!(
        f,
        json!({"type":"eddystone_url","url":"http://abc.com","tx_power":-21})
    );
}

// Source: 4thjuly/Espruino-Experiments, puck-eddystone.js
#[test]
fn eddystone_uid_vector() {
    let f = one_frame_json("0201060303AAFE1716AAFE00F8E157BD5DF90AAD1DC2FB0000000000010000");
    assert_eq!(
        f,
        json!({"type":"eddystone_uid","namespace":"e157bd5df90aad1dc2fb","instance":"000000000001",
               "tx_power":-8})
    );
}

// EID frame layout from google/eddystone protocol-specification.md; the EID value is the t=0 vector of
// RadiusNetworks/ephemeral_calc, encryptor_spec.rb.
#[test]
fn eddystone_eid_frame() {
    let f = one_frame_json("0201060303AAFE0D16AAFE30E8A9B76A71C5F89290");
    assert_eq!(
        f,
        json!({"type":"eddystone_eid","eid":"a9b76a71c5f89290","tx_power":-24})
    );
}

#[test]
fn eddystone_tlm_encrypted_is_recognised() {
    let f = one_frame_json("0201060303AAFE1516AAFE2001000102030405060708090A0B12345678");
    assert_eq!(f["type"], "eddystone_tlm");
    assert_eq!(f["encrypted"], true);
    assert_eq!(f["etlm"], "000102030405060708090a0b");
    assert!(f.get("battery_mv").is_none());
}

#[test]
fn tlm_without_temperature_sensor_reports_null() {
    let f = one_frame_json("0201060303AAFE1116AAFE20000C6F8000000000010000000A");
    assert!(f["temperature_c"].is_null());
    assert_eq!(f["uptime_s"], 1.0);
}

#[test]
fn tlm_negative_temperature() {
    // 0xFF80 = -0.5 °C in 8.8 fixed point.
    let f = one_frame_json("0201060303AAFE1116AAFE20000C6FFF80000000010000000A");
    assert_eq!(f["temperature_c"], -0.5);
}

#[test]
fn every_url_scheme_and_expansion_code_decodes() {
    let schemes = ["http://www.", "https://www.", "http://", "https://"];
    let expansions = [
        ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/", ".com", ".org", ".edu",
        ".net", ".info", ".biz", ".gov",
    ];
    for (s, scheme) in schemes.iter().enumerate() {
        for (c, exp) in expansions.iter().enumerate() {
            let payload = format!("0303AAFE0916AAFE10EB{s:02x}78{c:02x}79");
            let f = one_frame_json(&payload);
            assert_eq!(f["url"], format!("{scheme}x{exp}y"), "scheme {s} code {c}");
        }
    }
}

#[test]
fn reserved_url_bytes_and_schemes_are_rejected_with_offsets() {
    for bad in [0x0E_u8, 0x20, 0x7F, 0xFF] {
        let raw = hex::decode(format!("0303AAFE0916AAFE10EB0261{bad:02x}63")).unwrap();
        let err = decode_frames(&raw, |_| {}).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Frame {
                kind: "Eddystone-URL",
                offset: 12,
                reason: FrameProblem::UrlByte(bad)
            }
        );
    }
    let raw = hex::decode("0303AAFE0916AAFE10EB04616263").unwrap();
    let err = decode_frames(&raw, |_| {}).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Frame {
            offset: 10,
            reason: FrameProblem::UrlScheme(4),
            ..
        }
    ));
}

#[test]
fn malformed_beacons_are_errors_not_guesses() {
    // iBeacon cut short by one byte (length byte adjusted so the AD structure itself is valid).
    let raw = hex::decode("02011A19FF4C000215E2C56DB5DFFB48D2B060D0F5A71096E000640000").unwrap();
    let err = decode_frames(&raw, |_| {}).unwrap_err();
    assert!(
        err.to_string()
            .contains("iBeacon at byte 7: expected 23 bytes, found 22"),
        "{err}"
    );
    // Unknown Eddystone frame type.
    let raw = hex::decode("0303AAFE0516AAFE50EB").unwrap();
    let err = decode_frames(&raw, |_| {}).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown Eddystone frame type 0x50"),
        "{err}"
    );
}

#[test]
fn other_manufacturer_data_is_not_a_frame() {
    let v = decode_to_json(&hex::decode("02010607FF590001020304").unwrap()).unwrap();
    assert_eq!(v["frames"], json!([]));
    assert_eq!(v["manufacturer_data"], json!({"0x0059": "01020304"}));
}

#[test]
fn advertisement_fields_are_all_reported() {
    let mut b = AdBuilder::new();
    b.flags(0x06).unwrap();
    b.local_name("fob", true).unwrap();
    b.tx_power(-4).unwrap();
    b.service_uuids16(&[0x180F, 0xFEAA]).unwrap();
    b.service_data(ServiceUuid::U32(0x1234_5678), &[1, 2])
        .unwrap();
    let v = decode_to_json(b.as_bytes()).unwrap();
    assert_eq!(v["local_name"], "fob");
    assert_eq!(v["flags"], 6);
    assert_eq!(v["tx_power_level"], -4);
    assert_eq!(
        v["service_uuids"],
        json!([
            "0000180f-0000-1000-8000-00805f9b34fb",
            "0000feaa-0000-1000-8000-00805f9b34fb"
        ])
    );
    assert_eq!(
        v["service_data"],
        json!({"12345678-0000-1000-8000-00805f9b34fb": "0102"})
    );
}

#[test]
fn encoders_reproduce_the_published_vectors() {
    let ibeacon = frames("02011A1AFF4C000215E2C56DB5DFFB48D2B060D0F5A71096E000640000C5")[0];
    let mut b = AdBuilder::new();
    b.flags(0x1A).unwrap().frame_data(&ibeacon).unwrap();
    assert_eq!(
        hex::encode_upper(b.as_bytes()),
        "02011A1AFF4C000215E2C56DB5DFFB48D2B060D0F5A71096E000640000C5"
    );
    let tlm = frames("0201060303AAFE1116AAFE20000C6F1E000002006D41DB9AB6")[0];
    assert_eq!(
        hex::encode_upper(encode_frame(&tlm).unwrap().as_bytes()),
        "0201060303AAFE1116AAFE20000C6F1E000002006D41DB9AB6"
    );
}

#[test]
fn url_compression_round_trips() {
    let u = EddystoneUrl::compress(-20, "https://www.example.com/shop").unwrap();
    assert_eq!(u.scheme, 1);
    assert_eq!(u.to_string(), "https://www.example.com/shop");
    assert_eq!(u.encoded().len(), "example".len() + 1 + "shop".len());
    assert!(EddystoneUrl::compress(0, "ftp://x").is_err());
    assert!(
        EddystoneUrl::compress(0, "https://a-very-long-host-name.example/with/a/path").is_err()
    );
}

#[test]
fn each_frame_type_round_trips() {
    let all = [
        Frame::IBeacon(IBeacon {
            uuid: uuid::Uuid::from_bytes([7; 16]),
            major: 40000,
            minor: 1,
            measured_power: -60,
        }),
        Frame::AltBeacon(AltBeacon {
            manufacturer_id: 0x0118,
            beacon_id: [3; 20],
            reference_rssi: -58,
            mfg_reserved: 0,
        }),
        Frame::EddystoneUid(EddystoneUid {
            tx_power: -20,
            namespace: [1; 10],
            instance: [2; 6],
        }),
        Frame::EddystoneUrl(EddystoneUrl::compress(-19, "http://abc.com").unwrap()),
        Frame::EddystoneTlm(EddystoneTlm::Plain {
            battery_mv: 3000,
            temperature_c: Some(21.5),
            adv_count: 5,
            uptime_tenths: 600,
        }),
        Frame::EddystoneEid(EddystoneEid {
            tx_power: -21,
            eid: [9; 8],
        }),
    ];
    for f in all {
        let raw = encode_frame(&f).unwrap();
        assert_eq!(frames(&hex::encode(raw.as_bytes())), vec![f]);
    }
}
