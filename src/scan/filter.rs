//! `[scan.filters]`: what a source lets into the pipeline. Applied at the source, before anything is
//! decoded for presence, so what is filtered out is counted and never kept.

use crate::config::ScanFilters;
use crate::decode::ad::Advertisement;
use crate::decode::{decode_frames, Frame, ServiceUuid};

/// Why an advertisement was not let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let through.
    Pass,
    /// Weaker than `min_rssi`.
    WeakSignal,
    /// Matches none of the configured company ids, service UUIDs or iBeacon UUIDs.
    NotListed,
}

/// The compiled filters.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    companies: Vec<u16>,
    services: Vec<uuid::Uuid>,
    ibeacons: Vec<uuid::Uuid>,
    /// The retailer's app: its tokens always pass, or a service-UUID list written for beacons would
    /// silently hide every opted-in customer.
    app_uuid: Option<uuid::Uuid>,
    min_rssi: i16,
}

impl Filter {
    /// Compiles validated config. Entries that do not parse were rejected by validation already and
    /// are skipped here.
    pub fn new(f: &ScanFilters, app_uuid: Option<uuid::Uuid>) -> Filter {
        Filter {
            companies: f.company_ids.clone(),
            services: f
                .service_uuids
                .iter()
                .filter_map(|s| parse_service_uuid(s))
                .collect(),
            ibeacons: f
                .ibeacon_uuids
                .iter()
                .filter_map(|s| uuid::Uuid::parse_str(s).ok())
                .collect(),
            app_uuid,
            min_rssi: f.min_rssi,
        }
    }

    /// A filter that lets everything through (`beacond scan` with no config).
    pub fn open() -> Filter {
        Filter {
            min_rssi: i16::MIN,
            ..Filter::default()
        }
    }

    fn lists_empty(&self) -> bool {
        self.companies.is_empty() && self.services.is_empty() && self.ibeacons.is_empty()
    }

    /// Decides on one advertisement.
    pub fn check(&self, rssi: i16, payload: &[u8]) -> Verdict {
        if rssi < self.min_rssi {
            return Verdict::WeakSignal;
        }
        if self.lists_empty() {
            return Verdict::Pass;
        }
        let Ok(ad) = Advertisement::parse(payload) else {
            return Verdict::NotListed;
        };
        if ad
            .manufacturer_data()
            .any(|(c, _)| self.companies.contains(&c))
        {
            return Verdict::Pass;
        }
        let listed = |u: ServiceUuid| {
            let u = u.to_uuid();
            self.services.contains(&u) || self.app_uuid == Some(u)
        };
        if ad.service_data().any(|(u, _)| listed(u)) || ad.service_uuids().any(listed) {
            return Verdict::Pass;
        }
        if !self.ibeacons.is_empty() {
            let mut hit = false;
            let _ = decode_frames(payload, |f| {
                if let Frame::IBeacon(b) = f {
                    hit |= self.ibeacons.contains(&b.uuid);
                }
            });
            if hit {
                return Verdict::Pass;
            }
        }
        Verdict::NotListed
    }
}

/// `"feaa"`, `"0000feaa"` or a full UUID, as `[scan.filters] service_uuids` takes them.
pub fn parse_service_uuid(s: &str) -> Option<uuid::Uuid> {
    let hex = s.len() == 4 || s.len() == 8;
    if hex && s.chars().all(|c| c.is_ascii_hexdigit()) {
        let v = u32::from_str_radix(s, 16).ok()?;
        return Some(ServiceUuid::U32(v).to_uuid());
    }
    uuid::Uuid::parse_str(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::encode::AdBuilder;

    const IB: &str = "e2c56db5-dffb-48d2-b060-d0f5a71096e0";

    fn ibeacon() -> Vec<u8> {
        let mut d = vec![0x02, 0x15];
        d.extend_from_slice(uuid::Uuid::parse_str(IB).unwrap().as_bytes());
        d.extend_from_slice(&[0, 1, 0, 2, 0xc5]);
        AdBuilder::new()
            .manufacturer(0x004c, &d)
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    fn eddystone() -> Vec<u8> {
        AdBuilder::new()
            .service_data(ServiceUuid::U16(0xfeaa), &[0x10, 0xf4, 0])
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    fn filters(f: impl FnOnce(&mut ScanFilters)) -> Filter {
        let mut c = ScanFilters::default();
        f(&mut c);
        Filter::new(&c, None)
    }

    #[test]
    fn empty_lists_let_everything_through_above_the_floor() {
        let f = filters(|c| c.min_rssi = -80);
        assert_eq!(f.check(-70, &ibeacon()), Verdict::Pass);
        assert_eq!(f.check(-70, b"\x02\x01"), Verdict::Pass);
        assert_eq!(f.check(-81, &ibeacon()), Verdict::WeakSignal);
    }

    #[test]
    fn any_list_entry_lets_an_advertisement_through() {
        let by_company = filters(|c| c.company_ids = vec![0x004c]);
        assert_eq!(by_company.check(-50, &ibeacon()), Verdict::Pass);
        assert_eq!(by_company.check(-50, &eddystone()), Verdict::NotListed);
        let by_service = filters(|c| c.service_uuids = vec!["feaa".into()]);
        assert_eq!(by_service.check(-50, &eddystone()), Verdict::Pass);
        assert_eq!(by_service.check(-50, &ibeacon()), Verdict::NotListed);
        let by_ibeacon = filters(|c| c.ibeacon_uuids = vec![IB.into()]);
        assert_eq!(by_ibeacon.check(-50, &ibeacon()), Verdict::Pass);
        let other = filters(|c| c.ibeacon_uuids = vec![uuid::Uuid::nil().to_string()]);
        assert_eq!(other.check(-50, &ibeacon()), Verdict::NotListed);
        assert_eq!(other.check(-50, b"\xff\xff"), Verdict::NotListed);
    }

    #[test]
    fn the_app_service_always_passes() {
        let app = uuid::Uuid::parse_str("6e400001-b5a3-f393-e0a9-e50e24dcca9e").unwrap();
        let c = ScanFilters {
            company_ids: vec![0x0059],
            ..Default::default()
        };
        let f = Filter::new(&c, Some(app));
        let token = AdBuilder::new()
            .service_data(
                ServiceUuid::U128(*app.as_bytes()),
                &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            )
            .unwrap()
            .as_bytes()
            .to_vec();
        assert_eq!(f.check(-60, &token), Verdict::Pass);
    }
}
