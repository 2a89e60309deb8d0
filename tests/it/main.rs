#![recursion_limit = "256"]
//! pgferry's one integration-test binary: every tool against real SQLite files and a real
//! PostgreSQL (and the Firestore emulator for fs-export).

mod adc;
mod analyze;
mod backup_verify;
mod catalog;
mod connect;
mod copy_key;
mod count_check;
mod fs_export;
mod fs_proxy;
mod harness;
mod hostile_load;
mod hostile_source;
mod hostile_tools;
mod pg_load;
mod pg_partition;
mod pg_proxy;
mod pg_truth;
mod plan_load;
mod progress;
mod seeds;
mod sqlite_dump;
mod zones;
