//! Decoding stage: raw advertising data → [`Advertisement`] → beacon [`Frame`]s.
//!
//! Everything here is pure and allocation-free on the success path: it runs once per advertisement the
//! radio hears. The encoders in [`encode`] produce the exact inverse, for the simulator and the tests.

pub mod ad;
pub mod encode;
pub mod frame;
pub mod json;

pub use ad::{AdStructure, Advertisement, ServiceUuid};
pub use frame::{
    AltBeacon, EddystoneEid, EddystoneTlm, EddystoneUid, EddystoneUrl, Frame, IBeacon,
    EDDYSTONE_UUID, IBEACON_COMPANY,
};

use thiserror::Error;

/// Why a payload could not be decoded. Every variant names the byte offset (from the start of the
/// payload) where the problem is, so a field engineer can find it in a hex dump.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The payload has no bytes.
    #[error("empty payload")]
    Empty,
    /// An AD structure declares more bytes than remain.
    #[error("AD structure at byte {offset} declares {declared} bytes but only {available} follow")]
    Truncated {
        /// Offset of the length byte.
        offset: usize,
        /// The declared length.
        declared: usize,
        /// Bytes that actually follow the length byte.
        available: usize,
    },
    /// Non-zero bytes follow a zero-length terminator.
    #[error("non-zero byte at {offset} after the zero-length terminator")]
    DataAfterTerminator {
        /// Offset of the first non-zero byte.
        offset: usize,
    },
    /// A known AD type with a data length it cannot have.
    #[error("{} (type 0x{ad_type:02x}) at byte {offset} has an impossible length of {len} bytes", ad::ad_type_name(*ad_type))]
    BadLength {
        /// Offset of the length byte.
        offset: usize,
        /// The AD type.
        ad_type: u8,
        /// Its data length.
        len: usize,
    },
    /// A frame was recognised by its signature but its body is malformed.
    #[error("{kind} at byte {offset}: {reason}")]
    Frame {
        /// Which frame type it claims to be.
        kind: &'static str,
        /// Offset of the offending byte.
        offset: usize,
        /// What is wrong.
        reason: FrameProblem,
    },
}

/// What is wrong inside a recognised beacon frame.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum FrameProblem {
    /// The frame has the wrong length for its type.
    #[error("expected {expected} bytes, found {found}")]
    Length {
        /// What the specification requires (e.g. "23" or "3 to 20").
        expected: &'static str,
        /// What the payload has.
        found: usize,
    },
    /// An Eddystone frame type this decoder does not know.
    #[error("unknown Eddystone frame type 0x{0:02x}")]
    UnknownEddystoneFrame(u8),
    /// An Eddystone-URL scheme prefix outside 0–3.
    #[error("reserved URL scheme prefix 0x{0:02x} (valid: 0x00-0x03)")]
    UrlScheme(u8),
    /// An Eddystone-URL byte in a reserved range.
    #[error("reserved URL byte 0x{0:02x} (0x0e-0x20 and 0x7f-0xff are reserved)")]
    UrlByte(u8),
    /// An Eddystone-TLM version other than 0 (plain) or 1 (encrypted).
    #[error("unknown TLM version 0x{0:02x} (0 = plain, 1 = encrypted)")]
    TlmVersion(u8),
    /// Apple manufacturer data of type 0x02 whose length byte is not 0x15.
    #[error("iBeacon length byte is 0x{0:02x}, expected 0x15")]
    IBeaconLength(u8),
}

/// Decodes every beacon frame in `adv`, calling `out` for each in the order they appear.
///
/// Unknown manufacturer or service data is not an error (most advertisements are not beacons); a
/// structure that carries a beacon's signature but is malformed is.
pub fn for_each_frame<'a>(
    adv: &Advertisement<'a>,
    mut out: impl FnMut(Frame),
) -> Result<(), DecodeError> {
    for s in adv.structures() {
        let found = match s.ad_type {
            ad::AD_MANUFACTURER => {
                let company = u16::from_le_bytes([s.data[0], s.data[1]]);
                frame::decode_manufacturer(company, &s.data[2..], s.offset + 2)?
            }
            ad::AD_SERVICE_DATA16 | ad::AD_SERVICE_DATA32 | ad::AD_SERVICE_DATA128 => {
                let (uuid, data) = ad::split_service_data(s);
                frame::decode_service_data(uuid, data.data, data.offset)?
            }
            _ => None,
        };
        if let Some(f) = found {
            out(f);
        }
    }
    Ok(())
}

/// Parses `raw` and decodes its frames in one call: the common path for a raw HCI payload.
pub fn decode_frames(raw: &[u8], out: impl FnMut(Frame)) -> Result<Advertisement<'_>, DecodeError> {
    let adv = Advertisement::parse(raw)?;
    for_each_frame(&adv, out)?;
    Ok(adv)
}
