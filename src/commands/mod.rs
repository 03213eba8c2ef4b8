//! The commands of the binary, one module each: its arguments (clap), its `run`, and its error
//! type with the exit status each error gives. `src/main.rs` parses and dispatches; what the
//! commands share is here: the `--config` argument and [`report`], the one place an error is
//! printed, with its whole cause chain.

pub mod action;
pub mod check;
pub mod demo;
pub mod doctor;
pub mod explain;
pub mod reconcile;
pub mod replay;
pub mod serve;
pub mod setup;
pub mod sim;

use std::path::PathBuf;

use crate::config::{Config, ConfigError};
pub use crate::exit::{cause_chain, ExitStatus, EXIT_CONFIG, EXIT_FAILED};

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

/// Why `--config FILE` (with `--timeout`) gave no configuration (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--timeout must be a number of seconds")]
    Timeout,
}

impl ExitStatus for LoadError {
    fn exit_code(&self) -> u8 {
        EXIT_CONFIG
    }
}

impl ConfigArg {
    /// The validated configuration, `--timeout` applied to `[auth0]`.
    pub fn load(&self) -> Result<Config, LoadError> {
        let mut config = Config::load(&self.config)?;
        let patience =
            std::time::Duration::try_from_secs_f64(self.timeout).map_err(|_| LoadError::Timeout)?;
        if let Some(auth0) = config.auth0.as_mut() {
            auth0.give_up_after = patience;
        }
        Ok(config)
    }
}

/// Prints `error: ` and the error's whole cause chain on stderr; gives its exit status.
pub fn report<E: ExitStatus>(err: &E) -> u8 {
    eprintln!("error: {}", cause_chain(err));
    err.exit_code()
}

/// The exit status of a command that ran (its own status, or its error's: reported unless it
/// exits 0, as a stop before the start does).
pub fn exit_status<E: ExitStatus>(result: Result<u8, E>) -> u8 {
    match result {
        Ok(code) => code,
        Err(err) if err.exit_code() == 0 => 0,
        Err(err) => report(&err),
    }
}
