//! One error type for every tool. Each variant is an exit class from DESIGN.md; only
//! `cli::main` turns it into a message and an exit status.

use std::fmt;

/// What went wrong, already worded for the operator (one line, no `{:?}`).
#[derive(Debug)]
pub enum Error {
    /// 64: the command line is wrong.
    Usage(String),
    /// 65: the input data is bad; nothing was committed.
    Data(String),
    /// 66: an input file or table does not exist.
    NoInput(String),
    /// 69: a service (PostgreSQL, Firestore) is unavailable or refused us.
    Unavailable(String),
    /// 74: reading or writing a file or stream failed.
    Io(String),
    /// 75: a temporary failure; retrying may succeed (lock timeout, serialization failure).
    TempFail(String),
    /// 76: COMMIT was sent and its outcome could not be learnt: find out before retrying.
    CommitUnknown(String),
    /// 77: permission denied (the role lacks a privilege, SQLSTATE 42501; a file's mode).
    NoPermission(String),
    /// 1: the run finished but a check failed (count mismatch, checksum mismatch).
    CheckFailed(String),
    /// 130: interrupted.
    Interrupted(String),
    /// Writing to stdout failed because the reader went away (`| head`): a normal end.
    BrokenPipe,
}

impl Error {
    /// The exit status DESIGN.md assigns to this kind of failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::CheckFailed(_) => 1,
            Error::Usage(_) => 64,
            Error::Data(_) => 65,
            Error::NoInput(_) => 66,
            Error::Unavailable(_) => 69,
            Error::Io(_) => 74,
            Error::TempFail(_) => 75,
            Error::CommitUnknown(_) => 76,
            Error::NoPermission(_) => 77,
            Error::Interrupted(_) => 130,
            Error::BrokenPipe => 0,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Usage(m)
            | Error::Data(m)
            | Error::NoInput(m)
            | Error::Unavailable(m)
            | Error::Io(m)
            | Error::TempFail(m)
            | Error::CommitUnknown(m)
            | Error::NoPermission(m)
            | Error::CheckFailed(m)
            | Error::Interrupted(m) => m,
            Error::BrokenPipe => "broken pipe",
        }
    }

    /// Same kind, with `context: ` put in front of the message (uucore's `map_err_context`).
    pub fn context(self, context: impl fmt::Display) -> Error {
        self.map_message(|m| format!("{context}: {m}"))
    }

    /// Whether "nothing was committed" may be said of a load that failed with this error:
    /// not when its COMMIT was sent and the outcome is unknown (the message says so itself).
    pub fn commit_outcome_unknown(&self) -> bool {
        matches!(self, Error::CommitUnknown(_))
    }

    /// Same kind, with `suffix` appended (e.g. "; nothing was committed"), once.
    pub fn append(self, suffix: &str) -> Error {
        self.map_message(|m| if m.ends_with(suffix) { m } else { m + suffix })
    }

    /// Same kind, message rewritten by `f`.
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Error {
        match self {
            Error::Usage(m) => Error::Usage(f(m)),
            Error::Data(m) => Error::Data(f(m)),
            Error::NoInput(m) => Error::NoInput(f(m)),
            Error::Unavailable(m) => Error::Unavailable(f(m)),
            Error::Io(m) => Error::Io(f(m)),
            Error::TempFail(m) => Error::TempFail(f(m)),
            Error::CommitUnknown(m) => Error::CommitUnknown(f(m)),
            Error::NoPermission(m) => Error::NoPermission(f(m)),
            Error::CheckFailed(m) => Error::CheckFailed(f(m)),
            Error::Interrupted(m) => Error::Interrupted(f(m)),
            Error::BrokenPipe => Error::BrokenPipe,
        }
    }

    /// An I/O error while doing `what`; a closed stdout becomes `BrokenPipe`.
    pub fn io(what: impl fmt::Display, e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => Error::BrokenPipe,
            std::io::ErrorKind::NotFound => Error::NoInput(format!("{what}: {}", io_cause(&e))),
            std::io::ErrorKind::PermissionDenied => Error::NoPermission(format!("{what}: {}", io_cause(&e))),
            // ENOSPC/EDQUOT: retrying does not help until space is made, so 74 with the cause said.
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Error::Io(format!("{what}: the disk is full (no space left on the device)"))
            }
            _ => Error::Io(format!("{what}: {}", io_cause(&e))),
        }
    }
}

/// `std::io::Error`'s Display without the " (os error 2)" tail.
pub fn io_cause(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its sources in one line, each cause added once.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_documented_exit_code() {
        let table = [
            (Error::CheckFailed(String::new()), 1),
            (Error::Usage(String::new()), 64),
            (Error::Data(String::new()), 65),
            (Error::NoInput(String::new()), 66),
            (Error::Unavailable(String::new()), 69),
            (Error::Io(String::new()), 74),
            (Error::TempFail(String::new()), 75),
            (Error::CommitUnknown(String::new()), 76),
            (Error::NoPermission(String::new()), 77),
            (Error::Interrupted(String::new()), 130),
            (Error::BrokenPipe, 0),
        ];
        for (e, code) in table {
            assert_eq!(e.exit_code(), code, "{e:?}");
        }
    }

    #[test]
    fn io_errors_are_classified() {
        let pipe = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(matches!(Error::io("stdout", pipe), Error::BrokenPipe));
        let missing = std::io::Error::from_raw_os_error(2);
        let e = Error::io("open 'x.db'", missing);
        assert_eq!(e.exit_code(), 66);
        assert_eq!(e.message(), "open 'x.db': No such file or directory");
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(Error::io("open 'x.db'", denied).exit_code(), 77);
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = Error::io("write 'backup.gz'", full);
        assert_eq!(e.exit_code(), 74);
        assert_eq!(e.message(), "write 'backup.gz': the disk is full (no space left on the device)");
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = Error::Data("bad".into()).context("line 3").append("; nothing was committed");
        assert_eq!(e.exit_code(), 65);
        assert_eq!(e.message(), "line 3: bad; nothing was committed");
    }
}
