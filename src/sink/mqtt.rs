//! The `mqtt` sink: the platform's view of a hub.
//!
//! Every record is first taken into the durable [`Spool`], which writes it to disk unless the broker
//! acknowledges it within 200 ms. One connection task owns rumqttc's event loop and is the only one
//! that publishes. So the order in which it hands messages to the client is the order of the
//! client's `Outgoing::Publish` events, and that is how a broker's PUBACK is traced back to the spool
//! entry it acknowledges: rumqttc gives no per-message token, and [`InFlight`] keeps the pairing.
//! The task publishes with `try_publish` and never awaits the request channel from the task that
//! polls (that deadlocks when the channel is full). It keeps at most [`WINDOW`] messages in flight,
//! and after every ConnAck it replays the spool from the start, since a clean session drops
//! whatever was in flight. Reconnects back off exponentially with jitter, forever.
//!
//! Topics (`{prefix}/{store}/{hub}/…`) and payloads are documented in `docs/mqtt.md` and
//! `docs/asyncapi.yaml`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport};
use serde_json::{json, Value};
use thiserror::Error;
use tokio::sync::{mpsc, Notify};

use super::inflight::InFlight;
use super::spool::{DiskState, Message, Priority, Spool};
use super::twin::{Twin, TwinWatch};
use super::Record;
use crate::config::{Config, MqttConfig};
use crate::shutdown::Shutdown;
use crate::time::Timestamp;

/// Messages handed to the client and not yet acknowledged, at most.
pub const WINDOW: usize = 64;
/// Schema version of every payload; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;
/// How long an accepted message may wait for the broker's acknowledgement before it is written to
/// the spool on disk (one synced write for all that waits).
const INGEST_WINDOW: Duration = Duration::from_millis(200);
/// How long a finishing sink keeps sending before leaving the rest in the spool.
const FINISH_GRACE: Duration = Duration::from_secs(10);
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The MQTT sink could not be set up.
#[derive(Debug, Error)]
pub enum MqttError {
    /// The broker URL is not usable.
    #[error("mqtt.url {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A credential or certificate file could not be read.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TLS material is not valid.
    #[error("TLS: {0}")]
    Tls(String),
}

/// The topics of one hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// Retained online/offline state.
    pub status: String,
    /// Enter, dwell, exit.
    pub presence: String,
    /// Offer triggers.
    pub offers: String,
    /// Fixed-beacon fleet health.
    pub beacons: String,
    /// Counters and headcounts.
    pub stats: String,
    /// The platform's customer sync batches, for every hub of the store (subscribed).
    pub sync_customers: String,
    /// This hub's requests for missing sync batches.
    pub sync_request: String,
    /// What this hub hears of known devices, for its peer hubs (`[peers]`).
    pub observations: String,
    /// `{prefix}/{store}`: where the store's other hubs publish.
    store: String,
}

impl Topics {
    /// The topics for `prefix/store/hub`.
    pub fn new(prefix: &str, store: &str, hub: &str) -> Topics {
        let base = format!("{prefix}/{store}/{hub}");
        Topics {
            status: format!("{base}/status"),
            presence: format!("{base}/presence"),
            offers: format!("{base}/offers"),
            beacons: format!("{base}/beacons"),
            stats: format!("{base}/stats"),
            sync_customers: format!("{prefix}/{store}/sync/customers"),
            sync_request: format!("{base}/sync/request"),
            observations: format!("{base}/observations"),
            store: format!("{prefix}/{store}"),
        }
    }

    /// Peer hub `hub`'s retained status.
    pub fn peer_status(&self, hub: &str) -> String {
        format!("{}/{hub}/status", self.store)
    }

    /// Where peer hub `hub` publishes its observations.
    pub fn peer_observations(&self, hub: &str) -> String {
        format!("{}/{hub}/observations", self.store)
    }

    /// The one of `peers` whose `leaf` topic (`status`, `observations`) `topic` is.
    fn peer_of<'a>(&self, topic: &str, leaf: &str, peers: &'a [String]) -> Option<&'a String> {
        let hub = topic
            .strip_prefix(self.store.as_str())?
            .strip_prefix('/')?
            .strip_suffix(leaf)?
            .strip_suffix('/')?;
        peers.iter().find(|p| *p == hub)
    }
}

/// Connection health, for logs, `status` and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Connected to the broker now.
    pub connected: bool,
    /// Successful connections after the first.
    pub reconnects: u64,
    /// The last connection error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Messages acknowledged by the broker.
    pub acknowledged: u64,
    /// Wall-clock ms of the connection loop's last round: a loop that stops going round is stuck.
    pub last_loop_ms: u64,
    /// Messages waiting in the spool.
    pub spool_depth: u64,
    /// Messages dropped because the spool was full, by class.
    pub spool_dropped: std::collections::BTreeMap<String, u64>,
    /// Of the waiting messages, those held in memory because the card refuses writes.
    pub spool_held: u64,
    /// Messages the spool wrote to the card since start.
    pub spool_written: u64,
    /// Why the card refuses the spool's writes, while it does.
    pub spool_write_error: Option<String>,
    /// Bytes free on the card that holds the spool.
    pub disk_free_bytes: Option<u64>,
    /// Less free space than the spool may need ([`DiskState::Low`]).
    pub disk_low: bool,
    /// When the first of the TLS certificates expires, ms since the Unix epoch.
    pub tls_not_after_ms: Option<i64>,
    /// Within a month of that, or after it: what to do.
    pub tls_warning: Option<String>,
    /// Another daemon publishes as this hub (a shared `hub_id`): what to do.
    pub twin_warning: Option<String>,
}

/// The status notice's key while the card is low on space or refuses the spool's writes.
const SPOOL_NOTICE: &str = "spool_disk";
/// The key of the notice about certificates that expire soon (or did).
const CERT_NOTICE: &str = "certificate";
/// The key of the notice about another daemon publishing as this hub.
const TWIN_NOTICE: &str = "duplicate_hub";
/// The status notice about peer hubs that are away.
const PEERS_NOTICE: &str = "peers";
/// How often the loaded certificates' dates are judged again: they do not change, the calendar
/// does.
const CERT_CHECK: Duration = Duration::from_secs(6 * 3600);

/// The status warning for the card in `state`.
fn disk_notice(state: DiskState, spool: &Spool, free: Option<u64>) -> Option<String> {
    const MIB: u64 = 1 << 20;
    match state {
        DiskState::Ok => None,
        DiskState::Low => Some(format!(
            "the card has {} MiB free, less than the spool may need ({} MiB more before spool_max_bytes): \
             a long broker outage would fill it; free space, or lower [mqtt] spool_max_bytes",
            free.unwrap_or(0) / MIB,
            spool.room_needed().div_ceil(MIB)
        )),
        DiskState::Failing => Some(format!(
            "the spool cannot write to disk ({}); messages are held in memory until it can (free space on the card, or replace it)",
            spool.write_error().unwrap_or("unknown error")
        )),
    }
}

/// Everything the sink needs from the config, resolved (files read, URL parsed).
#[derive(Clone)]
pub struct Settings {
    options: MqttOptions,
    topics: Topics,
    store: String,
    hub: String,
    started_at: Timestamp,
    config_hash: String,
    warnings: Vec<String>,
    /// When the TLS certificates loaded for this target expire, which the status warns about.
    cert_expiries: Vec<super::certs::Expiry>,
    /// Problems that come and go while running (a rejected reload), by key; shared by clones.
    notices: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
}

// By hand: MqttOptions' own Debug would print the password.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (host, port) = self.options.broker_address();
        f.debug_struct("Settings")
            .field("broker", &format!("{host}:{port}"))
            .field("store", &self.store)
            .field("hub", &self.hub)
            .finish_non_exhaustive()
    }
}

/// The Last Will: the broker publishes it (retained) when the hub vanishes without a goodbye.
pub fn last_will_payload(store: &str, hub: &str, started_at: Timestamp) -> Vec<u8> {
    // started_at tells this daemon's Will from another's with the same hub id (sink::twin).
    serde_json::to_vec(&json!({
        "schema": SCHEMA_VERSION,
        "state": "offline",
        "reason": "connection lost",
        "store": store,
        "hub": hub,
        "started_at": started_at.to_rfc3339(),
    }))
    .expect("JSON of strings")
}

/// Reads the password file, looking in systemd's `$CREDENTIALS_DIRECTORY` first for a relative name.
fn read_password(path: &Path) -> Result<String, MqttError> {
    let candidate = match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if path.is_relative() && Path::new(&dir).join(path).exists() => {
            Path::new(&dir).join(path)
        }
        _ => path.to_owned(),
    };
    std::fs::read_to_string(&candidate)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
        .map_err(|source| MqttError::File {
            what: "mqtt.password_file",
            path: candidate,
            source,
        })
}

fn tls_config(m: &MqttConfig) -> Result<rustls::ClientConfig, MqttError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    match &m.ca_file {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| MqttError::Tls(format!("mqtt.ca_file {}: {e}", ca.display())))?;
            for c in certs {
                let c =
                    c.map_err(|e| MqttError::Tls(format!("mqtt.ca_file {}: {e}", ca.display())))?;
                roots
                    .add(c)
                    .map_err(|e| MqttError::Tls(format!("mqtt.ca_file {}: {e}", ca.display())))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    // ring, not aws-lc-rs: the latter does not cross-compile for ARMv7 hubs.
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| MqttError::Tls(e.to_string()))?
    .with_root_certificates(roots);
    match (&m.client_cert, &m.client_key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| MqttError::Tls(format!("mqtt.client_cert {}: {e}", cert.display())))?;
            let key_path = credential_path(key);
            let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
                MqttError::Tls(format!("mqtt.client_key {}: {e}", key_path.display()))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| MqttError::Tls(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A relative credential name resolves in `$CREDENTIALS_DIRECTORY` when it exists there.
fn credential_path(path: &Path) -> PathBuf {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if path.is_relative() && Path::new(&dir).join(path).exists() => {
            Path::new(&dir).join(path)
        }
        _ => path.to_owned(),
    }
}

/// How to reach the broker of `m`, logging in as `client_id`: address, credentials, TLS.
fn connect_options(m: &MqttConfig, client_id: String) -> Result<MqttOptions, MqttError> {
    let url = url::Url::parse(&m.url).map_err(|e| MqttError::Url {
        url: m.url.clone(),
        reason: e.to_string(),
    })?;
    let tls = url.scheme() == "mqtts";
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(m.keep_alive_s))
        // The spool, not the broker session, is the source of truth: replayed after every ConnAck.
        .set_clean_session(true)
        .set_inflight(1024)
        .set_max_packet_size(1024 * 1024, 256 * 1024);
    if let Some(user) = &m.username {
        let password = match &m.password_file {
            Some(p) => read_password(p)?,
            None => String::new(),
        };
        options.set_credentials(user.clone(), password);
    }
    if tls {
        options.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(tls_config(m)?)),
        ));
    }
    Ok(options)
}

/// Logs in to the config's broker once, as the daemon would, and says how it went: for `beacond
/// doctor`, before the daemon is started or while it runs.
///
/// The client id is the daemon's with `-doctor` appended, since a broker drops the older of two
/// sessions with one id, and there is no Last Will: a probe that ends must not tell the platform
/// that the hub went offline.
///
/// It also reads the hub's retained status, which says whether some daemon is online as this
/// hub: before the daemon here is started, that is another hub with the same `hub_id`.
pub async fn probe(cfg: &Config, timeout: Duration) -> Result<Probed, String> {
    let options = connect_options(&cfg.mqtt, format!("{}-doctor", cfg.mqtt_client_id()))
        .map_err(|e| e.to_string())?;
    let (host, port) = options.broker_address();
    let how = match (cfg.mqtt.url.starts_with("mqtts:"), &cfg.mqtt.username) {
        (true, Some(u)) => format!("with TLS, as {u}"),
        (true, None) => "with TLS".to_owned(),
        (false, Some(u)) => format!("as {u}"),
        (false, None) => "anonymously".to_owned(),
    };
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    let connack = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e @ rumqttc::ConnectionError::Io(_)) => {
                    return Err(format!(
                        "{}; is the broker running there, and is [mqtt] url right?",
                        describe(&e)
                    ))
                }
                Err(e) => return Err(describe(&e)),
            }
        }
    };
    let result = match tokio::time::timeout(timeout, connack).await {
        Ok(Ok(())) => Ok(format!("logged in to {host}:{port} {how}")),
        Ok(Err(why)) => Err(format!("{host}:{port}: {why}")),
        Err(_) => Err(format!(
            "{host}:{port}: no answer within {} s (a firewall, or not an MQTT broker?)",
            timeout.as_secs()
        )),
    };
    let how = result?;
    // This hub's status, and its peers': (hub, topic).
    let hubs: Vec<(String, String)> = std::iter::once(&cfg.hub.hub_id)
        .chain(&cfg.peers.hubs)
        .map(|h| {
            let t = Topics::new(&cfg.mqtt.topic_prefix, &cfg.hub.store_id, h).status;
            (h.clone(), t)
        })
        .collect();
    let mut statuses: std::collections::HashMap<String, Value> = Default::default();
    let subscribed = hubs
        .iter()
        .filter(|(_, t)| client.try_subscribe(t.clone(), QoS::AtLeastOnce).is_ok())
        .count();
    // A retained message follows its SUBACK at once; an ACL that refuses the subscription or a
    // topic nobody has used yet gives nothing, and the wait ends.
    if subscribed > 0 {
        let mut acked = 0;
        loop {
            let wait = if acked >= subscribed {
                STATUS_WAIT
            } else {
                timeout
            };
            match tokio::time::timeout(wait, eventloop.poll()).await {
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => acked += 1,
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    if let Some((hub, _)) = hubs.iter().find(|(_, t)| *t == p.topic) {
                        if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                            statuses.insert(hub.clone(), v);
                        }
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    let retained_status = statuses.remove(&cfg.hub.hub_id);
    let peer_statuses = cfg
        .peers
        .hubs
        .iter()
        .map(|h| (h.clone(), statuses.remove(h)))
        .collect();
    // A clean goodbye, so the broker does not log a dropped client; best effort.
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
    Ok(Probed {
        how,
        retained_status,
        peer_statuses,
    })
}

/// How long a probe waits for a retained status after its subscription is acknowledged.
const STATUS_WAIT: Duration = Duration::from_millis(500);

/// What [`probe`] found.
#[derive(Clone, Debug)]
pub struct Probed {
    /// How it logged in, in words.
    pub how: String,
    /// The hub's retained status on the broker, if there is one.
    pub retained_status: Option<Value>,
    /// Each `[peers]` hub's retained status, if it has one.
    pub peer_statuses: Vec<(String, Option<Value>)>,
}

impl Settings {
    /// Resolves the `[mqtt]` section: parses the URL, reads the password and TLS files.
    pub fn from_config(cfg: &Config, config_hash: String) -> Result<Settings, MqttError> {
        let m = &cfg.mqtt;
        let topics = Topics::new(&m.topic_prefix, &cfg.hub.store_id, &cfg.hub.hub_id);
        let options = connect_options(m, cfg.mqtt_client_id())?;
        let mut settings = Settings {
            options,
            topics,
            store: cfg.hub.store_id.clone(),
            hub: cfg.hub.hub_id.clone(),
            started_at: Timestamp::now(),
            config_hash,
            warnings: Vec::new(),
            // Read alongside the TLS settings above: what the connection presents, not what a
            // file holds later.
            cert_expiries: super::certs::read_all(&super::certs::files(m)),
            notices: Default::default(),
        };
        settings.set_started_at(settings.started_at);
        Ok(settings)
    }

    /// Sets when this run started, in the status and in the Last Will; settings made for a new
    /// target carry the run's start over with it, or their Will would look like another
    /// daemon's (sink::twin).
    pub fn set_started_at(&mut self, started_at: Timestamp) {
        self.started_at = started_at;
        self.options.set_last_will(LastWill::new(
            &self.topics.status,
            last_will_payload(&self.store, &self.hub, started_at),
            QoS::AtLeastOnce,
            true,
        ));
    }

    /// Adds a problem the platform should see in the hub's retained status (e.g. a spool that had to
    /// be moved aside), until the daemon restarts.
    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// Sets (or with `None` clears) a running problem shown in the retained status's `warnings`.
    pub fn set_notice(&self, key: &str, message: Option<String>) {
        let mut n = self.notices.lock().expect("notices lock");
        match message {
            Some(m) => {
                n.insert(key.to_owned(), m);
            }
            None => {
                n.remove(key);
            }
        }
    }

    /// Judges the certificates' expiry at `now_ms`: sets or clears the status notice about it and
    /// updates `health`; true (and a log line for a warning) when the notice changed.
    fn check_certificates(&self, now_ms: i64, health: &Mutex<Health>) -> bool {
        let (earliest, text) = super::certs::notice(&self.cert_expiries, now_ms);
        {
            let mut h = health.lock().expect("health lock");
            h.tls_not_after_ms = earliest;
            h.tls_warning = text.clone();
        }
        let before = self
            .notices
            .lock()
            .expect("notices lock")
            .get(CERT_NOTICE)
            .cloned();
        if before == text {
            return false;
        }
        if let Some(t) = &text {
            tracing::warn!("{t}");
        }
        self.set_notice(CERT_NOTICE, text);
        true
    }

    /// The topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The retained status payload for `state` (`online` or `offline`).
    pub fn status(&self, state: &str, reason: Option<&str>) -> Vec<u8> {
        let mut v = json!({
            "schema": SCHEMA_VERSION,
            "state": state,
            "store": self.store,
            "hub": self.hub,
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": self.started_at.to_rfc3339(),
            "config_hash": self.config_hash,
            "at": Timestamp::now().to_rfc3339(),
        });
        if let Some(r) = reason {
            v["reason"] = Value::String(r.to_owned());
        }
        let mut warnings = self.warnings.clone();
        warnings.extend(self.notices.lock().expect("notices lock").values().cloned());
        if !warnings.is_empty() {
            v["warnings"] = json!(warnings);
        }
        serde_json::to_vec(&v).expect("JSON of strings")
    }

    /// The spool message for a record: topic, QoS, priority and the enveloped payload, numbered by
    /// `seq`. `None` for a record that is an instruction to the sink, not a message.
    pub fn message(&self, record: &Record, seq: &mut Sequence) -> Option<Message> {
        let mut body = serde_json::to_value(record).expect("records serialise");
        let (topic, priority, qos, customer) = match record {
            Record::Presence(p) => (
                &self.topics.presence,
                Priority::Presence,
                1,
                p.customer_id.clone(),
            ),
            Record::Headcount(_) | Record::Stats(_) => {
                (&self.topics.stats, Priority::Stats, 0, None)
            }
            Record::Beacons(_) => (&self.topics.beacons, Priority::Beacons, 0, None),
            Record::Offer(o) => (
                &self.topics.offers,
                Priority::Offers,
                1,
                Some(o.customer_id.clone()),
            ),
            Record::Purge(_) | Record::Notice { .. } | Record::MqttTarget(_) => return None,
        };
        let mut envelope = serde_json::Map::new();
        envelope.insert("schema".into(), json!(SCHEMA_VERSION));
        envelope.insert(
            "event_id".into(),
            json!(uuid::Uuid::now_v7().hyphenated().to_string()),
        );
        envelope.insert("stream".into(), json!(seq.stream));
        envelope.insert("seq".into(), json!(seq.next(priority)));
        envelope.insert("store".into(), json!(self.store));
        envelope.insert("hub".into(), json!(self.hub));
        if let Value::Object(fields) = &mut body {
            envelope.append(fields);
        }
        Some(Message {
            priority,
            qos,
            topic: topic.clone(),
            customer,
            payload: serde_json::to_vec(&Value::Object(envelope)).expect("JSON"),
        })
    }
}

/// Numbers each topic's messages, 0, 1, 2, …, within a stream that is new with every start of the
/// daemon, so the platform can tell a message that never arrived from one it has not been sent yet:
/// MQTT's acknowledgements end at the broker (docs/mqtt.md). Kept in memory only: a stream id of
/// its own per start costs no write on the card, and the spool keeps each message's number.
#[derive(Debug)]
pub struct Sequence {
    stream: String,
    next: [u64; 4],
}

impl Sequence {
    /// A new stream, numbered from 0 on every topic.
    pub fn new() -> Sequence {
        Sequence {
            stream: uuid::Uuid::now_v7().hyphenated().to_string(),
            next: [0; 4],
        }
    }

    /// The stream's id (a UUIDv7, so streams sort by when they started).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The next number on the topic of `priority` (one topic per priority).
    fn next(&mut self, priority: Priority) -> u64 {
        let n = &mut self.next[priority as usize];
        *n += 1;
        *n - 1
    }
}

impl Default for Sequence {
    fn default() -> Sequence {
        Sequence::new()
    }
}

/// What the connection hands to the customer sync stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncInput {
    /// A (re)connection: time to ask for what was missed.
    Connected,
    /// A payload from the sync topic, exactly as received.
    Batch(Vec<u8>),
}

/// The connection's side of the customer sync: batches out to the sync stage, requests in from it.
#[derive(Debug)]
pub struct SyncLink {
    /// Where received batches go. Full means the sync stage is behind: the batch is dropped and the
    /// gap it leaves is asked for again later, which beats stalling the connection's keep-alive.
    pub inbound: mpsc::Sender<SyncInput>,
    /// Request payloads to publish on the request topic.
    pub requests: mpsc::Receiver<Vec<u8>>,
}

/// The connection's side of sharing observations with the store's other hubs (`[peers]`): batches
/// the core collected go out on this hub's observations topic at QoS 0 (not through the spool: an
/// observation a peer gets late is of no use to it), and peers' batches come in.
#[derive(Debug)]
pub struct PeerLink {
    /// The peer hubs, whose observations topics are subscribed.
    pub peers: Vec<String>,
    /// This hub's batches to publish. Not read while disconnected: the core drops what does not
    /// fit, as it would be too old by the time the broker is back.
    pub outbound: mpsc::Receiver<crate::peers::Batch>,
    /// Peers' batches, checked, to the core. Full means the core is behind: the batch is dropped.
    pub inbound: mpsc::Sender<crate::peers::Batch>,
}

/// Runs the sink: spools every record from `rx`, and publishes the spool to the broker until shutdown.
/// With `sync`, it also subscribes to the customer sync topic and carries the sync stage's traffic.
pub async fn run(
    mut settings: Settings,
    spool: Spool,
    mut rx: mpsc::Receiver<Record>,
    health: Arc<Mutex<Health>>,
    links: Links,
    shutdown: Shutdown,
) {
    let spool = Arc::new(tokio::sync::Mutex::new(spool));
    let wake = Arc::new(Notify::new());
    let status_changed = Arc::new(Notify::new());
    let (target_tx, target_rx) = tokio::sync::watch::channel::<Option<Settings>>(None);
    let (finish_tx, finish_rx) = tokio::sync::watch::channel(false);
    let mut connection = tokio::spawn(connect_loop(
        settings.clone(),
        spool.clone(),
        Wakers {
            spool: wake.clone(),
            status: status_changed.clone(),
            target: target_rx,
        },
        health.clone(),
        links,
        shutdown,
        finish_rx,
    ));
    // Ingest: what arrives is taken into the spool's memory and handed to the connection at once;
    // what the broker has not acknowledged INGEST_WINDOW after the first of it is written in one
    // synced write. Every sync writes whole blocks, so on an SD card a sync per event would cost
    // kilobytes each; a healthy broker acknowledges in milliseconds, so most messages never cost
    // the card anything. A record still in this window when the power goes is lost unless the
    // broker has it: the same window as gathering before writing, and no later to the platform.
    let mut sequence = Sequence::new();
    // What the status says about the card.
    let mut disk = DiskState::Ok;
    // When what was accepted and is not yet on disk must be written.
    let mut persist_at: Option<tokio::time::Instant> = None;
    // Measured again after every write (below); the first stats may come before any.
    health.lock().expect("health lock").disk_free_bytes = spool.lock().await.disk_free_bytes();
    // The first tick is at once: a certificate about to expire shows in the first status.
    let mut cert_check = tokio::time::interval(CERT_CHECK);
    loop {
        let first = tokio::select! {
            r = rx.recv() => match r {
                Some(r) => r,
                None => break,
            },
            _ = cert_check.tick() => {
                if settings.check_certificates(Timestamp::now().0 as i64, &health) {
                    status_changed.notify_one();
                }
                continue;
            }
            _ = sleep_until_some(persist_at) => {
                persist_at = None;
                let mut s = spool.lock().await;
                s.persist().await;
                disk = report(&s, disk, &mut settings, &health, &status_changed);
                continue;
            }
        };
        let mut pending = vec![first];
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => pending.push(r),
                Err(_) => break,
            }
        }
        let mut batch = Vec::new();
        let mut purge: Vec<String> = Vec::new();
        for r in &pending {
            if let Record::MqttTarget(t) = r {
                let mut new = (*t.0).clone();
                // What the platform should still see carries over to the new broker.
                new.warnings = settings.warnings.clone();
                new.notices = settings.notices.clone();
                new.set_started_at(settings.started_at);
                // The new target may name other certificates: judge them before it connects.
                new.check_certificates(Timestamp::now().0 as i64, &health);
                settings = new.clone();
                target_tx.send_replace(Some(new));
                continue;
            }
            if let Record::Notice { key, message } = r {
                settings.set_notice(key, message.clone());
                status_changed.notify_one();
                continue;
            }
            if let Record::Purge(ids) = r {
                // An opt-out: what this batch still holds about them never reaches the spool, and
                // what the spool holds is removed below.
                batch.retain(|m: &Message| m.customer.as_ref().is_none_or(|c| !ids.contains(c)));
                purge.extend(ids.iter().cloned());
                continue;
            }
            let Some(mut m) = settings.message(r, &mut sequence) else {
                continue;
            };
            if let Record::Stats(_) = r {
                // The spool and the connection are this sink's to report.
                let s = spool.lock().await;
                let h = health.lock().expect("health lock").clone();
                m.payload = with_sink_counters(&m.payload, &s, &h);
            }
            batch.push(m);
        }
        let mut s = spool.lock().await;
        s.accept(batch);
        for id in &purge {
            match s.purge_customer(id).await {
                Ok(n) if n > 0 => tracing::info!(
                    messages = n,
                    "removed unsent messages of a customer who opted out"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot purge an opted-out customer's messages from the spool")
                }
            }
        }
        if s.unwritten() >= MAX_BATCH && s.write_error().is_none() {
            // A backlog (the broker is away, or slower than what comes in): write it now rather
            // than keep a window's worth of a busy store in memory. A card that refuses writes is
            // tried once a window, not on every record.
            persist_at = None;
            s.persist().await;
            disk = report(&s, disk, &mut settings, &health, &status_changed);
        } else if s.unwritten() > 0 && persist_at.is_none() {
            persist_at = Some(tokio::time::Instant::now() + INGEST_WINDOW);
        }
        health.lock().expect("health lock").spool_depth = s.depth();
        drop(s);
        wake.notify_one();
    }
    // The pipeline is done (its source ended, or shutdown): let the connection send what it can and
    // say goodbye. What it cannot send in time stays in the spool for the next start.
    let _ = finish_tx.send(true);
    wake.notify_one();
    if tokio::time::timeout(FINISH_GRACE, &mut connection)
        .await
        .is_err()
    {
        connection.abort();
        // abort() only asks; awaiting makes sure the task and its handle on the spool are gone
        // before we return, so whoever runs next (a restart, a test, `beacond cache`) can open it.
        let _ = connection.await;
    }
    let _ = spool.lock().await.flush().await;
}

/// Records from the pipeline taken into the spool at once, at most; also how many accepted and
/// unwritten messages make a write due before its window ends.
const MAX_BATCH: usize = 512;

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// After a spool write: tells store IT and the platform about the card when its state changes
/// (in the retained status), and updates the health counters. Returns the card's state now.
fn report(
    s: &Spool,
    disk: DiskState,
    settings: &mut Settings,
    health: &Mutex<Health>,
    status_changed: &Notify,
) -> DiskState {
    // Against what the status says, not the spool's state before this write: a removal in the
    // connection task may have met the full card first.
    let free = s.disk_free_bytes();
    let next = disk.next(s.write_error().is_some(), free, s.room_needed());
    if next != disk {
        let text = disk_notice(next, s, free);
        if next == DiskState::Low {
            tracing::warn!("{}", text.as_deref().unwrap_or_default());
        }
        settings.set_notice(SPOOL_NOTICE, text);
        status_changed.notify_one();
    }
    let st = s.stats();
    let mut h = health.lock().expect("health lock");
    h.spool_depth = s.depth();
    h.spool_held = s.held();
    h.spool_written = st.written;
    h.disk_free_bytes = free;
    h.disk_low = next == DiskState::Low;
    h.spool_write_error = s.write_error().map(str::to_owned);
    for p in [
        Priority::Stats,
        Priority::Beacons,
        Priority::Presence,
        Priority::Offers,
    ] {
        h.spool_dropped
            .insert(p.as_str().to_owned(), st.dropped[p as usize]);
    }
    next
}

/// Adds the spool's and the connection's counters to a stats payload.
pub fn with_sink_counters(payload: &[u8], spool: &Spool, health: &Health) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let st = spool.stats();
    v["spool"] = json!({
        "depth": spool.depth(),
        "bytes": spool.bytes(),
        "held": spool.held(),
        "written": st.written,
        // As last measured, when the spool last wrote: the same reading `disk_low` came from.
        "disk_free_bytes": health.disk_free_bytes,
        "dropped": {
            "stats": st.dropped[Priority::Stats as usize],
            "beacons": st.dropped[Priority::Beacons as usize],
            "presence": st.dropped[Priority::Presence as usize],
            "offers": st.dropped[Priority::Offers as usize],
        },
    });
    v["mqtt"] = json!({
        "connected": health.connected,
        "reconnects": health.reconnects,
        "acknowledged": health.acknowledged,
    });
    serde_json::to_vec(&v).unwrap_or_else(|_| payload.to_vec())
}

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << attempt.min(8));
    let capped = base.min(MAX_BACKOFF);
    // Full jitter: hubs that lost the same broker must not come back in lockstep.
    let ms = rand::rng().random_range(capped.as_millis() as u64 / 2..=capped.as_millis() as u64);
    Duration::from_millis(ms)
}

async fn connect_loop(
    settings: Settings,
    spool: Arc<tokio::sync::Mutex<Spool>>,
    wakers: Wakers,
    health: Arc<Mutex<Health>>,
    links: Links,
    mut shutdown: Shutdown,
    finish: tokio::sync::watch::Receiver<bool>,
) {
    let Links { sync, peers } = links;
    let (peer_hubs, mut peer_out, peer_in) = match peers {
        Some(l) => (l.peers, Some(l.outbound), Some(l.inbound)),
        None => (Vec::new(), None, None),
    };
    let mut peer_refused: std::collections::HashMap<String, u64> = Default::default();
    let mut peer_watch = crate::peers::PeerWatch::new(&peer_hubs);
    let mut peer_notice: Option<String> = None;
    let Wakers {
        spool: wake,
        status: status_changed,
        target: mut new_target,
    } = wakers;
    let mut settings = settings;
    let (sync_in, mut sync_requests) = match sync {
        Some(l) => (Some(l.inbound), Some(l.requests)),
        None => (None, None),
    };
    let (mut client, mut eventloop) = AsyncClient::new(settings.options.clone(), WINDOW * 2);
    let mut connected = false;
    let mut ever_connected = false;
    let mut attempt = 0u32;
    let mut inflight = InFlight::new();
    let mut twin = TwinWatch::new(settings.started_at);
    loop {
        health.lock().expect("health lock").last_loop_ms = Timestamp::now().0;
        // The loop goes round at least every keep-alive, often enough to withdraw the warning.
        if let Some(gone) = twin.poll(Timestamp::now()) {
            on_twin(gone, &settings, &health);
            if connected {
                publish_online(&client, &settings, &mut inflight);
            }
        }
        if !peer_hubs.is_empty() {
            let now = peer_watch.notice(Timestamp::now());
            if now != peer_notice {
                match &now {
                    Some(text) => tracing::warn!("{text}"),
                    None => tracing::info!("every peer hub is online"),
                }
                settings.set_notice(PEERS_NOTICE, now.clone());
                peer_notice = now;
                if connected {
                    publish_online(&client, &settings, &mut inflight);
                }
            }
        }
        if let Some(acked) = inflight.take_acked(WINDOW) {
            spool.lock().await.remove(&acked);
            health.lock().expect("health lock").acknowledged += acked.len() as u64;
        }
        let finished = *finish.borrow() && inflight.is_empty() && spool.lock().await.depth() == 0;
        if connected && inflight.len() < WINDOW {
            let room = WINDOW - inflight.len();
            let batch = spool.lock().await.batch_from(inflight.cursor(), room);
            match batch {
                Ok(entries) => {
                    for entry in entries {
                        let qos = if entry.message.qos == 0 {
                            QoS::AtMostOnce
                        } else {
                            QoS::AtLeastOnce
                        };
                        let (seq, level) = (entry.seq, entry.message.qos);
                        if client
                            .try_publish(entry.message.topic, qos, false, entry.message.payload)
                            .is_err()
                        {
                            break;
                        }
                        inflight.handed_entry(seq, level);
                    }
                }
                Err(e) => tracing::error!(error = %e, "spool read failed"),
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.recv(), if !finished => {
                goodbye(&client, &mut eventloop, &settings, connected, "shutdown").await;
                return;
            }
            _ = std::future::ready(()), if finished => {
                goodbye(&client, &mut eventloop, &settings, connected, "shutdown").await;
                return;
            }
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // rumqttc yields, after this ConnAck, what it buffered on the connection that
                    // failed (`EventLoop::clean` keeps `state.events`): a publish whose write failed
                    // still has its `Outgoing::Publish` queued. Taken for this connection's, it
                    // would pair every spool entry with the PUBACK of the message before it, and the
                    // next break would lose one. Only the sync batches among them are worth keeping.
                    for p in take_stale_publishes(&mut eventloop) {
                        forward_sync(sync_in.as_ref(), &settings, &p);
                    }
                    connected = true;
                    attempt = 0;
                    // A clean session dropped whatever was in flight: start over from the spool.
                    inflight.restart();
                    // Subscribed before saying "online", so the retained status that comes back
                    // is the last one before this connection: another daemon's, if one took
                    // this hub's place while it was away (sink::twin).
                    if let Err(e) = client.try_subscribe(settings.topics.status.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(error = %e, "cannot subscribe to this hub's status");
                    }
                    publish_online(&client, &settings, &mut inflight);
                    if let Some(tx) = &sync_in {
                        // Clean sessions drop subscriptions: subscribe on every connection.
                        if let Err(e) = client.try_subscribe(settings.topics.sync_customers.clone(), QoS::AtLeastOnce) {
                            tracing::warn!(error = %e, "cannot subscribe to customer sync");
                        }
                        let _ = tx.try_send(SyncInput::Connected);
                    }
                    for peer in &peer_hubs {
                        if let Err(e) = client.try_subscribe(settings.topics.peer_observations(peer), QoS::AtMostOnce) {
                            tracing::warn!(error = %e, %peer, "cannot subscribe to a peer hub's observations");
                        }
                        if let Err(e) = client.try_subscribe(settings.topics.peer_status(peer), QoS::AtLeastOnce) {
                            tracing::warn!(error = %e, %peer, "cannot subscribe to a peer hub's status");
                        }
                    }
                    peer_watch.connected(Timestamp::now());
                    let mut h = health.lock().expect("health lock");
                    if ever_connected {
                        h.reconnects += 1;
                    }
                    h.connected = true;
                    h.last_error = None;
                    ever_connected = true;
                    tracing::info!(topics = %settings.topics.status, "connected to the MQTT broker");
                }
                // Not connected here means leaving on purpose after a mismatch: what still goes
                // out before the disconnect pairs with nothing.
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) if connected => {
                    if let Err(e) = inflight.on_outgoing(pkid) {
                        // No PUBACK on this connection can be trusted to say which entry it
                        // acknowledges: start over, and what is unacknowledged is sent again.
                        tracing::error!(error = %e, "lost track of which message the broker acknowledges; reconnecting to send the unacknowledged ones again");
                        inflight.forget();
                        connected = false;
                        let _ = client.try_disconnect();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == settings.topics.status => {
                    if let Some(found) = twin.on_status(Timestamp::now(), &p.payload, p.retain) {
                        on_twin(found, &settings, &health);
                        publish_online(&client, &settings, &mut inflight);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(peer) = settings.topics.peer_of(&p.topic, "observations", &peer_hubs) {
                        forward_peer(peer_in.as_ref(), peer, &p.payload, &mut peer_refused);
                    } else if let Some(peer) = settings.topics.peer_of(&p.topic, "status", &peer_hubs) {
                        peer_watch.on_status(peer, &p.payload);
                    } else {
                        forward_sync(sync_in.as_ref(), &settings, &p);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    inflight.on_puback(ack.pkid);
                }
                Ok(_) => {}
                Err(e) => {
                    let message = describe(&e);
                    if connected || attempt == 0 {
                        tracing::warn!(error = %message, "MQTT connection failed; retrying with backoff");
                    } else {
                        tracing::debug!(error = %message, attempt, "MQTT connection still failing");
                    }
                    connected = false;
                    {
                        let mut h = health.lock().expect("health lock");
                        h.connected = false;
                        h.last_error = Some(message);
                    }
                    let wait = backoff(attempt);
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.recv() => return,
                    }
                }
            },
            _ = wake.notified(), if connected => {}
            changed = new_target.changed() => {
                let new = if changed.is_ok() { new_target.borrow_and_update().clone() } else { None };
                if let Some(new) = new {
                    goodbye(&client, &mut eventloop, &settings, connected, "reconfigured").await;
                    let (host, port) = new.options.broker_address();
                    tracing::info!(%host, port, "MQTT target changed by a reload; connecting to it");
                    settings = new;
                    // Other topics, perhaps another broker: what was seen on the old ones is moot.
                    twin = TwinWatch::new(settings.started_at);
                    on_twin(Twin::Gone, &settings, &health);
                    (client, eventloop) = AsyncClient::new(settings.options.clone(), WINDOW * 2);
                    connected = false;
                    attempt = 0;
                    inflight.restart();
                    health.lock().expect("health lock").connected = false;
                } else if changed.is_err() {
                    // The ingest side is gone; nothing more will change.
                    new_target = tokio::sync::watch::channel(None).1;
                }
            }
            _ = status_changed.notified(), if connected => {
                publish_online(&client, &settings, &mut inflight);
            }
            batch = recv_some(&mut peer_out), if connected => {
                if let Some(b) = batch {
                    // QoS 0: a lost batch costs a peer a quarter second of this hub's signal; a
                    // repeated one would arrive too late to use.
                    if client
                        .try_publish(settings.topics.observations.clone(), QoS::AtMostOnce, false, b.encode())
                        .is_ok()
                    {
                        inflight.handed_other(0);
                    }
                }
            }
            req = recv_some(&mut sync_requests), if connected => {
                if let Some(payload) = req {
                    if client
                        .try_publish(settings.topics.sync_request.clone(), QoS::AtLeastOnce, false, payload)
                        .is_ok()
                    {
                        inflight.handed_other(1);
                    }
                }
            }
        }
    }
}

/// Empties the events rumqttc buffered on a connection that has since failed, and hands back the
/// publishes received on it; call on ConnAck, before polling the new connection.
fn take_stale_publishes(eventloop: &mut rumqttc::EventLoop) -> Vec<rumqttc::Publish> {
    let mut stale_outgoing = 0usize;
    let received = eventloop
        .state
        .events
        .drain(..)
        .filter_map(|ev| match ev {
            Event::Incoming(Packet::Publish(p)) => Some(p),
            Event::Outgoing(Outgoing::Publish(_)) => {
                stale_outgoing += 1;
                None
            }
            _ => None,
        })
        .collect();
    if stale_outgoing > 0 {
        // Rare, and the reason a spool entry could be removed on another's PUBACK: worth a trace.
        tracing::debug!(
            stale_outgoing,
            "dropped publishes the failed connection never finished writing"
        );
    }
    received
}

/// Publishes the retained `online` status with the current warnings.
fn publish_online(client: &AsyncClient, settings: &Settings, inflight: &mut InFlight) {
    if client
        .try_publish(
            settings.topics.status.clone(),
            QoS::AtLeastOnce,
            true,
            settings.status("online", None),
        )
        .is_ok()
    {
        inflight.handed_other(1);
    }
}

/// Says what the twin watch found: the log, the status notice and the health endpoint.
fn on_twin(change: Twin, settings: &Settings, health: &Mutex<Health>) {
    let text = match change {
        Twin::Found(text) => {
            tracing::error!("{text}");
            Some(text)
        }
        Twin::Gone => {
            if health.lock().expect("health lock").twin_warning.is_some() {
                tracing::info!("no other beacond has published as this hub for a while; the warning is withdrawn");
            }
            None
        }
    };
    health.lock().expect("health lock").twin_warning = text.clone();
    settings.set_notice(TWIN_NOTICE, text);
}

/// Passes a batch from the customer sync topic on to the sync stage.
fn forward_sync(
    sync_in: Option<&mpsc::Sender<SyncInput>>,
    settings: &Settings,
    p: &rumqttc::Publish,
) {
    let Some(tx) = sync_in.filter(|_| p.topic == settings.topics.sync_customers) else {
        return;
    };
    if tx.try_send(SyncInput::Batch(p.payload.to_vec())).is_err() {
        tracing::warn!("customer sync is behind; dropped a batch, it will be asked for again");
    }
}

/// Hands a peer's batch to the core, once it is checked. A batch that does not belong (another
/// program on the topic, a newer beacond, a hub with the wrong id) is logged the first time and
/// every thousandth after, so a misconfigured peer cannot fill the journal.
fn forward_peer(
    to: Option<&mpsc::Sender<crate::peers::Batch>>,
    peer: &str,
    payload: &[u8],
    refused: &mut std::collections::HashMap<String, u64>,
) {
    let Some(tx) = to else { return };
    match crate::peers::Batch::decode(payload, peer) {
        Ok(batch) => {
            if tx.try_send(batch).is_err() {
                tracing::debug!(%peer, "the core is behind; dropped a peer's observations");
            }
        }
        Err(e) => {
            let n = refused.entry(peer.to_owned()).or_default();
            if *n % 1000 == 0 {
                tracing::warn!(%peer, error = %e, refused = *n + 1, "refused a peer hub's observations");
            }
            *n += 1;
        }
    }
}

/// The channels between the connection and the pipeline's other stages.
#[derive(Debug, Default)]
pub struct Links {
    /// The customer sync, when the hub syncs customers.
    pub sync: Option<SyncLink>,
    /// Observations shared with peer hubs, when `[peers]` lists any.
    pub peers: Option<PeerLink>,
}

/// What wakes the connection besides the broker.
struct Wakers {
    /// New messages in the spool.
    spool: Arc<Notify>,
    /// The status changed (a notice set or cleared): republish it.
    status: Arc<Notify>,
    /// A new broker, topics or credentials from a reload.
    target: tokio::sync::watch::Receiver<Option<Settings>>,
}

/// The next item of an optional channel; never resolves without one (or once it is closed).
pub(crate) async fn recv_some<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => match r.recv().await {
            Some(v) => Some(v),
            None => {
                *rx = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Publishes the retained `offline` status and disconnects cleanly, so subscribers see the hub leave
/// on purpose rather than through its Last Will.
async fn goodbye(
    client: &AsyncClient,
    eventloop: &mut rumqttc::EventLoop,
    settings: &Settings,
    connected: bool,
    reason: &str,
) {
    if !connected {
        return;
    }
    let _ = client.try_publish(
        settings.topics.status.clone(),
        QoS::AtLeastOnce,
        true,
        settings.status("offline", Some(reason)),
    );
    let _ = client.try_disconnect();
    // Read on until the broker closes the connection after the DISCONNECT: closing with
    // anything unread (the echo of this very status, the hub being subscribed to it) makes the
    // kernel reset the connection, and a broker that sees the reset before the DISCONNECT
    // publishes the Last Will over the goodbye.
    let drain = async { while eventloop.poll().await.is_ok() {} };
    let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
}

/// A connection error in words an operator can act on.
fn describe(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectReturnCode as C;
    match e {
        // Mosquitto answers a wrong password with "not authorised", other brokers with "bad user
        // name or password": both mean the same thing to whoever reads the log.
        rumqttc::ConnectionError::ConnectionRefused(C::BadUserNamePassword | C::NotAuthorized) => {
            "broker refused the login: check mqtt.username and the password file, and the broker's \
              ACL for this hub"
                .into()
        }
        rumqttc::ConnectionError::ConnectionRefused(code) => format!("broker refused: {code:?}"),
        rumqttc::ConnectionError::Tls(t) => {
            format!("TLS: {t} (check mqtt.ca_file and the certificates)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_topics_are_told_apart_from_everything_else() {
        let t = Topics::new("beacond", "s", "hub-a");
        let peers = ["hub-b".to_string()];
        assert_eq!(t.peer_status("hub-b"), "beacond/s/hub-b/status");
        assert_eq!(t.peer_observations("hub-b"), "beacond/s/hub-b/observations");
        assert_eq!(
            t.peer_of("beacond/s/hub-b/status", "status", &peers),
            Some(&peers[0])
        );
        assert_eq!(
            t.peer_of("beacond/s/hub-b/observations", "observations", &peers),
            Some(&peers[0])
        );
        for (topic, leaf) in [
            ("beacond/s/hub-b/observations", "status"),
            ("beacond/s/hub-c/status", "status"),
            ("beacond/s/hub-a/status", "status"),
            ("beacond/s2/hub-b/status", "status"),
            ("beacond/s/x/hub-b/status", "status"),
            ("beacond/s/hub-bstatus", "status"),
            ("beacond/s/sync/customers", "status"),
        ] {
            assert_eq!(t.peer_of(topic, leaf, &peers), None, "{topic}");
        }
    }

    /// Each topic counts on its own from 0, so a QoS 0 stats message lost on the way leaves no gap
    /// on another topic; a new run is a new stream.
    #[test]
    fn each_topic_is_numbered_from_zero_within_a_stream_of_its_own() {
        let mut cfg = Config::default();
        cfg.hub.store_id = "s".into();
        let settings = Settings::from_config(&cfg, "h".into()).unwrap();
        let t = Timestamp(1_767_603_600_000);
        let beacons = Record::Beacons(crate::sink::BeaconsRecord {
            at: t,
            beacons: Vec::new(),
        });
        let headcount = Record::Headcount(crate::sink::HeadcountRecord {
            start: t,
            end: t,
            zones: Vec::new(),
        });
        let mut seq = Sequence::new();
        let numbers: Vec<(String, u64, String)> =
            [&beacons, &headcount, &beacons, &beacons, &headcount]
                .into_iter()
                .map(|r| {
                    let m = settings.message(r, &mut seq).unwrap();
                    let v: Value = serde_json::from_slice(&m.payload).unwrap();
                    (
                        m.topic,
                        v["seq"].as_u64().unwrap(),
                        v["stream"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
        let on = |topic: &str| -> Vec<u64> {
            numbers
                .iter()
                .filter(|n| n.0 == topic)
                .map(|n| n.1)
                .collect()
        };
        assert_eq!(on(&settings.topics().beacons), vec![0, 1, 2]);
        assert_eq!(on(&settings.topics().stats), vec![0, 1]);
        assert!(numbers.iter().all(|n| n.2 == seq.stream()));
        let next_run = Sequence::new();
        assert_ne!(next_run.stream(), seq.stream());
        assert!(next_run.stream() > seq.stream(), "streams sort by start");
    }

    /// The warning is about the certificate the connection presents, loaded at start: a renewed
    /// file on disk does not clear it until a restart (or reload to a new target) loads it.
    #[test]
    fn a_certificate_warning_stays_until_the_renewed_one_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let now_s = Timestamp::now().0 as i64 / 1000;
        let cert = |days: i64| {
            use chrono::Datelike;
            let t = chrono::DateTime::from_timestamp(now_s + days * 86_400, 0).unwrap();
            let mut p = rcgen::CertificateParams::new(vec!["hub".to_owned()]).unwrap();
            p.not_after = rcgen::date_time_ymd(t.year(), t.month() as u8, t.day() as u8);
            p.self_signed(&key).unwrap().pem()
        };
        let pem = dir.path().join("client.pem");
        std::fs::write(&pem, cert(5)).unwrap();
        std::fs::write(dir.path().join("client.key"), key.serialize_pem()).unwrap();
        let mut cfg = Config::default();
        cfg.mqtt.url = "mqtts://broker.invalid:8883".into();
        cfg.mqtt.ca_file = Some(pem.clone());
        cfg.mqtt.client_cert = Some(pem.clone());
        cfg.mqtt.client_key = Some(dir.path().join("client.key"));
        let settings = Settings::from_config(&cfg, "h".into()).unwrap();
        let health = Mutex::new(Health::default());
        let now = Timestamp::now().0 as i64;
        assert!(settings.check_certificates(now, &health));
        let warning = health.lock().unwrap().tls_warning.clone().unwrap();
        assert!(warning.starts_with("mqtt.client_cert"), "{warning}");
        // Renewed on disk: the running connection still presents the old one.
        std::fs::write(&pem, cert(400)).unwrap();
        assert!(!settings.check_certificates(now, &health));
        assert!(health.lock().unwrap().tls_warning.is_some());
        // Loaded (a restart), it is fine.
        let renewed = Settings::from_config(&cfg, "h".into()).unwrap();
        renewed.check_certificates(now, &health);
        assert_eq!(health.lock().unwrap().tls_warning, None);
        let status: Value = serde_json::from_slice(&renewed.status("online", None)).unwrap();
        assert!(status.get("warnings").is_none(), "{status}");
    }

    /// What rumqttc buffered before a connection failed is not yielded as the new connection's:
    /// the stray `Outgoing::Publish` of a publish whose write failed would shift the pairing of
    /// every later message with its PUBACK.
    #[test]
    fn events_of_a_failed_connection_are_dropped_on_connack_but_sync_batches_kept() {
        let (_client, mut eventloop) = AsyncClient::new(MqttOptions::new("hub", "127.0.0.1", 1), 4);
        let batch = rumqttc::Publish::new("beacond/s/sync/customers", QoS::AtLeastOnce, vec![1u8]);
        eventloop.state.events.extend([
            Event::Outgoing(Outgoing::Publish(41)),
            Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(40))),
            Event::Incoming(Packet::Publish(batch.clone())),
        ]);
        assert_eq!(take_stale_publishes(&mut eventloop), vec![batch]);
        assert!(eventloop.state.events.is_empty());
        // With the stray event gone, the next connection's events pair up as handed over.
        let mut f = InFlight::new();
        f.handed_other(1);
        f.handed_entry(0, 1);
        assert!(f.on_outgoing(42).is_ok());
        assert!(f.on_outgoing(43).is_ok());
        f.on_puback(43);
        assert_eq!(f.take_acked(WINDOW), Some(vec![0]));
    }
}
