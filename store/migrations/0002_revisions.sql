-- hubwatch store, schema version 2: the per-revision work table (state machine in store/work.py).
-- One row per listed (repo, sha): what was done with it, or why not, and when to try again.

CREATE TABLE revisions (
    repo_id         TEXT NOT NULL,
    sha             TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'in_flight', 'done', 'failed', 'skipped')),
    reason          TEXT,                       -- failed / skipped: a short kind (gated, timeout, ...)
    detail          TEXT,                       -- failed / skipped: the error message
    attempts        INTEGER NOT NULL DEFAULT 0, -- fingerprinting attempts started
    feed            TEXT,                       -- the feed that listed it first
    listed_at       TEXT NOT NULL,              -- first listed: queue lag is claimed_at - listed_at
    claimed_at      TEXT,                       -- in_flight since
    claim_owner     TEXT,                       -- the process holding an in_flight claim
    next_attempt_at TEXT,                       -- pending / failed: not before this
    finished_at     TEXT,                       -- done / failed / skipped: when
    PRIMARY KEY (repo_id, sha)
);
CREATE INDEX revisions_due ON revisions (state, next_attempt_at);

-- Stores from schema 1: every fingerprinted revision is done.
INSERT OR IGNORE INTO revisions (repo_id, sha, state, attempts, listed_at, finished_at)
SELECT repo_id, sha, 'done', 1, min(created_at), min(created_at) FROM fingerprints GROUP BY repo_id, sha;
