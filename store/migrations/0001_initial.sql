-- hubwatch store, schema version 1.
-- Times are ISO-8601 UTC strings; JSON columns hold JSON text (datasette shows them as such).

CREATE TABLE models (
    repo_id        TEXT PRIMARY KEY,
    model_id       TEXT,                       -- the Hub's _id, stable across renames
    sha            TEXT,                       -- last commit sha seen
    author         TEXT,
    created_at     TEXT,
    last_modified  TEXT,
    downloads      INTEGER,
    likes          INTEGER,
    trending_score REAL,
    license        TEXT,
    base_models    TEXT NOT NULL DEFAULT '[]', -- declared base models, JSON list of repo ids
    tags           TEXT NOT NULL DEFAULT '[]', -- JSON list
    library_name   TEXT,
    pipeline_tag   TEXT,
    first_seen     TEXT NOT NULL,
    last_seen      TEXT NOT NULL
);
CREATE INDEX models_author ON models (author);
CREATE INDEX models_created_at ON models (created_at);

-- One row per distinct vocabulary: many models share one tokenizer, so tokens are stored once.
CREATE TABLE vocabularies (
    vocab_hash TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    minhash    BLOB NOT NULL,                  -- MINHASH_PERMUTATIONS little-endian uint64
    tokens     BLOB                            -- zlib(JSON list id -> token); NULL when not known
);

CREATE TABLE fingerprints (
    id           INTEGER PRIMARY KEY,
    repo_id      TEXT NOT NULL,
    sha          TEXT NOT NULL,
    version      INTEGER NOT NULL,             -- fingerprints.model.FINGERPRINT_VERSION
    created_at   TEXT NOT NULL,
    blob         BLOB NOT NULL,                -- Fingerprint.to_blob()
    bytes_read   INTEGER NOT NULL,
    vocab_hash   TEXT,
    shape_family TEXT NOT NULL,
    sketch       BLOB,                         -- SKETCH_DIM float32, unit norm; NULL without embedding
    UNIQUE (repo_id, sha, version)
);
CREATE INDEX fingerprints_repo ON fingerprints (repo_id, id);
CREATE INDEX fingerprints_family ON fingerprints (shape_family, id);
CREATE INDEX fingerprints_vocab ON fingerprints (vocab_hash, id);

-- Exact candidate keys: Fingerprint.index_keys() (file sha256, value digest, structure, vocab, ...).
CREATE TABLE index_keys (
    kind           TEXT NOT NULL,
    value          TEXT NOT NULL,
    fingerprint_id INTEGER NOT NULL,
    PRIMARY KEY (kind, value, fingerprint_id)
) WITHOUT ROWID;

-- MinHash LSH over vocabularies (not fingerprints: a popular tokenizer is banded once).
CREATE TABLE lsh_bands (
    band       INTEGER NOT NULL,
    bucket     INTEGER NOT NULL,
    vocab_hash TEXT NOT NULL,
    PRIMARY KEY (band, bucket, vocab_hash)
) WITHOUT ROWID;

CREATE TABLE matches (
    id            INTEGER PRIMARY KEY,
    fingerprint_a INTEGER NOT NULL,            -- the earlier / reference model
    fingerprint_b INTEGER NOT NULL,            -- the suspect
    verdict       TEXT NOT NULL,
    confidence    REAL NOT NULL,
    score         REAL NOT NULL,
    kinds         TEXT NOT NULL DEFAULT '[]',  -- JSON list
    evidence      TEXT NOT NULL DEFAULT '[]',  -- JSON: Comparison.to_dict()
    found_at      TEXT NOT NULL,
    UNIQUE (fingerprint_a, fingerprint_b)
);
CREATE INDEX matches_b ON matches (fingerprint_b);

-- Alert outbox; the state machine is documented in store/outbox.py.
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    dedupe_key      TEXT NOT NULL UNIQUE,
    nonce           TEXT NOT NULL UNIQUE,       -- fixed at enqueue; the sender puts it in the message
    payload         TEXT NOT NULL,              -- JSON
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    claim_token     TEXT,                       -- who holds the lease of a 'sending' row
    lease_until     TEXT,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    delivery_ref    TEXT,                       -- what the webhook answered (e.g. message id)
    created_at      TEXT NOT NULL,
    delivered_at    TEXT
);
CREATE INDEX alerts_due ON alerts (status, next_attempt_at);

CREATE TABLE poll_cursors (
    feed       TEXT PRIMARY KEY,
    cursor     TEXT,
    last_seen  TEXT,
    updated_at TEXT NOT NULL
);

-- Reference repos and watched authors added by users.
CREATE TABLE watch_list (
    kind     TEXT NOT NULL CHECK (kind IN ('reference', 'author')),
    value    TEXT NOT NULL,
    added_by TEXT,
    note     TEXT,
    added_at TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);

-- Counters and status values (last poll time, error counts).
CREATE TABLE counters (
    name       TEXT PRIMARY KEY,
    value      INTEGER NOT NULL DEFAULT 0,
    text_value TEXT,
    updated_at TEXT NOT NULL
);
