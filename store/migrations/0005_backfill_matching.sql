-- hubwatch store, schema version 5: backfilled revisions wait to be compared, then to be judged.
--
-- Two more states of the work table (store/work.py): 'unmatched' (stored by `hubwatch backfill`,
-- not compared yet) and 'undecided' (its copy relations are recorded; whether it alerts is
-- decided once the backfill's listing is complete). Both are persisted so that a killed backfill
-- resumes its comparisons and decisions instead of losing them. SQLite cannot change a CHECK
-- constraint in place: the table is rebuilt with every row kept.
CREATE TABLE revisions_v5 (
    repo_id         TEXT NOT NULL,
    sha             TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'in_flight', 'unmatched', 'undecided', 'done', 'failed', 'skipped')),
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

INSERT INTO revisions_v5 (repo_id, sha, state, reason, detail, attempts, feed, listed_at, claimed_at, claim_owner,
                          next_attempt_at, finished_at)
SELECT repo_id, sha, state, reason, detail, attempts, feed, listed_at, claimed_at, claim_owner, next_attempt_at,
       finished_at FROM revisions;

DROP TABLE revisions;

ALTER TABLE revisions_v5 RENAME TO revisions;

CREATE INDEX revisions_due ON revisions (state, next_attempt_at);
