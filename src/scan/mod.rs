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

/// Maps between the pipeline's time and the wall clock: real time for the radio, a scaled simulated
/// time for `sim` and `replay` at `--speed N`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall_start: tokio::time::Instant,
    start: Timestamp,
    speed: f64,
}

impl Clock {
    /// Real time.
    pub fn real() -> Clock {
        Clock::scaled(Timestamp::now(), 1.0)
    }

    /// Time that starts at `start` now and runs `speed` times faster than the wall clock.
    pub fn scaled(start: Timestamp, speed: f64) -> Clock {
        Clock {
            wall_start: tokio::time::Instant::now(),
            start,
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }

    /// The pipeline's time now.
    pub fn now(&self) -> Timestamp {
        let elapsed = self.wall_start.elapsed().as_secs_f64() * self.speed;
        self.start.plus_secs(elapsed)
    }

    /// The wall-clock instant at which pipeline time `t` comes.
    pub fn instant_of(&self, t: Timestamp) -> tokio::time::Instant {
        let secs = t.secs_since(self.start) / self.speed;
        self.wall_start + std::time::Duration::from_secs_f64(secs)
    }
}

/// Plays a simulation against `clock`, sending each advert when its time comes (starting with
/// `first`, if the caller already drew it), until the scenario ends, the receiver goes away, or
/// shutdown. `watermark` tells the core how far the source has got: no advert older than it will
/// come, so deadlines up to it can be handled without overtaking an advert.
pub async fn run_sim(
    mut sim: sim::Simulation,
    first: Option<Advert>,
    clock: Clock,
    tx: tokio::sync::mpsc::Sender<Advert>,
    watermark: tokio::sync::watch::Sender<Timestamp>,
    mut shutdown: crate::shutdown::Shutdown,
) {
    let mut next = first.or_else(|| sim.next_advert());
    while let Some(adv) = next.take() {
        // Nothing older than this advert can come any more: the core may run deadlines up to it.
        watermark.send_replace(Timestamp(adv.at.0.saturating_sub(1)));
        if adv.at > clock.now() {
            tokio::select! {
                _ = tokio::time::sleep_until(clock.instant_of(adv.at)) => {}
                _ = shutdown.recv() => return,
            }
        }
        tokio::select! {
            sent = tx.send(adv) => if sent.is_err() { return },
            _ = shutdown.recv() => return,
        }
        next = sim.next_advert();
    }
    watermark.send_replace(Timestamp(u64::MAX));
    tracing::info!(scenario = %sim.scenario().name, "simulated scenario finished");
}
