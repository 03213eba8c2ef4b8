//! `action`: the post-login Action compiled from the policy, on stdout.

use super::{fail, ConfigArg};
use crate::action::{self, ClaimNamespace};
use crate::app::EXIT_CONFIG;

#[derive(clap::Args)]
pub struct ActionArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The claim's namespace, an http(s) URL you own; the claim is `{namespace}roles`
    /// (a `/` is added when the URL does not end with one).
    #[arg(long)]
    pub claim_namespace: String,
}

/// A bad namespace or a rule it cannot compile exits 2 like any config error.
pub fn run(args: &ActionArgs) -> u8 {
    let namespace = match ClaimNamespace::parse(&args.claim_namespace) {
        Ok(namespace) => namespace,
        Err(err) => return fail(err, EXIT_CONFIG),
    };
    let config = match args.config.load() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let source = args.config.config.display().to_string();
    match action::compile(&config.policy, &namespace, &source) {
        Ok(code) => {
            print!("{code}");
            for rule in action::rules_left_to_service(&config.policy) {
                eprintln!(
                    "note: rule \"{}\" fires on no login (only on email_verified): the Action leaves it to the service",
                    rule.name
                );
            }
            0
        }
        Err(err) => fail(err, EXIT_CONFIG),
    }
}
