//! Why `reconcile` stopped: each cause kept as the error's `source`, for the reporter at the
//! edge to print the whole chain; each with its exit status (2 what the operator must fix, 1
//! otherwise, 0 for a stop asked before anything ran).

use std::path::PathBuf;

use super::export::ExportError;
use super::state::StateError;
use crate::config::ConfigError;
use crate::exit::{ExitStatus, EXIT_CONFIG};
use crate::ledger::LedgerError;
use crate::metrics::MetricsError;
use crate::mgmt::MgmtError;

/// Why `reconcile` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--rate-share` outside (0, 1].
    #[error("{0}")]
    RateShare(String),
    #[error("reconcile {flag} needs a ledger of what this service granted: set [ledger] url (see docs/ledger.md)")]
    NeedsLedger { flag: &'static str },
    #[error("state file {path} belongs to an unfinished apply on tenant {tenant}, not {domain}: give another --state file (or delete it to start over)")]
    OtherTenant {
        path: PathBuf,
        tenant: String,
        domain: String,
    },
    /// The `--state` journal cannot be opened (exit 2: another file, or its permissions).
    #[error(transparent)]
    OpenState(StateError),
    /// The ledger cannot be opened (exit 2: its URL or place).
    #[error(transparent)]
    OpenLedger(LedgerError),
    #[error("{planned} (user, role) pairs to take back, more than --max-revocations {max}: none was removed (the roles to add were added); check the plan with --revoke --output jsonl, then raise --max-revocations")]
    TooManyRevocations { planned: u64, max: usize },
    /// The Management API refused the credentials or a scope, or lacks the policy's roles
    /// (exit 2), or failed otherwise (exit 1).
    #[error(transparent)]
    Mgmt(#[from] MgmtError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("reconcile: the ledger")]
    Ledger(#[source] LedgerError),
    #[error("reconcile")]
    State(#[source] StateError),
    #[error("reconcile")]
    Export(#[source] ExportError),
    #[error("reconcile: cannot read {path}")]
    ReadUsers {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reconcile: cannot read the export")]
    ReadExport(#[source] std::io::Error),
    #[error("reconcile: cannot create a temporary file for the export")]
    TempFile(#[source] std::io::Error),
    #[error("reconcile: a removal's task ended without a result")]
    RemovalTask(#[source] tokio::task::JoinError),
    /// A batch stopped on a fault its task met (a write the ledger refused, a removal the
    /// tenant refused for good).
    #[error("reconcile")]
    Stopped(#[source] Box<StopCause>),
    #[error("reconcile: interrupted before any role was written")]
    Interrupted,
    #[error("reconcile: no export: neither --users nor an export job")]
    NoExport,
    #[error("cannot write output")]
    Output(#[from] std::io::Error),
}

/// Why a run stopped on a fault one of its tasks met.
#[derive(Debug, thiserror::Error)]
pub enum StopCause {
    /// The ledger did not record roles Auth0 accepted.
    #[error("the ledger did not record the roles written")]
    Record(#[source] LedgerError),
    /// A removal met a fault of the service or of the ledger.
    #[error(transparent)]
    Removal(RemovalError),
}

/// Why one user's removal failed (journal, DELETE, record or cancel).
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    #[error("the ledger")]
    Ledger(#[source] LedgerError),
    #[error("the user no longer exists (forgotten by the ledger)")]
    UserGone,
    #[error("the user no longer exists; the ledger")]
    UserGoneLedger(#[source] LedgerError),
    #[error(transparent)]
    Refused(MgmtError),
    #[error("{refused}; the ledger")]
    RefusedLedger {
        refused: MgmtError,
        #[source]
        ledger: LedgerError,
    },
}

impl ExitStatus for ReconcileError {
    fn exit_code(&self) -> u8 {
        match self {
            ReconcileError::Config(_)
            | ReconcileError::RateShare(_)
            | ReconcileError::NeedsLedger { .. }
            | ReconcileError::OtherTenant { .. }
            | ReconcileError::OpenState(_)
            | ReconcileError::OpenLedger(_)
            | ReconcileError::TooManyRevocations { .. }
            | ReconcileError::Mgmt(
                MgmtError::Auth(_) | MgmtError::MissingRoles(_) | MgmtError::AmbiguousRoles(_),
            ) => EXIT_CONFIG,
            _ => 1,
        }
    }
}

impl From<ExportError> for ReconcileError {
    /// The tenant's refusals keep their exit status; the rest is the export's.
    fn from(err: ExportError) -> Self {
        match err {
            ExportError::Mgmt(err) => ReconcileError::Mgmt(err),
            other => ReconcileError::Export(other),
        }
    }
}
