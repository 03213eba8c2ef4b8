-- When the event that gave a grant happened (its `date`/`time`, unix milliseconds; NULL when the
-- event carried none, or for rows written before this column). A signup dated after the event of
-- a standing grant means the account was deleted and re-created with the same id; a deletion
-- forgets only what was granted for events before it. Additive: an older version that does not
-- know the column keeps working beside it (rolling upgrade, rollback).
ALTER TABLE grants ADD COLUMN event_at_ms BIGINT;
