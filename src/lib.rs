//! beacond: an in-store Bluetooth LE presence daemon.
//!
//! The crate reads as a pipeline, one module per stage:
//! scanning sources → [`decode`] → identity → presence → offers → sinks, wired together by [`daemon`].
//! The stages in the middle are sans-IO: they take `now` as an argument and return events, so the
//! simulator, the tests and the daemon all run the very same code.

pub mod config;
pub mod daemon;
pub mod decode;
pub mod doctor;
pub mod field;
pub mod health;
pub mod identity;
pub mod learned;
pub mod logging;
pub mod offers;
pub mod peers;
pub mod pipeline;
pub mod presence;
pub mod scan;
pub mod shutdown;
pub mod simulate;
pub mod sink;
pub mod storage;
pub mod support;
pub mod time;
