//! `run` and `ingest`: build the application, then consume until SIGTERM/SIGINT.

use super::{exit_status, ConfigArg};
use crate::app::{self, App, StartError};
use crate::config::process_env;
use crate::shutdown::Shutdown;

pub async fn run(args: &ConfigArg, command: app::Command) -> u8 {
    let config = match args.load() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let served: Result<u8, StartError> =
        match App::build(&config, command, &process_env, Shutdown::on_signals()).await {
            Ok(app) => app.run().await.map(|()| 0),
            Err(err) => Err(err),
        };
    exit_status(served)
}
