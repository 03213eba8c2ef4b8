//! `run` and `ingest`: build the application, then consume until SIGTERM/SIGINT.

use super::{ConfigArg, ExitStatus, LoadError};
use crate::app::{self, App, StartError};
use crate::shutdown::Shutdown;

/// Why the service did not start, or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Start(#[from] StartError),
}

impl ExitStatus for ServeError {
    fn exit_code(&self) -> u8 {
        match self {
            ServeError::Load(err) => err.exit_code(),
            ServeError::Start(err) => err.exit_code(),
        }
    }
}

/// Runs `run` or `ingest` until the shutdown.
pub async fn run(args: &ConfigArg, command: app::Command) -> Result<u8, ServeError> {
    let config = args.load()?;
    let app = App::build(&config, command, Shutdown::on_signals()).await?;
    app.run().await?;
    Ok(0)
}
