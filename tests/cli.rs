//! The command-line contract: `decode` answers line N with object N, `run` stops cleanly on signals.

use std::io::Read;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn beacond() -> Command {
    Command::cargo_bin("beacond").unwrap()
}

#[test]
fn decode_answers_each_stdin_line_in_order_and_fails_at_the_end() {
    let input = "02011A1AFF4C000215E2C56DB5DFFB48D2B060D0F5A71096E000640000C5\n\
                 not hex\n\
                 03:03:AA:FE:0A:16:AA:FE:10:EB:02:61:62:63:07\n\
                 02 01 06 05 FF 4C\n\
                 \n";
    let out = beacond()
        .arg("decode")
        .write_stdin(input)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["frames"][0]["major"], 100);
    assert!(lines[1]["error"]
        .as_str()
        .unwrap()
        .contains("invalid character 'n' at column 1"));
    assert_eq!(lines[2]["frames"][0]["url"], "http://abc.com");
    assert_eq!(
        lines[3]["error"],
        "AD structure at byte 3 declares 5 bytes but only 2 follow"
    );
    assert!(lines[4]["error"]
        .as_str()
        .unwrap()
        .starts_with("empty line"));
}

#[test]
fn decode_takes_arguments_and_succeeds_when_all_decode() {
    beacond()
        .args([
            "decode",
            "0303AAFE0A16AAFE10EB0261626307",
            "02010607FF590001020304",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("http://abc.com"))
        .stdout(predicate::function(|s: &str| s.lines().count() == 2));
}

#[test]
fn decode_survives_invalid_utf8_on_stdin() {
    let out = beacond()
        .arg("decode")
        .write_stdin(vec![
            0xff, 0xfe, b'\n', b'0', b'2', b'0', b'1', b'0', b'6', b'\n',
        ])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.lines().next().unwrap().contains("error"));
}

#[test]
fn version_and_help_describe_the_tool() {
    beacond()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::starts_with(concat!(
            "beacond ",
            env!("CARGO_PKG_VERSION")
        )));
    beacond()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("check-config"))
        .stdout(predicate::str::contains("decode"));
}

#[test]
fn run_rejects_a_bad_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[scan]\nsource = \"blues\"\n").unwrap();
    beacond()
        .arg("run")
        .arg("--config")
        .arg(&p)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("did you mean `bluez`?"));
}

/// `run` must stop cleanly, with exit 0, on SIGTERM and on SIGINT.
#[test]
fn run_stops_cleanly_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[hub]\ndata_dir = {:?}\n[mqtt]\nenabled = false\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    for sig in ["-TERM", "-INT"] {
        let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("beacond"))
            .arg("run")
            .arg("--config")
            .arg(&p)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        // Wait for the start line so the signal handlers are installed.
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 256];
        while !seen.contains("beacond started") && Instant::now() < deadline {
            let n = stderr.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(seen.contains("beacond started"), "{seen}");
        StdCommand::new("kill")
            .arg(sig)
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        let mut rest = String::new();
        stderr.read_to_string(&mut rest).unwrap();
        assert!(status.success(), "{sig}: {status:?} {rest}");
        assert!(rest.contains("beacond stopped"), "{rest}");
    }
}
