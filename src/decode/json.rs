//! The JSON shape of decoded advertisements: a contract shared by `beacond decode`, `beacond scan --json`
//! and recordings. Field names and units are documented in `docs/decode.md`; change them only with a
//! schema version bump.

use serde_json::{json, Map, Value};

use super::{Advertisement, DecodeError, EddystoneTlm, Frame};

/// One frame as a JSON object with a `type` and the frame's fields.
pub fn frame_to_json(frame: &Frame) -> Value {
    match frame {
        Frame::IBeacon(b) => json!({
            "type": frame.type_name(),
            "uuid": b.uuid.hyphenated().to_string(),
            "major": b.major,
            "minor": b.minor,
            "measured_power": b.measured_power,
        }),
        Frame::AltBeacon(b) => json!({
            "type": frame.type_name(),
            "manufacturer_id": b.manufacturer_id,
            "beacon_id": hex::encode(b.beacon_id),
            "reference_rssi": b.reference_rssi,
            "mfg_reserved": b.mfg_reserved,
        }),
        Frame::EddystoneUid(b) => json!({
            "type": frame.type_name(),
            "namespace": hex::encode(b.namespace),
            "instance": hex::encode(b.instance),
            "tx_power": b.tx_power,
        }),
        Frame::EddystoneUrl(u) => json!({
            "type": frame.type_name(),
            "url": u.to_string(),
            "tx_power": u.tx_power,
        }),
        Frame::EddystoneTlm(EddystoneTlm::Plain {
            battery_mv,
            temperature_c,
            adv_count,
            uptime_tenths,
        }) => json!({
            "type": frame.type_name(),
            "encrypted": false,
            "battery_mv": battery_mv,
            "temperature_c": temperature_c,
            "adv_count": adv_count,
            "uptime_s": *uptime_tenths as f64 / 10.0,
        }),
        Frame::EddystoneTlm(EddystoneTlm::Encrypted { etlm, salt, mic }) => json!({
            "type": frame.type_name(),
            "encrypted": true,
            "etlm": hex::encode(etlm),
            "salt": salt,
            "mic": mic,
        }),
        Frame::EddystoneEid(e) => json!({
            "type": frame.type_name(),
            "eid": hex::encode(e.eid),
            "tx_power": e.tx_power,
        }),
    }
}

/// Decodes `raw` fully and renders it as the `beacond decode` object, or `{"error": …}`.
pub fn decode_to_json(raw: &[u8]) -> Result<Value, DecodeError> {
    let mut frames = Vec::new();
    let adv = super::decode_frames(raw, |f| frames.push(frame_to_json(&f)))?;
    Ok(advertisement_to_json(&adv, frames))
}

/// Renders an advertisement and its already-rendered frames.
pub fn advertisement_to_json(adv: &Advertisement<'_>, frames: Vec<Value>) -> Value {
    let mut service_data = Map::new();
    for (uuid, s) in adv.service_data() {
        service_data.insert(uuid.to_string(), Value::String(hex::encode(s.data)));
    }
    let mut manufacturer_data = Map::new();
    for (company, s) in adv.manufacturer_data() {
        manufacturer_data.insert(
            format!("0x{company:04x}"),
            Value::String(hex::encode(s.data)),
        );
    }
    let uuids: Vec<Value> = adv
        .service_uuids()
        .map(|u| Value::String(u.to_string()))
        .collect();
    json!({
        "frames": frames,
        "local_name": adv.local_name.map(|n| String::from_utf8_lossy(n).into_owned()),
        "flags": adv.flags,
        "tx_power_level": adv.tx_power,
        "service_uuids": uuids,
        "service_data": service_data,
        "manufacturer_data": manufacturer_data,
    })
}

/// A hex line that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// Nothing but separators.
    #[error("empty line: expected hex bytes such as 0201061aff4c00…")]
    Empty,
    /// A character that is neither a hex digit nor a tolerated separator.
    #[error("invalid character {ch:?} at column {col}: expected hex digits, optionally separated by spaces or colons")]
    BadChar {
        /// The character.
        ch: char,
        /// 1-based column in the line.
        col: usize,
    },
    /// A byte with only one digit.
    #[error("odd number of hex digits: byte {byte} has only one digit (column {col})")]
    HalfByte {
        /// Index of the incomplete byte.
        byte: usize,
        /// 1-based column of its lone digit.
        col: usize,
    },
}

/// Reads a line of hex bytes as a field engineer pastes them: `02011a…`, `02 01 1a`, `02:01:1a`, with an
/// optional `0x` prefix. A separator may only stand between whole bytes.
pub fn parse_hex_line(line: &str) -> Result<Vec<u8>, HexError> {
    let trimmed = line.trim();
    let body = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed);
    let lead = line.len() - line.trim_start().len() + (trimmed.len() - body.len());
    let mut out = Vec::with_capacity(body.len() / 2);
    let mut high: Option<(u8, usize)> = None;
    for (ci, (_, ch)) in body.char_indices().enumerate() {
        let col = lead + ci + 1;
        if ch == ' ' || ch == ':' || ch == '\t' || ch == '-' {
            if let Some((_, c)) = high {
                return Err(HexError::HalfByte {
                    byte: out.len(),
                    col: c,
                });
            }
            continue;
        }
        let Some(d) = ch.to_digit(16) else {
            return Err(HexError::BadChar { ch, col });
        };
        match high.take() {
            None => high = Some((d as u8, col)),
            Some((h, _)) => out.push(h << 4 | d as u8),
        }
    }
    if let Some((_, col)) = high {
        return Err(HexError::HalfByte {
            byte: out.len(),
            col,
        });
    }
    if out.is_empty() {
        return Err(HexError::Empty);
    }
    Ok(out)
}

/// The `beacond decode` answer for one input line: the decoded object or `{"error": …}`.
pub fn decode_line(line: &str) -> Result<Value, String> {
    let raw = parse_hex_line(line).map_err(|e| e.to_string())?;
    decode_to_json(&raw).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_between_bytes_are_tolerated() {
        assert_eq!(parse_hex_line("02 01 1a").unwrap(), vec![2, 1, 0x1a]);
        assert_eq!(parse_hex_line("02:01:1A").unwrap(), vec![2, 1, 0x1a]);
        assert_eq!(parse_hex_line("  0x02011a\r").unwrap(), vec![2, 1, 0x1a]);
    }

    #[test]
    fn bad_hex_names_the_column() {
        assert_eq!(
            parse_hex_line("0201zz").unwrap_err(),
            HexError::BadChar { ch: 'z', col: 5 }
        );
        assert_eq!(
            parse_hex_line("02 1 1a").unwrap_err(),
            HexError::HalfByte { byte: 1, col: 4 }
        );
        assert_eq!(
            parse_hex_line("020").unwrap_err(),
            HexError::HalfByte { byte: 1, col: 3 }
        );
        assert_eq!(parse_hex_line(" : ").unwrap_err(), HexError::Empty);
    }
}
