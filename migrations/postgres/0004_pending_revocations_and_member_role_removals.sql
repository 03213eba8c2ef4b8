-- Revocations journaled before their DELETE: a row is written (with the revocation it will
-- record) before `reconcile --revoke --apply` sends `DELETE /api/v2/users/{id}/roles`, and
-- removed in the transaction that records the revocation once Auth0 accepted it. A row left
-- by a crash in between is finished by the next apply (the DELETE again, idempotent, then the
-- record), so it is never taken for an admin's removal.
CREATE TABLE IF NOT EXISTS pending_revocations (
    user_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    role_name TEXT NOT NULL,
    organization_id TEXT NOT NULL DEFAULT '',
    revoked_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, role_id, organization_id)
);

-- Member roles an admin removed (Event Streams `organization.member.role.deleted`): a role the
-- policy gives in that organization is not given to that member again by a trigger (only
-- `reconcile --restore` gives it back). `organization.member.deleted` clears the member's
-- rows with its grants there. Additive: an older version ignores both tables.
CREATE TABLE IF NOT EXISTS member_role_removals (
    user_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    role_name TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, organization_id, role_id)
);
