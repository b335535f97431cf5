"""Compact storage, the blob-free vector index shared per process, retention, migration 0003."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from fingerprints.model import COMPACT_BLOB_MAX, COMPACT_NOTE, TensorInfo
from fingerprints.sketch import SKETCH_KIND, SKETCH_ORDERED, sketch_vector
from store import Store
from store.migrations import known_migrations, split_statements
from store.rows import TIER_COMPACT, TIER_FULL, TIER_REFERENCE
from store_samples import T0, small_fp

COMPACT_VERSION = 3


def old_store(path, before: int) -> sqlite3.Connection:
    """A database with the migrations numbered below ``before``, as an older hubwatch left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    for mig in (m for m in known_migrations() if m.version < before):
        for statement in split_statements(mig.sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, '2025-01-01')", (mig.version, mig.name))
    return conn


def test_migration_moves_sketches_out_of_the_fingerprint_rows(tmp_path):
    path = tmp_path / "old.db"
    conn = old_store(path, before=COMPACT_VERSION)
    fp = small_fp()
    sketch = sketch_vector(fp, SKETCH_ORDERED).astype("<f4").tobytes()
    for fid, repo in ((1, "org/ref"), (2, "org/other")):
        conn.execute("INSERT INTO fingerprints (id, repo_id, sha, version, created_at, blob, bytes_read, shape_family, "
                     "sketch) VALUES (?, ?, 's', ?, '2025-01-01', ?, 1, 'd16', ?)", (fid, repo, fp.version, fp.to_blob(), sketch))
    conn.execute("INSERT INTO watch_list VALUES ('reference', 'org/ref', NULL, NULL, '2025-01-01')")
    conn.close()
    with Store.open(path) as store:
        columns = {r[1] for r in store.conn.execute("PRAGMA table_info(fingerprints)")}
        assert "sketch" not in columns and "tier" in columns
        assert store.get_fingerprint(1).tier == TIER_REFERENCE
        assert store.get_fingerprint(2).tier == TIER_FULL
        assert [fid for fid, _ in store.vectors.search(store.conn, "d16", SKETCH_ORDERED, sketch_vector(fp, SKETCH_ORDERED), 5)] == [1, 2]
        # Stores written before schema 3 hold every model in full: the unmatched one is shrunk.
        assert store.compact_unmatched(keep_repos=set()) == 1
        assert store.get_fingerprint(2).tier == TIER_COMPACT
        assert store.load_fingerprint(2).weights.embedding is None


def test_index_loads_from_the_sketch_table_without_touching_blobs(tmp_path):
    with Store.open(tmp_path / "h.db") as store:
        ids = [store.add_fingerprint(f"org/m{i}", "s", small_fp(seed=i))[0] for i in range(5)]
    with Store.open(tmp_path / "h.db") as store:
        store.vectors._partitions.clear()  # a fresh process
        statements: list[str] = []
        store.conn.set_trace_callback(statements.append)
        found = store.vectors.search(store.conn, "d16", SKETCH_KIND, sketch_vector(small_fp(seed=3)), 1)
        assert found[0][0] == ids[3]
        assert statements and all("fingerprints" not in s and "blob" not in s for s in statements)


def test_one_index_per_database_per_process_updated_in_place(tmp_path):
    path = tmp_path / "h.db"
    with Store.open(path) as first, Store.open(path) as second:
        assert first.vectors is second.vectors
        a, _ = first.add_fingerprint("org/a", "s", small_fp(seed=1))
        assert second.vectors.search(second.conn, "d16", SKETCH_KIND, sketch_vector(small_fp(seed=1)), 1)[0][0] == a
        b, _ = second.add_fingerprint("org/b", "s", small_fp(seed=2))
        assert first.vectors.search(first.conn, "d16", SKETCH_KIND, sketch_vector(small_fp(seed=2)), 1)[0][0] == b
        assert first.vectors.sizes() == {f"d16/{SKETCH_KIND}": 2}
    path.unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"h.db{suffix}").unlink(missing_ok=True)
    with Store.open(path) as again:  # a new file at the same path is another store
        assert again.vectors.sizes() == {}


def moe_fp():
    """A fingerprint with a MoE-sized tensor table (61 layers x 256 experts x 3 matrices)."""
    fp = small_fp(hidden=64)
    fp.weights.tensors = [TensorInfo(f"model.layers.{l}.mlp.experts.{e}.{p}.weight", "BF16", [2048, 7168],
                                     f"model-{l:05d}-of-00163.safetensors", f"expert_{p}", l)
                          for l in range(61) for e in range(256) for p in ("gate_proj", "up_proj", "down_proj")]
    rng = np.random.default_rng(0)
    fp.weights.embedding.values = rng.normal(0, 0.02, size=(512, 64)).astype(np.float32)
    fp.weights.embedding.tokens = [f"tok{i}" for i in range(512)]
    return fp


@pytest.mark.slow  # ~12 s on a shared core
def test_compact_blob_fits_the_budget_and_keeps_everything_but_samples():
    fp = moe_fp()
    compact = fp.compact()
    assert len(compact.to_blob()) <= COMPACT_BLOB_MAX < len(fp.to_blob())
    assert compact.weights.samples == [] and compact.weights.embedding is None
    assert compact.weights.note == COMPACT_NOTE
    assert compact.weights.structure_hash == fp.weights.structure_hash
    assert compact.tokenizer == fp.tokenizer and compact.config == fp.config
    assert fp.weights.embedding is not None  # the original is untouched


def test_tiers_compact_then_full_detail_back_references_stay(store):
    fp = small_fp(seed=4)
    fid, _ = store.add_fingerprint("org/new", "s", fp, tier=TIER_COMPACT)
    assert store.get_fingerprint(fid).tier == TIER_COMPACT
    assert store.load_fingerprint(fid).weights.embedding is None
    # Its sketch and keys were indexed from the full fingerprint.
    assert store.vectors.search(store.conn, "d16", SKETCH_KIND, sketch_vector(fp), 1)[0] == (fid, pytest.approx(1.0, abs=1e-5))
    assert store.add_fingerprint("org/new", "s", fp, tier=TIER_FULL) == (fid, False)
    assert store.get_fingerprint(fid).tier == TIER_FULL
    np.testing.assert_allclose(store.load_fingerprint(fid).weights.embedding.values, fp.weights.embedding.values,
                               atol=1e-2)
    ref, _ = store.add_fingerprint("org/ref", "s", small_fp(seed=5), tier=TIER_REFERENCE)
    store.set_tier(ref, small_fp(seed=5), TIER_COMPACT)
    assert store.get_fingerprint(ref).tier == TIER_REFERENCE


class Verdict:
    verdict, confidence, score, kinds = "weights-derived", 0.9, 0.9, ["noise"]

    def to_dict(self):
        return {"verdict": self.verdict}


def test_retention_deletes_old_matches_and_delivered_alerts_and_plots_only(store):
    a, _ = store.add_fingerprint("org/a", "s", small_fp(seed=1))
    b, _ = store.add_fingerprint("org/b", "s", small_fp(seed=2))
    store.record_match(a, b, Verdict(), now=T0)
    payload = {"title": "copy", "plot": "aGVsbG8="}
    for key in ("old-delivered", "old-pending", "new-delivered"):
        at = T0 if key.startswith("old") else T0 + timedelta(days=20)
        store.enqueue_alert(key, payload, now=at)
    for alert in store.claim_pending_alerts(10, now=T0 + timedelta(days=21)):
        if alert.dedupe_key != "old-pending":
            store.mark_delivered(alert.id, now=T0 + timedelta(days=21))
    # Plots go after 10 days: only the old delivered alert loses its plot.
    assert store.prune(None, T0 + timedelta(days=10), "plot") == {"matches": 0, "alerts": 0, "plots": 1}
    plots = {r[0]: r[1] for r in store.conn.execute("SELECT dedupe_key, json_extract(payload, '$.plot') FROM alerts")}
    assert plots == {"old-delivered": None, "old-pending": "aGVsbG8=", "new-delivered": "aGVsbG8="}
    assert store.prune(T0 + timedelta(days=10), None, "plot") == {"matches": 1, "alerts": 1, "plots": 0}
    left = sorted(r[0] for r in store.conn.execute("SELECT dedupe_key FROM alerts"))
    assert left == ["new-delivered", "old-pending"]
    assert store.matches_for(a) == []


def test_a_migration_numbered_below_one_already_applied_still_runs(tmp_path, monkeypatch):
    """Numbers are handed out to parallel branches: 3 may reach a store before 2 exists."""
    from store import migrations

    path = tmp_path / "h.db"
    Store.open(path).close()
    late = migrations.Migration(max(m.version for m in known_migrations()) + 2, "late",
                                "CREATE TABLE late_table (x INTEGER);")
    gap = migrations.Migration(late.version - 1, "gap", "CREATE TABLE gap_table (x INTEGER);")
    shipped = known_migrations()
    monkeypatch.setattr(migrations, "known_migrations", lambda: shipped + [late])
    Store.open(path).close()
    monkeypatch.setattr(migrations, "known_migrations", lambda: shipped + [gap, late])
    with Store.open(path) as store:
        applied = [r[0] for r in store.conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert applied[-2:] == [gap.version, late.version]
    monkeypatch.setattr(migrations, "known_migrations", lambda: shipped)
    with pytest.raises(migrations.SchemaTooNewError, match="newer than"):
        Store.open(path)


def test_migration_0006_keeps_older_sketches_in_their_kind_until_a_full_fingerprint_is_stored(tmp_path, capsys):
    from bot.cli import main

    path = tmp_path / "old.db"
    conn = old_store(path, before=6)
    ref, other = small_fp(seed=1), small_fp(seed=2)
    for fid, repo, fp, tier in ((1, "org/ref", ref, "reference"), (2, "org/other", other.compact(), "compact")):
        conn.execute("INSERT INTO fingerprints (id, repo_id, sha, version, created_at, blob, bytes_read, shape_family, "
                     "tier) VALUES (?, ?, 's', ?, '2025-01-01', ?, 1, 'd16', ?)", (fid, repo, fp.version, fp.to_blob(), tier))
        conn.execute("INSERT INTO sketches (fingerprint_id, shape_family, vector) VALUES (?, 'd16', ?)",
                     (fid, sketch_vector(small_fp(seed=fid), SKETCH_ORDERED).astype("<f4").tobytes()))
    conn.close()
    with Store.open(path) as store:
        assert {fid: kind for fid, (kind, _) in store.sketches_of([1, 2]).items()} == {1: SKETCH_ORDERED, 2: SKETCH_ORDERED}
        found = store.vectors.search(store.conn, "d16", SKETCH_ORDERED, sketch_vector(ref, SKETCH_ORDERED), 1)
        assert found[0][0] == 1
        [cand] = [c for c in store.candidates(ref) if c.fingerprint_id == 1]
        assert cand.sketch_kind == SKETCH_ORDERED and cand.cosine == pytest.approx(1.0, abs=1e-5)
    assert main(["index", "compact", "--db", str(path)]) == 0
    assert "sketched 1 fingerprints kept in full again" in capsys.readouterr().out
    with Store.open(path) as store:
        # The reference (full) is sketched again; the compact row cannot be and keeps its kind.
        assert {fid: kind for fid, (kind, _) in store.sketches_of([1, 2]).items()} == {1: SKETCH_KIND, 2: SKETCH_ORDERED}
        # The process's index, loaded before, reads the moved row into the new kind's partition.
        assert store.vectors.search(store.conn, "d16", SKETCH_KIND, sketch_vector(ref), 1)[0][0] == 1
        assert store.sketch_full_rows_again() == 0


def test_a_row_sketched_again_by_two_threads_at_once_enters_the_new_partition_once(tmp_path, monkeypatch):
    import store.store as store_module

    path = tmp_path / "race.db"
    fp = small_fp(seed=1)
    with Store.open(path) as store:  # a row as a store before schema 6 left it: the older sketch kind
        fid, _ = store.add_fingerprint("org/a", "s", fp)
        store.conn.execute("UPDATE sketches SET kind = ?, vector = ? WHERE fingerprint_id = ?",
                           (SKETCH_ORDERED, sketch_vector(fp, SKETCH_ORDERED).astype("<f4").tobytes(), fid))
    with Store.open(path) as first, Store.open(path) as second:
        real = store_module.sketch_vector

        def other_thread_first(fp, kind):
            # The other thread's set_tier of the same row runs, and a search reads it into the index,
            # between this one's check of the row's kind and its update.
            monkeypatch.setattr(store_module, "sketch_vector", real)
            second.set_tier(fid, fp, TIER_FULL)
            second.vectors.refresh(second.conn, "d16", SKETCH_KIND)
            return real(fp, kind)

        monkeypatch.setattr(store_module, "sketch_vector", other_thread_first)
        first.set_tier(fid, fp, TIER_FULL)
        found = first.vectors.search(first.conn, "d16", SKETCH_KIND, sketch_vector(fp), 5)
        assert [found_id for found_id, _ in found] == [fid]
