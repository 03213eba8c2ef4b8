//! `action`: the policy compiled into a post-login Action (Node 18+) on stdout, which puts the
//! roles a first login gets into the very first token ([`compile`] is the compiler, pure).

pub mod compile;

use super::{ConfigArg, ExitStatus, LoadError, EXIT_CONFIG};
use compile::{ActionError, ClaimNamespace};

#[derive(clap::Args)]
pub struct ActionArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The claim's namespace, an http(s) URL you own; the claim is `{namespace}roles`
    /// (a `/` is added when the URL does not end with one).
    #[arg(long)]
    pub claim_namespace: String,
}

/// Why no Action was printed: a bad configuration, namespace or rule, all exit 2.
#[derive(Debug, thiserror::Error)]
pub enum ActionCommandError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Compile(#[from] ActionError),
}

impl ExitStatus for ActionCommandError {
    fn exit_code(&self) -> u8 {
        EXIT_CONFIG
    }
}

/// Runs `action`: the Action on stdout, a note on stderr for each rule left to the service.
pub fn run(args: &ActionArgs) -> Result<u8, ActionCommandError> {
    let namespace = ClaimNamespace::parse(&args.claim_namespace)?;
    let config = args.config.load()?;
    let source = args.config.config.display().to_string();
    let code = compile::compile(&config.policy, &namespace, &source)?;
    print!("{code}");
    for rule in compile::rules_left_to_service(&config.policy) {
        eprintln!(
            "note: rule \"{}\" fires on no login (only on email_verified): the Action leaves it to the service",
            rule.name
        );
    }
    Ok(0)
}
