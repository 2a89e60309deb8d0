//! What every tool's `main` shares: argument helpers, the error printer, the exit status.

use crate::error::{Error, Result};
use std::ffi::OsString;

/// How a run that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done, and every check held: exit 0.
    Ok,
    /// Ran to the end, and a check failed (already reported): exit 1.
    CheckFailed,
}

/// The one place that prints errors and picks exit codes.
pub fn main(tool: &str, usage: &str, run: fn(&mut pico_args::Arguments) -> Result<Status>) -> ! {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{usage}");
        std::process::exit(0);
    }
    if args.contains(["-V", "--version"]) {
        println!("{tool} {}", env!("CARGO_PKG_VERSION"));
        std::process::exit(0);
    }
    let code = match run(&mut args) {
        Ok(Status::Ok) => 0,
        Ok(Status::CheckFailed) => 1,
        Err(Error::BrokenPipe) => 0,
        Err(e) => {
            eprintln!("{tool}: {}", e.message());
            if let Error::Usage(_) = e {
                eprintln!("Try '{tool} --help' for more information.");
            }
            e.exit_code()
        }
    };
    std::process::exit(code)
}

/// Turns a pico-args error into our usage error.
pub fn usage_err(e: pico_args::Error) -> Error {
    Error::Usage(e.to_string())
}

/// Leftover arguments are a usage error (pico-args `finish`).
pub fn finish(args: pico_args::Arguments) -> Result<()> {
    let rest: Vec<OsString> = args.finish();
    if let Some(first) = rest.first() {
        let s = first.to_string_lossy();
        if s.starts_with('-') {
            return Err(Error::Usage(format!("unknown option '{s}'")));
        }
        return Err(Error::Usage(format!("unexpected argument '{s}'")));
    }
    Ok(())
}

/// A required positional argument.
pub fn positional(args: &mut pico_args::Arguments, name: &str) -> Result<String> {
    match args.opt_free_from_str::<String>() {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(Error::Usage(format!("missing argument {name}"))),
        Err(e) => Err(usage_err(e)),
    }
}

/// An optional value option.
pub fn opt(args: &mut pico_args::Arguments, key: &'static str) -> Result<Option<String>> {
    args.opt_value_from_str(key).map_err(usage_err)
}

/// An option given any number of times, each value possibly a comma-separated list.
pub fn list(args: &mut pico_args::Arguments, key: &'static str) -> Result<Vec<String>> {
    let raw: Vec<String> = args.values_from_str(key).map_err(usage_err)?;
    Ok(raw.iter().flat_map(|v| v.split(',')).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

/// Progress and summaries go to stderr, prefixed with the tool's name.
#[macro_export]
macro_rules! note {
    ($tool:expr, $($arg:tt)*) => {
        eprintln!("{}: {}", $tool, format_args!($($arg)*))
    };
}
