#![recursion_limit = "256"]
//! pgferry's one integration-test binary: every tool against real SQLite files and a real
//! PostgreSQL (and the Firestore emulator for fs-export).

mod count_check;
mod harness;
mod pg_load;
mod pg_partition;
mod sqlite_dump;
mod fs_export;
mod fs_proxy;
