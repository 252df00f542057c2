//! The subcommands that are built, one module each, so that `main.rs` stays a thin dispatcher.

pub mod bench;
pub mod cli;
pub mod demo;
pub mod logging;
pub mod server;
pub mod sim;
pub mod verify;
