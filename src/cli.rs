//! What every tool's `main` shares: the one entry point (help, version, parse, finish, run,
//! exit status), argument helpers, the error printer.

use crate::error::{Error, Result};
use std::ffi::OsString;
use std::str::FromStr;
use std::time::Duration;

/// How a run that did not fail ended. A check that failed is not a status but
/// `Err(Error::CheckFailed(verdict))`: the tool prints its report, the verdict is the last line
/// (printed by `main`, exit 1), so a failed check is said one way whether it is found at the
/// end of a run or in the middle of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done, and every check held: exit 0.
    Ok,
}

/// The one place that prints errors and picks exit codes: `-h`/`-V`, then `parse`, then
/// leftover arguments as a usage error, then `run`.
pub fn main<A>(
    tool: &str,
    usage: &str,
    parse: fn(&mut pico_args::Arguments) -> Result<A>,
    run: fn(A) -> Result<Status>,
) -> ! {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{usage}");
        std::process::exit(0);
    }
    if args.contains(["-V", "--version"]) {
        println!("{tool} {}", env!("CARGO_PKG_VERSION"));
        std::process::exit(0);
    }
    // Every tool takes it: no progress line, no informational notes (errors and warnings stay).
    if args.contains(["-q", "--quiet"]) {
        crate::progress::set_quiet(true);
    }
    let result = parse(&mut args).and_then(|a| finish(args).map(|()| a)).and_then(run);
    std::process::exit(exit_code(tool, result))
}

/// Prints the error of a run, if any, and gives its exit status.
fn exit_code(tool: &str, result: Result<Status>) -> i32 {
    match result {
        Ok(Status::Ok) => 0,
        Err(Error::BrokenPipe) => 0,
        Err(e) => {
            eprintln!("{tool}: {}", one_line(e.message()));
            if let Error::Usage(_) = e {
                eprintln!("Try '{tool} --help' for more information.");
            }
            e.exit_code()
        }
    }
}

/// An error as one line: a newline (or another control character but tab) in a name or in
/// quoted SQL is shown escaped, never breaks the line or reaches the terminal raw.
pub fn one_line(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for c in msg.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() && c != '\t' => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
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

/// A number option, `None` when absent. A value that does not parse, or that `ok` refuses,
/// is the usage error "`KEY takes WHAT, not 'VALUE'`".
pub fn number<T: FromStr>(
    args: &mut pico_args::Arguments,
    key: &'static str,
    what: &str,
    ok: impl Fn(&T) -> bool,
) -> Result<Option<T>> {
    match opt(args, key)? {
        None => Ok(None),
        Some(s) => match s.parse::<T>() {
            Ok(v) if ok(&v) => Ok(Some(v)),
            _ => Err(Error::Usage(format!("{key} takes {what}, not '{s}'"))),
        },
    }
}

/// The longest duration option taken (about 31 years): `now + wait` must not overflow.
pub const MAX_SECONDS: f64 = 1e9;

/// A duration option in seconds (fractions allowed, never negative), `None` when absent.
pub fn seconds(args: &mut pico_args::Arguments, key: &'static str) -> Result<Option<Duration>> {
    let s = number(args, key, "seconds (0 to 1000000000)", |s: &f64| (0.0..=MAX_SECONDS).contains(s))?;
    Ok(s.map(Duration::from_secs_f64))
}

/// A duration option in whole milliseconds, `None` when absent.
pub fn millis(args: &mut pico_args::Arguments, key: &'static str) -> Result<Option<Duration>> {
    Ok(number(args, key, "milliseconds", |_: &u64| true)?.map(Duration::from_millis))
}

/// A word for a shell command line we print (a resume or fix-up command), single-quoted
/// when it needs to be.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/:=@%+,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Informational notes and summaries go to stderr, prefixed with the tool's name; `--quiet`
/// silences them.
#[macro_export]
macro_rules! note {
    ($tool:expr, $($arg:tt)*) => {
        if !$crate::progress::quiet() {
            eprintln!("{}: {}", $tool, format_args!($($arg)*))
        }
    };
}

/// A warning: something the operator must act on although the run went on; `--quiet` keeps it.
#[macro_export]
macro_rules! warn {
    ($tool:expr, $($arg:tt)*) => {
        eprintln!("{}: warning: {}", $tool, format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_one_line() {
        assert_eq!(one_line("table 'a\nb', key \"x\r\"\tq\u{1b}[2J é"), "table 'a\\nb', key \"x\\r\"\tq\\u{1b}[2J é");
    }

    fn args(v: &[&str]) -> pico_args::Arguments {
        pico_args::Arguments::from_vec(v.iter().map(OsString::from).collect())
    }

    fn usage(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn numbers_parse_check_and_say_what_they_take() {
        let mut a = args(&["--n", "7", "--bad", "x", "--zero", "0", "--eq=12"]);
        assert_eq!(number(&mut a, "--n", "a count", |n: &u32| *n > 0).unwrap(), Some(7));
        assert_eq!(number(&mut a, "--absent", "a count", |_: &u32| true).unwrap(), None);
        assert_eq!(number(&mut a, "--eq", "a count", |_: &u32| true).unwrap(), Some(12));
        assert_eq!(usage(number(&mut a, "--bad", "a count", |_: &u32| true)), "--bad takes a count, not 'x'");
        assert_eq!(
            usage(number(&mut a, "--zero", "a positive count", |n: &u32| *n > 0)),
            "--zero takes a positive count, not '0'"
        );
        finish(a).unwrap();
    }

    #[test]
    fn durations() {
        let mut a = args(&["--wait", "1.5", "--neg", "-1", "--ms", "250", "--nan", "NaN", "--huge", "1e300"]);
        assert_eq!(seconds(&mut a, "--wait").unwrap(), Some(Duration::from_millis(1500)));
        assert_eq!(millis(&mut a, "--ms").unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(usage(seconds(&mut a, "--neg")), "--neg takes seconds (0 to 1000000000), not '-1'");
        assert_eq!(usage(seconds(&mut a, "--nan")), "--nan takes seconds (0 to 1000000000), not 'NaN'");
        // Past Duration's range (a panic in from_secs_f64), and far past any sensible wait.
        assert_eq!(usage(seconds(&mut a, "--huge")), "--huge takes seconds (0 to 1000000000), not '1e300'");
        assert_eq!(seconds(&mut a, "--none").unwrap(), None);
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("crm_orders"), "crm_orders");
        assert_eq!(shell_word("--read-time=2026-01-01T00:00:00Z"), "--read-time=2026-01-01T00:00:00Z");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
        assert_eq!(shell_word("$HOME"), "'$HOME'");
    }

    #[test]
    fn leftovers_are_usage_errors() {
        assert_eq!(usage(finish(args(&["--what"]))), "unknown option '--what'");
        assert_eq!(usage(finish(args(&["x"]))), "unexpected argument 'x'");
        assert_eq!(exit_code("t", Err(Error::Usage("u".into()))), 64);
        assert_eq!(exit_code("t", Err(Error::CheckFailed("c".into()))), 1);
        assert_eq!(exit_code("t", Err(Error::BrokenPipe)), 0);
        assert_eq!(exit_code("t", Ok(Status::Ok)), 0);
    }
}
