//! Man pages and shell completions, generated from the command line's own definition so they
//! cannot describe options the binary does not have. The Debian package ships the pages from
//! `docs/man/` and the completions from `docs/completions/`; `scripts/gen-man` regenerates both, and
//! a test (tests/cli.rs) fails when they no longer match the binary.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap_mangen::roff::{bold, roman, Roff};

/// The parts of beacond(1) that `--help` has no room for: where things live, what the signals do,
/// what the exit codes mean. Each is (section heading, paragraphs of (term, explanation)).
const SECTIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "FILES",
        &[
            (
                "/etc/beacond/beacond.toml",
                "The config: the hub, MQTT, zones, presence, offers. \
                 /usr/share/doc/beacond/beacond.example.toml documents every key; \
                 beacond check-config checks a file before systemctl reload applies it.",
            ),
            (
                "/etc/beacond/credentials/",
                "Secrets kept out of the config (mode 0700), such as mqtt-password. systemd passes \
                 them to the daemon with LoadCredential=.",
            ),
            (
                "/var/lib/beacond/customers",
                "The customer cache the platform keeps in sync (inspect it with beacond cache).",
            ),
            (
                "/var/lib/beacond/spool",
                "Messages the broker has not acknowledged yet; they survive restarts, outages and \
                 power cuts.",
            ),
            (
                "/var/lib/beacond/offers",
                "Offer cooldowns, daily budgets and visit counts, so a restart repeats no offer.",
            ),
            (
                "/var/lib/beacond/learned.json",
                "The exit margin each hub has learned from its customers' signals (numbers only).",
            ),
            (
                "/usr/share/doc/beacond/",
                "The field guide, the MQTT contract, offers, customer sync and scenario files.",
            ),
        ],
    ),
    (
        "ENVIRONMENT",
        &[
            (
                "BEACOND_CONFIG",
                "The config file when --config is not given (default /etc/beacond/beacond.toml).",
            ),
            (
                "RUST_LOG",
                "A log filter such as info or beacond=debug,rumqttc=warn; it wins over [log] level.",
            ),
            (
                "CREDENTIALS_DIRECTORY",
                "Set by systemd: where relative password_file and TLS key paths are looked up first.",
            ),
        ],
    ),
    (
        "SIGNALS",
        &[
            (
                "SIGHUP",
                "Re-read the config (systemctl reload beacond). Zones, presence, offers, scan \
                 filters, the log level and the MQTT target apply in place; a bad file is \
                 rejected with its FILE:LINE:COL and the running config stays.",
            ),
            (
                "SIGTERM, SIGINT",
                "Stop cleanly: the MQTT sink says offline and flushes its spool.",
            ),
        ],
    ),
    (
        "EXIT STATUS",
        &[
            ("0", "Success; for beacond status, the daemon is healthy."),
            (
                "1",
                "The command ran and something failed: the daemon stopped on an error, a payload \
                 did not decode, beacond status found the daemon unhealthy.",
            ),
            (
                "2",
                "The command could not start: a bad config file (every problem is printed as \
                 FILE:LINE:COL), a bad argument, or beacond status could not reach the daemon.",
            ),
        ],
    ),
    (
        "SEE ALSO",
        &[(
            "",
            "systemctl(1), journalctl(1), bluetoothctl(1), mosquitto(8); \
             /usr/share/doc/beacond/README.md and field-guide.md.",
        )],
    ),
];

/// beacond(1)'s DESCRIPTION: `--help` is one line, a man page is where a newcomer reads what the
/// program is and which commands are for whom.
const DESCRIPTION: &str = "\
beacond runs on an in-store Linux hub. It listens to Bluetooth LE through BlueZ: the store's fixed \
beacons (iBeacon, AltBeacon, Eddystone) and the retailer's app when a customer has opted in. It \
recognises known customers from a local cache the central platform keeps in sync, decides who is \
in which zone of the store (enter, dwell, exit), fires offer triggers, and publishes it all over \
MQTT through a spool on disk that survives outages. Nothing that could identify a person who has \
not opted in leaves the hub: other devices only feed counts per zone.

systemd starts the daemon as beacond run (beacond.service). Store IT check a hub with beacond \
doctor before starting it, the running daemon with beacond status and systemctl status beacond, \
and a config with beacond check-config before systemctl reload beacond applies it.

Field engineers tune zones with beacond scan (what the hub hears, live), beacond calibrate (the \
thresholds a reference device suggests), beacond record (a recording that can leave the hub) and \
beacond offers explain. beacond demo and beacond simulate run the same pipeline on a simulated \
store; beacond decode, beacond token, beacond sync-keygen and beacond sync-publish are references \
for app and platform developers.";

/// Writes beacond(1) and one page per subcommand (beacond-run(1), beacond-cache-stats(1), …) into
/// `dir`; returns the files written.
pub fn write_pages(cmd: clap::Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // As clap_mangen::generate_to does: without the `help` subcommand, and built, so every
    // subcommand knows its full name.
    let mut cmd = cmd.disable_help_subcommand(true).long_about(DESCRIPTION);
    cmd.build();
    let mut written = Vec::new();
    let page = dir.join("beacond.1");
    let mut out = Vec::new();
    render_main(&cmd, &mut out)?;
    std::fs::write(&page, out)?;
    written.push(page);
    write_subcommands(&cmd, dir, &mut written)?;
    Ok(written)
}

fn render_main(cmd: &clap::Command, w: &mut dyn Write) -> io::Result<()> {
    let man = man(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    let mut roff = Roff::new();
    for (heading, entries) in SECTIONS {
        roff.control("SH", [*heading]);
        for (term, text) in *entries {
            if term.is_empty() {
                roff.text([roman(*text)]);
            } else {
                roff.control("TP", []);
                roff.text([bold(*term)]);
                roff.text([roman(*text)]);
            }
        }
    }
    roff.to_writer(w)?;
    man.render_version_section(w)
}

fn write_subcommands(
    cmd: &clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = man(sub.clone());
        let page = dir.join(man.get_filename());
        let mut out = Vec::new();
        man.render(&mut out)?;
        let mut roff = Roff::new();
        roff.control("SH", ["SEE ALSO"]);
        roff.text([bold("beacond"), roman("(1)")]);
        roff.to_writer(&mut out)?;
        std::fs::write(&page, out)?;
        written.push(page);
        write_subcommands(sub, dir, written)?;
    }
    Ok(())
}

fn man(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd)
        .source(concat!("beacond ", env!("CARGO_PKG_VERSION")))
        .manual("beacond manual")
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(cmd: &mut clap::Command, shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, cmd, "beacond", out);
}
