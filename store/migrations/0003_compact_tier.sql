-- hubwatch store, schema version 3: compact storage, a vector table that loads without blobs.

-- Sketch vectors in their own table: a row of `fingerprints` stores its blob before any later
-- column, so reading a sketch there walked the blob's overflow pages (5.4 GB read per index
-- load at 10k models). This table is all an index load reads.
CREATE TABLE sketches (
    fingerprint_id INTEGER PRIMARY KEY,
    shape_family   TEXT NOT NULL,
    vector         BLOB NOT NULL              -- SKETCH_DIM float32 little-endian, unit norm
);
CREATE INDEX sketches_family ON sketches (shape_family, fingerprint_id);
INSERT INTO sketches (fingerprint_id, shape_family, vector)
SELECT id, shape_family, sketch FROM fingerprints WHERE sketch IS NOT NULL;
ALTER TABLE fingerprints DROP COLUMN sketch;

-- What the blob holds: 'reference' (added as a reference model: always full), 'full' (matched
-- something: full detail kept as evidence), 'compact' (Fingerprint.compact(): no sampled values;
-- re-read from the Hub when a comparison needs them). Rows stored before this version are full;
-- `hubwatch index compact` shrinks the ones that matched nothing.
ALTER TABLE fingerprints ADD COLUMN tier TEXT NOT NULL DEFAULT 'full'
    CHECK (tier IN ('reference', 'full', 'compact'));
UPDATE fingerprints SET tier = 'reference'
WHERE repo_id IN (SELECT value FROM watch_list WHERE kind = 'reference');

CREATE INDEX matches_found_at ON matches (found_at);
CREATE INDEX alerts_created_at ON alerts (status, created_at);

-- Names this database file for the per-process vector index cache (store/vectors.py): a file
-- deleted and created again at the same path is another store.
INSERT OR IGNORE INTO counters (name, text_value, updated_at)
VALUES ('store_id', lower(hex(randomblob(16))), strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'));
