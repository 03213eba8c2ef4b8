-- Grants journaled before their role write (issue 30): a row is written (with the grant it will
-- record) after the read of the user's roles and before `POST /api/v2/users/{id}/roles` (or
-- the bulk form), and removed in the transaction that records the grant once Auth0 accepted the
-- write. A row left by a crash in between is settled by the user's next delivery: its role held
-- at that delivery's read means the write happened (recorded then, as this service's grant); not
-- held, it never happened or was undone (written again when the policy still gives it, else
-- dropped). A pending row is never a grant (`--revoke`, `explain`'s standing grants). Additive:
-- an older version ignores the table (and records its grants without journaling them).
CREATE TABLE IF NOT EXISTS pending_grants (
    user_id TEXT NOT NULL,
    role_id TEXT NOT NULL,
    role_name TEXT NOT NULL,
    organization_id TEXT NOT NULL DEFAULT '',
    rule TEXT NOT NULL,
    trigger_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    policy_fingerprint TEXT NOT NULL,
    instance TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    event_at_ms BIGINT,
    PRIMARY KEY (user_id, role_id, organization_id)
);
