//! A customer as the platform sends it (JSON, in sync batches and `cache export`/`import`), checked
//! into the form the hub works with.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use thiserror::Error;

use super::token::{AppKeys, Key, DAY_S};
use super::BeaconId;

/// A customer record on the wire. `docs/sync.md` is its contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerRecord {
    /// The platform's customer id.
    pub id: String,
    /// Whether the customer currently consents to being recognised. `false` is an opt-out: the hub
    /// forgets the customer at once.
    #[serde(default = "yes")]
    pub opted_in: bool,
    /// Marketing segments, for offer rules.
    #[serde(default)]
    pub segments: Vec<String>,
    /// Registered beacons, written as `beacond decode` names them (`ibeacon:UUID:MAJOR:MINOR`,
    /// `altbeacon:HEX40`, `eddystone:NAMESPACE:INSTANCE`).
    #[serde(default)]
    pub beacons: Vec<String>,
    /// The long-term app key (64 hex digits), for platforms that trust their hubs with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_key: Option<String>,
    /// Day keys (the safer choice): the hub can recognise the app on those UTC days only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_day_keys: Vec<DayKeyRecord>,
    /// When the platform last changed the record (RFC 3339), kept for `cache get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

fn yes() -> bool {
    true
}

/// One day key on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DayKeyRecord {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The day key, 64 hex digits.
    pub key: String,
}

/// A customer in the hub's own form: ids parsed, keys decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerEntry {
    /// The platform's customer id.
    pub id: String,
    /// Marketing segments.
    pub segments: Vec<String>,
    /// Registered beacons.
    pub beacons: Vec<BeaconId>,
    /// App key material.
    pub keys: Option<StoredKeys>,
    /// When the platform last changed the record.
    pub updated_at: Option<String>,
}

/// App key material as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredKeys {
    /// A long-term key.
    Customer(Key),
    /// Day keys by UTC day number.
    Days(Vec<(u32, Key)>),
}

impl StoredKeys {
    /// The material in the form tokens are derived from.
    pub fn app_keys(&self) -> AppKeys {
        match self {
            StoredKeys::Customer(k) => AppKeys::Customer(*k),
            StoredKeys::Days(d) => AppKeys::Days(d.iter().copied().collect::<SmallVec<_>>()),
        }
    }
}

/// A field of a record that is not valid.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{path}: {message}")]
pub struct RecordError {
    /// Where, e.g. `upsert[3].beacons[0]`.
    pub path: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

fn parse_key(s: &str) -> Result<Key, String> {
    let mut k = [0u8; 32];
    hex::decode_to_slice(s, &mut k)
        .map_err(|_| format!("{s:?} is not a key; expected 64 hex digits"))?;
    Ok(k)
}

fn parse_day(s: &str) -> Result<u32, String> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("{s:?} is not a day; expected YYYY-MM-DD"))?;
    let secs = d
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp())
        .unwrap_or(-1);
    if secs < 0 {
        return Err(format!("{s:?} is before 1970"));
    }
    Ok((secs as u64 / DAY_S) as u32)
}

/// The `YYYY-MM-DD` of a UTC day number.
pub fn format_day(day: u32) -> String {
    chrono::DateTime::from_timestamp(day as i64 * DAY_S as i64, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

impl CustomerRecord {
    /// Checks the record; `path` names it in errors (e.g. `upsert[3]`).
    pub fn validate(&self, path: &str) -> Result<CustomerEntry, RecordError> {
        let err = |field: String, message: String| RecordError {
            path: format!("{path}.{field}"),
            message,
        };
        if self.id.is_empty() || self.id.len() > 128 || self.id.chars().any(char::is_control) {
            return Err(err(
                "id".into(),
                "must be 1 to 128 printable characters".into(),
            ));
        }
        let mut beacons = Vec::with_capacity(self.beacons.len());
        for (i, b) in self.beacons.iter().enumerate() {
            beacons.push(
                b.parse::<BeaconId>()
                    .map_err(|m| err(format!("beacons[{i}]"), m))?,
            );
        }
        let keys = match (&self.app_key, self.app_day_keys.is_empty()) {
            (Some(_), false) => {
                return Err(err(
                    "app_key".into(),
                    "give app_key or app_day_keys, not both".into(),
                ))
            }
            (Some(k), true) => Some(StoredKeys::Customer(
                parse_key(k).map_err(|m| err("app_key".into(), m))?,
            )),
            (None, false) => {
                let mut days = Vec::with_capacity(self.app_day_keys.len());
                for (i, d) in self.app_day_keys.iter().enumerate() {
                    let day =
                        parse_day(&d.day).map_err(|m| err(format!("app_day_keys[{i}].day"), m))?;
                    let key =
                        parse_key(&d.key).map_err(|m| err(format!("app_day_keys[{i}].key"), m))?;
                    days.push((day, key));
                }
                Some(StoredKeys::Days(days))
            }
            (None, true) => None,
        };
        Ok(CustomerEntry {
            id: self.id.clone(),
            segments: self.segments.clone(),
            beacons,
            keys,
            updated_at: self.updated_at.clone(),
        })
    }
}

impl CustomerEntry {
    /// The record form, for `cache export` and `cache get`.
    pub fn to_record(&self) -> CustomerRecord {
        let (app_key, app_day_keys) = match &self.keys {
            None => (None, vec![]),
            Some(StoredKeys::Customer(k)) => (Some(hex::encode(k)), vec![]),
            Some(StoredKeys::Days(d)) => (
                None,
                d.iter()
                    .map(|(day, k)| DayKeyRecord {
                        day: format_day(*day),
                        key: hex::encode(k),
                    })
                    .collect(),
            ),
        };
        CustomerRecord {
            id: self.id.clone(),
            opted_in: true,
            segments: self.segments.clone(),
            beacons: self.beacons.iter().map(ToString::to_string).collect(),
            app_key,
            app_day_keys,
            updated_at: self.updated_at.clone(),
        }
    }
}

impl std::str::FromStr for BeaconId {
    type Err = String;

    fn from_str(s: &str) -> Result<BeaconId, String> {
        const FORMS: &str =
            "expected ibeacon:UUID:MAJOR:MINOR, altbeacon:HEX40 or eddystone:HEX20:HEX12";
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || format!("{s:?} is not a beacon id; {FORMS}");
        match parts.as_slice() {
            ["ibeacon", uuid, major, minor] => Ok(BeaconId::IBeacon {
                uuid: *uuid::Uuid::parse_str(uuid).map_err(|_| bad())?.as_bytes(),
                major: major.parse().map_err(|_| bad())?,
                minor: minor.parse().map_err(|_| bad())?,
            }),
            ["altbeacon", id] => {
                let mut b = [0u8; 20];
                hex::decode_to_slice(id, &mut b).map_err(|_| bad())?;
                Ok(BeaconId::AltBeacon(b))
            }
            ["eddystone", ns, inst] => {
                let (mut namespace, mut instance) = ([0u8; 10], [0u8; 6]);
                hex::decode_to_slice(ns, &mut namespace).map_err(|_| bad())?;
                hex::decode_to_slice(inst, &mut instance).map_err(|_| bad())?;
                Ok(BeaconId::EddystoneUid {
                    namespace,
                    instance,
                })
            }
            _ => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beacon_ids_round_trip_through_their_names() {
        for s in [
            "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:65535",
            "altbeacon:000102030405060708090a0b0c0d0e0f10111213",
            "eddystone:edd1ebeac04e5defa017:0123456789ab",
        ] {
            assert_eq!(s.parse::<BeaconId>().unwrap().to_string(), s);
        }
        for s in [
            "ibeacon:nope:1:2",
            "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:70000",
            "x:1",
        ] {
            assert!(s.parse::<BeaconId>().unwrap_err().contains("expected"));
        }
    }

    #[test]
    fn validation_names_the_field() {
        let r: CustomerRecord = serde_json::from_str(
            r#"{"id":"c-1","beacons":["ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2","bad"]}"#,
        )
        .unwrap();
        let e = r.validate("upsert[4]").unwrap_err();
        assert_eq!(e.path, "upsert[4].beacons[1]");
        let r: CustomerRecord = serde_json::from_str(
            r#"{"id":"c-1","app_day_keys":[{"day":"2026-13-01","key":"00"}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.validate("u").unwrap_err().path,
            "u.app_day_keys[0].day".to_string()
        );
    }

    #[test]
    fn entry_and_record_round_trip() {
        let r: CustomerRecord = serde_json::from_str(&format!(
            r#"{{"id":"c-1","segments":["wine"],"app_day_keys":[{{"day":"2026-11-25","key":"{}"}}],"updated_at":"2026-11-25T08:00:00Z"}}"#,
            "ab".repeat(32)
        ))
        .unwrap();
        let e = r.validate("r").unwrap();
        assert_eq!(e.keys, Some(StoredKeys::Days(vec![(20_782, [0xab; 32])])));
        assert_eq!(e.to_record(), r);
    }
}
