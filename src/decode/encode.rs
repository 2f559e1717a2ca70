//! Encoders: the exact inverse of the decoders, writing into a fixed 31-byte legacy advertising buffer.
//!
//! The simulator encodes every advertisement its virtual phones and beacons send, so this path stays
//! allocation-free too.

use thiserror::Error;

use super::ad::{
    AD_FLAGS, AD_MANUFACTURER, AD_NAME_COMPLETE, AD_NAME_SHORT, AD_SERVICE_DATA128,
    AD_SERVICE_DATA16, AD_SERVICE_DATA32, AD_TX_POWER, AD_UUID128_COMPLETE, AD_UUID16_COMPLETE,
};
use super::frame::{eddystone_type, EddystoneTlm, Frame, EDDYSTONE_UUID, IBEACON_COMPANY};
use super::ServiceUuid;

/// The size of a legacy advertising payload.
pub const LEGACY_ADV_LEN: usize = 31;

/// LE General Discoverable, BR/EDR not supported: what beacons advertise.
pub const FLAGS_LE_GENERAL: u8 = 0x06;

/// The payload does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("advertisement needs {needed} bytes, a legacy advertisement holds {LEGACY_ADV_LEN}")]
pub struct TooLong {
    /// The bytes the payload would need.
    pub needed: usize,
}

/// A legacy advertising payload under construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdBuilder {
    buf: [u8; LEGACY_ADV_LEN],
    len: usize,
}

impl Default for AdBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl AdBuilder {
    /// An empty payload.
    pub fn new() -> AdBuilder {
        AdBuilder {
            buf: [0; LEGACY_ADV_LEN],
            len: 0,
        }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Appends one AD structure made of `parts` concatenated.
    pub fn push(&mut self, ad_type: u8, parts: &[&[u8]]) -> Result<&mut Self, TooLong> {
        let data_len: usize = parts.iter().map(|p| p.len()).sum();
        let needed = self.len + 2 + data_len;
        if needed > LEGACY_ADV_LEN {
            return Err(TooLong { needed });
        }
        self.buf[self.len] = (1 + data_len) as u8;
        self.buf[self.len + 1] = ad_type;
        let mut pos = self.len + 2;
        for p in parts {
            self.buf[pos..pos + p.len()].copy_from_slice(p);
            pos += p.len();
        }
        self.len = pos;
        Ok(self)
    }

    /// Appends Flags.
    pub fn flags(&mut self, flags: u8) -> Result<&mut Self, TooLong> {
        self.push(AD_FLAGS, &[&[flags]])
    }

    /// Appends a local name, complete or shortened.
    pub fn local_name(&mut self, name: &str, complete: bool) -> Result<&mut Self, TooLong> {
        let t = if complete {
            AD_NAME_COMPLETE
        } else {
            AD_NAME_SHORT
        };
        self.push(t, &[name.as_bytes()])
    }

    /// Appends the TX power level.
    pub fn tx_power(&mut self, dbm: i8) -> Result<&mut Self, TooLong> {
        self.push(AD_TX_POWER, &[&[dbm as u8]])
    }

    /// Appends a complete list of 16-bit service UUIDs (at most eight fit with nothing else).
    pub fn service_uuids16(&mut self, uuids: &[u16]) -> Result<&mut Self, TooLong> {
        let mut bytes = [0u8; LEGACY_ADV_LEN];
        let n = uuids.len().min(LEGACY_ADV_LEN / 2);
        for (i, u) in uuids.iter().take(n).enumerate() {
            bytes[2 * i..2 * i + 2].copy_from_slice(&u.to_le_bytes());
        }
        if n < uuids.len() {
            return Err(TooLong {
                needed: self.len + 2 + 2 * uuids.len(),
            });
        }
        self.push(AD_UUID16_COMPLETE, &[&bytes[..2 * n]])
    }

    /// Appends a complete list holding one 128-bit service UUID.
    pub fn service_uuid128(&mut self, uuid: uuid::Uuid) -> Result<&mut Self, TooLong> {
        let le = reversed(uuid.as_bytes());
        self.push(AD_UUID128_COMPLETE, &[&le])
    }

    /// Appends service data for `uuid`, in the width the UUID has.
    pub fn service_data(&mut self, uuid: ServiceUuid, data: &[u8]) -> Result<&mut Self, TooLong> {
        match uuid {
            ServiceUuid::U16(v) => self.push(AD_SERVICE_DATA16, &[&v.to_le_bytes(), data]),
            ServiceUuid::U32(v) => self.push(AD_SERVICE_DATA32, &[&v.to_le_bytes(), data]),
            ServiceUuid::U128(b) => self.push(AD_SERVICE_DATA128, &[&reversed(&b), data]),
        }
    }

    /// Appends manufacturer data under `company`.
    pub fn manufacturer(&mut self, company: u16, data: &[u8]) -> Result<&mut Self, TooLong> {
        self.push(AD_MANUFACTURER, &[&company.to_le_bytes(), data])
    }

    /// Appends the manufacturer or service data that carries `frame`, without flags or UUID lists.
    pub fn frame_data(&mut self, frame: &Frame) -> Result<&mut Self, TooLong> {
        match frame {
            Frame::IBeacon(b) => {
                let mut d = [0u8; 23];
                d[0] = 0x02;
                d[1] = 0x15;
                d[2..18].copy_from_slice(b.uuid.as_bytes());
                d[18..20].copy_from_slice(&b.major.to_be_bytes());
                d[20..22].copy_from_slice(&b.minor.to_be_bytes());
                d[22] = b.measured_power as u8;
                self.manufacturer(IBEACON_COMPANY, &d)
            }
            Frame::AltBeacon(b) => {
                let mut d = [0u8; 24];
                d[..2].copy_from_slice(&[0xBE, 0xAC]);
                d[2..22].copy_from_slice(&b.beacon_id);
                d[22] = b.reference_rssi as u8;
                d[23] = b.mfg_reserved;
                self.manufacturer(b.manufacturer_id, &d)
            }
            Frame::EddystoneUid(b) => {
                let mut d = [0u8; 20];
                d[0] = eddystone_type::UID;
                d[1] = b.tx_power as u8;
                d[2..12].copy_from_slice(&b.namespace);
                d[12..18].copy_from_slice(&b.instance);
                self.service_data(ServiceUuid::U16(EDDYSTONE_UUID), &d)
            }
            Frame::EddystoneUrl(u) => {
                let body = u.encoded();
                let mut d = [0u8; 20];
                d[0] = eddystone_type::URL;
                d[1] = u.tx_power as u8;
                d[2] = u.scheme;
                d[3..3 + body.len()].copy_from_slice(body);
                self.service_data(ServiceUuid::U16(EDDYSTONE_UUID), &d[..3 + body.len()])
            }
            Frame::EddystoneTlm(t) => {
                let mut d = [0u8; 18];
                d[0] = eddystone_type::TLM;
                let len = match t {
                    EddystoneTlm::Plain {
                        battery_mv,
                        temperature_c,
                        adv_count,
                        uptime_tenths,
                    } => {
                        d[1] = 0x00;
                        d[2..4].copy_from_slice(&battery_mv.to_be_bytes());
                        let temp = match temperature_c {
                            Some(c) => ((c * 256.0).round() as i16) as u16,
                            None => 0x8000,
                        };
                        d[4..6].copy_from_slice(&temp.to_be_bytes());
                        d[6..10].copy_from_slice(&adv_count.to_be_bytes());
                        d[10..14].copy_from_slice(&uptime_tenths.to_be_bytes());
                        14
                    }
                    EddystoneTlm::Encrypted { etlm, salt, mic } => {
                        d[1] = 0x01;
                        d[2..14].copy_from_slice(etlm);
                        d[14..16].copy_from_slice(&salt.to_be_bytes());
                        d[16..18].copy_from_slice(&mic.to_be_bytes());
                        18
                    }
                };
                self.service_data(ServiceUuid::U16(EDDYSTONE_UUID), &d[..len])
            }
            Frame::EddystoneEid(e) => {
                let mut d = [0u8; 10];
                d[0] = eddystone_type::EID;
                d[1] = e.tx_power as u8;
                d[2..].copy_from_slice(&e.eid);
                self.service_data(ServiceUuid::U16(EDDYSTONE_UUID), &d)
            }
        }
    }
}

/// Encodes `frame` as a complete advertisement the way real beacons send it: Flags, then (for
/// Eddystone) the 16-bit UUID list with 0xFEAA, then the frame.
pub fn encode_frame(frame: &Frame) -> Result<AdBuilder, TooLong> {
    let mut b = AdBuilder::new();
    b.flags(FLAGS_LE_GENERAL)?;
    if matches!(
        frame,
        Frame::EddystoneUid(_)
            | Frame::EddystoneUrl(_)
            | Frame::EddystoneTlm(_)
            | Frame::EddystoneEid(_)
    ) {
        b.service_uuids16(&[EDDYSTONE_UUID])?;
    }
    b.frame_data(frame)?;
    Ok(b)
}

fn reversed(b: &[u8; 16]) -> [u8; 16] {
    let mut out = *b;
    out.reverse();
    out
}
