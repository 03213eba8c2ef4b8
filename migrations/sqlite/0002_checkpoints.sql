-- Where each Logs API reader (`source`, `backstop`) stands: the JSON of its checkpoint, kept
-- beside the checkpoint file so that a reader without its file (a new pod, a lost volume)
-- resumes where the last one stopped.
CREATE TABLE IF NOT EXISTS checkpoints (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
