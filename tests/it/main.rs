//! pgferry's one integration-test binary: every tool against real SQLite files and a real
//! PostgreSQL (and the Firestore emulator for fs-export).

mod backup_verify;
mod harness;
mod sqlite_dump;
