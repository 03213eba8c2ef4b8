//! `sim`: the Management API simulator as a stand-in tenant; a bad seed file exits 2.

use super::fail;
use crate::app::EXIT_CONFIG;
use crate::sim_command::{self, SimArgs, SimCommandError};

pub async fn run(args: SimArgs) -> u8 {
    match sim_command::serve(args).await {
        Ok(()) => 0,
        Err(err @ SimCommandError::Seed { .. }) => fail(err, EXIT_CONFIG),
        Err(err) => fail(err, 1),
    }
}
