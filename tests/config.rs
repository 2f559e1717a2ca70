//! The config contract: the example is valid and documents every key; mistakes exit 2 with
//! FILE:LINE:COL messages that say what would be valid.

use std::path::Path;

use assert_cmd::Command;
use beacond::config::Config;
use predicates::prelude::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/beacond.example.toml");

fn beacond() -> Command {
    Command::cargo_bin("beacond").unwrap()
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn example_config_is_valid_and_summarised() {
    beacond()
        .args(["check-config", EXAMPLE])
        .assert()
        .success()
        .stdout(predicate::str::contains("zones: 2"))
        .stdout(predicate::str::contains("offers: 1"))
        .stdout(predicate::str::contains("mqtt://localhost:1883"));
}

#[test]
fn defaults_are_valid_and_an_empty_file_is_a_valid_config() {
    assert_eq!(Config::parse("").unwrap(), Config::default());
}

#[test]
fn the_effective_config_writes_out_defaults_and_inherited_values_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        &dir,
        "hub.toml",
        "[hub]\nhub_id = \"north\"\n[presence]\nmeasured_power = -61\n\
         [[zones]]\nid = \"till\"\nenter_rssi = -66\nexit_rssi = -76\n\
         [[zones]]\nid = \"door\"\nhub = \"south\"\nmeasured_power = -55\n",
    );
    let out = beacond()
        .args(["check-config", "--effective"])
        .arg(&file)
        .assert()
        .success()
        .get_output()
        .clone();
    let text = String::from_utf8(out.stdout).unwrap();
    let effective = Config::parse(&text).unwrap_or_else(|p| panic!("{p:?}\n{text}"));
    let till = &effective.zones[0];
    // What the file said, what it left at the default, and what the zone inherits.
    assert_eq!((till.enter_rssi, till.exit_rssi), (-66, -76));
    assert_eq!(till.absence_timeout_s, 15.0);
    assert_eq!(till.dwell_marks_s, [30, 120, 300]);
    assert_eq!(till.name.as_deref(), Some("till"));
    assert_eq!(till.hub.as_deref(), Some("north"));
    assert_eq!(till.measured_power, Some(-61));
    assert_eq!(
        till.path_loss_exponent,
        Some(effective.presence.path_loss_exponent)
    );
    // A zone's own values win over what it would inherit.
    let door = &effective.zones[1];
    assert_eq!(door.hub.as_deref(), Some("south"));
    assert_eq!(door.measured_power, Some(-55));
    assert_eq!(
        effective.mqtt.client_id.as_deref(),
        Some("beacond-store-1-north")
    );
    assert!(text.contains("absence_timeout_s = 15.0"), "{text}");

    // Read back, it is the config the daemon runs, and writing it out again changes nothing.
    let original = Config::load(&file).unwrap();
    assert_eq!(effective, original.effective());
    assert_eq!(effective.effective(), effective);
    // So do the example and the simulated stores (offers, several hubs, every filter).
    let mut configs = vec![(EXAMPLE.to_owned(), Config::load(EXAMPLE.as_ref()).unwrap())];
    for name in ["boutique", "supermarket", "hard", "pharmacy", "electronics"] {
        let sc = beacond::scan::sim::Scenario::load(&format!("builtin:{name}")).unwrap();
        configs.push((name.to_owned(), sc.as_config()));
    }
    for (name, cfg) in configs {
        let cfg = cfg.effective();
        assert_eq!(Config::parse(&cfg.to_toml()).unwrap(), cfg, "{name}");
    }
}

#[test]
fn the_effective_config_of_a_bad_file_is_its_problems() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "bad.toml", "[[zones]]\nid = \"a\"\nenter_rsi = -70\n");
    beacond()
        .args(["check-config", "--effective"])
        .arg(&file)
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("zones[0].enter_rsi"));
}

/// Every key of every section must be documented in the example, so nobody has to read the source.
#[test]
fn example_documents_every_key() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let mut cfg = Config::default();
    // Lists are empty by default; give them one entry so their keys are listed too.
    let full = Config::parse(&text).unwrap();
    cfg.zones = full.zones.clone();
    cfg.offers = full.offers.clone();
    let value = toml::Value::try_from(&cfg).unwrap();
    let mut missing = Vec::new();
    fn walk(v: &toml::Value, text: &str, missing: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, inner) in t {
                    let documented = text.lines().any(|l| {
                        let l = l.trim_start_matches(['#', ' ']);
                        l.starts_with(&format!("{k} ="))
                            || l.starts_with(&format!("[{k}]"))
                            || l.starts_with(&format!("[[{k}]]"))
                            || l.contains(&format!(".{k}]"))
                    });
                    if !documented {
                        missing.push(k.clone());
                    }
                    walk(inner, text, missing);
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|i| walk(i, text, missing)),
            _ => {}
        }
    }
    walk(&value, &text, &mut missing);
    // Optional keys without a default are not serialised; check them by name.
    for k in [
        "replay_file",
        "hub =",
        "measured_power",
        "path_loss_exponent",
        "client_id",
        "username",
        "password_file",
        "ca_file",
        "client_cert",
        "client_key",
        "platform_public_key",
    ] {
        if !text.contains(k) {
            missing.push(k.to_owned());
        }
    }
    assert!(missing.is_empty(), "undocumented keys: {missing:?}");
}

#[test]
fn a_zone_this_hub_cannot_hear_is_a_warning_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "hub.toml",
        "[hub]\nhub_id = \"hub-entrance\"\n\n[[zones]]\nid = \"entrance\"\n\n\
         [[zones]]\nid = \"deli\"\nhub = \"hub-deli\"\nenter_rssi = -70\n",
    );
    // It runs (the other zones work, and a reload or an upgrade must not stop on it), so the
    // exit stays 0, but the line and what to do are named.
    beacond()
        .arg("check-config")
        .arg(&p)
        .assert()
        .success()
        .stdout(predicate::str::contains(format!(
            "{}:9:1: warning: zones[1].hub: zone \"deli\" is measured by hub hub-deli, but this hub \
             (hub-entrance) hears only its own radio: nobody is ever seen in it and offers on it never \
             fire; leave `hub` out to measure it with this hub, move the zone to hub-deli's own \
             config, or list hub-deli in [peers] hubs to share observations with it",
            p.display()
        )))
        .stdout(predicate::str::contains("\n1 warning(s)\n"))
        .stdout(predicate::str::contains("zones[0]").not());
    // Shared with hub-deli, its zone is heard through it (and hub-deli reports it).
    let shared = write(
        &dir,
        "shared.toml",
        &format!(
            "{}[peers]\nhubs = [\"hub-deli\"]\n",
            std::fs::read_to_string(&p).unwrap()
        ),
    );
    beacond()
        .arg("check-config")
        .arg(&shared)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "\npeers: hub-deli (observations shared every 250 ms, used up to 2000 ms old)\n",
        ))
        .stdout(predicate::str::contains("warning").not());
    // The example config, whose zones inherit the hub, has none.
    beacond()
        .args(["check-config", EXAMPLE])
        .assert()
        .success()
        .stdout(predicate::str::contains("warning").not());
}

#[test]
fn misspelt_key_names_file_line_column_and_suggests() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "typo.toml",
        "[[zones]]\nid = \"a\"\nenter_rsi = -70\nexit_rsi = -80\n",
    );
    beacond()
        .arg("check-config")
        .arg(&p)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(format!(
            "{}:3:1: zones[0].enter_rsi: unknown key `enter_rsi`; did you mean `enter_rssi`?",
            p.display()
        )))
        // Every typo at once, not one per run.
        .stderr(predicate::str::contains(format!(
            "{}:4:1: zones[0].exit_rsi: unknown key `exit_rsi`; did you mean `exit_rssi`?",
            p.display()
        )))
        .stderr(predicate::str::contains("2 problem(s) found"))
        // The zone's values are checked once its keys read; the engineer is told to run again.
        .stderr(predicate::str::contains(format!(
            "{}: note: the values in zones[0] are range-checked once the problems above are fixed",
            p.display()
        )));
}

#[test]
fn out_of_range_rssi_and_dangling_zone_reference_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[[zones]]\nid = \"wine\"\nenter_rssi = -200\nexit_rssi = -210\n\n\
                [[offers]]\nid = \"o1\"\nzones = [\"wnie\"]\n";
    let p = write(&dir, "bad.toml", text);
    let out = beacond()
        .arg("check-config")
        .arg(&p)
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    let f = p.display();
    assert!(
        err.contains(&format!(
            "{f}:3:1: zones[0].enter_rssi: -200 dBm is out of range"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:4:1: zones[0].exit_rssi: -210 dBm is out of range"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:8:10: offers[0].zones[0]: no zone has id \"wnie\"; did you mean \"wine\"?"
        )),
        "{err}"
    );
    assert!(err.contains("3 problem(s) found"), "{err}");
    // Every table was read as written, so every check ran: no note promising more.
    assert!(!err.contains("note:"), "{err}");
}

#[test]
fn hysteresis_must_have_exit_below_enter() {
    let problems = Config::parse("[[zones]]\nid = \"a\"\nenter_rssi = -80\nexit_rssi = -70\n")
        .unwrap_err()
        .problems;
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "zones[0].exit_rssi");
    assert_eq!((problems[0].at.line, problems[0].at.col), (4, 1));
    assert!(problems[0].message.contains("must be below enter_rssi"));
}

#[test]
fn silence_gaps_is_zero_or_between_three_and_a_hundred() {
    for ok in ["0", "3", "8", "100"] {
        Config::parse(&format!("[presence]\nsilence_gaps = {ok}\n"))
            .unwrap_or_else(|p| panic!("silence_gaps = {ok}: {p:?}"));
    }
    for bad in ["1", "2.5", "101", "-8", "nan"] {
        let problems = Config::parse(&format!("[presence]\nsilence_gaps = {bad}\n"))
            .unwrap_err()
            .problems;
        assert_eq!(problems[0].key, "presence.silence_gaps", "{bad}");
        assert_eq!(problems[0].at.line, 2, "{bad}");
        assert!(
            problems[0].message.contains("or 0 to leave only by"),
            "{bad}"
        );
    }
}

#[test]
fn a_problem_with_a_default_value_points_at_its_table() {
    // exit_rssi is left at its default (-80), which is above this enter_rssi.
    let problems = Config::parse("\n[[zones]]\nid = \"a\"\nenter_rssi = -90\n")
        .unwrap_err()
        .problems;
    assert_eq!(problems[0].key, "zones[0].exit_rssi");
    assert_eq!(problems[0].at.line, 2);
}

#[test]
fn duplicate_ids_bad_urls_and_keys_are_rejected() {
    let text = r#"
[hub]
store_id = "store/1"
[[zones]]
id = "a"
[[zones]]
id = "a"
[mqtt]
url = "tcp://broker"
topic_prefix = "beacond/#"
[identity]
platform_public_key = "abc"
app_service_uuid = "not-a-uuid"
"#;
    let problems = Config::parse(text).unwrap_err().problems;
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "hub.store_id",
            "zones[1].id",
            "mqtt.url",
            "mqtt.topic_prefix",
            "identity.platform_public_key",
            "identity.app_service_uuid"
        ]
    );
}

#[test]
fn wrong_type_and_syntax_errors_are_located() {
    let p = Config::parse("[hub]\nstore_id = 5\n").unwrap_err().problems;
    assert_eq!(
        (p[0].key.as_str(), p[0].at.line, p[0].at.col),
        ("hub.store_id", 2, 12)
    );
    assert!(p[0].message.contains("expected a string"));
    let p = Config::parse("[hub\n").unwrap_err().problems;
    assert_eq!(p[0].key, "(syntax)");
    assert_eq!(p[0].at.line, 1);
}

#[test]
fn every_misspelt_key_and_wrong_type_is_reported_at_once() {
    let text = r#"[hub]
store_id = 12
[presence]
filter = "kalmn"
silence_gap = 8
[[zones]]
enter_rssi = -70
[[zones]]
id = "till"
enter_rsi = -70
dwell_marks_s = [30, "120"]
[[offers]]
id = 7
zones = "till"
"#;
    let problems = Config::parse(text).unwrap_err().problems;
    let got: Vec<(&str, usize)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.at.line))
        .collect();
    assert_eq!(
        got,
        [
            ("hub.store_id", 2),
            ("presence.filter", 4),
            ("presence.silence_gap", 5),
            // A zone without its required id is named, and the zone after it keeps its index.
            ("zones[0]", 6),
            ("zones[1].enter_rsi", 10),
            ("zones[1].dwell_marks_s[1]", 11),
            ("offers[0].id", 13),
            ("offers[0].zones", 14),
        ],
        "{problems:#?}"
    );
    assert!(problems[2].message.contains("did you mean `silence_gaps`?"));
    assert!(problems[3].message.contains("missing field `id`"));
    // offers[0].id and zones were wrong, not missing: no second problem saying they are absent.
    assert!(
        !problems
            .iter()
            .any(|p| p.message.contains("missing field `zones`")),
        "{problems:#?}"
    );
}

#[test]
fn range_mistakes_show_in_the_same_run_as_typos_where_the_file_was_read_as_written() {
    let text = r#"[hub]
store_id = "s1"
hub_id = 4
[presence]
max_tracked = 0
[mqtt]
urll = "mqtt://broker:1883"
[[zones]]
id = "till"
[[zones]]
id = "door"
enter_rssi = -70
exit_rssi = -60
[[offers]]
id = "o1"
zones = ["tll"]
"#;
    let problems = Config::parse(text).unwrap_err().problems;
    let got: Vec<(&str, usize)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.at.line))
        .collect();
    assert_eq!(
        got,
        [
            ("hub.hub_id", 3),
            ("presence.max_tracked", 5),
            ("mqtt.urll", 7),
            ("zones[1].exit_rssi", 13),
            ("offers[0].zones[0]", 16),
        ],
        "{problems:#?}"
    );
    assert!(problems[1].message.contains("at least 1"));
    assert!(problems[3]
        .message
        .contains("must be below enter_rssi (-70)"));
    assert!(problems[4].message.contains("did you mean \"till\"?"));
    // The hub and mqtt tables each lost a key, so their values wait for the next run.
    assert_eq!(unchecked(text), ["hub", "mqtt"]);
}

/// What `Config::parse` says it could not range-check yet.
fn unchecked(text: &str) -> Vec<String> {
    Config::parse(text).unwrap_err().unchecked
}

/// The keys `Config::parse` finds a problem with, in file order.
fn problem_keys(text: &str) -> Vec<String> {
    Config::parse(text)
        .unwrap_err()
        .problems
        .into_iter()
        .map(|p| p.key)
        .collect()
}

#[test]
fn no_range_problem_is_reported_about_what_was_set_aside() {
    // The first zone's id is a number, so the zone is set aside and the second becomes the
    // first of what was read: a range problem found there must not be named zones[0]. The
    // offer names the set-aside zone, which is there in the file. The hub's mistake is in a
    // table read as written and is reported.
    // A second zone whose exit is above its enter, and an offer naming a zone.
    let door_and_offer = |zone: &str| {
        format!(
            "[[zones]]\nid = \"door\"\nenter_rssi = -70\nexit_rssi = -60\n\
             [[offers]]\nid = \"o1\"\nzones = [\"{zone}\"]\n"
        )
    };
    let text = format!(
        "[hub]\nstore_id = \"s/1\"\n[[zones]]\nid = 5\n{}",
        door_and_offer("5")
    );
    assert_eq!(problem_keys(&text), ["hub.store_id", "zones[0].id"]);
    // The zones lost an item and the offers name zones: both wait for the next run.
    assert_eq!(unchecked(&text), ["zones", "offers"]);

    // A misspelt key in a zone: the zone's exit_rssi is the default (-80), above its enter_rssi,
    // and saying so would be about a value the engineer never wrote. Nor are offers checked
    // against a zone that was not read as written. The other zone is checked.
    let text = format!(
        "[[zones]]\nid = \"till\"\nenter_rssi = -90\nexit_rsi = -98\n{}",
        door_and_offer("tll")
    );
    assert_eq!(
        problem_keys(&text),
        ["zones[0].exit_rsi", "zones[1].exit_rssi"]
    );
    assert_eq!(unchecked(&text), ["zones[0]", "offers"]);

    // A misspelt section: everything else is read with it missing, so no range check runs.
    assert_eq!(
        problem_keys("[presense]\nmax_tracked = 0\n[hub]\nstore_id = \"s/1\"\n"),
        ["presense"]
    );
    // "" is the whole document; so is a syntax error, after which nothing else is read.
    assert_eq!(unchecked("[presense]\nmax_tracked = 0\n"), [""]);
    assert_eq!(unchecked("[hub\n"), [""]);
    // Range problems alone: everything was checked.
    assert!(unchecked("[[zones]]\nid = \"a\"\nenter_rssi = -80\nexit_rssi = -70\n").is_empty());
}

#[test]
fn unreadable_file_is_a_clear_error() {
    beacond()
        .args(["check-config", "/nonexistent/beacond.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "/nonexistent/beacond.toml: cannot read the config file",
        ));
    assert!(!Path::new("/nonexistent").exists());
}

mod recovery {
    use super::*;
    use proptest::prelude::*;

    /// Values of every TOML type, so some of them are wrong wherever they land.
    const VALUES: &[&str] = &[
        "5",
        "-70",
        "\"x\"",
        "true",
        "2.5",
        "[1, \"a\"]",
        "{ a = 1 }",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The example with keys misspelt and values swapped for others, anywhere: parsing never
        /// panics, stops, points inside the file, and names every misspelt key, however many
        /// other mistakes come before it.
        #[test]
        fn every_misspelt_key_is_found_among_other_mistakes(
            edits in prop::collection::vec((0usize..200, 0usize..3, 0usize..VALUES.len()), 1..12)
        ) {
            let example = std::fs::read_to_string(EXAMPLE).unwrap();
            let mut lines: Vec<String> = example.lines().map(str::to_owned).collect();
            let settings: Vec<usize> = (0..lines.len())
                .filter(|&i| !lines[i].starts_with('#') && !lines[i].starts_with('[') && lines[i].contains(" = "))
                .collect();
            let mut misspelt = Vec::new();
            for (pick, what, value) in edits {
                let i = settings[pick % settings.len()];
                let (key, rest) = lines[i].split_once(" = ").unwrap();
                let (key, rest) = (key.to_owned(), rest.to_owned());
                if key.ends_with("_q") || misspelt.iter().any(|(l, _)| *l == i) {
                    continue;
                }
                if what == 0 {
                    let typo = format!("{key}_q");
                    lines[i] = format!("{typo} = {rest}");
                    misspelt.push((i, typo));
                } else {
                    lines[i] = format!("{key} = {}", VALUES[value]);
                }
            }
            let text = lines.join("\n");
            // Swapped values can all happen to be valid; misspelt keys never are.
            let problems = match Config::parse(&text) {
                Ok(_) => {
                    prop_assert!(misspelt.is_empty(), "misspelt keys accepted: {misspelt:?}");
                    Vec::new()
                }
                Err(rejected) => rejected.problems,
            };
            for p in &problems {
                prop_assert!(p.at.line >= 1 && p.at.line <= lines.len() + 1, "{p:?}");
            }
            for (line, typo) in &misspelt {
                prop_assert!(
                    problems.iter().any(|p| p.at.line == line + 1 && p.key.ends_with(typo.as_str())),
                    "{typo} on line {} not reported: {problems:#?}\n{text}", line + 1
                );
            }
        }
    }
}

#[test]
fn an_empty_sim_hub_is_named() {
    let rejected = Config::parse("[scan]\nsource = \"sim\"\nsim_hub = \"\"\n").unwrap_err();
    assert_eq!(rejected.problems.len(), 1, "{rejected:?}");
    assert_eq!(rejected.problems[0].key, "scan.sim_hub");
    assert_eq!(rejected.problems[0].at.line, 3);
    assert!(rejected.problems[0]
        .message
        .starts_with("must not be empty; name one of the scenario's [[hubs]]"));
}

#[test]
fn peer_lists_are_checked_where_they_are_written() {
    let rejected = Config::parse(
        "[hub]\nhub_id = \"hub-a\"\n[mqtt]\nenabled = true\n\
         [peers]\nhubs = [\"hub-b\", \"hub-a\", \"hub-b\", \"hub/c\"]\nmax_lag_ms = 50\n",
    )
    .unwrap_err();
    let got: Vec<(String, usize, &str)> = rejected
        .problems
        .iter()
        .map(|p| (p.key.to_string(), p.at.line, p.message.as_str()))
        .collect();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0].0, "peers.hubs[1]");
    assert_eq!(got[0].1, 6);
    assert!(got[0].2.contains("this hub's own hub_id"), "{got:?}");
    assert_eq!(got[1].0, "peers.hubs[2]");
    assert!(got[1].2.contains("listed twice"), "{got:?}");
    assert_eq!(got[2].0, "peers.hubs[3]");
    assert!(got[2].2.contains("contains '/'"), "{got:?}");
    assert_eq!(got[3].0, "peers.max_lag_ms");
    assert_eq!(got[3].1, 7);
    assert!(got[3].2.contains("use 100 to 60000"), "{got:?}");
    // Sharing goes through the broker.
    let rejected = Config::parse(
        "[hub]\nhub_id = \"hub-a\"\n[mqtt]\nenabled = false\n[peers]\nhubs = [\"hub-b\"]\n",
    )
    .unwrap_err();
    assert_eq!(rejected.problems.len(), 1, "{rejected:?}");
    assert!(rejected.problems[0]
        .message
        .starts_with("hubs share observations through the MQTT broker; set [mqtt] enabled = true"));
    // Off by default, and a list of peers with MQTT on is fine.
    assert!(Config::default().peers.hubs.is_empty());
    Config::parse(
        "[hub]\nhub_id = \"hub-a\"\n[mqtt]\nenabled = true\n[peers]\nhubs = [\"hub-b\"]\n",
    )
    .unwrap();
}
