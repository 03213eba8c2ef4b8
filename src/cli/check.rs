//! `check`: validates a config file and prints its policy.

use super::ConfigArg;
use crate::check;
use crate::config::process_env;

pub fn run(args: &ConfigArg) -> u8 {
    match args.load() {
        Ok(config) => {
            print!("{}", check::describe(&config, &process_env));
            0
        }
        Err(code) => code,
    }
}
