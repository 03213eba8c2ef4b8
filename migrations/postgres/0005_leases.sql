-- One active reader per stream among the replicas sharing this ledger (src/ledger/lease.rs):
-- the reader named `name` (`auth0_events`, `auth0_logs:source`, `auth0_logs:backstop`) is
-- held by `holder` (host:pid:random of one process) until `expires_at`, on the database's
-- clock. Taken and renewed by one statement; a holder that stops renewing loses it after its
-- ttl, and its checkpoint writes are refused from then on.
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
