//! When the MQTT certificates stop being valid. A hub runs for months untouched and its client
//! certificate often for a year: the day it expires the broker refuses the hub and the store goes
//! dark. So the daemon says so in its retained status a month ahead, and `beacond doctor` shows
//! the dates. Judging is pure (`judge` takes `now`); only `read` touches the disk.
//!
//! The daemon judges the certificates it loaded, not the files as they are now: TLS settings are
//! read once (and systemd's credentials copied once) at start, so a renewed file is used only
//! after a restart, and until then the warning must stay.

use std::path::{Path, PathBuf};

use crate::config::MqttConfig;

/// Warning time before a certificate expires: enough for a ticket to be raised and a new
/// certificate rolled out to the hub.
pub const WARN_DAYS: i64 = 30;

const DAY_MS: i64 = 86_400_000;

/// The earliest expiry among the certificates of one file the config names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// The config key naming the file: `mqtt.client_cert` or `mqtt.ca_file`.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Its certificates' earliest notAfter, ms since the Unix epoch.
    pub not_after_ms: i64,
}

/// The certificate files `[mqtt]` names (none without TLS).
pub fn files(m: &MqttConfig) -> Vec<(&'static str, PathBuf)> {
    if !m.url.starts_with("mqtts:") {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(p) = &m.client_cert {
        out.push(("mqtt.client_cert", p.clone()));
    }
    if let Some(p) = &m.ca_file {
        out.push(("mqtt.ca_file", p.clone()));
    }
    out
}

/// Reads the PEM certificates of `path`; their earliest expiry. A file that cannot be read is the
/// connection's problem to report, with its own message: here it is only `Err` with why.
pub fn read(key: &'static str, path: &Path) -> Result<Expiry, String> {
    let data = std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    let mut earliest: Option<i64> = None;
    for pem in x509_parser::pem::Pem::iter_from_buffer(&data) {
        let pem = pem.map_err(|e| format!("{key} {}: {e}", path.display()))?;
        let cert = pem
            .parse_x509()
            .map_err(|e| format!("{key} {}: {e}", path.display()))?;
        let ms = cert.validity().not_after.timestamp().saturating_mul(1000);
        earliest = Some(earliest.map_or(ms, |e| e.min(ms)));
    }
    let not_after_ms =
        earliest.ok_or_else(|| format!("{key} {}: no certificate in it", path.display()))?;
    Ok(Expiry {
        key,
        path: path.to_owned(),
        not_after_ms,
    })
}

/// How the certificates stand, from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Every one is valid for more than [`WARN_DAYS`].
    Valid,
    /// One expires within [`WARN_DAYS`].
    Soon,
    /// One has expired: the broker (or the hub) refuses the connection.
    Expired,
}

/// How `expiries` stand at `now_ms`, and a sentence about the one that expires first.
pub fn judge(expiries: &[Expiry], now_ms: i64) -> Option<(Standing, String)> {
    let first = expiries.iter().min_by_key(|e| e.not_after_ms)?;
    let date = chrono::DateTime::from_timestamp_millis(first.not_after_ms)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| first.not_after_ms.to_string());
    let what = format!("{} {}", first.key, first.path.display());
    let consequence = if first.key == "mqtt.ca_file" {
        "the hub will no longer trust the broker"
    } else {
        "the broker will refuse this hub"
    };
    let left = first.not_after_ms - now_ms;
    Some(if left <= 0 {
        (
            Standing::Expired,
            format!(
                "{what} expired on {date}: {consequence}; install a renewed certificate and \
                 restart beacond"
            ),
        )
    } else if left < WARN_DAYS * DAY_MS {
        (
            Standing::Soon,
            format!(
                "{what} expires on {date}, in {} day(s): then {consequence}; before that, \
                 install a renewed certificate and restart beacond",
                left / DAY_MS
            ),
        )
    } else {
        (
            Standing::Valid,
            format!("{what} is valid until {date} ({} days)", left / DAY_MS),
        )
    })
}

/// What to add when the running daemon loaded certificates whose first expiry, `loaded_ms`, is
/// not that of the files now (`on_disk_ms`): the files were renewed (or replaced) since it
/// started, and only a restart loads them. The standing is the loaded certificates' own; `None`
/// when the two agree.
pub fn against_loaded(on_disk_ms: i64, loaded_ms: i64, now_ms: i64) -> Option<(Standing, String)> {
    if on_disk_ms == loaded_ms {
        return None;
    }
    let date = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| ms.to_string())
    };
    let standing = match loaded_ms - now_ms {
        left if left <= 0 => Standing::Expired,
        left if left < WARN_DAYS * DAY_MS => Standing::Soon,
        _ => Standing::Valid,
    };
    let text = if on_disk_ms > loaded_ms {
        format!(
            "but the running daemon still uses the certificates it loaded at start, the first of \
             which expires on {}: restart it (systemctl restart beacond) to use the renewed files",
            date(loaded_ms)
        )
    } else {
        format!(
            "and the files now expire before the certificates the running daemon loaded at start \
             ({}): a restart would load them",
            date(loaded_ms)
        )
    };
    Some((standing, text))
}

/// The expiries of `files` that can be read; what cannot is the connection's to report.
pub fn read_all(files: &[(&'static str, PathBuf)]) -> Vec<Expiry> {
    files
        .iter()
        .filter_map(|(key, path)| read(key, path).ok())
        .collect()
}

/// What the hub says about `expiries` at `now_ms`: the earliest, and a warning within
/// [`WARN_DAYS`] of it or after it.
pub fn notice(expiries: &[Expiry], now_ms: i64) -> (Option<i64>, Option<String>) {
    let earliest = expiries.iter().map(|e| e.not_after_ms).min();
    let warning = match judge(expiries, now_ms) {
        None | Some((Standing::Valid, _)) => None,
        Some((_, text)) => Some(text),
    };
    (earliest, warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn expiry(key: &'static str, days: i64) -> Expiry {
        Expiry {
            key,
            path: PathBuf::from("/etc/beacond/credentials/x.pem"),
            not_after_ms: NOW + days * DAY_MS,
        }
    }

    #[test]
    fn the_first_to_expire_is_judged_a_month_ahead() {
        assert_eq!(judge(&[], NOW), None);
        let valid = judge(&[expiry("mqtt.client_cert", 200)], NOW).unwrap();
        assert_eq!(valid.0, Standing::Valid);
        assert!(valid.1.contains("(200 days)"), "{}", valid.1);
        let soon = judge(
            &[expiry("mqtt.client_cert", 200), expiry("mqtt.ca_file", 12)],
            NOW,
        )
        .unwrap();
        assert_eq!(soon.0, Standing::Soon);
        assert!(soon.1.starts_with("mqtt.ca_file"), "{}", soon.1);
        assert!(soon.1.contains("in 12 day(s)"), "{}", soon.1);
        assert!(soon.1.contains("no longer trust the broker"), "{}", soon.1);
        let edge = judge(&[expiry("mqtt.client_cert", WARN_DAYS)], NOW).unwrap();
        assert_eq!(edge.0, Standing::Valid);
        let expired = judge(&[expiry("mqtt.client_cert", 0)], NOW).unwrap();
        assert_eq!(expired.0, Standing::Expired);
        assert!(expired.1.contains("the broker will refuse this hub"));
    }

    #[test]
    fn files_renewed_after_the_daemon_loaded_its_certificates_call_for_a_restart() {
        assert_eq!(against_loaded(NOW + DAY_MS, NOW + DAY_MS, NOW), None);
        // Renewed on disk for a year; the daemon's copy expires in 5 days.
        let (standing, text) = against_loaded(NOW + 365 * DAY_MS, NOW + 5 * DAY_MS, NOW).unwrap();
        assert_eq!(standing, Standing::Soon);
        assert!(
            text.contains("still uses the certificates it loaded"),
            "{text}"
        );
        assert!(text.contains("systemctl restart beacond"), "{text}");
        let (standing, _) = against_loaded(NOW + 365 * DAY_MS, NOW - DAY_MS, NOW).unwrap();
        assert_eq!(standing, Standing::Expired);
        let (standing, _) = against_loaded(NOW + 365 * DAY_MS, NOW + 90 * DAY_MS, NOW).unwrap();
        assert_eq!(standing, Standing::Valid);
        // Replaced by files that expire sooner: the daemon is fine until it restarts.
        let (standing, text) = against_loaded(NOW + 5 * DAY_MS, NOW + 365 * DAY_MS, NOW).unwrap();
        assert_eq!(standing, Standing::Valid);
        assert!(text.contains("a restart would load them"), "{text}");
    }

    #[test]
    fn a_pem_file_is_read_to_its_earliest_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let cert = |y: i32| {
            let mut p = rcgen::CertificateParams::new(vec!["hub".to_owned()]).unwrap();
            p.not_after = rcgen::date_time_ymd(y, 6, 1);
            p.self_signed(&rcgen::KeyPair::generate().unwrap())
                .unwrap()
                .pem()
        };
        let path = dir.path().join("chain.pem");
        std::fs::write(&path, cert(2031) + &cert(2029)).unwrap();
        let e = read("mqtt.client_cert", &path).unwrap();
        assert_eq!(
            chrono::DateTime::from_timestamp_millis(e.not_after_ms)
                .unwrap()
                .format("%Y-%m-%d")
                .to_string(),
            "2029-06-01"
        );
        std::fs::write(&path, "not a certificate").unwrap();
        assert!(read("mqtt.client_cert", &path).is_err());
        // Files that cannot be read say nothing here; the connection reports them.
        assert_eq!(
            read_all(&[("mqtt.ca_file", dir.path().join("missing.pem"))]),
            []
        );
        let soon = expiry("mqtt.client_cert", 3);
        let (earliest, warning) = notice(std::slice::from_ref(&soon), NOW);
        assert_eq!(earliest, Some(soon.not_after_ms));
        assert!(warning
            .unwrap()
            .ends_with("install a renewed certificate and restart beacond"));
        assert_eq!(notice(&[], NOW), (None, None));
    }
}
