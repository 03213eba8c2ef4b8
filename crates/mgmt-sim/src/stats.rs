//! What the simulator counts ([`SimStats`]) and the operations it counts per
//! ([`Operation`], keyed by the route a request matched).

use std::collections::BTreeMap;

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// Counters since the simulator was created. Every request is counted, failed ones included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Requests per operation: `token`, `get_roles`, `get_user`, `get_user_roles`,
    /// `assign_user_roles`, `assign_role_users`, `remove_user_roles`, `create_export_job`,
    /// `get_job`, `get_role_users`, `get_users`, `get_log_streams`, `get_log_stream`,
    /// `create_log_stream`, `update_log_stream`, `delete_log_stream`, `get_logs`.
    pub calls: BTreeMap<String, u64>,
    /// Every request to a tenant route (`/oauth/token`, `/api/v2/*`, unknown paths); not `/sim/*`.
    pub total_requests: u64,
    /// 429 answers served.
    pub rate_limited: u64,
    /// Injected 500/503 answers served (from `error_rate`).
    pub faults_served: u64,
    /// 503 answers served while the tenant was down.
    pub down_served: u64,
    /// 401 answers served for a missing, unknown, revoked or expired token.
    pub unauthorized: u64,
    /// 403 `insufficient_scope` answers served (from `denied_scopes`).
    pub forbidden: u64,
    /// Successful answers whose body was cut off (from `cut_body_rate`).
    pub bodies_cut: u64,
    /// (user, role) pairs newly added.
    pub role_assignments: u64,
    /// (user, role) pairs requested that the user already held.
    pub duplicate_assignments: u64,
    /// Export files downloaded from their `location` (not a Management API call).
    #[serde(default)]
    pub export_downloads: u64,
    /// (organization, member, role) triples newly added.
    #[serde(default)]
    pub organization_role_assignments: u64,
    /// 429 answers served by the organization member roles bucket (also in `rate_limited`).
    #[serde(default)]
    pub organization_rate_limited: u64,
}

impl Default for SimStats {
    fn default() -> Self {
        SimStats {
            calls: Operation::ALL
                .iter()
                .map(|op| (op.key().to_owned(), 0))
                .collect(),
            total_requests: 0,
            rate_limited: 0,
            faults_served: 0,
            forbidden: 0,
            bodies_cut: 0,
            down_served: 0,
            unauthorized: 0,
            role_assignments: 0,
            duplicate_assignments: 0,
            export_downloads: 0,
            organization_role_assignments: 0,
            organization_rate_limited: 0,
        }
    }
}

impl SimStats {
    /// Calls counted for one operation key (0 if none).
    pub fn calls_of(&self, key: &str) -> u64 {
        self.calls.get(key).copied().unwrap_or(0)
    }

    pub(crate) fn record_call(&mut self, op: Option<Operation>) {
        self.total_requests += 1;
        if let Some(op) = op {
            *self.calls.entry(op.key().to_owned()).or_insert(0) += 1;
        }
    }
}

/// The simulated endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Token,
    GetRoles,
    GetUser,
    GetUserRoles,
    GetUserEffectiveRoles,
    GetClient,
    AssignUserRoles,
    RemoveUserRoles,
    AssignRoleUsers,
    CreateExportJob,
    GetJob,
    GetRoleUsers,
    GetUsers,
    GetLogStreams,
    GetLogStream,
    CreateLogStream,
    UpdateLogStream,
    DeleteLogStream,
    GetLogs,
    AssignOrganizationMemberRoles,
    RemoveOrganizationMemberRoles,
    GetOrganizations,
    GetOrganizationMembers,
    SubscribeEvents,
}

impl Operation {
    pub(crate) const ALL: [Operation; 24] = [
        Operation::Token,
        Operation::GetRoles,
        Operation::GetUser,
        Operation::GetUserRoles,
        Operation::GetUserEffectiveRoles,
        Operation::GetClient,
        Operation::AssignUserRoles,
        Operation::RemoveUserRoles,
        Operation::AssignRoleUsers,
        Operation::CreateExportJob,
        Operation::GetJob,
        Operation::GetRoleUsers,
        Operation::GetUsers,
        Operation::GetLogStreams,
        Operation::GetLogStream,
        Operation::CreateLogStream,
        Operation::UpdateLogStream,
        Operation::DeleteLogStream,
        Operation::GetLogs,
        Operation::AssignOrganizationMemberRoles,
        Operation::RemoveOrganizationMemberRoles,
        Operation::GetOrganizations,
        Operation::GetOrganizationMembers,
        Operation::SubscribeEvents,
    ];

    pub(crate) fn key(self) -> &'static str {
        match self {
            Operation::Token => "token",
            Operation::GetRoles => "get_roles",
            Operation::GetUser => "get_user",
            Operation::GetUserRoles => "get_user_roles",
            Operation::GetUserEffectiveRoles => "get_user_effective_roles",
            Operation::GetClient => "get_client",
            Operation::AssignUserRoles => "assign_user_roles",
            Operation::RemoveUserRoles => "remove_user_roles",
            Operation::AssignRoleUsers => "assign_role_users",
            Operation::CreateExportJob => "create_export_job",
            Operation::GetJob => "get_job",
            Operation::GetRoleUsers => "get_role_users",
            Operation::GetUsers => "get_users",
            Operation::GetLogStreams => "get_log_streams",
            Operation::GetLogStream => "get_log_stream",
            Operation::CreateLogStream => "create_log_stream",
            Operation::UpdateLogStream => "update_log_stream",
            Operation::DeleteLogStream => "delete_log_stream",
            Operation::GetLogs => "get_logs",
            Operation::AssignOrganizationMemberRoles => "assign_organization_member_roles",
            Operation::RemoveOrganizationMemberRoles => "remove_organization_member_roles",
            Operation::GetOrganizations => "get_organizations",
            Operation::GetOrganizationMembers => "get_organization_members",
            Operation::SubscribeEvents => "subscribe_events",
        }
    }

    /// Management API calls need a token and are rate limited; the token endpoint is not.
    pub(crate) fn is_api(self) -> bool {
        self != Operation::Token
    }

    /// The operation for a method and a matched route pattern (as registered in the router).
    pub(crate) fn classify(method: &Method, route: &str) -> Option<Operation> {
        let op = match (route, method.as_str()) {
            ("/oauth/token", "POST") => Operation::Token,
            ("/api/v2/roles", "GET") => Operation::GetRoles,
            ("/api/v2/users/{id}", "GET") => Operation::GetUser,
            ("/api/v2/users/{id}/roles", "GET") => Operation::GetUserRoles,
            ("/api/v2/users/{id}/effective-roles", "GET") => Operation::GetUserEffectiveRoles,
            ("/api/v2/clients/{id}", "GET") => Operation::GetClient,
            ("/api/v2/users/{id}/roles", "POST") => Operation::AssignUserRoles,
            ("/api/v2/users/{id}/roles", "DELETE") => Operation::RemoveUserRoles,
            ("/api/v2/roles/{id}/users", "POST") => Operation::AssignRoleUsers,
            ("/api/v2/roles/{id}/users", "GET") => Operation::GetRoleUsers,
            ("/api/v2/users", "GET") => Operation::GetUsers,
            ("/api/v2/jobs/users-exports", "POST") => Operation::CreateExportJob,
            ("/api/v2/jobs/{id}", "GET") => Operation::GetJob,
            ("/api/v2/log-streams", "GET") => Operation::GetLogStreams,
            ("/api/v2/log-streams", "POST") => Operation::CreateLogStream,
            ("/api/v2/log-streams/{id}", "GET") => Operation::GetLogStream,
            ("/api/v2/log-streams/{id}", "PATCH") => Operation::UpdateLogStream,
            ("/api/v2/log-streams/{id}", "DELETE") => Operation::DeleteLogStream,
            ("/api/v2/logs", "GET") => Operation::GetLogs,
            ("/api/v2/organizations/{id}/members/{user_id}/roles", "POST") => {
                Operation::AssignOrganizationMemberRoles
            }
            ("/api/v2/organizations/{id}/members/{user_id}/roles", "DELETE") => {
                Operation::RemoveOrganizationMemberRoles
            }
            ("/api/v2/organizations", "GET") => Operation::GetOrganizations,
            ("/api/v2/organizations/{id}/members", "GET") => Operation::GetOrganizationMembers,
            ("/api/v2/events", "GET") => Operation::SubscribeEvents,
            _ => return None,
        };
        Some(op)
    }
}
