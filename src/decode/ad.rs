//! Advertising data: the sequence of AD structures (`length | type | data`) that a legacy advertisement
//! or a scan response carries (Core Specification, Vol 3, Part C, §11).
//!
//! Parsing validates the whole payload once and then hands out borrowed views; nothing here allocates,
//! because the hub decodes every advertisement it hears and there is no reason a 31-byte payload should
//! cost a trip to the allocator.

use std::fmt;

use super::DecodeError;

/// AD type: Flags.
pub const AD_FLAGS: u8 = 0x01;
/// AD type: incomplete list of 16-bit service UUIDs.
pub const AD_UUID16_INCOMPLETE: u8 = 0x02;
/// AD type: complete list of 16-bit service UUIDs.
pub const AD_UUID16_COMPLETE: u8 = 0x03;
/// AD type: incomplete list of 32-bit service UUIDs.
pub const AD_UUID32_INCOMPLETE: u8 = 0x04;
/// AD type: complete list of 32-bit service UUIDs.
pub const AD_UUID32_COMPLETE: u8 = 0x05;
/// AD type: incomplete list of 128-bit service UUIDs.
pub const AD_UUID128_INCOMPLETE: u8 = 0x06;
/// AD type: complete list of 128-bit service UUIDs.
pub const AD_UUID128_COMPLETE: u8 = 0x07;
/// AD type: shortened local name.
pub const AD_NAME_SHORT: u8 = 0x08;
/// AD type: complete local name.
pub const AD_NAME_COMPLETE: u8 = 0x09;
/// AD type: TX power level.
pub const AD_TX_POWER: u8 = 0x0A;
/// AD type: service data with a 16-bit UUID.
pub const AD_SERVICE_DATA16: u8 = 0x16;
/// AD type: service data with a 32-bit UUID.
pub const AD_SERVICE_DATA32: u8 = 0x20;
/// AD type: service data with a 128-bit UUID.
pub const AD_SERVICE_DATA128: u8 = 0x21;
/// AD type: manufacturer specific data.
pub const AD_MANUFACTURER: u8 = 0xFF;

/// The Bluetooth base UUID `00000000-0000-1000-8000-00805f9b34fb`, into which 16- and 32-bit UUIDs are
/// placed to give their 128-bit form.
const BASE_UUID: [u8; 16] = [
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0x80, 0x5f, 0x9b, 0x34, 0xfb,
];

/// A service UUID as it appears on air: 16, 32 or 128 bits.
///
/// 128-bit UUIDs are kept in big-endian (textual) byte order; on air they are little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceUuid {
    /// A 16-bit UUID assigned by the Bluetooth SIG (0xFEAA is Eddystone).
    U16(u16),
    /// A 32-bit UUID assigned by the Bluetooth SIG.
    U32(u32),
    /// A full 128-bit UUID, in big-endian byte order.
    U128([u8; 16]),
}

impl ServiceUuid {
    /// The 128-bit form: short UUIDs are placed into the Bluetooth base UUID.
    pub fn to_uuid(self) -> uuid::Uuid {
        match self {
            ServiceUuid::U16(v) => Self::from_short(v as u32),
            ServiceUuid::U32(v) => Self::from_short(v),
            ServiceUuid::U128(b) => uuid::Uuid::from_bytes(b),
        }
    }

    fn from_short(v: u32) -> uuid::Uuid {
        let mut b = BASE_UUID;
        b[..4].copy_from_slice(&v.to_be_bytes());
        uuid::Uuid::from_bytes(b)
    }

    /// The shortest form of a 128-bit UUID: BlueZ reports every UUID in 128 bits, and beacon decoders
    /// match Eddystone by its 16-bit UUID.
    pub fn from_uuid(u: uuid::Uuid) -> ServiceUuid {
        let b = *u.as_bytes();
        if b[4..] == BASE_UUID[4..] {
            let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            match u16::try_from(v) {
                Ok(short) => ServiceUuid::U16(short),
                Err(_) => ServiceUuid::U32(v),
            }
        } else {
            ServiceUuid::U128(b)
        }
    }

    /// Reads a UUID of `width` bytes from its little-endian on-air form.
    fn from_le(bytes: &[u8]) -> ServiceUuid {
        match bytes.len() {
            2 => ServiceUuid::U16(u16::from_le_bytes([bytes[0], bytes[1]])),
            4 => ServiceUuid::U32(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
            _ => {
                let mut b = [0u8; 16];
                for (dst, src) in b.iter_mut().zip(bytes.iter().rev()) {
                    *dst = *src;
                }
                ServiceUuid::U128(b)
            }
        }
    }
}

impl fmt::Display for ServiceUuid {
    /// Always the full lowercase hyphenated form, the way BlueZ reports UUIDs, so that one key means
    /// one service whatever width it was advertised in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_uuid().hyphenated())
    }
}

/// One AD structure, borrowed from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdStructure<'a> {
    /// Byte offset of `data` within the whole payload, so later errors can say where they are.
    pub offset: usize,
    /// The AD type.
    pub ad_type: u8,
    /// The data after the type byte.
    pub data: &'a [u8],
}

/// Iterates over the AD structures of a payload that [`Advertisement::parse`] already validated.
#[derive(Clone, Debug)]
pub struct AdStructures<'a> {
    raw: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for AdStructures<'a> {
    type Item = AdStructure<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let len = *self.raw.get(self.pos)? as usize;
        // A zero length terminates the significant part; HCI reports pad the rest with zeros.
        if len == 0 || self.pos + 1 + len > self.raw.len() {
            return None;
        }
        let ad_type = self.raw[self.pos + 1];
        let offset = self.pos + 2;
        let data = &self.raw[offset..self.pos + 1 + len];
        self.pos += 1 + len;
        Some(AdStructure {
            offset,
            ad_type,
            data,
        })
    }
}

/// A parsed advertisement: the fixed single-value fields are read out once, the repeated ones
/// (service UUIDs, service data, manufacturer data) are iterated from the validated payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertisement<'a> {
    raw: &'a [u8],
    /// The Flags byte, if present.
    pub flags: Option<u8>,
    /// The local name bytes (complete name preferred over the shortened one), if present.
    pub local_name: Option<&'a [u8]>,
    /// Whether `local_name` is the complete name.
    pub local_name_complete: bool,
    /// The advertised TX power level in dBm, if present.
    pub tx_power: Option<i8>,
}

impl<'a> Advertisement<'a> {
    /// Validates every AD structure in `raw` and reads the single-value fields.
    ///
    /// A structure that runs past the end of the payload, or a known type whose data has an impossible
    /// length, is an error: the hub reports it rather than guessing.
    pub fn parse(raw: &'a [u8]) -> Result<Advertisement<'a>, DecodeError> {
        if raw.is_empty() {
            return Err(DecodeError::Empty);
        }
        let mut adv = Advertisement {
            raw,
            flags: None,
            local_name: None,
            local_name_complete: false,
            tx_power: None,
        };
        let mut pos = 0;
        while pos < raw.len() {
            let len = raw[pos] as usize;
            if len == 0 {
                // Early termination: everything after must be padding.
                if let Some(i) = raw[pos..].iter().position(|&b| b != 0) {
                    return Err(DecodeError::DataAfterTerminator { offset: pos + i });
                }
                break;
            }
            if pos + 1 + len > raw.len() {
                return Err(DecodeError::Truncated {
                    offset: pos,
                    declared: len,
                    available: raw.len() - pos - 1,
                });
            }
            let ad_type = raw[pos + 1];
            let data = &raw[pos + 2..pos + 1 + len];
            check_length(ad_type, data.len(), pos)?;
            match ad_type {
                AD_FLAGS => adv.flags = Some(data[0]),
                AD_TX_POWER => adv.tx_power = Some(data[0] as i8),
                AD_NAME_COMPLETE => {
                    adv.local_name = Some(data);
                    adv.local_name_complete = true;
                }
                AD_NAME_SHORT if !adv.local_name_complete => adv.local_name = Some(data),
                _ => {}
            }
            pos += 1 + len;
        }
        Ok(adv)
    }

    /// The payload this advertisement was parsed from.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// All AD structures in order, including types this module does not interpret.
    pub fn structures(&self) -> AdStructures<'a> {
        AdStructures {
            raw: self.raw,
            pos: 0,
        }
    }

    /// Service UUIDs from every 16-, 32- and 128-bit list, complete or incomplete.
    pub fn service_uuids(&self) -> impl Iterator<Item = ServiceUuid> + 'a {
        self.structures()
            .filter_map(|s| {
                let width = match s.ad_type {
                    AD_UUID16_INCOMPLETE | AD_UUID16_COMPLETE => 2,
                    AD_UUID32_INCOMPLETE | AD_UUID32_COMPLETE => 4,
                    AD_UUID128_INCOMPLETE | AD_UUID128_COMPLETE => 16,
                    _ => return None,
                };
                Some(s.data.chunks_exact(width))
            })
            .flatten()
            .map(ServiceUuid::from_le)
    }

    /// Every service data entry: the UUID and the data after it, with the data's offset.
    pub fn service_data(&self) -> impl Iterator<Item = (ServiceUuid, AdStructure<'a>)> + 'a {
        self.structures()
            .filter(|s| {
                matches!(
                    s.ad_type,
                    AD_SERVICE_DATA16 | AD_SERVICE_DATA32 | AD_SERVICE_DATA128
                )
            })
            .map(split_service_data)
    }

    /// Every manufacturer data entry: the company identifier and the data after it, with its offset.
    pub fn manufacturer_data(&self) -> impl Iterator<Item = (u16, AdStructure<'a>)> + 'a {
        self.structures()
            .filter(|s| s.ad_type == AD_MANUFACTURER)
            .map(|s| {
                (
                    u16::from_le_bytes([s.data[0], s.data[1]]),
                    AdStructure {
                        offset: s.offset + 2,
                        ad_type: s.ad_type,
                        data: &s.data[2..],
                    },
                )
            })
    }
}

/// Splits a validated service data structure into its UUID and the data after it.
///
/// Only call it on structures of the three service data types that [`Advertisement::parse`] accepted:
/// their lengths are checked there.
pub(crate) fn split_service_data(s: AdStructure<'_>) -> (ServiceUuid, AdStructure<'_>) {
    let width = match s.ad_type {
        AD_SERVICE_DATA16 => 2,
        AD_SERVICE_DATA32 => 4,
        _ => 16,
    };
    (
        ServiceUuid::from_le(&s.data[..width]),
        AdStructure {
            offset: s.offset + width,
            ad_type: s.ad_type,
            data: &s.data[width..],
        },
    )
}

/// Rejects data lengths that the type cannot have.
fn check_length(ad_type: u8, len: usize, offset: usize) -> Result<(), DecodeError> {
    let ok = match ad_type {
        AD_FLAGS | AD_TX_POWER => len == 1,
        AD_UUID16_INCOMPLETE | AD_UUID16_COMPLETE => len % 2 == 0,
        AD_UUID32_INCOMPLETE | AD_UUID32_COMPLETE => len % 4 == 0,
        AD_UUID128_INCOMPLETE | AD_UUID128_COMPLETE => len % 16 == 0,
        AD_SERVICE_DATA16 => len >= 2,
        AD_SERVICE_DATA32 => len >= 4,
        AD_SERVICE_DATA128 => len >= 16,
        AD_MANUFACTURER => len >= 2,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::BadLength {
            offset,
            ad_type,
            len,
        })
    }
}

/// A human name for an AD type, for error messages.
pub fn ad_type_name(ad_type: u8) -> &'static str {
    match ad_type {
        AD_FLAGS => "Flags",
        AD_UUID16_INCOMPLETE | AD_UUID16_COMPLETE => "16-bit service UUID list",
        AD_UUID32_INCOMPLETE | AD_UUID32_COMPLETE => "32-bit service UUID list",
        AD_UUID128_INCOMPLETE | AD_UUID128_COMPLETE => "128-bit service UUID list",
        AD_NAME_SHORT => "shortened local name",
        AD_NAME_COMPLETE => "complete local name",
        AD_TX_POWER => "TX power level",
        AD_SERVICE_DATA16 => "16-bit service data",
        AD_SERVICE_DATA32 => "32-bit service data",
        AD_SERVICE_DATA128 => "128-bit service data",
        AD_MANUFACTURER => "manufacturer data",
        _ => "AD structure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_uuid_round_trips_through_128_bits() {
        let u = ServiceUuid::U16(0xFEAA).to_uuid();
        assert_eq!(u.to_string(), "0000feaa-0000-1000-8000-00805f9b34fb");
        assert_eq!(ServiceUuid::from_uuid(u), ServiceUuid::U16(0xFEAA));
        let u32_ = ServiceUuid::U32(0x1234_5678).to_uuid();
        assert_eq!(ServiceUuid::from_uuid(u32_), ServiceUuid::U32(0x1234_5678));
    }

    #[test]
    fn zero_length_terminates_and_padding_is_allowed() {
        let adv = Advertisement::parse(&[0x02, 0x01, 0x06, 0x00, 0x00, 0x00]).unwrap();
        assert_eq!(adv.flags, Some(0x06));
        assert_eq!(adv.structures().count(), 1);
    }

    #[test]
    fn data_after_terminator_is_an_error() {
        let err = Advertisement::parse(&[0x02, 0x01, 0x06, 0x00, 0x05]).unwrap_err();
        assert_eq!(err, DecodeError::DataAfterTerminator { offset: 4 });
    }

    #[test]
    fn truncated_structure_names_its_offset() {
        let err = Advertisement::parse(&[0x02, 0x01, 0x06, 0x05, 0xFF, 0x4C]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                offset: 3,
                declared: 5,
                available: 2
            }
        );
    }

    #[test]
    fn impossible_lengths_are_errors() {
        // A 16-bit UUID list with three bytes.
        let err = Advertisement::parse(&[0x04, 0x03, 0xAA, 0xFE, 0x01]).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::BadLength {
                offset: 0,
                ad_type: 0x03,
                len: 3
            }
        ));
        // TX power with two bytes.
        assert!(Advertisement::parse(&[0x03, 0x0A, 0x01, 0x02]).is_err());
        // Manufacturer data without a full company id.
        assert!(Advertisement::parse(&[0x02, 0xFF, 0x4C]).is_err());
    }

    #[test]
    fn complete_name_wins_over_shortened() {
        let raw = [0x03, 0x09, b'a', b'b', 0x02, 0x08, b'a'];
        let adv = Advertisement::parse(&raw).unwrap();
        assert_eq!(adv.local_name, Some(&b"ab"[..]));
        assert!(adv.local_name_complete);
    }

    #[test]
    fn uuid128_is_read_little_endian() {
        let mut raw = vec![17, AD_UUID128_COMPLETE];
        let be: [u8; 16] = core::array::from_fn(|i| i as u8);
        raw.extend(be.iter().rev());
        let adv = Advertisement::parse(&raw).unwrap();
        assert_eq!(
            adv.service_uuids().collect::<Vec<_>>(),
            vec![ServiceUuid::U128(be)]
        );
    }
}
