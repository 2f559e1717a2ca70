//! Beacon frames carried in manufacturer data (iBeacon, AltBeacon) or service data (Eddystone).
//!
//! Each decoder gets the data after the company id or service UUID, plus that data's offset in the
//! whole payload so that an error can point at the exact byte.

use std::fmt;

use super::{DecodeError, FrameProblem, ServiceUuid};

/// Apple's company identifier, under which iBeacon frames are carried.
pub const IBEACON_COMPANY: u16 = 0x004C;
/// The 16-bit service UUID of Eddystone.
pub const EDDYSTONE_UUID: u16 = 0xFEAA;
/// AltBeacon's beacon code, the first two bytes after the company id.
const ALTBEACON_CODE: [u8; 2] = [0xBE, 0xAC];

/// Eddystone-URL scheme prefixes, by code (protocol-specification.md, "URL Scheme Prefix").
pub const URL_SCHEMES: [&str; 4] = ["http://www.", "https://www.", "http://", "https://"];
/// Eddystone-URL expansion codes 0x00–0x0D ("HTTP URL encoding").
pub const URL_EXPANSIONS: [&str; 14] = [
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/", ".com", ".org", ".edu", ".net",
    ".info", ".biz", ".gov",
];
/// The longest encoded URL body an Eddystone-URL frame can carry.
pub const URL_MAX_ENCODED: usize = 17;

/// A decoded beacon frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Frame {
    /// Apple iBeacon.
    IBeacon(IBeacon),
    /// AltBeacon (open specification).
    AltBeacon(AltBeacon),
    /// Eddystone-UID.
    EddystoneUid(EddystoneUid),
    /// Eddystone-URL.
    EddystoneUrl(EddystoneUrl),
    /// Eddystone-TLM, plain or encrypted.
    EddystoneTlm(EddystoneTlm),
    /// Eddystone-EID.
    EddystoneEid(EddystoneEid),
}

impl Frame {
    /// The frame's type name as used in JSON output (`"ibeacon"`, `"eddystone_uid"`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            Frame::IBeacon(_) => "ibeacon",
            Frame::AltBeacon(_) => "altbeacon",
            Frame::EddystoneUid(_) => "eddystone_uid",
            Frame::EddystoneUrl(_) => "eddystone_url",
            Frame::EddystoneTlm(_) => "eddystone_tlm",
            Frame::EddystoneEid(_) => "eddystone_eid",
        }
    }

    /// The calibrated power the frame advertises, normalised to dBm at 1 m.
    ///
    /// Eddystone calibrates at 0 m; the specification puts 1 m at 41 dB below that.
    pub fn measured_power_1m(&self) -> Option<i8> {
        match self {
            Frame::IBeacon(b) => Some(b.measured_power),
            Frame::AltBeacon(b) => Some(b.reference_rssi),
            Frame::EddystoneUid(b) => Some(b.tx_power.saturating_sub(41)),
            Frame::EddystoneUrl(b) => Some(b.tx_power.saturating_sub(41)),
            Frame::EddystoneEid(b) => Some(b.tx_power.saturating_sub(41)),
            Frame::EddystoneTlm(_) => None,
        }
    }
}

/// An iBeacon frame (Apple, "Getting Started with iBeacon").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IBeacon {
    /// Proximity UUID.
    pub uuid: uuid::Uuid,
    /// Major, unsigned.
    pub major: u16,
    /// Minor, unsigned.
    pub minor: u16,
    /// RSSI at 1 m, in dBm.
    pub measured_power: i8,
}

/// An AltBeacon frame (github.com/AltBeacon/spec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AltBeacon {
    /// The company identifier the frame was advertised under.
    pub manufacturer_id: u16,
    /// The 20-byte beacon identifier.
    pub beacon_id: [u8; 20],
    /// RSSI at 1 m, in dBm.
    pub reference_rssi: i8,
    /// The manufacturer-reserved byte.
    pub mfg_reserved: u8,
}

/// An Eddystone-UID frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EddystoneUid {
    /// Calibrated TX power at 0 m, in dBm.
    pub tx_power: i8,
    /// 10-byte namespace.
    pub namespace: [u8; 10],
    /// 6-byte instance.
    pub instance: [u8; 6],
}

/// An Eddystone-URL frame, kept in its compressed form; [`fmt::Display`] expands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EddystoneUrl {
    /// Calibrated TX power at 0 m, in dBm.
    pub tx_power: i8,
    /// Scheme prefix code, 0–3.
    pub scheme: u8,
    encoded: [u8; URL_MAX_ENCODED],
    len: u8,
}

impl EddystoneUrl {
    /// Builds a frame from its compressed parts, checking them as the decoder would.
    pub fn new(tx_power: i8, scheme: u8, encoded: &[u8]) -> Result<EddystoneUrl, FrameProblem> {
        if scheme as usize >= URL_SCHEMES.len() {
            return Err(FrameProblem::UrlScheme(scheme));
        }
        if encoded.is_empty() || encoded.len() > URL_MAX_ENCODED {
            return Err(FrameProblem::Length {
                expected: "1 to 17 URL",
                found: encoded.len(),
            });
        }
        if let Some(&b) = encoded.iter().find(|&&b| !url_byte_valid(b)) {
            return Err(FrameProblem::UrlByte(b));
        }
        let mut buf = [0u8; URL_MAX_ENCODED];
        buf[..encoded.len()].copy_from_slice(encoded);
        Ok(EddystoneUrl {
            tx_power,
            scheme,
            encoded: buf,
            len: encoded.len() as u8,
        })
    }

    /// Compresses a URL: the longest matching scheme prefix, then expansion codes wherever they
    /// match. Fails when the URL has no supported scheme, uses reserved characters, or is too long.
    pub fn compress(tx_power: i8, url: &str) -> Result<EddystoneUrl, FrameProblem> {
        // Longer prefixes first so "http://www." is not taken as "http://".
        let (scheme, rest) = [1u8, 0, 3, 2]
            .iter()
            .find_map(|&c| url.strip_prefix(URL_SCHEMES[c as usize]).map(|r| (c, r)))
            .ok_or(FrameProblem::UrlScheme(0xFF))?;
        let mut out = [0u8; URL_MAX_ENCODED];
        let mut n = 0;
        let mut rest = rest.as_bytes();
        while !rest.is_empty() {
            if n == URL_MAX_ENCODED {
                return Err(FrameProblem::Length {
                    expected: "1 to 17 URL",
                    found: n + 1,
                });
            }
            // Codes 0x00–0x06 (with '/') are longer than 0x07–0x0D, so trying in order picks the
            // longest match.
            if let Some((code, exp)) = URL_EXPANSIONS
                .iter()
                .enumerate()
                .find(|(_, e)| rest.starts_with(e.as_bytes()))
            {
                out[n] = code as u8;
                rest = &rest[exp.len()..];
            } else {
                out[n] = rest[0];
                rest = &rest[1..];
            }
            n += 1;
        }
        EddystoneUrl::new(tx_power, scheme, &out[..n])
    }

    /// The compressed URL body, as carried on air.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded[..self.len as usize]
    }
}

impl fmt::Display for EddystoneUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(URL_SCHEMES[self.scheme as usize])?;
        for &b in self.encoded() {
            match URL_EXPANSIONS.get(b as usize) {
                Some(exp) => f.write_str(exp)?,
                None => fmt::Write::write_char(f, b as char)?,
            }
        }
        Ok(())
    }
}

fn url_byte_valid(b: u8) -> bool {
    (b as usize) < URL_EXPANSIONS.len() || (0x21..=0x7E).contains(&b)
}

/// An Eddystone-TLM frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EddystoneTlm {
    /// Version 0: telemetry in the clear.
    Plain {
        /// Battery voltage in mV (0 when the beacon does not report it).
        battery_mv: u16,
        /// Temperature in °C, `None` when the beacon reports 0x8000 (not supported).
        temperature_c: Option<f32>,
        /// Advertising PDUs sent since power-up or reboot.
        adv_count: u32,
        /// Time since power-up or reboot, in tenths of a second.
        uptime_tenths: u32,
    },
    /// Version 1: encrypted telemetry; only the envelope can be read without the beacon's key.
    Encrypted {
        /// The 12 encrypted bytes.
        etlm: [u8; 12],
        /// The salt.
        salt: u16,
        /// The message integrity check.
        mic: u16,
    },
}

/// An Eddystone-EID frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EddystoneEid {
    /// Calibrated TX power at 0 m, in dBm.
    pub tx_power: i8,
    /// The 8-byte ephemeral identifier.
    pub eid: [u8; 8],
}

/// Eddystone frame type bytes.
pub mod eddystone_type {
    /// UID frame.
    pub const UID: u8 = 0x00;
    /// URL frame.
    pub const URL: u8 = 0x10;
    /// TLM frame.
    pub const TLM: u8 = 0x20;
    /// EID frame.
    pub const EID: u8 = 0x30;
}

fn frame_err(kind: &'static str, offset: usize, reason: FrameProblem) -> DecodeError {
    DecodeError::Frame {
        kind,
        offset,
        reason,
    }
}

fn length_err(
    kind: &'static str,
    offset: usize,
    expected: &'static str,
    found: usize,
) -> DecodeError {
    frame_err(kind, offset, FrameProblem::Length { expected, found })
}

/// Decodes manufacturer data (after the company id) found at `offset` in the payload.
///
/// `Ok(None)`: not a beacon frame this decoder knows. `Err`: a beacon signature with a malformed body.
pub fn decode_manufacturer(
    company: u16,
    data: &[u8],
    offset: usize,
) -> Result<Option<Frame>, DecodeError> {
    if company == IBEACON_COMPANY && data.first() == Some(&0x02) {
        const KIND: &str = "iBeacon";
        match data.get(1) {
            Some(0x15) => {}
            Some(&other) => {
                return Err(frame_err(
                    KIND,
                    offset + 1,
                    FrameProblem::IBeaconLength(other),
                ))
            }
            None => return Err(length_err(KIND, offset, "23", data.len())),
        }
        if data.len() != 23 {
            return Err(length_err(KIND, offset, "23", data.len()));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&data[2..18]);
        return Ok(Some(Frame::IBeacon(IBeacon {
            uuid: uuid::Uuid::from_bytes(uuid),
            major: u16::from_be_bytes([data[18], data[19]]),
            minor: u16::from_be_bytes([data[20], data[21]]),
            measured_power: data[22] as i8,
        })));
    }
    if data.starts_with(&ALTBEACON_CODE) {
        if data.len() != 24 {
            return Err(length_err("AltBeacon", offset, "24", data.len()));
        }
        let mut beacon_id = [0u8; 20];
        beacon_id.copy_from_slice(&data[2..22]);
        return Ok(Some(Frame::AltBeacon(AltBeacon {
            manufacturer_id: company,
            beacon_id,
            reference_rssi: data[22] as i8,
            mfg_reserved: data[23],
        })));
    }
    Ok(None)
}

/// Decodes service data (after the UUID) found at `offset` in the payload.
///
/// `Ok(None)`: not a service this decoder knows. `Err`: Eddystone data with a malformed body.
pub fn decode_service_data(
    uuid: ServiceUuid,
    data: &[u8],
    offset: usize,
) -> Result<Option<Frame>, DecodeError> {
    if uuid != ServiceUuid::U16(EDDYSTONE_UUID) {
        return Ok(None);
    }
    let Some(&frame_type) = data.first() else {
        return Err(length_err("Eddystone", offset, "at least 1", 0));
    };
    let frame = match frame_type {
        eddystone_type::UID => {
            const KIND: &str = "Eddystone-UID";
            // Some beacons omit the two reserved bytes at the end.
            if data.len() != 18 && data.len() != 20 {
                return Err(length_err(KIND, offset, "18 or 20", data.len()));
            }
            let mut namespace = [0u8; 10];
            namespace.copy_from_slice(&data[2..12]);
            let mut instance = [0u8; 6];
            instance.copy_from_slice(&data[12..18]);
            Frame::EddystoneUid(EddystoneUid {
                tx_power: data[1] as i8,
                namespace,
                instance,
            })
        }
        eddystone_type::URL => {
            const KIND: &str = "Eddystone-URL";
            if !(4..=3 + URL_MAX_ENCODED).contains(&data.len()) {
                return Err(length_err(KIND, offset, "4 to 20", data.len()));
            }
            let scheme = data[2];
            if scheme as usize >= URL_SCHEMES.len() {
                return Err(frame_err(KIND, offset + 2, FrameProblem::UrlScheme(scheme)));
            }
            if let Some(i) = data[3..].iter().position(|&b| !url_byte_valid(b)) {
                return Err(frame_err(
                    KIND,
                    offset + 3 + i,
                    FrameProblem::UrlByte(data[3 + i]),
                ));
            }
            let url = EddystoneUrl::new(data[1] as i8, scheme, &data[3..])
                .map_err(|p| frame_err(KIND, offset, p))?;
            Frame::EddystoneUrl(url)
        }
        eddystone_type::TLM => {
            const KIND: &str = "Eddystone-TLM";
            let version = data.get(1).copied();
            match version {
                Some(0x00) => {
                    if data.len() != 14 {
                        return Err(length_err(KIND, offset, "14", data.len()));
                    }
                    let be16 = |i: usize| u16::from_be_bytes([data[i], data[i + 1]]);
                    let be32 = |i: usize| {
                        u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]])
                    };
                    let temp = be16(4);
                    Frame::EddystoneTlm(EddystoneTlm::Plain {
                        battery_mv: be16(2),
                        // 8.8 signed fixed point; 0x8000 means the beacon has no sensor.
                        temperature_c: (temp != 0x8000).then(|| temp as i16 as f32 / 256.0),
                        adv_count: be32(6),
                        uptime_tenths: be32(10),
                    })
                }
                Some(0x01) => {
                    if data.len() != 18 {
                        return Err(length_err(KIND, offset, "18", data.len()));
                    }
                    let mut etlm = [0u8; 12];
                    etlm.copy_from_slice(&data[2..14]);
                    Frame::EddystoneTlm(EddystoneTlm::Encrypted {
                        etlm,
                        salt: u16::from_be_bytes([data[14], data[15]]),
                        mic: u16::from_be_bytes([data[16], data[17]]),
                    })
                }
                Some(v) => return Err(frame_err(KIND, offset + 1, FrameProblem::TlmVersion(v))),
                None => return Err(length_err(KIND, offset, "14 or 18", data.len())),
            }
        }
        eddystone_type::EID => {
            if data.len() != 10 {
                return Err(length_err("Eddystone-EID", offset, "10", data.len()));
            }
            let mut eid = [0u8; 8];
            eid.copy_from_slice(&data[2..10]);
            Frame::EddystoneEid(EddystoneEid {
                tx_power: data[1] as i8,
                eid,
            })
        }
        other => {
            return Err(frame_err(
                "Eddystone",
                offset,
                FrameProblem::UnknownEddystoneFrame(other),
            ))
        }
    };
    Ok(Some(frame))
}
