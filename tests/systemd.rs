//! The systemd unit and the D-Bus policy as shipped: `systemd-analyze verify` accepts the unit,
//! `systemd-analyze security` rates it OK or better, and dbus-daemon loads the policy.

mod common;

use std::path::Path;
use std::process::Command;

/// The unit with ExecStart pointing at the binary under test (verify checks it is executable).
fn unit_under_test(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/beacond.service"
    ))
    .unwrap();
    let bin = assert_cmd::cargo::cargo_bin("beacond");
    let text = text.replace(
        "ExecStart=/usr/bin/beacond",
        &format!("ExecStart={}", bin.display()),
    );
    let p = dir.join("beacond.service");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_unit_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    // verify also opens the unit's Documentation=man:beacond(1): find it where the package puts
    // the page it ships from docs/man.
    let man1 = dir.path().join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/docs/man/beacond.1"),
        man1.join("beacond.1"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("beacond.service"),
        "warnings about the unit: {stderr}"
    );
}

#[test]
fn the_unit_is_rated_ok_by_systemd_analyze_security() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for beacond.service"))
        .unwrap_or_else(|| {
            panic!(
                "no rating:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // "→ Overall exposure level for beacond.service: 1.3 OK 🙂"
    let score: f64 = line
        .split(": ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(line.contains(" OK") || line.contains("SAFE"), "{line}");
    assert!(
        score <= 2.0,
        "exposure {score} (docs/deploy.md records 1.3): {line}"
    );
}

#[test]
fn dbus_daemon_loads_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/beacond-dbus.conf");
    let included = dir.path().join("system.d");
    std::fs::create_dir(&included).unwrap();
    std::fs::copy(policy, included.join("beacond.conf")).unwrap();
    let socket = dir.path().join("bus");
    let conf = dir.path().join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n \
             \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\n\
             <type>system</type>\n<listen>unix:path={}</listen>\n<auth>EXTERNAL</auth>\n\
             <policy context=\"default\"><allow user=\"*\"/></policy>\n<include>{}</include>\n</busconfig>\n",
            socket.display(),
            included.join("beacond.conf").display()
        ),
    )
    .unwrap();
    let out = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--fork", "--print-pid"])
        .output()
        .unwrap();
    common::assert_success(&out);
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Command::new("kill").arg(&pid).status().unwrap();
}
