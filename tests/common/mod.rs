//! Test harness shared by the integration tests: a real Mosquitto on a free loopback port, a
//! subscriber that records everything, the daemon as a child process, and checks on commands run.

#![allow(dead_code)]

pub mod bluez;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// Asserts that a command exited successfully, showing its stderr if not, and hands its output on.
#[track_caller]
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Broker {
    /// Publishes signed sync payloads to a store's customer topic, as the central platform would.
    pub fn publish_sync(&self, store: &str, payloads: Vec<Vec<u8>>) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(beacond::identity::publish::publish(
            &self.url(),
            &format!("beacond/{store}/sync/customers"),
            payloads,
        ))
        .unwrap();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Mosquitto broker owned by a test; killed on drop.
pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    extra: String,
    child: Option<Child>,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        Broker::with(dir, "listener {port} 127.0.0.1\nallow_anonymous true\n")
    }

    /// A broker with its own listener lines; `{port}` is replaced by its port.
    pub fn with(dir: &Path, listeners: &str) -> Broker {
        let port = free_port();
        let mut b = Broker {
            port,
            dir: dir.to_owned(),
            extra: listeners.replace("{port}", &port.to_string()),
            child: None,
        };
        b.restart();
        b
    }

    /// A broker that lets in only `user` with `password` (a mosquitto_passwd file in `dir`).
    pub fn with_password(dir: &Path, user: &str, password: &str) -> Broker {
        let passwd = dir.join("passwd");
        let ok = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&passwd)
            .args([user, password])
            .status()
            .unwrap();
        assert!(ok.success());
        Broker::with(
            dir,
            &format!(
                "listener {{port}} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
                passwd.display()
            ),
        )
    }

    pub fn restart(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "{}persistence true\npersistence_location {}/\n",
                self.extra,
                self.dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker gracefully, so it saves persistent sessions.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "-TERM");
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A network cable between the daemon and the broker that a test can pull out: a TCP relay on a
/// port of its own. Cutting it resets every relayed connection (as a NAT or firewall that drops its
/// state does) and refuses new ones, as a dead uplink does, while the broker and its other clients
/// (the test's subscribers) stay up.
pub struct Cable {
    pub port: u16,
    target: u16,
    state: Arc<Mutex<CableState>>,
}

#[derive(Default)]
struct CableState {
    /// Bumped by every cut: a listener from an older generation stops.
    generation: u64,
    /// The relayed connections, to reset on a cut. Weak: a connection's sockets close (and reset,
    /// without linger) when its two relay threads let go of them.
    links: Vec<std::sync::Weak<Link>>,
    /// How the next connections break, one each.
    breaks: std::collections::VecDeque<Break>,
}

/// How one relayed connection breaks.
#[derive(Clone, Copy, Debug)]
pub enum Break {
    /// Reset once the client (the hub) has sent this many bytes: part-way through its backlog.
    AfterSent(usize),
    /// Reset as soon as the broker's CONNACK has reached the hub, which is then handing its
    /// backlog to the MQTT client: the reset lands while publishes are being written, so a write
    /// fails and not only a read (the case 3103f32 fixed).
    AfterConnAck,
}

/// An MQTT 3.1.1 CONNACK, the first thing a broker sends: fixed header, length, flags, code.
const CONNACK_BYTES: usize = 4;

/// Both sockets of one relayed connection.
struct Link {
    client: std::net::TcpStream,
    server: std::net::TcpStream,
    reset: std::sync::atomic::AtomicBool,
}

impl Link {
    /// Resets both sides: with no linger, the close that follows sends RST, not FIN, so the hub
    /// finds out on its next write as often as on its next read.
    fn reset(&self) {
        self.reset.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in [&self.client, &self.server] {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            // Wakes the relay's blocked reads; their threads then let go of the sockets.
            let _ = s.shutdown(std::net::Shutdown::Read);
        }
    }
}

impl Cable {
    /// A cable, plugged in, to the broker on `target`.
    pub fn to(target: u16) -> Cable {
        let cable = Cable {
            port: free_port(),
            target,
            state: Default::default(),
        };
        cable.mend();
        cable
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Pulls the cable: open connections are reset, new ones are refused.
    pub fn cut(&self) {
        let mut st = self.state.lock().unwrap();
        st.generation += 1;
        for l in st.links.drain(..) {
            if let Some(l) = l.upgrade() {
                l.reset();
            }
        }
        drop(st);
        // The accept loop polls every 20 ms; after this its listener is closed.
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Plugs the cable back in.
    pub fn mend(&self) {
        self.mend_breaking(&[]);
    }

    /// Plugs the cable back in, to break again under each of the next connections as the next of
    /// `breaks` says: a link that keeps dropping while the hub sends its backlog.
    pub fn mend_breaking(&self, breaks: &[Break]) {
        use std::io::ErrorKind;
        // The port was just ours, so binding it again only races with the kernel's cleanup.
        let listener = (0..50)
            .find_map(|_| match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => Some(l),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    None
                }
            })
            .expect("the cable's port is free again");
        listener.set_nonblocking(true).unwrap();
        let state = self.state.clone();
        let generation = {
            let mut st = state.lock().unwrap();
            st.breaks = breaks.iter().copied().collect();
            st.generation
        };
        let target = self.target;
        std::thread::spawn(move || loop {
            if state.lock().unwrap().generation != generation {
                return;
            }
            match listener.accept() {
                Ok((client, _)) => {
                    client.set_nonblocking(false).unwrap();
                    let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                        continue;
                    };
                    let link = Arc::new(Link {
                        client,
                        server,
                        reset: Default::default(),
                    });
                    let mut st = state.lock().unwrap();
                    if st.generation != generation {
                        link.reset();
                        return;
                    }
                    let brk = st.breaks.pop_front();
                    st.links.push(Arc::downgrade(&link));
                    drop(st);
                    let (up, down) = match brk {
                        Some(Break::AfterSent(n)) => (Some(n), None),
                        Some(Break::AfterConnAck) => (None, Some(CONNACK_BYTES)),
                        None => (None, None),
                    };
                    relay(link.clone(), true, up);
                    relay(link, false, down);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(_) => return,
            }
        });
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies one direction of a relayed connection (`upstream`: client to server) until either side
/// closes, then closes both, or until `budget` bytes have gone through, then resets both.
fn relay(link: Arc<Link>, upstream: bool, mut budget: Option<usize>) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let (mut from, mut to) = if upstream {
            (&link.client, &link.server)
        } else {
            (&link.server, &link.client)
        };
        let mut buf = [0u8; 4096];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let n = budget.map_or(n, |b| n.min(b));
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            if let Some(b) = budget.as_mut() {
                *b -= n;
                if *b == 0 {
                    link.reset();
                    return;
                }
            }
        }
        if !link.reset.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = link.client.shutdown(std::net::Shutdown::Both);
            let _ = link.server.shutdown(std::net::Shutdown::Both);
        }
    });
}

pub fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .arg(sig)
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

/// Everything a subscriber receives, kept across broker restarts (persistent session, QoS 1).
pub struct Subscriber {
    got: Arc<Mutex<Vec<(String, Value, bool)>>>,
    subscribed: Arc<std::sync::atomic::AtomicUsize>,
    rt: tokio::runtime::Runtime,
}

impl Subscriber {
    pub fn start(port: u16, id: &str, filter: &str, clean: bool) -> Subscriber {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let subscribed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let subs = subscribed.clone();
        let filter = filter.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(clean)
            .set_keep_alive(Duration::from_secs(5));
        rt.spawn(async move {
            let (client, mut ev) = AsyncClient::new(opts, 100);
            let mut ready = Some(ready_tx);
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .subscribe(filter.clone(), QoS::AtLeastOnce)
                            .await
                            .unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        sink.lock().unwrap().push((p.topic.clone(), v, p.retain));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscribed");
        Subscriber {
            got,
            subscribed,
            rt,
        }
    }

    /// Waits until the subscriber has subscribed again since `since()` was taken (after a broker
    /// restart).
    pub fn wait_resubscribed(&self, since: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.subscriptions() <= since {
            assert!(
                Instant::now() < deadline,
                "the subscriber did not come back"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many times the subscriber has subscribed (once per connection).
    pub fn subscriptions(&self) -> usize {
        self.subscribed.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn messages(&self) -> Vec<(String, Value, bool)> {
        self.got.lock().unwrap().clone()
    }

    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&[(String, Value, bool)]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !f(&self.messages()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.messages().len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Starts `beacond run --config CONFIG`, its log going to `log` when given.
pub fn start_daemon_logging(config: &Path, log: Option<&Path>) -> Child {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::null(),
    };
    Command::new(assert_cmd::cargo::cargo_bin("beacond"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "beacond=debug")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Starts `beacond run --config CONFIG`.
pub fn start_daemon(config: &Path) -> Child {
    start_daemon_logging(config, None)
}

/// Starts `beacond run --config CONFIG` with `RUST_LOG` set to `rust_log` (or unset), its log in
/// `log` when given, and every JSON record it prints collected.
pub fn start_daemon_collecting(
    config: &Path,
    log: Option<&Path>,
    rust_log: Option<&str>,
) -> (Child, Arc<Mutex<Vec<Value>>>) {
    use std::io::BufRead;
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::null(),
    };
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("beacond"));
    cmd.args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(stderr);
    match rust_log {
        Some(l) => cmd.env("RUST_LOG", l),
        None => cmd.env_remove("RUST_LOG"),
    };
    let mut child = cmd.spawn().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    (child, lines)
}

/// The `key` object (`sync`, `scan`, …) of the newest stats message that has one.
pub fn last_stats(msgs: &[(String, Value, bool)], key: &str) -> Option<Value> {
    msgs.iter()
        .rev()
        .find(|(t, v, _)| t.ends_with("/stats") && v.get(key).is_some())
        .map(|(_, v, _)| v[key].clone())
}
