//! A mock BlueZ on a private D-Bus system bus, for the `bluez` source's tests: `dbus-daemon` with its
//! own socket, python-dbusmock's `bluez5` template serving `org.bluez`, and a small Python driver to
//! add adapters and devices and make them advertise. Everything is stopped by pid on drop, even when a
//! test fails. Needs Debian's `dbus`, `python3-dbus` and `python3-dbusmock` (scripts/test installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=@SOCKET@</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"#;

/// Python helpers every driver script starts with.
const PRELUDE: &str = r#"
import dbus, sys, time
bus = dbus.SystemBus()
def obj(path): return bus.get_object('org.bluez', path)
def mock(): return dbus.Interface(obj('/org/bluez'), 'org.bluez.Mock')
def props(path): return dbus.Interface(obj(path), 'org.freedesktop.DBus.Properties')
def add_adapter(name): return mock().AddAdapter(name, 'hub')
def add_device(adapter, addr): return mock().AddDevice(adapter, addr, 'dev')
V = dict(variant_level=1)
def set_mfr(path, company, hexdata):
    props(path).Set('org.bluez.Device1', 'ManufacturerData', dbus.Dictionary(
        {dbus.UInt16(company): dbus.Array(bytes.fromhex(hexdata), signature='y', **V)}, signature='qv', **V))
def set_sd(path, uuid, hexdata):
    props(path).Set('org.bluez.Device1', 'ServiceData', dbus.Dictionary(
        {uuid: dbus.Array(bytes.fromhex(hexdata), signature='y', **V)}, signature='sv', **V))
def set_rssi(path, rssi): props(path).Set('org.bluez.Device1', 'RSSI', dbus.Int16(rssi, **V))
def remove(adapter, path):
    dbus.Interface(obj('/org/bluez/' + adapter), 'org.bluez.Adapter1').RemoveDevice(path)
def devices():
    om = dbus.Interface(obj('/'), 'org.freedesktop.DBus.ObjectManager')
    return sorted(str(p) for p, i in om.GetManagedObjects().items() if 'org.bluez.Device1' in i)
def adapter_prop(adapter, name): return props('/org/bluez/' + adapter).Get('org.bluez.Adapter1', name)
def calls(path, method):
    m = dbus.Interface(obj(path), 'org.freedesktop.DBus.Mock')
    return [c for c in m.GetCalls() if str(c[1]) == method]
"#;

/// A private system bus with (optionally) the mock BlueZ on it.
pub struct MockBluez {
    dir: PathBuf,
    /// `DBUS_SYSTEM_BUS_ADDRESS` for every process of the test.
    pub address: String,
    bus_pid: u32,
    mock: Option<Child>,
    drivers: Vec<Child>,
}

impl MockBluez {
    /// Starts the bus and the mock (with no adapter yet).
    pub fn start(dir: &Path) -> MockBluez {
        let socket = dir.join("system_bus_socket");
        let conf = dir.join("system-bus.conf");
        std::fs::write(
            &conf,
            BUS_CONF.replace("@SOCKET@", &socket.display().to_string()),
        )
        .unwrap();
        let out = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--fork", "--print-pid"])
            .stdout(Stdio::piped())
            .output()
            .expect("dbus-daemon (Debian package dbus) must be installed");
        let bus_pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("dbus-daemon printed its pid");
        let mut m = MockBluez {
            dir: dir.to_owned(),
            address: format!("unix:path={}", socket.display()),
            bus_pid,
            mock: None,
            drivers: Vec::new(),
        };
        m.start_mock();
        m
    }

    /// Starts bluetoothd's stand-in and waits until it owns `org.bluez`.
    pub fn start_mock(&mut self) {
        assert!(self.mock.is_none());
        let log = std::fs::File::create(self.dir.join("dbusmock.log")).unwrap();
        let child = Command::new("/usr/bin/python3")
            .args(["-m", "dbusmock", "--system", "--template", "bluez5"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3-dbusmock must be installed");
        self.mock = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self
                .try_py("mock()\nprint('ok')")
                .is_some_and(|o| o.trim() == "ok")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the mock BlueZ did not come up");
    }

    /// Kills the mock: `org.bluez` disappears, as when bluetoothd dies.
    pub fn stop_mock(&mut self) {
        if let Some(mut c) = self.mock.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn try_py(&self, script: &str) -> Option<String> {
        let out = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(format!("{PRELUDE}\n{script}"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a driver script (with the prelude's helpers) and returns what it printed.
    pub fn py(&self, script: &str) -> String {
        let out = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(format!("{PRELUDE}\n{script}"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "driver failed: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a driver script in the background (a device that keeps advertising); stopped on drop.
    pub fn py_background(&mut self, script: &str) {
        let child = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(format!("{PRELUDE}\n{script}"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.drivers.push(child);
    }

    /// Stops every background driver.
    pub fn stop_drivers(&mut self) {
        for mut c in self.drivers.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The device object paths the mock holds now.
    pub fn devices(&self) -> Vec<String> {
        self.py("print('\\n'.join(devices()))")
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// How many times `method` was called on the object at `path`.
    pub fn calls(&self, path: &str, method: &str) -> usize {
        self.py(&format!("print(len(calls({path:?}, {method:?})))"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for MockBluez {
    fn drop(&mut self) {
        self.stop_drivers();
        self.stop_mock();
        let _ = Command::new("kill").arg(self.bus_pid.to_string()).status();
    }
}

/// Waits until `f` is true or `timeout` passes; panics with `what` then.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}
