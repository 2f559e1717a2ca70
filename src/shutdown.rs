//! One shutdown signal for the whole daemon, after mini-redis's `shutdown.rs`: every task holds a
//! [`Shutdown`] and stops at its next await point once the signal fires. The first SIGINT/SIGTERM
//! triggers it.

use tokio::sync::watch;

/// Fires the shutdown signal; dropping it fires it too, so a panicking owner cannot leave tasks running.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// A task's view of the shutdown signal.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A new signal and its first listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    /// Tells every listener to stop.
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }

    /// Another listener.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Drop for Trigger {
    fn drop(&mut self) {
        self.fire();
    }
}

impl Shutdown {
    /// Whether the signal has fired.
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until the signal fires (returns at once if it already has).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which counts as a shutdown.
        let _ = self.rx.wait_for(|&stop| stop).await;
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn os_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_sees_the_signal() {
        let (trigger, mut a) = channel();
        let mut b = trigger.subscribe();
        assert!(!a.is_shutdown());
        trigger.fire();
        a.recv().await;
        b.recv().await;
        assert!(b.is_shutdown());
    }

    #[tokio::test]
    async fn dropping_the_trigger_stops_listeners() {
        let (trigger, mut a) = channel();
        drop(trigger);
        a.recv().await;
        assert!(a.is_shutdown());
    }
}
