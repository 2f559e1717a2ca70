//! The store simulator: shoppers walking through a store, their fobs and phones advertising, hubs
//! hearing them through a noisy radio, and the ground truth of where everyone really was.
//!
//! Sans-IO like the core: [`Simulation::next_advert`] hands out adverts in time order from a simulated
//! clock. `beacond simulate` pulls them as fast as the CPU allows; the `sim` source of the daemon and
//! `beacond demo` pace them against the wall clock.
//!
//! Radio model per reception: log-distance path loss (`P1m − 10·n·log10(d)`, with the hub's height in
//! `d`), log-normal shadowing that decorrelates over distance moved and, slowly, over time (an
//! Ornstein–Uhlenbeck process per device and hub), Rician
//! fast fading per packet, body shadowing when a pocketed device has the body between it and the hub,
//! each device's own power error, packet loss, the hub's scan duty cycle, and receiver sensitivity.
//! Everything is drawn from one seeded generator: the same scenario gives the same run.

pub mod overrides;
pub mod scenario;
pub mod survey;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::decode::encode::{encode_frame, AdBuilder};
use crate::decode::{EddystoneTlm, EddystoneUid, Frame, IBeacon};
use crate::identity::{BeaconId, Customer, Directory};
use crate::time::Timestamp;

pub use scenario::{Scenario, ScenarioError};

use super::{Advert, Payload};

/// The proximity UUID of the simulated loyalty fobs.
pub const FOB_UUID: [u8; 16] = [
    0x6b, 0x1f, 0x3e, 0x2a, 0x00, 0x00, 0x4f, 0x0b, 0x8c, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
];
/// The proximity UUID of the simulated store's fixed iBeacons.
pub const STORE_UUID: [u8; 16] = [
    0x6b, 0x1f, 0x3e, 0x2a, 0x00, 0x00, 0x4f, 0x0b, 0x8c, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
];

/// When simulated time starts: 2026-01-05T09:00:00Z, a Monday morning.
pub const SIM_EPOCH_MS: u64 = 1_767_603_600_000;

/// A leg of a shopper's path: walking from `from` to `to` (or standing, when equal) over `[t0, t1)`.
#[derive(Clone, Copy, Debug)]
struct Leg {
    t0: u64,
    t1: u64,
    from: [f64; 2],
    to: [f64; 2],
    /// Which way the shopper faces, radians (walking: the direction of travel).
    facing: f64,
}

/// One shopper: their path, their devices, and the truth of which zone they were in.
#[derive(Clone, Debug)]
pub struct Shopper {
    /// The customer id if they carry a registered fob.
    pub customer: Option<String>,
    /// Arrival, ms of simulated time.
    pub arrive: u64,
    /// Departure, ms of simulated time.
    pub depart: u64,
    /// Ground truth: `(from, to, zone)` segments covering `[arrive, depart)`, zone index or none.
    pub truth: Vec<(u64, u64, Option<u16>)>,
    legs: Vec<Leg>,
    tx_offset_db: f64,
    in_pocket: bool,
    fob: Option<AdBuilder>,
    phone: AdBuilder,
    phone_address: [u8; 6],
    phone_rotated_at: u64,
    fob_address: [u8; 6],
}

impl Shopper {
    fn position(&self, t: u64) -> ([f64; 2], f64) {
        let i = self
            .legs
            .partition_point(|l| l.t1 <= t)
            .min(self.legs.len() - 1);
        let l = &self.legs[i];
        let f = if l.t1 > l.t0 {
            ((t.saturating_sub(l.t0)) as f64 / (l.t1 - l.t0) as f64).clamp(0.0, 1.0)
        } else {
            1.0
        };
        (
            [
                l.from[0] + (l.to[0] - l.from[0]) * f,
                l.from[1] + (l.to[1] - l.from[1]) * f,
            ],
            l.facing,
        )
    }

    /// The zone this shopper was truly in at `t` (simulated ms), if any.
    pub fn truth_at(&self, t: u64) -> Option<u16> {
        let i = self.truth.partition_point(|s| s.1 <= t);
        self.truth.get(i).filter(|s| s.0 <= t).and_then(|s| s.2)
    }
}

#[derive(Clone, Debug)]
struct FixedBeacon {
    pos: [f64; 2],
    frame: AdBuilder,
    tlm: Option<AdBuilder>,
    interval_ms: u64,
    address: [u8; 6],
    sent: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Emitter {
    Fob(u32),
    Phone(u32),
    Fixed(u32),
}

/// A running simulation.
pub struct Simulation {
    scenario: Scenario,
    rng: ChaCha8Rng,
    hubs: Vec<[f64; 2]>,
    hub_names: Vec<String>,
    shoppers: Vec<Shopper>,
    beacons: Vec<FixedBeacon>,
    queue: BinaryHeap<Reverse<(u64, Emitter)>>,
    /// Shadowing state per (emitter slot, hub): value in dB, when and where it was last drawn.
    shadow: Vec<(f32, u64, [f64; 2])>,
    pending: VecDeque<Advert>,
    end: u64,
    directory: Directory,
    /// Play the scenario again when it ends ([`Simulation::repeat`]).
    repeat: bool,
    /// The one hub whose adverts are given ([`Simulation::hear_only`]); `None`: every hub's.
    only_hub: Option<u16>,
    /// Laps played before this one; each starts where the last ended.
    laps: u64,
    /// Whether this lap has produced an advert yet: a lap that produces none would repeat forever
    /// without yielding.
    heard: bool,
}

impl Simulation {
    /// Builds the world of `scenario`: every shopper's path and truth is drawn up front.
    pub fn new(scenario: Scenario) -> Simulation {
        let mut rng = ChaCha8Rng::seed_from_u64(scenario.seed);
        let hubs: Vec<[f64; 2]> = scenario.hubs.iter().map(|h| [h.x, h.y]).collect();
        let hub_names = scenario.hubs.iter().map(|h| h.id.clone()).collect();
        let end = scenario.duration_s * 1000;
        let mut directory = Directory::new();
        let mut shoppers = Vec::with_capacity(scenario.shoppers.count as usize);
        let mut known = 0u32;
        for i in 0..scenario.shoppers.count {
            let s = make_shopper(&scenario, &mut rng, i, &mut known);
            if let (Some(id), Some(_)) = (&s.customer, &s.fob) {
                directory.add_customer(
                    Customer {
                        id: id.clone(),
                        segments: sim_segments(known),
                    },
                    &[BeaconId::IBeacon {
                        uuid: FOB_UUID,
                        major: 1,
                        minor: known as u16,
                    }],
                );
            }
            shoppers.push(s);
        }
        let mut beacons = Vec::new();
        for (i, b) in scenario.beacons.iter().enumerate() {
            let (frame, tlm, id) = match b.kind {
                scenario::FixedKind::Ibeacon => {
                    let f = IBeacon {
                        uuid: uuid::Uuid::from_bytes(STORE_UUID),
                        major: 100,
                        minor: i as u16,
                        measured_power: b.measured_power,
                    };
                    (Frame::IBeacon(f), None, BeaconId::of(&Frame::IBeacon(f)))
                }
                scenario::FixedKind::EddystoneUid => {
                    let mut instance = [0u8; 6];
                    instance[4..].copy_from_slice(&(i as u16).to_be_bytes());
                    let f = EddystoneUid {
                        tx_power: b.measured_power.saturating_add(41),
                        namespace: *b"beacondsim",
                        instance,
                    };
                    let tlm = Frame::EddystoneTlm(EddystoneTlm::Plain {
                        battery_mv: 3000 - (i as u16 * 37) % 600,
                        temperature_c: Some(19.5),
                        adv_count: 0,
                        uptime_tenths: 0,
                    });
                    (
                        Frame::EddystoneUid(f),
                        Some(encode_frame(&tlm).expect("a TLM frame fits")),
                        BeaconId::of(&Frame::EddystoneUid(f)),
                    )
                }
            };
            if let Some(id) = id {
                directory.add_fixed(b.id.clone(), id);
            }
            beacons.push(FixedBeacon {
                pos: [b.x, b.y],
                frame: encode_frame(&frame).expect("a beacon frame fits"),
                tlm,
                interval_ms: b.interval_ms.max(20),
                address: random_address(&mut rng, false),
                sent: 0,
            });
        }
        let mut queue = BinaryHeap::new();
        for (i, s) in shoppers.iter().enumerate() {
            let i = i as u32;
            if s.fob.is_some() {
                queue.push(Reverse((
                    s.arrive + rng.random_range(0..50),
                    Emitter::Fob(i),
                )));
            }
            queue.push(Reverse((
                s.arrive + rng.random_range(0..500),
                Emitter::Phone(i),
            )));
        }
        for (i, b) in beacons.iter().enumerate() {
            queue.push(Reverse((
                rng.random_range(0..b.interval_ms),
                Emitter::Fixed(i as u32),
            )));
        }
        let slots = shoppers.len() * 2 + beacons.len();
        let shadow = vec![(f32::NAN, 0, [0.0; 2]); slots * hubs.len()];
        Simulation {
            scenario,
            rng,
            hubs,
            hub_names,
            shoppers,
            beacons,
            queue,
            shadow,
            pending: VecDeque::new(),
            end,
            directory,
            repeat: false,
            only_hub: None,
            laps: 0,
            heard: false,
        }
    }

    /// Plays the scenario again each time it ends, simulated time running on: a hub left running on
    /// the simulator (the demo, `beacond scan --source sim`, `sim_repeat = true`) keeps a store to
    /// show instead of falling silent after one scenario. Every lap is the same world (the same
    /// seed), so the customers and fixed beacons are the ones [`Simulation::directory`] names;
    /// only time moves on. [`Simulation::shoppers`] and [`Simulation::end`] describe the first lap.
    pub fn repeat(&mut self) {
        self.repeat = true;
    }

    /// From now on gives only what the hub of index `hub` hears, as that hub's radio would; the
    /// store, its shoppers and the radio are drawn as before, so daemons that each hear one hub
    /// of the same scenario see one store.
    pub fn hear_only(&mut self, hub: u16) {
        self.only_hub = Some(hub);
    }

    /// How many laps have ended (0 during the first).
    pub fn laps(&self) -> u64 {
        self.laps
    }

    /// Starts the next lap: the world drawn again from the seed, shifted to begin where this ended.
    fn next_lap(&mut self) {
        let mut next = Simulation::new(self.scenario.clone());
        next.repeat = true;
        next.laps = self.laps + 1;
        *self = next;
    }

    /// Milliseconds from the simulated epoch to the start of this lap.
    fn lap_offset(&self) -> u64 {
        self.laps * self.end
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The hubs, in the order [`Advert::hub`] indexes them.
    pub fn hub_names(&self) -> &[String] {
        &self.hub_names
    }

    /// The shoppers with their ground truth.
    pub fn shoppers(&self) -> &[Shopper] {
        &self.shoppers
    }

    /// Who the platform would have synced to this store: the fob carriers and the fixed beacons.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Simulated time 0 as a timestamp.
    pub fn start(&self) -> Timestamp {
        Timestamp(SIM_EPOCH_MS)
    }

    /// Simulated end as a timestamp.
    pub fn end(&self) -> Timestamp {
        Timestamp(SIM_EPOCH_MS + self.end)
    }

    /// Puts back an advert taken with [`Simulation::next_advert`], so it comes next again.
    pub fn push_back(&mut self, advert: Option<Advert>) {
        if let Some(a) = advert {
            self.pending.push_front(a);
        }
    }

    /// The next advertisement heard by any hub, in time order; `None` when the scenario is over (for
    /// a repeating one, only if a whole lap made no advert).
    pub fn next_advert(&mut self) -> Option<Advert> {
        loop {
            if let Some(a) = self.pending.pop_front() {
                if self.only_hub.is_none_or(|h| h == a.hub) {
                    return Some(a);
                }
                continue;
            }
            match self.queue.pop() {
                Some(Reverse((t, emitter))) if t < self.end => self.emit(t, emitter),
                _ => {
                    self.queue.clear();
                    if !(self.repeat && self.heard) {
                        return None;
                    }
                    self.next_lap();
                }
            }
        }
    }

    fn emit(&mut self, t: u64, emitter: Emitter) {
        let radio = self.scenario.radio.clone();
        // BLE adds 0–10 ms of random delay to every advertising event.
        let jitter = self.rng.random_range(0..=10);
        let (pos, facing, payload, address, slot, power_db, pocket, next) = match emitter {
            Emitter::Fob(i) | Emitter::Phone(i) => {
                let s = &mut self.shoppers[i as usize];
                if t >= s.depart {
                    return;
                }
                let (pos, facing) = s.position(t);
                let is_fob = matches!(emitter, Emitter::Fob(_));
                let (payload, address, interval, slot) = if is_fob {
                    (
                        s.fob.expect("fob emitters have a fob"),
                        s.fob_address,
                        self.scenario.shoppers.fob_interval_ms,
                        i as usize * 2,
                    )
                } else {
                    if t - s.phone_rotated_at >= self.scenario.shoppers.address_rotation_s * 1000 {
                        s.phone_address = random_address(&mut self.rng, true);
                        s.phone_rotated_at = t;
                    }
                    (
                        s.phone,
                        s.phone_address,
                        self.scenario.shoppers.phone_interval_ms,
                        i as usize * 2 + 1,
                    )
                };
                let power = f64::from(self.scenario.shoppers.measured_power) + s.tx_offset_db;
                (
                    pos,
                    facing,
                    payload,
                    address,
                    slot,
                    power,
                    s.in_pocket,
                    t + interval + jitter,
                )
            }
            Emitter::Fixed(i) => {
                let b = &mut self.beacons[i as usize];
                b.sent += 1;
                let payload = match &b.tlm {
                    Some(tlm) if b.sent % 10 == 0 => *tlm,
                    _ => b.frame,
                };
                let power = f64::from(self.scenario.beacons[i as usize].measured_power);
                let slot = self.shoppers.len() * 2 + i as usize;
                (
                    b.pos,
                    0.0,
                    payload,
                    b.address,
                    slot,
                    power,
                    false,
                    t + b.interval_ms + jitter,
                )
            }
        };
        // The random advertising delay is in the schedule (`next`), so adverts come out in time order.
        self.queue.push(Reverse((next, emitter)));
        for (h, hub) in self.hubs.iter().enumerate() {
            let cell = &mut self.shadow[slot * self.hubs.len() + h];
            let Some(rssi) = receive(
                &mut self.rng,
                &radio,
                *hub,
                Carried {
                    pos,
                    facing,
                    power_db,
                    pocket,
                },
                t,
                cell,
            ) else {
                continue;
            };
            self.heard = true;
            self.pending.push_back(Advert {
                at: Timestamp(SIM_EPOCH_MS + self.lap_offset() + t),
                hub: h as u16,
                address,
                rssi,
                payload: Payload::from_slice(payload.as_bytes()),
            });
        }
    }
}

/// Where a device is and how it is carried, for one advertisement.
#[derive(Clone, Copy, Debug)]
struct Carried {
    pos: [f64; 2],
    /// Which way its carrier faces, radians.
    facing: f64,
    /// Its power at 1 m, dBm, with its own error.
    power_db: f64,
    /// In a pocket: the body shadows hubs behind the carrier.
    pocket: bool,
}

/// The RSSI `hub` hears from one advertisement of `device` at `t` (simulated ms), in whole dBm as a
/// controller reports it, or `None` when the hub misses it. `cell` is the shadowing state of this device and hub. The shoppers' adverts
/// and the simulated calibration both go through here, so they meet the same radio.
fn receive(
    rng: &mut ChaCha8Rng,
    radio: &scenario::Radio,
    hub: [f64; 2],
    device: Carried,
    t: u64,
    cell: &mut (f32, u64, [f64; 2]),
) -> Option<i16> {
    let pos = device.pos;
    let dx = hub[0] - pos[0];
    let dy = hub[1] - pos[1];
    let d = (dx * dx + dy * dy + radio.height_m * radio.height_m).sqrt();
    let mut rssi = device.power_db - 10.0 * radio.path_loss_exponent * d.log10();
    // Shadowing: an Ornstein-Uhlenbeck process that decorrelates as the device moves (walls,
    // shelves and people between it and the hub change) and, slowly, as others move around
    // a device that stands still.
    let n: f64 = StandardNormal.sample(rng);
    let s = if cell.0.is_nan() {
        n * radio.shadowing_sigma_db
    } else {
        let moved = ((pos[0] - cell.2[0]).powi(2) + (pos[1] - cell.2[1]).powi(2)).sqrt();
        let a = (-((t - cell.1) as f64 / 1000.0) / radio.shadowing_tau_s
            - moved / radio.shadowing_corr_m)
            .exp();
        cell.0 as f64 * a + radio.shadowing_sigma_db * (1.0 - a * a).sqrt() * n
    };
    *cell = (s as f32, t, pos);
    rssi += s;
    // Rician fast fading: power gain of a line-of-sight component plus scattered ones.
    let k = radio.fading_k;
    let (re, im): (f64, f64) = (StandardNormal.sample(rng), StandardNormal.sample(rng));
    let los = (k / (k + 1.0)).sqrt();
    let sc = (1.0 / (2.0 * (k + 1.0))).sqrt();
    let gain = (los + sc * re).powi(2) + (sc * im).powi(2);
    rssi += 10.0 * gain.max(1e-6).log10();
    if device.pocket {
        // The body is between a pocketed device and a hub behind the shopper.
        let toward = dy.atan2(dx);
        let behind = (-(toward - device.facing).cos()).max(0.0);
        rssi -= radio.body_loss_db * behind;
    }
    if rssi < radio.sensitivity_dbm
        || rng.random::<f64>() < radio.packet_loss
        || rng.random::<f64>() >= radio.scan_duty
    {
        return None;
    }
    Some(rssi.round().clamp(-127.0, 20.0) as i16)
}

fn random_address(rng: &mut ChaCha8Rng, resolvable: bool) -> [u8; 6] {
    let mut a: [u8; 6] = rng.random();
    // Top bits: 01 for a resolvable private address (phones), 11 for a static random one.
    a[0] = if resolvable {
        (a[0] & 0x3F) | 0x40
    } else {
        a[0] | 0xC0
    };
    a
}

fn make_shopper(sc: &Scenario, rng: &mut ChaCha8Rng, i: u32, known: &mut u32) -> Shopper {
    let sp = &sc.shoppers;
    let arrive = if sp.count <= 1 {
        0
    } else {
        (sp.arrival_window_s * 1000) * u64::from(i) / u64::from(sp.count)
            + rng.random_range(0..1000)
    };
    let speed = sp.walk_speed_mps * rng.random_range(0.75..1.25);
    let visits = rng.random_range(sp.visits_min..=sp.visits_max) as usize;
    // Zones to visit: weighted draws without repeating the zone just left.
    let total: f64 = sc.areas.iter().map(|a| a.weight).sum();
    let choices: Vec<usize> = (0..sc.areas.len())
        .filter(|&j| sc.areas[j].weight > 0.0)
        .collect();
    let mut plan: Vec<usize> = Vec::with_capacity(visits);
    if choices.len() < 2 {
        // With one area to choose from there is no other to go to in between: one visit to it
        // (drawing would never find a different area and never end).
        plan.extend(choices.first());
    }
    while plan.len() < visits && choices.len() >= 2 {
        let mut x = rng.random::<f64>() * total;
        let mut pick = choices[0];
        for (j, a) in sc.areas.iter().enumerate() {
            x -= a.weight;
            if a.weight > 0.0 && x <= 0.0 {
                pick = j;
                break;
            }
        }
        if plan.last() != Some(&pick) {
            plan.push(pick);
        }
    }
    let mut legs = Vec::new();
    let mut t = arrive;
    let mut at = sp.entrance;
    let walk = |legs: &mut Vec<Leg>, t: &mut u64, from: [f64; 2], to: [f64; 2]| {
        let d = ((to[0] - from[0]).powi(2) + (to[1] - from[1]).powi(2)).sqrt();
        let dur = (d / speed * 1000.0) as u64;
        legs.push(Leg {
            t0: *t,
            t1: *t + dur,
            from,
            to,
            facing: (to[1] - from[1]).atan2(to[0] - from[0]),
        });
        *t += dur;
    };
    for &z in &plan {
        let a = &sc.areas[z];
        // A spot within the inner part of the zone, where people actually stop.
        let r = a.radius_m * 0.6 * rng.random::<f64>().sqrt();
        let th = rng.random::<f64>() * std::f64::consts::TAU;
        let spot = [a.x + r * th.cos(), a.y + r * th.sin()];
        walk(&mut legs, &mut t, at, spot);
        let dwell = (rng.random_range(sp.dwell_min_s..=sp.dwell_max_s) * 1000.0) as u64;
        legs.push(Leg {
            t0: t,
            t1: t + dwell,
            from: spot,
            to: spot,
            facing: rng.random::<f64>() * std::f64::consts::TAU,
        });
        t += dwell;
        at = spot;
    }
    walk(&mut legs, &mut t, at, sp.entrance);
    if legs.is_empty() {
        legs.push(Leg {
            t0: t,
            t1: t + 1,
            from: at,
            to: at,
            facing: 0.0,
        });
        t += 1;
    }
    let depart = t;
    let carries_fob = rng.random::<f64>() < sp.known_share;
    let (customer, fob) = if carries_fob {
        *known += 1;
        let frame = Frame::IBeacon(IBeacon {
            uuid: uuid::Uuid::from_bytes(FOB_UUID),
            major: 1,
            minor: *known as u16,
            measured_power: sp.measured_power,
        });
        (
            Some(format!("cust-{:05}", *known)),
            Some(encode_frame(&frame).expect("an iBeacon fits")),
        )
    } else {
        (None, None)
    };
    // Phones: Apple continuity "nearby" data, which identifies nobody and decodes to no beacon frame.
    let mut phone = AdBuilder::new();
    let noise: [u8; 3] = rng.random();
    phone
        .flags(0x1A)
        .and_then(|b| b.manufacturer(0x004C, &[0x10, 0x05, 0x03, noise[0], noise[1], noise[2]]))
        .expect("a phone advert fits");
    let mut shopper = Shopper {
        customer,
        arrive,
        depart,
        truth: Vec::new(),
        legs,
        tx_offset_db: {
            let n: f64 = StandardNormal.sample(rng);
            n * sp.power_sigma_db
        },
        in_pocket: rng.random::<f64>() < sp.pocket_share,
        fob,
        phone,
        phone_address: random_address(rng, true),
        phone_rotated_at: arrive,
        fob_address: random_address(rng, false),
    };
    shopper.truth = truth_segments(sc, &shopper);
    shopper
}

/// Samples the path every 100 ms and merges runs of the same zone. Where discs overlap, the nearest
/// centre wins.
fn truth_segments(sc: &Scenario, s: &Shopper) -> Vec<(u64, u64, Option<u16>)> {
    let zone_of = |p: [f64; 2]| -> Option<u16> {
        let mut best: Option<(u16, f64)> = None;
        for a in &sc.areas {
            let d = ((p[0] - a.x).powi(2) + (p[1] - a.y).powi(2)).sqrt();
            if d <= a.radius_m && best.is_none_or(|(_, bd)| d < bd) {
                let zi = sc.zones.iter().position(|z| z.id == a.zone)? as u16;
                best = Some((zi, d));
            }
        }
        best.map(|(z, _)| z)
    };
    let mut out: Vec<(u64, u64, Option<u16>)> = Vec::new();
    let mut t = s.arrive;
    while t < s.depart {
        let z = zone_of(s.position(t).0);
        let next = (t + 100).min(s.depart);
        match out.last_mut() {
            Some(last) if last.2 == z => last.1 = next,
            _ => out.push((t, next, z)),
        }
        t = next;
    }
    out
}

/// Segments of the simulated customers, fixed by their number so offer rules have something to
/// include and exclude: every other customer is in the loyalty `club`, one in ten is `under-18`.
fn sim_segments(n: u32) -> Vec<String> {
    let mut s = Vec::new();
    if n % 2 == 0 {
        s.push("club".to_owned());
    }
    if n % 10 == 3 {
        s.push("under-18".to_owned());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lengthened_store_keeps_its_arrival_rate_and_its_closing_time() {
        let mut sc = Scenario::load("builtin:supermarket").unwrap();
        let (count, window, duration) = (
            sc.shoppers.count as u64,
            sc.shoppers.arrival_window_s,
            sc.duration_s,
        );
        sc.lengthen(4 * duration);
        assert_eq!(sc.duration_s, 4 * duration);
        assert_eq!(sc.shoppers.arrival_window_s, window + 3 * duration);
        assert_eq!(
            sc.shoppers.count as u64,
            count * (window + 3 * duration) / window
        );
        // The last arrival has as long to shop before the end as in the scenario's own run.
        assert_eq!(
            sc.duration_s - sc.shoppers.arrival_window_s,
            duration - window
        );
        let sim = Simulation::new(sc.clone());
        let late = sim
            .shoppers()
            .iter()
            .filter(|s| s.arrive > 3 * duration * 1000)
            .count();
        assert!(late > 0, "shoppers still arrive in the last hour");

        let mut short = Scenario::load("builtin:supermarket").unwrap();
        short.lengthen(duration / 2);
        assert_eq!(short.shoppers.arrival_window_s, window / 2);
        assert_eq!(short.shoppers.count as u64, count / 2);
    }

    fn sim(name: &str) -> Simulation {
        Simulation::new(Scenario::load(&format!("builtin:{name}")).unwrap())
    }

    /// The boutique with only the areas at `weights` > 0 to choose from, and every shopper
    /// wanting at least two visits.
    fn boutique_weighted(weights: [f64; 3]) -> Simulation {
        let mut sets = vec!["shoppers.visits_min=2".to_owned()];
        for (i, w) in weights.iter().enumerate() {
            sets.push(format!("areas[{i}].weight={w:?}"));
        }
        Simulation::new(Scenario::load_with("builtin:boutique", &sets).unwrap())
    }

    /// A minute of a store with one hub, one zone around it, no shoppers, and `beacons` (TOML
    /// `[[beacons]]` tables).
    fn one_hub_store(beacons: &str) -> Scenario {
        let text = format!(
            r#"
name = "t"
duration_s = 60
[[hubs]]
id = "h"
x = 0.0
y = 0.0
[[zones]]
id = "z"
[[areas]]
zone = "z"
x = 0.0
y = 0.0
radius_m = 2.0
{beacons}
[shoppers]
count = 0
arrival_window_s = 1
entrance = [0.0, 0.0]
"#
        );
        Scenario::parse(&text, "t").unwrap()
    }

    /// Stays of at least `ms` in `zone`, over every shopper.
    fn stays(sim: &Simulation, zone: u16, ms: u64) -> usize {
        sim.shoppers()
            .iter()
            .flat_map(|s| &s.truth)
            .filter(|&&(a, b, z)| z == Some(zone) && b - a >= ms)
            .count()
    }

    #[test]
    fn a_store_with_one_area_to_choose_gets_one_visit_each_not_a_hang() {
        // Drawing visits never repeats the area just left, so with a single area to choose from it
        // used to draw forever.
        let sim = boutique_weighted([0.0, 1.0, 0.0]);
        let shoppers = sim.shoppers().len();
        let dwell = (sim.scenario().shoppers.dwell_min_s * 1000.0) as u64;
        assert_eq!(stays(&sim, 1, dwell), shoppers, "one stay in rails each");
        assert_eq!(stays(&sim, 0, dwell) + stays(&sim, 2, dwell), 0);
    }

    #[test]
    fn areas_of_weight_zero_are_walked_through_never_visited() {
        let sim = boutique_weighted([1.0, 0.0, 1.0]);
        let dwell = (sim.scenario().shoppers.dwell_min_s * 1000.0) as u64;
        // Rails lies between the other two: shoppers cross it, in far less than a dwell.
        assert!(stays(&sim, 1, 1) > 0, "rails is crossed");
        assert_eq!(stays(&sim, 1, dwell / 2), 0, "nobody stops at rails");
        assert!(stays(&sim, 0, dwell) > 0 && stays(&sim, 2, dwell) > 0);
    }

    #[test]
    fn builtin_scenarios_load() {
        for (name, _) in scenario::BUILTIN {
            let s = Scenario::load(&format!("builtin:{name}")).unwrap();
            assert!(!s.zones.is_empty(), "{name}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_adverts() {
        let mut a = sim("boutique");
        let mut b = sim("boutique");
        for _ in 0..5_000 {
            assert_eq!(a.next_advert(), b.next_advert());
        }
    }

    #[test]
    fn a_repeating_store_plays_its_hour_again_with_time_running_on() {
        let sc = Scenario::load_with("builtin:boutique", &["duration_s=120".to_owned()]).unwrap();
        let lap_ms = sc.duration_s * 1000;
        let mut once = Simulation::new(sc.clone());
        let first: Vec<Advert> = std::iter::from_fn(|| once.next_advert()).collect();
        assert!(!first.is_empty());
        let mut again = Simulation::new(sc);
        again.repeat();
        let mut last = Timestamp(0);
        for lap in 0..3u64 {
            for want in &first {
                let got = again.next_advert().expect("a repeating store never ends");
                assert!(got.at >= last, "time runs on across laps");
                last = got.at;
                // The same world, moved on by a lap.
                let mut shifted = want.clone();
                shifted.at = Timestamp(want.at.0 + lap * lap_ms);
                assert_eq!(got, shifted, "lap {lap}");
            }
            assert_eq!(again.laps(), lap);
        }
        assert!(again.next_advert().is_some());
        assert_eq!(again.laps(), 3);
    }

    #[test]
    fn a_repeating_store_that_makes_no_adverts_ends_instead_of_spinning() {
        // No beacons and no shoppers: every lap is silent, so repeating would never yield one.
        let mut s = Simulation::new(one_hub_store(""));
        s.repeat();
        assert_eq!(s.next_advert(), None);
    }

    #[test]
    fn adverts_come_in_time_order_and_decode() {
        let mut s = sim("boutique");
        let mut last = Timestamp(0);
        let mut n = 0;
        while let Some(a) = s.next_advert() {
            assert!(a.at >= last, "{:?} after {:?}", a.at, last);
            last = a.at;
            assert!(crate::decode::decode_frames(&a.payload, |_| {}).is_ok());
            n += 1;
        }
        assert!(n > 10_000, "{n}");
        assert!(last <= s.end());
    }

    #[test]
    fn truth_covers_each_shoppers_stay_and_visits_zones() {
        let s = sim("supermarket");
        let mut zone_time = 0u64;
        for sh in s.shoppers() {
            assert_eq!(sh.truth.first().unwrap().0, sh.arrive);
            assert_eq!(sh.truth.last().unwrap().1, sh.depart);
            for w in sh.truth.windows(2) {
                assert_eq!(w[0].1, w[1].0);
            }
            zone_time += sh
                .truth
                .iter()
                .filter(|t| t.2.is_some())
                .map(|t| t.1 - t.0)
                .sum::<u64>();
        }
        assert!(zone_time > 0);
    }

    #[test]
    fn known_shoppers_are_in_the_directory() {
        let s = sim("supermarket");
        let known = s.shoppers().iter().filter(|x| x.customer.is_some()).count();
        assert!(known > 0);
        assert_eq!(s.directory().customer_count(), known);
    }

    #[test]
    fn rssi_falls_with_distance() {
        // One hub, beacons at 1 m and 15 m: the near one is heard much stronger on average.
        let mut s = Simulation::new(one_hub_store(
            r#"
[[beacons]]
id = "near"
kind = "ibeacon"
x = 1.0
y = 0.0
interval_ms = 100
[[beacons]]
id = "far"
kind = "ibeacon"
x = 15.0
y = 0.0
interval_ms = 100
"#,
        ));
        let (mut near, mut far) = (Vec::new(), Vec::new());
        let near_addr = s.beacons[0].address;
        while let Some(a) = s.next_advert() {
            if a.address == near_addr {
                near.push(a.rssi as f64);
            } else {
                far.push(a.rssi as f64);
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        // 10·2.2·log10(15/1.8) ≈ 20 dB apart (heights included), give or take the noise.
        let gap = mean(&near) - mean(&far);
        assert!((12.0..30.0).contains(&gap), "gap {gap}");
        // Packet loss and duty cycle drop some, but most are heard.
        assert!(near.len() > 400, "{}", near.len());
    }

    #[test]
    fn a_zone_without_a_hub_is_heard_by_the_first_hub() {
        let text = r#"
name = "t"
duration_s = 60
[[hubs]]
id = "a"
x = 0.0
y = 0.0
[[hubs]]
id = "b"
x = 9.0
y = 0.0
[[zones]]
id = "own"
[[zones]]
id = "far"
hub = "b"
[[areas]]
zone = "own"
x = 0.0
y = 0.0
radius_m = 2.0
[[areas]]
zone = "far"
x = 9.0
y = 0.0
radius_m = 2.0
[shoppers]
count = 0
arrival_window_s = 1
entrance = [0.0, 0.0]
"#;
        let sc = Scenario::parse(text, "t").unwrap();
        let hub = |i: usize| sc.hub_of(&sc.zones[i]).map(|h| h.id.as_str());
        assert_eq!(hub(0), Some("a"));
        assert_eq!(hub(1), Some("b"));
        // The same rule the daemon applies: the zone's hub is the config's own hub.
        assert_eq!(sc.as_config().hub.hub_id, "a");
        let mut stray = sc.zones[1].clone();
        stray.hub = Some("c".into());
        assert_eq!(sc.hub_of(&stray).map(|h| h.id.as_str()), None);
    }
}
