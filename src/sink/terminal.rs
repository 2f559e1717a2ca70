//! The demo's live view: a feed of who entered which zone, dwell marks and exits, under a compact
//! per-zone headcount that is redrawn in place on a terminal and printed as plain lines when piped.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use tokio::sync::mpsc;

use super::{PresenceRecord, Record};
use crate::time::Timestamp;

/// What the footer shows: known subjects in each zone now, and the last anonymous headcount.
#[derive(Debug, Default)]
pub struct Board {
    zones: Vec<String>,
    known_now: BTreeMap<String, u32>,
    anonymous: BTreeMap<String, u32>,
    clock: String,
    events: u64,
    offers: u64,
}

impl Board {
    /// A board for zones in display order.
    pub fn new(zones: Vec<String>) -> Board {
        Board {
            zones,
            ..Board::default()
        }
    }

    /// Folds a record into the board; returns the feed line to print for it, if any.
    pub fn apply(&mut self, r: &Record) -> Option<String> {
        match r {
            Record::Presence(p) => {
                self.events += 1;
                self.clock = hhmmss(&p.at.to_rfc3339());
                match p.event {
                    "enter" => *self.known_now.entry(p.zone.clone()).or_default() += 1,
                    "exit" => {
                        let n = self.known_now.entry(p.zone.clone()).or_default();
                        *n = n.saturating_sub(1);
                    }
                    _ => {}
                }
                Some(feed_line(p))
            }
            Record::Headcount(h) => {
                self.clock = hhmmss(&h.end.to_rfc3339());
                for z in &h.zones {
                    self.anonymous.insert(z.zone.clone(), z.anonymous);
                }
                None
            }
            Record::Offer(o) => {
                self.offers += 1;
                Some(format!(
                    "{}  OFFER  {:<16} {} in {} ({}{})",
                    hhmmss(&o.at.to_rfc3339()),
                    o.offer_id,
                    o.customer_id,
                    o.zone,
                    o.reason.trigger,
                    o.reason
                        .threshold
                        .map(|t| format!(" {t}"))
                        .unwrap_or_default()
                ))
            }
            Record::Stats(_)
            | Record::Beacons(_)
            | Record::Purge(_)
            | Record::Notice { .. }
            | Record::MqttTarget(_) => None,
        }
    }

    /// The footer: one line per row of zones.
    pub fn footer(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "── {}  customers in zone now (+ anonymous devices last minute) ── {} events, {} offers",
            self.clock, self.events, self.offers
        )];
        let cells: Vec<String> = self
            .zones
            .iter()
            .map(|z| {
                format!(
                    "{z:<10} {:>3} (+{:<3})",
                    self.known_now.get(z).copied().unwrap_or(0),
                    self.anonymous.get(z).copied().unwrap_or(0)
                )
            })
            .collect();
        for row in cells.chunks(4) {
            lines.push(row.join("  "));
        }
        lines
    }
}

fn hhmmss(rfc3339: &str) -> String {
    rfc3339.get(11..19).unwrap_or(rfc3339).to_owned()
}

fn feed_line(p: &PresenceRecord) -> String {
    let who = p
        .customer_id
        .as_deref()
        .or(p.tag_id.as_deref())
        .unwrap_or("?");
    let what = match (p.event, p.dwell_s, p.duration_s) {
        ("dwell", Some(s), _) => format!("dwells {s:>3} s in"),
        ("exit", _, Some(d)) => format!("left after {:>3.0} s", d),
        ("enter", _, _) => "entered".to_owned(),
        (e, _, _) => e.to_owned(),
    };
    format!(
        "{}  {:<11} {:<18} {:<10} {:>6.1} dBm ~{:>4.1} m",
        hhmmss(&p.at.to_rfc3339()),
        who,
        what,
        p.zone,
        p.rssi,
        p.distance_m
    )
}

/// Shows records until the channel closes. On a terminal the footer is redrawn in place under the
/// scrolling feed; piped, headcounts come out as plain lines. Records before `quiet_until` (a warm
/// start) only update the board.
pub async fn run(
    mut rx: mpsc::Receiver<Record>,
    zones: Vec<String>,
    quiet_until: Timestamp,
) -> std::io::Result<()> {
    let tty = std::io::stdout().is_terminal();
    let mut board = Board::new(zones);
    let mut drawn = 0usize;
    while let Some(r) = rx.recv().await {
        let line = board.apply(&r);
        if r.at() < quiet_until {
            continue;
        }
        let mut out = std::io::stdout().lock();
        if tty {
            // Move up over the old footer and clear it, print the feed line, redraw the footer.
            if drawn > 0 {
                write!(out, "\x1b[{drawn}A\x1b[J")?;
            }
            if let Some(l) = line {
                writeln!(out, "{l}")?;
            }
            let footer = board.footer();
            for f in &footer {
                writeln!(out, "\x1b[1m{f}\x1b[0m")?;
            }
            drawn = footer.len();
        } else if let Some(l) = line {
            writeln!(out, "{l}")?;
        } else if let Record::Headcount(_) = r {
            for f in board.footer() {
                writeln!(out, "{f}")?;
            }
        }
        out.flush()?;
    }
    Ok(())
}
