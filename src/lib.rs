//! pgferry's shared library: what two or more tools need, split by concern.

pub mod catalog;
pub mod cli;
pub mod commit;
pub mod convert;
pub mod digest;
pub mod error;
pub mod files;
pub mod firestore;
pub mod gauth;
pub mod jsonscan;
pub mod jsonsrc;
pub mod partition;
pub mod pg;
pub mod plan;
pub mod progress;
pub mod runlog;
pub mod signals;
pub mod sqlite;
pub mod stall;
pub mod stream;
pub mod timefmt;

pub use error::{Error, Result};
