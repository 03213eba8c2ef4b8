-- The PostgreSQL ledger's reader leases (src/ledger/lease.rs), here so that both backends stay
-- at the same schema version. Unused on SQLite: an SQLite ledger is one host's, and the
-- checkpoint file's lock already keeps one reader per checkpoint.
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
