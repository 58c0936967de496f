//! API: what the `cicada` command shares with its tests (package `cicada-cli`).
//!
//! The command itself is the binary (`src/main.rs`); this library holds
//! what the command's demo and the tests that run `cicada` processes
//! (`cli/tests/processes.rs`) both use: the [`harness`] that starts a
//! `cicada node --json` process and waits for its events.
#![warn(missing_docs)]

pub mod harness;
