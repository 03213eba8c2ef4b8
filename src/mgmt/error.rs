//! What a Management API call can end in that retrying will not fix (`MgmtError`), the
//! operations as metrics and summaries name them (`Operation`), and the counts kept for
//! summaries (`CallStats`).

use std::collections::BTreeMap;

/// A Management API failure that retrying will not fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MgmtError {
    /// 400, 403, 404 ...: the event's outcome is `failed`.
    #[error("{operation}: HTTP {status}: {message}{}", code_suffix(.error_code))]
    Permanent {
        operation: &'static str,
        status: u16,
        message: String,
        error_code: Option<String>,
    },
    /// The credentials or the application's grants are wrong: the service cannot work.
    #[error("Management API token: {0}")]
    Auth(String),
    /// The HTTP client cannot be built (its TLS set-up): the service cannot reach the tenant.
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] std::sync::Arc<reqwest::Error>),
    /// The tenant did not answer at all (connection refused, DNS, TLS, no answer) for the
    /// one-shot patience.
    #[error("the tenant at {host} did not answer for {waited_seconds} s: {cause}")]
    Unreachable {
        host: String,
        cause: String,
        waited_seconds: u64,
    },
    /// A call that changes the tenant was sent and its answer lost (a reset connection, a
    /// timeout): whether the tenant acted is unknown, so the caller looks before sending it
    /// again (only with [`RequestOptions::lost_answer_is_error`]).
    #[error("{operation}: the answer was lost ({cause}); the tenant may have acted on it")]
    AnswerLost {
        operation: &'static str,
        cause: String,
    },
    /// Role names of the policy that do not exist in the tenant.
    #[error("these roles of the policy do not exist in the tenant (create them or fix the policy): {}", .0.join(", "))]
    MissingRoles(Vec<String>),
    /// Role names of the policy that match several roles (docs/policy.md#role-names).
    #[error("these roles of the policy match several tenant roles of the same name (rename all but one in the tenant, or name an organization's role as org_ID/NAME): {}", .0.join("; "))]
    AmbiguousRoles(Vec<String>),
    /// What had to happen before the role write refused it (the ledger's journal of the
    /// grant): nothing was written; the reason as said.
    #[error("{0}")]
    BeforeWrite(String),
    /// A 2xx response whose body does not decode as the API documents.
    #[error("{operation}: the response is not the JSON the API documents")]
    Undecodable {
        operation: &'static str,
        #[source]
        source: std::sync::Arc<serde_json::Error>,
    },
    /// A 2xx response whose body is not what the API documents.
    #[error("{operation}: unexpected response: {detail}")]
    Protocol {
        operation: &'static str,
        detail: String,
    },
}

pub(super) fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
}

impl MgmtError {
    /// True for Auth0's "the user does not exist" answers.
    pub fn is_user_not_found(&self) -> bool {
        matches!(self, MgmtError::Permanent { status: 404, error_code: Some(code), .. } if code == "inexistent_user")
            || matches!(self, MgmtError::Permanent { status: 404, message, .. } if message.contains("users do not exist") || message.contains("user does not exist"))
    }

    /// True for a 404 that is not about a user (a role id that no longer exists).
    pub fn is_role_not_found(&self) -> bool {
        matches!(self, MgmtError::Permanent { status: 404, .. }) && !self.is_user_not_found()
    }
}

/// The Management API operations, as named in metrics and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Token,
    GetRoles,
    GetUser,
    GetUserRoles,
    /// `GET /api/v2/users/{id}/effective-roles` (`[auth0] count_group_roles`).
    GetUserEffectiveRoles,
    GetClient,
    AssignUserRoles,
    AssignRoleUsers,
    /// `POST /api/v2/jobs/users-exports` (`reconcile`).
    CreateExportJob,
    /// `GET /api/v2/jobs/{id}` (`reconcile`).
    GetJob,
    /// `GET /api/v2/roles/{id}/users` (`reconcile`).
    GetRoleUsers,
    /// `GET /api/v2/log-streams` (`doctor`, `setup log-stream`).
    GetLogStreams,
    /// `POST /api/v2/log-streams` (`setup log-stream`).
    CreateLogStream,
    /// `PATCH /api/v2/log-streams/{id}` (`setup log-stream`).
    UpdateLogStream,
    /// `GET /api/v2/log-streams/{id}` (the stream's health, `[backstop] log_stream_id`).
    GetLogStream,
    /// `GET /api/v2/logs` (the `auth0_logs` source and the backstop).
    GetLogs,
    /// `POST /api/v2/organizations/{id}/members/{user_id}/roles`: through the organization
    /// member roles limiter, then the tenant's.
    AssignOrganizationMemberRoles,
    /// `GET /api/v2/organizations` (`reconcile`).
    GetOrganizations,
    /// `GET /api/v2/organizations/{id}/members` (`reconcile`).
    GetOrganizationMembers,
    /// `DELETE /api/v2/users/{id}/roles` (`reconcile --revoke --apply`).
    RemoveUserRoles,
    /// `GET /api/v2/events`: the Events API stream (the `auth0_events` source).
    SubscribeEvents,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Token => "token",
            Operation::GetRoles => "get_roles",
            Operation::GetUser => "get_user",
            Operation::GetUserRoles => "get_user_roles",
            Operation::GetUserEffectiveRoles => "get_user_effective_roles",
            Operation::GetClient => "get_client",
            Operation::AssignUserRoles => "assign_user_roles",
            Operation::AssignRoleUsers => "assign_role_users",
            Operation::CreateExportJob => "create_export_job",
            Operation::GetJob => "get_job",
            Operation::GetRoleUsers => "get_role_users",
            Operation::GetLogStreams => "get_log_streams",
            Operation::CreateLogStream => "create_log_stream",
            Operation::UpdateLogStream => "update_log_stream",
            Operation::GetLogStream => "get_log_stream",
            Operation::GetLogs => "get_logs",
            Operation::AssignOrganizationMemberRoles => "assign_organization_member_roles",
            Operation::GetOrganizations => "get_organizations",
            Operation::GetOrganizationMembers => "get_organization_members",
            Operation::RemoveUserRoles => "remove_user_roles",
            Operation::SubscribeEvents => "subscribe_events",
        }
    }
}

/// Counts kept for summaries (`replay`, `demo`, benches); Prometheus has the same and more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Requests sent, by operation.
    pub calls: BTreeMap<Operation, u64>,
    /// 429 answers received.
    pub rate_limited: u64,
    /// Retries after transient failures (429 included).
    pub retries: u64,
}

impl CallStats {
    pub fn total(&self) -> u64 {
        self.calls.values().sum()
    }
    /// Calls that wrote role assignments.
    pub fn writes(&self) -> u64 {
        [
            Operation::AssignUserRoles,
            Operation::AssignRoleUsers,
            Operation::AssignOrganizationMemberRoles,
        ]
        .iter()
        .filter_map(|op| self.calls.get(op))
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2xx answer whose body does not decode keeps serde's error as its source, so the
    /// printed chain says where the JSON broke (it was flattened into text before).
    #[test]
    fn an_undecodable_answer_keeps_the_json_error_as_its_source() {
        let Err(json) = serde_json::from_slice::<serde_json::Value>(b"{\"user_id\": ") else {
            panic!("that is not JSON")
        };
        let error = MgmtError::Undecodable {
            operation: "get_user",
            source: json.into(),
        };
        assert!(std::error::Error::source(&error).is_some());
        let chain = crate::exit::cause_chain(&error);
        assert!(
            chain.starts_with("get_user: the response is not the JSON the API documents"),
            "{chain}"
        );
        assert!(chain.contains("EOF while parsing"), "{chain}");
    }
}
