//! Firestore sides. They go through fs-export's client and value conversion
//! (`pgferry::firestore`), which is not on this branch yet.

use crate::side::{Job, Out, Spec, Stop};
use pgferry::{Error, Result};

/// How Firestore documents become records (fs-export's options that shape a row).
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// The key under which a document's id appears in a row [default: id].
    pub id_field: String,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions { id_field: "id".into() }
    }
}

fn unavailable() -> Error {
    Error::Usage("Firestore sides are not available in this build yet (they need fs-export's client)".into())
}

pub fn count(_spec: &Spec, _ctx: &crate::side::Ctx) -> Result<u64> {
    Err(unavailable())
}

pub fn read(_job: &Job, out: &mut Out) -> std::result::Result<(), Stop> {
    Err(out.fail(unavailable()))
}

/// Firestore options of the command line (none yet beyond --id-field).
pub fn parse_args(_args: &mut pico_args::Arguments, _o: &mut FsOptions) -> Result<()> {
    Ok(())
}

/// A plan step's fs-export arguments that shape its rows (`--id-field`).
pub fn step_args(export: &[String], o: &mut FsOptions) -> Result<()> {
    let mut it = export.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--id-field=") {
            o.id_field = v.to_string();
        } else if a == "--id-field" {
            o.id_field = it.next().cloned().unwrap_or_default();
        }
    }
    Ok(())
}
