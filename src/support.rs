//! `beacond support-bundle`: what support asks store IT for, in one `.tar.gz` to attach to a
//! ticket, gathered by one command instead of a page of instructions read out over the phone.
//!
//! A bundle leaves the hub, so it holds nothing that could identify a person: not the customer
//! cache, the spool, the offer caps or any recording (only the data directory's file names and
//! sizes), and in the journal every Bluetooth device address and anonymous handle is masked.
//! The config carries no secret (the MQTT password lives in its own file, which is not read);
//! a config that does not load is bundled as it is, with the values of keys that look secret
//! masked.
//! Everything else is what the hub says about itself: versions, the effective config, doctor's
//! findings, the running daemon's `/status` and `/metrics`, what it learned, its service state
//! and its journal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use regex::Regex;
use thiserror::Error;

use crate::config::Config;

/// A bundle could not be written.
#[derive(Debug, Error)]
pub enum SupportError {
    /// Writing the archive failed.
    #[error("{}: cannot write the support bundle: {source}; choose another place with --output", path.display())]
    Write {
        /// The bundle's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is already there.
    #[error("{}: already exists; remove it or choose another --output", path.display())]
    Exists {
        /// The bundle's path.
        path: PathBuf,
    },
}

/// What to gather.
#[derive(Clone, Debug)]
pub struct Options {
    /// The daemon's config file.
    pub config: PathBuf,
    /// How far back the journal goes, as `journalctl --since` takes it (`"3 days ago"`).
    pub since: String,
    /// Run `beacond doctor`'s checks (a real MQTT login: up to 10 s).
    pub doctor: bool,
}

/// The most journal lines a bundle carries: three busy days of a hub that logs little.
const JOURNAL_LINES: u32 = 20_000;

/// One file of the bundle.
#[derive(Clone, Debug)]
pub struct Part {
    /// Its name inside the bundle's directory.
    pub name: &'static str,
    /// Its contents.
    pub body: Vec<u8>,
}

/// A gathered bundle: its files, what each holds (or why one is missing), and the name of the
/// directory they go in.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// `beacond-support-STORE-HUB-STAMP`, the directory inside the archive and the file's stem.
    pub name: String,
    /// The files, `README.txt` first.
    pub parts: Vec<Part>,
    /// One line per file or per thing left out, as in `README.txt`.
    pub contents: Vec<String>,
}

/// The files gathered so far, and the README's lines.
#[derive(Default)]
struct Collect {
    parts: Vec<Part>,
    contents: Vec<String>,
}

impl Collect {
    /// A file, and what it holds.
    fn add(&mut self, name: &'static str, body: String, what: String) {
        self.contents.push(format!("{name}: {what}"));
        self.parts.push(Part {
            name,
            body: body.into_bytes(),
        });
    }

    /// A README line about something not gathered.
    fn note(&mut self, line: String) {
        self.contents.push(line);
    }
}

/// Gathers a bundle at `now` (UTC). Nothing here fails: whatever cannot be had is named in the
/// bundle instead, since a hub that needs support is often one where something does not work.
pub async fn gather(opts: &Options, now: chrono::DateTime<chrono::Utc>) -> Bundle {
    let mut c = Collect::default();

    let loaded = Config::load(&opts.config);
    let (store, hub) = match &loaded {
        Ok(cfg) => (cfg.hub.store_id.clone(), cfg.hub.hub_id.clone()),
        Err(_) => ("unknown".to_owned(), "unknown".to_owned()),
    };
    c.add(
        "system.txt",
        system(opts, now, loaded.as_ref().ok()),
        "beacond's version, the OS, kernel, uptime, memory and the clock".into(),
    );
    match &loaded {
        Ok(cfg) => {
            c.add(
                "config.toml",
                format!(
                    "# {}, as beacond {} uses it (beacond check-config --effective)\n{}",
                    opts.config.display(),
                    env!("CARGO_PKG_VERSION"),
                    cfg.effective().to_toml()
                ),
                "the config with every default written out".into(),
            );
            c.add(
                "config-check.txt",
                crate::doctor::config_accepted(cfg, &opts.config),
                "beacond check-config's verdict".into(),
            );
        }
        Err(e) => {
            if let Ok(text) = std::fs::read_to_string(&opts.config) {
                let (text, masked) = mask_secrets(&text);
                c.add(
                    "config.toml",
                    text,
                    format!(
                        "the config file as it is (it does not load); {masked} value(s) of keys \
                         that look secret masked"
                    ),
                );
            }
            c.add(
                "config-check.txt",
                format!("{}\n", e.report()),
                "why the config does not load; nothing that needs it was gathered".into(),
            );
        }
    }
    if let Ok(cfg) = &loaded {
        if opts.doctor {
            let findings = crate::doctor::check(cfg, &opts.config).await;
            c.add(
                "doctor.json",
                format!("{}\n", crate::doctor::report(&opts.config, &findings)),
                "beacond doctor's findings".into(),
            );
        } else {
            c.note("doctor.json: not gathered (--no-doctor)".into());
        }
        match &cfg.health.listen {
            Some(addr) => {
                let addr = addr.clone();
                let asked = tokio::task::spawn_blocking(move || {
                    (
                        crate::health::get(&addr, "/status"),
                        crate::health::get(&addr, "/metrics"),
                    )
                })
                .await;
                let (status, metrics) = asked.unwrap_or_else(|e| {
                    let why = format!("cannot ask the daemon: {e}");
                    (Err(why.clone()), Err(why))
                });
                for (name, got, what) in [
                    ("status.json", status, "the running daemon's /status"),
                    ("metrics.txt", metrics, "the running daemon's /metrics"),
                ] {
                    match got {
                        Ok(body) => c.add(name, body, what.into()),
                        Err(why) => c.note(format!("{name}: not gathered: {why}")),
                    }
                }
            }
            None => {
                c.note("status.json, metrics.txt: not gathered: [health] listen is not set".into())
            }
        }
        let learned = crate::learned::LearnedFile::in_dir(&cfg.hub.data_dir);
        match std::fs::read_to_string(learned.path()) {
            Ok(text) => c.add(
                "learned.json",
                text,
                "each hub's learned exit margin: sags in dB, no identifiers".into(),
            ),
            Err(e) => c.note(format!(
                "learned.json: not gathered: {}: {e}",
                learned.path().display()
            )),
        }
        c.add(
            "data-dir.txt",
            data_dir_listing(&cfg.hub.data_dir),
            "the data directory's file names and sizes, not their contents".into(),
        );
    }
    let (service, asked) = command(
        "systemctl",
        &[
            "show",
            "beacond",
            "--no-pager",
            "--property=Id,LoadState,UnitFileState,ActiveState,SubState,Result,NRestarts,\
             ExecMainStartTimestamp,ExecMainStatus,MemoryCurrent,TasksCurrent,FragmentPath",
        ],
    );
    c.add(
        "service.txt",
        service,
        if asked {
            "systemd's view of the beacond service: state, restarts, memory".into()
        } else {
            "systemd could not be asked; why is in the file".into()
        },
    );
    let (journal, ok) = command(
        "journalctl",
        &[
            "--unit=beacond",
            "--no-pager",
            "--output=short-iso",
            &format!("--since={}", opts.since),
            &format!("--lines={JOURNAL_LINES}"),
        ],
    );
    let (journal, masked) = mask_devices(&journal);
    let lines = journal.lines().count();
    c.add(
        "journal.txt",
        journal,
        if ok {
            format!(
                "the daemon's journal since {}: {lines} line(s), {masked} device address(es) or \
                 handle(s) masked",
                opts.since
            )
        } else {
            "the daemon's journal could not be read; why is in the file".into()
        },
    );
    c.note(
        "left out: the customer cache, the spool, the offer caps and any recording (they name \
         customers), and the MQTT password file"
            .into(),
    );

    let name = format!(
        "beacond-support-{}-{}-{}",
        file_safe(&store),
        file_safe(&hub),
        now.format("%Y%m%dT%H%M%SZ")
    );
    let readme = format!(
        "beacond support bundle {name}\n\n\
         Made by `beacond support-bundle` on the hub, for a support ticket. Nothing in it can \
         identify a person: it holds no customer data, and Bluetooth device addresses and \
         anonymous handles in the journal are masked.\n\n{}\n",
        c.contents
            .iter()
            .map(|line| format!("- {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    c.parts.insert(
        0,
        Part {
            name: "README.txt",
            body: readme.into_bytes(),
        },
    );
    Bundle {
        name,
        parts: c.parts,
        contents: c.contents,
    }
}

/// Writes `bundle` as a gzip'd tar to `path` (mode 0600: a ticket's attachment, not the
/// world's), all at once: a bundle cut short by a full card is never left behind. Returns its
/// size in bytes.
pub fn write(bundle: &Bundle, path: &Path, mtime: u64) -> Result<u64, SupportError> {
    let failed = |source| SupportError::Write {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        return Err(SupportError::Exists {
            path: path.to_owned(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".beacond-support-")
        .tempfile_in(dir)
        .map_err(failed)?;
    let gz = flate2::write::GzEncoder::new(tmp, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for part in &bundle.parts {
        let mut header = tar::Header::new_gnu();
        header.set_size(part.body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("{}/{}", bundle.name, part.name),
            part.body.as_slice(),
        )
        .map_err(failed)?;
    }
    let mut tmp = tar.into_inner().map_err(failed)?.finish().map_err(failed)?;
    tmp.flush().map_err(failed)?;
    tmp.as_file().sync_all().map_err(failed)?;
    let size = tmp.as_file().metadata().map_err(failed)?.len();
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            SupportError::Exists {
                path: path.to_owned(),
            }
        } else {
            failed(e.error)
        }
    })?;
    Ok(size)
}

/// Masks every Bluetooth device address (`AA:BB:CC:DD:EE:FF`, `AA-BB-…`, BlueZ's
/// `dev_AA_BB_…`) and every anonymous handle (`anon-bc49b5`) in `text`; the text and how many
/// were masked. The daemon logs neither by design; this is for what a library or BlueZ logs in
/// its stead.
pub fn mask_devices(text: &str) -> (String, usize) {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        Regex::new(
            r"(?i)\b(?:[0-9a-f]{2}:){5}[0-9a-f]{2}\b|\b(?:[0-9a-f]{2}-){5}[0-9a-f]{2}\b|dev_(?:[0-9a-f]{2}_){5}[0-9a-f]{2}\b|\banon-[0-9a-f]{6}\b",
        )
        .expect("a valid pattern")
    });
    let mut count = 0;
    let masked = pattern.replace_all(text, |c: &regex::Captures<'_>| {
        count += 1;
        let found = &c[0];
        if found.starts_with("anon-") {
            "anon-xxxxxx".to_owned()
        } else if found.starts_with("dev_") {
            "dev_XX_XX_XX_XX_XX_XX".to_owned()
        } else {
            let sep = if found.contains('-') { "-" } else { ":" };
            ["XX"; 6].join(sep)
        }
    });
    (masked.into_owned(), count)
}

/// Masks the values of keys that look secret (`password = "…"`, `api_token = …`) in a config
/// file that did not load: beacond reads passwords from files, but a file that does not load may
/// hold one written where it does not belong. The text and how many were masked.
pub fn mask_secrets(text: &str) -> (String, usize) {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        Regex::new(
            r#"(?im)^(\s*"?[\w.-]*(?:password|passwd|secret|token|private)[\w.-]*"?\s*=\s*).+$"#,
        )
        .expect("a valid pattern")
    });
    let mut count = 0;
    let masked = pattern.replace_all(text, |c: &regex::Captures<'_>| {
        count += 1;
        format!("{}\"(masked)\"", &c[1])
    });
    (masked.into_owned(), count)
}

/// A name made safe for a file name.
fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Runs `program args…`; its output (or why it could not run) and whether it succeeded.
fn command(program: &str, args: &[&str]) -> (String, bool) {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => {
            (String::from_utf8_lossy(&out.stdout).into_owned(), true)
        }
        Ok(out) => (
            format!(
                "`{program} {}` failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            false,
        ),
        Err(e) => (format!("`{program}` could not run: {e}\n"), false),
    }
}

/// `system.txt`: what support asks first.
fn system(opts: &Options, now: chrono::DateTime<chrono::Utc>, cfg: Option<&Config>) -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "unknown".into());
    let uptime = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .map_or_else(
            || "unknown".into(),
            |s| {
                let s = s as u64;
                format!("{} d {} h {} min", s / 86_400, s / 3600 % 24, s / 60 % 60)
            },
        );
    let clock = match crate::doctor::kernel_clock_synced() {
        Some(true) => "synchronised (NTP)",
        Some(false) => "NOT synchronised: no NTP keeps it",
        None => "unknown",
    };
    let meminfo = read("/proc/meminfo");
    let mem = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map_or_else(|| "unknown".into(), |v| v.trim().to_owned())
    };
    let mut out = format!(
        "beacond {} ({} {})\n\
         collected: {} by `beacond support-bundle --config {}`\n\
         os: {os}\n\
         kernel: {}\n\
         uptime: {uptime}\n\
         memory: total {}, available {}\n\
         clock: {clock}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS,
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        opts.config.display(),
        read("/proc/sys/kernel/osrelease").trim(),
        mem("MemTotal:"),
        mem("MemAvailable:"),
    );
    if let Some(cfg) = cfg {
        out.push_str(&format!(
            "hub: {}/{}\ndata_dir: {}, {}\n",
            cfg.hub.store_id,
            cfg.hub.hub_id,
            cfg.hub.data_dir.display(),
            fs2::available_space(&cfg.hub.data_dir).map_or_else(
                |e| format!("free space unknown ({e})"),
                |b| format!("{b} bytes free")
            )
        ));
    }
    out
}

/// The data directory's files, with sizes: whether the spool is backing up or the card filling,
/// without a byte of what they hold.
fn data_dir_listing(dir: &Path) -> String {
    fn walk(dir: &Path, base: &Path, depth: u32, out: &mut Vec<(String, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            let rel = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .display()
                .to_string();
            if meta.is_dir() {
                if depth < 4 {
                    walk(&path, base, depth + 1, out);
                }
            } else {
                out.push((rel, meta.len()));
            }
        }
    }
    let mut files = Vec::new();
    if let Err(e) = std::fs::read_dir(dir) {
        return format!("{}: {e}\n", dir.display());
    }
    walk(dir, dir, 0, &mut files);
    files.sort();
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    let mut out = format!(
        "{}: {} file(s), {total} bytes\n",
        dir.display(),
        files.len()
    );
    for (name, size) in files {
        out.push_str(&format!("{size:>12}  {name}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_addresses_and_anonymous_handles_are_masked_and_counted() {
        let text = "ERROR bluez: cannot remove /org/bluez/hci0/dev_C0_FF_EE_12_34_56: gone\n\
                    WARN device AA:bb:CC:dd:EE:ff and 01-23-45-67-89-ab, anon-bc49b5 seen\n\
                    INFO started at 2026-12-07T20:45:12Z, 12:34:56 later, uuid \
                    e2c56db5-dffb-48d2-b060-d0f5a71096e0, ipv6 fe80::1:2:3:4\n";
        let (masked, n) = mask_devices(text);
        assert_eq!(n, 4, "{masked}");
        assert!(masked.contains("dev_XX_XX_XX_XX_XX_XX: gone"), "{masked}");
        assert!(
            masked.contains("device XX:XX:XX:XX:XX:XX and XX-XX-XX-XX-XX-XX, anon-xxxxxx seen"),
            "{masked}"
        );
        // Times, UUIDs and IPv6 addresses are not device addresses.
        assert!(
            masked.contains("2026-12-07T20:45:12Z, 12:34:56 later"),
            "{masked}"
        );
        assert!(
            masked.contains("e2c56db5-dffb-48d2-b060-d0f5a71096e0"),
            "{masked}"
        );
        assert!(masked.contains("fe80::1:2:3:4"), "{masked}");
    }

    #[test]
    fn secret_looking_values_are_masked_in_a_config_that_does_not_load() {
        let text = "[mqtt]\nusername = \"hub\"\npassword = \"hunter2\"\n\
                    password_file = \"mqtt-password\"\n[identity]\nplatform_public_key = \"ab\"\n\
                    app_secret=\"s3\"\n";
        let (masked, n) = mask_secrets(text);
        assert_eq!(n, 3, "{masked}");
        assert!(
            !masked.contains("hunter2") && !masked.contains("s3\""),
            "{masked}"
        );
        assert!(masked.contains("password = \"(masked)\""), "{masked}");
        // A public key and a user name are not secrets.
        assert!(masked.contains("platform_public_key = \"ab\""), "{masked}");
        assert!(masked.contains("username = \"hub\""), "{masked}");
    }

    #[test]
    fn ids_become_file_names() {
        assert_eq!(file_safe("store 12/a"), "store-12-a");
        assert_eq!(file_safe("hub-1.b_c"), "hub-1.b_c");
    }

    #[test]
    fn a_bundle_is_written_whole_and_never_over_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = Bundle {
            name: "beacond-support-s-h-x".into(),
            parts: vec![Part {
                name: "README.txt",
                body: b"hello".to_vec(),
            }],
            contents: vec![],
        };
        let path = dir.path().join("b.tar.gz");
        let size = write(&bundle, &path, 0).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&path).unwrap(),
        ));
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["beacond-support-s-h-x/README.txt"]);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        assert!(matches!(
            write(&bundle, &path, 0),
            Err(SupportError::Exists { .. })
        ));
        // Nothing half-written is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
