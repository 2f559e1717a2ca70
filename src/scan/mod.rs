//! Scanning sources: where advertisements come from. Each source produces [`Advert`]s stamped with
//! our own time and the index of the hub that heard them:
//! - `sim`: the store simulator, with ground truth ([`sim`]);
//! - `replay`: a recording (field-tools issue);
//! - `bluez`: the Bluetooth adapter through BlueZ (BlueZ issue).

pub mod sim;

use smallvec::SmallVec;

use crate::time::Timestamp;

/// Advertising data inline up to the legacy 31 bytes; longer (merged scan response) spills to the heap.
pub type Payload = SmallVec<[u8; 31]>;

/// One advertisement as a hub heard it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// When it was heard (our clock, or the simulated one).
    pub at: Timestamp,
    /// Which of the source's hubs heard it (index into the source's hub list).
    pub hub: u16,
    /// The device address. Random for phones; it never leaves the process.
    pub address: [u8; 6],
    /// Received signal strength, dBm.
    pub rssi: i16,
    /// The raw advertising data (AD structures).
    pub payload: Payload,
}
