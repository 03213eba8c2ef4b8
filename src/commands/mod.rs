//! The commands of the binary, one module each: its arguments (clap) and its wiring to the
//! library, ending in an exit status. `src/main.rs` only parses and dispatches.

pub mod action;
pub mod check;
pub mod demo;
pub mod explain;
pub mod reconcile;
pub mod replay;
pub mod serve;
pub mod sim;

use std::path::PathBuf;

use crate::app::{StartError, EXIT_CONFIG};
use crate::config::Config;

// The TOML config file of a command (`--config FILE`).
#[derive(clap::Args)]
pub struct ConfigArg {
    /// The TOML config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Seconds to wait for a tenant that does not answer at all (connection refused, DNS, TLS,
    /// no answer) before giving up with exit 1: one-shot commands and the start of
    /// `run`/`ingest`. A tenant that answers but rate-limits is waited for.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub timeout: f64,
}

impl ConfigArg {
    /// The validated configuration, or the exit status of a configuration error (printed).
    pub fn load(&self) -> Result<Config, u8> {
        let mut config = Config::load(&self.config).map_err(|err| fail(err, EXIT_CONFIG))?;
        let patience = std::time::Duration::try_from_secs_f64(self.timeout)
            .map_err(|_| fail("--timeout must be a number of seconds", EXIT_CONFIG))?;
        if let Some(auth0) = config.auth0.as_mut() {
            auth0.give_up_after = patience;
        }
        Ok(config)
    }
}

/// Prints an error and gives its exit status.
pub fn fail(err: impl std::fmt::Display, code: u8) -> u8 {
    eprintln!("error: {err}");
    code
}

/// The exit status of a command that ran, or of the error that stopped it (printed unless it
/// exits 0, as a stop before the start does).
pub fn exit_status(result: Result<u8, StartError>) -> u8 {
    match result {
        Ok(code) => code,
        Err(err) => match err.exit_code() {
            0 => 0,
            code => fail(err, code),
        },
    }
}
