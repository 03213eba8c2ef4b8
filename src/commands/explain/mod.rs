//! `explain --config FILE USER_ID`: why a user holds the roles this service gave — every grant
//! and revocation the ledger holds, any standing failure, and what the current policy gives
//! the user now from their profile (when the tenant answers), with the difference. The report
//! itself (what the ledger holds judged against the policy, as text or JSON) is [`report`].

pub mod report;

use std::sync::Arc;
use std::time::Duration;

use super::{cause_chain, ConfigArg, ExitStatus, LoadError, EXIT_CONFIG};
use crate::config::Config;
use crate::ledger::LedgerError;
use crate::metrics::Metrics;
use crate::mgmt::{ClientSettings, MgmtClient};
use report::{Explanation, UserNow};

/// How long the profile read may take before the report goes without it.
const TENANT_PATIENCE: Duration = Duration::from_secs(15);
/// How long the read of the roles the user holds may take (it is optional).
const ROLES_PATIENCE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainOutput {
    /// Readable text.
    Text,
    /// One JSON object.
    Json,
}

#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// `text` (default) or `json`.
    #[arg(long, value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
    /// The Auth0 user id (`auth0|…`, `google-oauth2|…`).
    pub user_id: String,
}

/// Why `explain` gave no report.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("explain needs the grants ledger: add [ledger] url = \"sqlite:///ABSOLUTE/PATH\" or \"postgres://…\" (or set LEDGER_URL); see docs/ledger.md")]
    NoLedger,
    /// The ledger cannot be opened (its URL or place: exit 2) or read (exit 1).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot write the report as JSON")]
    Json(#[source] serde_json::Error),
}

impl ExitStatus for ExplainError {
    fn exit_code(&self) -> u8 {
        match self {
            ExplainError::Load(_) | ExplainError::NoLedger => EXIT_CONFIG,
            ExplainError::Ledger(err) if err.is_config() => EXIT_CONFIG,
            ExplainError::Ledger(_) | ExplainError::Json(_) => 1,
        }
    }
}

/// Runs `explain`: the report on stdout.
pub async fn run(args: &ExplainArgs) -> Result<u8, ExplainError> {
    let config = args.config.load()?;
    let Some(settings) = &config.ledger else {
        return Err(ExplainError::NoLedger);
    };
    // Read as it is: never created, never migrated (a mistyped path is said, not answered
    // with an empty ledger's "never seen").
    let ledger = crate::ledger::Ledger::open_existing(settings, "explain").await?;
    let history = ledger.history(&args.user_id).await?;
    let now = user_now(&config, &args.user_id).await;
    let explanation = Explanation::new(
        &args.user_id,
        ledger.describe(),
        &config.policy,
        &config.policy_fingerprint,
        history,
        now,
    );
    match args.output {
        ExplainOutput::Text => print!("{}", explanation.to_text()),
        ExplainOutput::Json => {
            let text = serde_json::to_string_pretty(&explanation).map_err(ExplainError::Json)?;
            println!("{text}");
        }
    }
    Ok(0)
}

/// The user as the tenant shows them now: `GET /users/{id}` and the roles they hold; the
/// reason when the tenant cannot tell.
async fn user_now(config: &Config, user_id: &str) -> Result<UserNow, String> {
    let auth0 = config
        .require_auth0()
        .map_err(|_| "no [auth0] section".to_owned())?;
    let secret = auth0.client_secret().map_err(|e| cause_chain(&e))?;
    let metrics = Arc::new(Metrics::new().map_err(|e| cause_chain(&e))?);
    let client = MgmtClient::new(ClientSettings::from_config(auth0, secret), metrics)
        .map_err(|e| cause_chain(&e))?;
    let profile = tokio::time::timeout(TENANT_PATIENCE, client.get_user(user_id)).await;
    match profile {
        Ok(Ok(profile)) => {
            // The roles held now: for `has_roles`, and to tell a grant an admin removed since.
            // Optional: without `read:role_members` the call is refused (and would wait as a
            // service fault), so it gets a short while of its own and the report goes on.
            let held_role_ids = tokio::time::timeout(
                ROLES_PATIENCE,
                client.get_held_role_ids(user_id, auth0.count_group_roles),
            )
            .await
            .ok()
            .and_then(Result::ok);
            Ok(UserNow {
                profile,
                held_role_ids,
            })
        }
        Ok(Err(err)) if err.is_user_not_found() => {
            Err("the tenant has no such user (deleted, or never created)".to_owned())
        }
        Ok(Err(err)) => Err(cause_chain(&err)),
        Err(_) => Err(format!("no answer within {} s", TENANT_PATIENCE.as_secs())),
    }
}
