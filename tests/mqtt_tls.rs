//! TLS, mutual TLS and credentials against a real Mosquitto, with a throwaway CA made by the test.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{start_daemon_logging, Broker, Subscriber};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Days the test's client certificate has left: within the month the hub warns ahead.
const CLIENT_CERT_DAYS: i64 = 10;

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    /// What signs a renewed client certificate: the CA, its key and the client's key.
    issuer: (rcgen::Certificate, KeyPair, KeyPair),
}

impl Pki {
    /// A client certificate for the same key from the same CA, valid for `days` from today.
    fn client_pem(&self, days: i64) -> String {
        let (ca, ca_key, client_key) = &self.issuer;
        let mut p = CertificateParams::new(vec![]).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "hub-window");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + days * 86_400;
        let expiry = chrono::DateTime::from_timestamp(expiry, 0).unwrap();
        {
            use chrono::Datelike;
            p.not_after =
                rcgen::date_time_ymd(expiry.year(), expiry.month() as u8, expiry.day() as u8);
        }
        p.signed_by(client_key, ca, ca_key).unwrap().pem()
    }
}

fn write_pki(dir: &Path) -> Pki {
    // Distinct subject names: with rcgen's default name on every certificate, OpenSSL takes the
    // leaves for self-signed and rejects them as signed by an unknown CA.
    let named = |sans: Vec<String>, cn: &str| {
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = named(vec![], "beacond test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = named(vec!["localhost".to_owned()], "localhost")
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let put = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let mut pki = Pki {
        ca: put("ca.pem", ca.pem()),
        server_cert: put("server.pem", server.pem()),
        server_key: put("server.key", server_key.serialize_pem()),
        client_cert: String::new(),
        client_key: put("client.key", client_key.serialize_pem()),
        issuer: (ca, ca_key, client_key),
    };
    // Valid, but for CLIENT_CERT_DAYS more days only: the hub should warn ahead.
    pki.client_cert = put("client.pem", pki.client_pem(CLIENT_CERT_DAYS));
    pki
}

fn config(dir: &Path, name: &str, mqtt: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "[hub]\nstore_id = \"{name}\"\nhub_id = \"hub-window\"\ndata_dir = {:?}\n\
             [scan]\nsource = \"sim\"\nsim_scenario = \"builtin:boutique\"\nspeed = 100.0\n\
             [mqtt]\n{mqtt}\nkeep_alive_s = 5\n",
            dir.join(format!("data-{name}")).display().to_string()
        ),
    )
    .unwrap();
    p
}

/// Starts the daemon the way systemd would with `LoadCredential=`: credentials in a directory named
/// by `$CREDENTIALS_DIRECTORY`.
fn start_with_credentials(cfg: &Path, creds: &Path, log: &Path) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("beacond"))
        .arg("run")
        .arg("--config")
        .arg(cfg)
        .env("CREDENTIALS_DIRECTORY", creds)
        .env("RUST_LOG", "beacond=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn wait_log(log: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "log never said {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// mqtts:// with a CA file and a client certificate (the broker requires one) delivers events; the
/// same hub without a client certificate is refused, says so, and keeps retrying without crashing.
#[test]
fn mutual_tls_connects_and_a_missing_client_certificate_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path());
    // A plain listener for the test's subscriber, and a TLS one requiring client certificates.
    let tls_port = common::free_port();
    let broker = Broker::with(
        dir.path(),
        &format!(
            "allow_anonymous true\nlistener {{port}} 127.0.0.1\nlistener {tls_port} 127.0.0.1\n\
             cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            pki.ca, pki.server_cert, pki.server_key
        ),
    );
    let sub = Subscriber::start(broker.port, "tls-watch", "beacond/#", true);
    let good = config(
        dir.path(),
        "mtls",
        &format!(
            "url = \"mqtts://localhost:{tls_port}\"\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}",
            pki.ca, pki.client_cert, pki.client_key
        ),
    );
    // The health endpoint, so doctor can ask the daemon which certificates it loaded.
    let health = format!("127.0.0.1:{}", common::free_port());
    let text = std::fs::read_to_string(&good).unwrap();
    std::fs::write(&good, format!("{text}[health]\nlisten = \"{health}\"\n")).unwrap();
    let log = dir.path().join("good.log");
    let mut daemon = start_daemon_logging(&good, Some(&log));
    let online = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sub.wait_for("events over mutual TLS", Duration::from_secs(30), |m| {
            m.iter()
                .any(|(t, v, _)| t == "beacond/mtls/hub-window/status" && v["state"] == "online")
        })
    }));
    assert!(
        online.is_ok(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The certificate works, and the retained status warns that it expires within the month.
    sub.wait_for(
        "a status warning about the certificate",
        Duration::from_secs(10),
        |m| {
            m.iter().any(|(t, v, _)| {
                t == "beacond/mtls/hub-window/status"
                    && v["warnings"].as_array().is_some_and(|w| {
                        w.iter().any(|w| {
                            w.as_str().is_some_and(|w| {
                                w.starts_with("mqtt.client_cert")
                                    && w.contains("day(s): then the broker will refuse this hub")
                            })
                        })
                    })
            })
        },
    );
    // doctor sees the same, beside the running daemon.
    let doctor = || {
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("beacond"))
            .args(["doctor", "--json", "--config"])
            .arg(&good)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let check = |name: &str| {
            v["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["check"] == name)
                .unwrap_or_else(|| panic!("no {name} check: {v}"))
                .clone()
        };
        (check("mqtt"), check("tls"))
    };
    let (mqtt, tls) = doctor();
    assert_eq!(mqtt["status"], "ok", "{mqtt}");
    assert_eq!(tls["status"], "warn", "{tls}");
    let detail = tls["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("expires on"), "{detail}");
    assert!(!detail.contains("running daemon"), "{detail}");
    // Store IT renew the certificate on disk. The file is fine now, but the daemon still
    // presents the old one until it restarts, and doctor says so rather than "valid".
    std::fs::write(&pki.client_cert, pki.client_pem(400)).unwrap();
    let (_, tls) = doctor();
    assert_eq!(tls["status"], "warn", "{tls}");
    let detail = tls["detail"].as_str().unwrap();
    assert!(detail.contains("is valid until"), "{detail}");
    assert!(
        detail.contains("still uses the certificates it loaded at start")
            && detail.contains("systemctl restart beacond"),
        "{detail}"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();

    let bad = config(
        dir.path(),
        "nocert",
        &format!(
            "url = \"mqtts://localhost:{tls_port}\"\nca_file = {:?}",
            pki.ca
        ),
    );
    let log = dir.path().join("bad.log");
    let mut daemon = start_daemon_logging(&bad, Some(&log));
    wait_log(&log, "MQTT connection failed", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon must keep running and retrying"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(!sub
        .messages()
        .iter()
        .any(|(t, _, _)| t.starts_with("beacond/nocert/")));
}

/// A wrong password gives a log line that says what to check, retries, and no crash; the right one
/// (read from systemd's credentials directory) connects.
#[test]
fn a_wrong_password_is_reported_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::with_password(dir.path(), "hub", "s3cret");
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("mqtt-password"), "wrong\n").unwrap();
    let cfg = config(
        dir.path(),
        "pw",
        &format!(
            "url = \"{}\"\nusername = \"hub\"\npassword_file = \"mqtt-password\"",
            broker.url()
        ),
    );
    let log = dir.path().join("pw.log");
    let mut daemon = start_with_credentials(&cfg, &creds, &log);
    let text = wait_log(&log, "broker refused the login", Duration::from_secs(20));
    assert!(
        text.contains("check mqtt.username and the password file"),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon must keep retrying"
    );
    let _ = daemon.kill();
    let _ = daemon.wait();

    // The right password, from the credentials directory, connects.
    std::fs::write(creds.join("mqtt-password"), "s3cret\n").unwrap();
    let log = dir.path().join("pw2.log");
    let mut daemon = start_with_credentials(&cfg, &creds, &log);
    wait_log(
        &log,
        "connected to the MQTT broker",
        Duration::from_secs(20),
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}
