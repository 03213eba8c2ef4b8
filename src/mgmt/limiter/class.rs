//! The Auth0 limit classes the limiter keeps a bucket for, and which operation is in which.

use crate::mgmt::Operation;

/// The Auth0 limit classes whose buckets the client tracks apart: a 429 holds only its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RateClass {
    /// `POST`/`DELETE /users/{id}/roles`, `POST /roles/{id}/users`.
    RoleWrites,
    /// `GET /roles`, `/users/{id}/roles`, `/roles/{id}/users`.
    RoleReads,
    /// `GET /users/{id}` (Essentials/Professional: Read Users, 40 burst, 500/min).
    UserReads,
    /// Organization member role writes (200/min, burst 20).
    OrganizationMemberRoles,
    /// `GET /logs` (Essentials: 100/min, burst 10).
    Logs,
    /// `POST /oauth/token`.
    Token,
    /// Everything else (clients, jobs, log streams, organization listings).
    Other,
}

impl RateClass {
    pub const ALL: [RateClass; 7] = [
        RateClass::RoleWrites,
        RateClass::RoleReads,
        RateClass::UserReads,
        RateClass::OrganizationMemberRoles,
        RateClass::Logs,
        RateClass::Token,
        RateClass::Other,
    ];

    /// The `class` label of the limiter's metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RateClass::RoleWrites => "role_writes",
            RateClass::RoleReads => "role_reads",
            RateClass::UserReads => "user_reads",
            RateClass::OrganizationMemberRoles => "organization_member_roles",
            RateClass::Logs => "logs",
            RateClass::Token => "token",
            RateClass::Other => "other",
        }
    }

    pub fn of(operation: Operation) -> RateClass {
        match operation {
            Operation::AssignUserRoles
            | Operation::AssignRoleUsers
            | Operation::RemoveUserRoles => RateClass::RoleWrites,
            Operation::GetRoles
            | Operation::GetUserRoles
            | Operation::GetUserEffectiveRoles
            | Operation::GetRoleUsers => RateClass::RoleReads,
            Operation::GetUser => RateClass::UserReads,
            Operation::AssignOrganizationMemberRoles => RateClass::OrganizationMemberRoles,
            Operation::GetLogs => RateClass::Logs,
            Operation::Token => RateClass::Token,
            Operation::GetClient
            | Operation::CreateExportJob
            | Operation::GetJob
            | Operation::GetLogStreams
            | Operation::CreateLogStream
            | Operation::UpdateLogStream
            | Operation::GetLogStream
            | Operation::GetOrganizations
            | Operation::GetOrganizationMembers
            | Operation::SubscribeEvents => RateClass::Other,
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}
