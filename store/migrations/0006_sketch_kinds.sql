-- hubwatch store, schema version 6: sketches of two kinds (fingerprints/sketch.py).
--
-- Rows stored before this version hold the 'ordered' sketch; new rows the 'pairs' sketch, which
-- keeps a copy under another vocabulary near its source. A compact row cannot be sketched again
-- (its sampled values are gone), so both kinds live side by side: the vector index has one
-- partition per (shape family, kind), and a query, sketched in every kind, meets each row in that
-- row's kind. A row whose full fingerprint is stored again (re-read from the Hub, or kept in full
-- as evidence) gets the 'pairs' sketch then.
--
-- `seq` orders the table for the index's incremental refresh ("rows after the last one loaded"):
-- a row sketched again moves to a new seq, which fingerprint ids, fixed per row, cannot give.
-- SQLite cannot change a primary key in place: the table is rebuilt with every row kept.
CREATE TABLE sketches_v6 (
    seq            INTEGER PRIMARY KEY,
    fingerprint_id INTEGER NOT NULL UNIQUE,
    shape_family   TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('ordered', 'pairs')),
    vector         BLOB NOT NULL              -- SKETCH_DIM float32 little-endian, unit norm
);

INSERT INTO sketches_v6 (seq, fingerprint_id, shape_family, kind, vector)
SELECT fingerprint_id, fingerprint_id, shape_family, 'ordered', vector FROM sketches ORDER BY fingerprint_id;

DROP TABLE sketches;

ALTER TABLE sketches_v6 RENAME TO sketches;

CREATE INDEX sketches_partition ON sketches (shape_family, kind, seq);
