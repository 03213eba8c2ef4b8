-- The grants ledger (SQLite). One row per grant; `revoked` is set when a revocation ends it, so
-- the standing grants of a user are the rows with revoked = 0 (at most one per user, role and
-- organization: the partial unique index). organization_id is '' for a tenant role.
CREATE TABLE IF NOT EXISTS grants (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    role_name TEXT NOT NULL,
    organization_id TEXT NOT NULL DEFAULT '',
    rule TEXT NOT NULL,
    trigger_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    policy_fingerprint TEXT NOT NULL,
    instance TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS grants_standing
    ON grants (user_id, role_id, organization_id) WHERE revoked = 0;
CREATE INDEX IF NOT EXISTS grants_user ON grants (user_id);

CREATE TABLE IF NOT EXISTS revocations (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    role_name TEXT NOT NULL,
    organization_id TEXT NOT NULL DEFAULT '',
    revoked_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS revocations_user ON revocations (user_id);

CREATE TABLE IF NOT EXISTS failures (
    user_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
