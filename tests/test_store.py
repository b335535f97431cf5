"""The SQLite store: migrations, idempotent ingest, outbox state machine, damaged or locked files."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import numpy as np
import pytest

from fingerprints.sketch import sketch_vector
from bot.watch.records import model_record

from bot.cli import main
from store import (SchemaTooNewError, Store, StoreCorruptError, StoreError, StoreLockedError)
from store.migrations import known_migrations, latest_version, split_statements
from store.records import ModelRecord
from store.references import load_references
from store_samples import T0, small_fp
from hubfixtures import hub_model



def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- migrations ----------------------------------------------------------------------------

def test_fresh_database_is_migrated_in_wal_mode(store):
    assert store.schema_version() == latest_version()
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = set(store.db.table_names())
    assert {"models", "fingerprints", "vocabularies", "index_keys", "lsh_bands", "matches", "alerts",
            "poll_cursors", "watch_list", "counters", "schema_migrations"} <= tables


def test_reopening_applies_nothing_and_keeps_data(tmp_path):
    path = tmp_path / "h.db"
    with Store.open(path) as s:
        s.add_fingerprint("org/a", "sha1", small_fp())
    with Store.open(path) as s:
        assert s.conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(known_migrations())
        assert s.find_fingerprint("org/a", "sha1") is not None


def test_database_from_a_newer_hubwatch_is_refused(tmp_path):
    path = tmp_path / "h.db"
    Store.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (?, 'future', '2099-01-01')", (latest_version() + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(SchemaTooNewError, match="newer than"):
        Store.open(path)


def test_statement_splitter_keeps_semicolons_inside_strings():
    assert split_statements("CREATE TABLE t (a TEXT DEFAULT ';');\n-- c;\nSELECT 1;\n") == [
        "CREATE TABLE t (a TEXT DEFAULT ';');", "-- c;\nSELECT 1;"]


# ---- ingest ---------------------------------------------------------------------------------

def test_same_revision_is_a_no_op_and_new_sha_is_a_new_row(store):
    fp = small_fp()
    first = store.add_fingerprint("org/a", "sha1", fp)
    assert first[1] is True
    assert store.add_fingerprint("org/a", "sha1", fp) == (first[0], False)
    second = store.add_fingerprint("org/a", "sha2", fp)
    assert second[1] is True and second[0] != first[0]
    assert store.conn.execute("SELECT count(*) FROM fingerprints").fetchone()[0] == 2
    assert store.find_fingerprint("org/a").sha == "sha2"  # newest revision
    keys = store.conn.execute("SELECT count(*) FROM index_keys WHERE fingerprint_id = ?", (first[0],)).fetchone()[0]
    assert keys == len(fp.index_keys())


def test_blob_and_shared_vocabulary_round_trip(store):
    fp = small_fp()
    a, _ = store.add_fingerprint("org/a", "s", fp)
    store.add_fingerprint("org/b", "s", small_fp(seed=1))  # same vocabulary: stored once
    assert store.conn.execute("SELECT count(*) FROM vocabularies").fetchone()[0] == 1
    back = store.load_fingerprint(a)
    assert back.tokenizer.vocab == fp.tokenizer.vocab
    assert back.weights.value_digest == fp.weights.value_digest
    np.testing.assert_allclose(sketch_vector(back), sketch_vector(fp), atol=2e-3)


def test_a_shared_vocabulary_is_decoded_once_and_a_huge_one_never_kept(store, monkeypatch):
    import store.store as store_module

    decoded = []
    real = store_module.decompress_tokens
    monkeypatch.setattr(store_module, "decompress_tokens", lambda raw: decoded.append(raw) or real(raw))
    store_module._kept_vocabulary.cache_clear()
    ids = [store.add_fingerprint(f"org/m{i}", "s", small_fp(seed=i))[0] for i in range(4)]
    loaded = [store.load_fingerprint(fid) for fid in ids]
    assert len(decoded) == 1  # one vocabulary, four fingerprints
    assert all(fp.tokenizer.vocab == small_fp().tokenizer.vocab for fp in loaded)

    monkeypatch.setattr(store_module, "VOCABULARY_KEPT_MAX_BYTES", 0)
    store.load_fingerprint(ids[0])
    store.load_fingerprint(ids[1])
    assert len(decoded) == 3  # over the size kept: decoded each time


def test_the_whole_index_loads_at_once_into_the_process_index(tmp_path):
    path = tmp_path / "h.db"
    with Store.open(path) as writer:
        for i in range(3):
            writer.add_fingerprint(f"org/m{i}", "s", small_fp(seed=i))
        writer.add_fingerprint("org/wide", "s", small_fp(seed=9, hidden=32))  # another shape family
    with Store.open(path) as reader:
        assert reader.vectors.sizes() == {}  # nothing loaded before a search or load_index
        assert reader.load_index() == 4
        assert len(reader.vectors.sizes()) == 2
    with Store.open(path) as later:
        assert sum(later.vectors.sizes().values()) == 4  # the process's index, loaded once


def test_model_metadata_upsert_keeps_first_seen(store):
    api = {"id": "org/m", "_id": "abc", "sha": "s1", "createdAt": "2024-05-01T00:00:00.000Z", "likes": 3,
           "tags": ["base_model:finetune:meta-llama/Llama-3.1-8B", "license:apache-2.0"],
           "cardData": {"base_model": "org/base"}}
    store.upsert_model(model_record(hub_model(api)), now=T0)
    store.upsert_model(model_record(hub_model({**api, "sha": "s2", "likes": 9})), now=T0 + timedelta(days=1))
    rec = store.get_model("org/m")
    assert (rec.sha, rec.likes, rec.license, rec.author) == ("s2", 9, "apache-2.0", "org")
    assert rec.base_models == ["meta-llama/Llama-3.1-8B", "org/base"]
    assert rec.first_seen < rec.last_seen


def test_a_listing_is_upserted_all_or_nothing(store):
    good = model_record(hub_model({"id": "org/a", "sha": "s1"}))
    nameless = model_record(hub_model({"id": "org/b", "sha": "s2"}))
    nameless.repo_id = ""
    with pytest.raises(StoreError, match="repo id"):
        store.upsert_models([good, nameless])
    assert store.get_model("org/a") is None  # rolled back with the bad record
    store.upsert_models([good, model_record(hub_model({"id": "org/c", "sha": "s3"}))])
    assert store.get_model("org/a").sha == "s1" and store.get_model("org/c").sha == "s3"


def test_cursors_watch_list_counters_and_matches(store):
    assert store.get_cursor("newest") is None
    store.set_cursor("newest", "cur-1", last_seen="2025-01-01")
    store.set_cursor("newest", "cur-2", last_seen="2025-01-02")
    assert store.get_cursor("newest")["cursor"] == "cur-2"
    assert store.add_watch("author", "someone") and not store.add_watch("author", "someone")
    with pytest.raises(StoreError, match="kind must be"):
        store.add_watch("nonsense", "x")
    assert [w.value for w in store.watch_list("author")] == ["someone"]
    assert store.bump("poll_errors") == 1 and store.bump("poll_errors", 2) == 3
    store.set_status("last_poll", "2025-01-01T00:00:00Z")
    assert store.counters()["last_poll"]["text_value"] == "2025-01-01T00:00:00Z"

    class Result:
        verdict, confidence, score, kinds = "weights-derived", 0.9, 0.8, ["noise"]

        def to_dict(self):
            return {"verdict": self.verdict, "evidence": ["x"]}

    a, _ = store.add_fingerprint("org/a", "s", small_fp())
    b, _ = store.add_fingerprint("org/b", "s", small_fp(seed=1))
    mid = store.record_match(a, b, Result())
    assert store.record_match(a, b, Result()) == mid
    [m] = store.matches_for(b)
    assert (m.verdict, m.kinds, m.evidence["evidence"]) == ("weights-derived", ["noise"], ["x"])


def test_shipped_reference_list_is_valid():
    refs = load_references()
    assert len(refs) >= 50
    families = {r.family for r in refs}
    for needed in ("llama-2", "llama-3", "mistral", "qwen-2.5", "gemma-2", "phi-2", "gpt-2", "bert"):
        assert needed in families
    with pytest.raises(StoreError, match="not an org/name"):
        load_references('{"references": [{"repo_id": "no-slash", "family": "x"}]}')


# ---- outbox ---------------------------------------------------------------------------------

def test_outbox_dedupes_and_delivers_once(store):
    assert store.enqueue_alert("copy:org/b@s", {"text": "b copies a"}, now=T0)
    assert not store.enqueue_alert("copy:org/b@s", {"text": "again"}, now=T0)
    [alert] = store.claim_pending_alerts(10, now=T0)
    assert (alert.status, alert.attempts, alert.resumed, alert.payload) == ("sending", 1, False, {"text": "b copies a"})
    assert store.claim_pending_alerts(10, now=T0 + timedelta(seconds=1)) == []  # lease held
    assert store.mark_delivered(alert.id, delivery_ref="msg-1", now=T0) is True
    assert store.mark_delivered(alert.id, delivery_ref="msg-1", now=T0) is False
    assert store.claim_pending_alerts(10, now=T0 + timedelta(days=1)) == []
    assert store.alert_counts()["delivered"] == 1


def test_outbox_retries_after_failure_and_after_expired_lease(store):
    store.enqueue_alert("k", {"n": 1}, now=T0)
    [a1] = store.claim_pending_alerts(1, now=T0, lease=timedelta(seconds=60))
    assert store.mark_failed(a1.id, a1.claim_token, "HTTP 503", retry_at=T0 + timedelta(seconds=30)) == "pending"
    assert store.claim_pending_alerts(1, now=T0 + timedelta(seconds=10)) == []  # not due yet
    [a2] = store.claim_pending_alerts(1, now=T0 + timedelta(seconds=30), lease=timedelta(seconds=60))
    assert a2.attempts == 2 and a2.last_error == "HTTP 503" and a2.nonce == a1.nonce
    # The sender dies (kill -9) while holding the lease: the row is re-claimed once it expires,
    # flagged as resumed so the sender checks the nonce before posting again.
    assert store.claim_pending_alerts(1, now=T0 + timedelta(seconds=89)) == []
    [a3] = store.claim_pending_alerts(1, now=T0 + timedelta(seconds=91))
    assert a3.resumed and a3.attempts == 3 and a3.claim_token != a2.claim_token
    # The dead sender's stale claim cannot push the row back.
    assert store.mark_failed(a2.id, a2.claim_token, "late", retry_at=T0) is None
    assert store.mark_failed(a3.id, a3.claim_token, "webhook deleted", retry_at=None) == "failed"
    assert store.get_alert(a3.id).status == "failed"


def test_outbox_gives_up_after_max_attempts(store):
    store.enqueue_alert("k", {}, now=T0)
    [a] = store.claim_pending_alerts(1, now=T0)
    assert store.mark_failed(a.id, a.claim_token, "HTTP 500", retry_at=T0, max_attempts=1) == "failed"


def test_outbox_survives_a_process_that_dies_mid_transaction(tmp_path):
    path = tmp_path / "h.db"
    with Store.open(path) as s:
        s.enqueue_alert("k", {}, now=T0)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE alerts SET status = 'delivered'")
    conn.close()  # never committed, as if killed
    with Store.open(path) as s:
        assert s.alert_counts()["pending"] == 1


def test_unserialisable_payload_is_a_clear_error(store):
    with pytest.raises(StoreError, match="not JSON-serialisable"):
        store.enqueue_alert("k", {"x": object()})


# ---- damaged and locked files -----------------------------------------------------------------

def test_garbage_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "h.db"
    path.write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(StoreCorruptError, match="not a hubwatch database or is damaged"):
        Store.open(path)
    code, _, err = run_cli(capsys, "index", "stats", "--db", str(path))
    assert code == 74 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "is damaged" in err


def test_damaged_pages_are_a_clear_error(tmp_path):
    path = tmp_path / "h.db"
    with Store.open(path) as s:
        for i in range(30):
            s.add_fingerprint(f"org/m{i}", "s", small_fp(seed=i))
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(path.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    raw[page * 2: len(raw)] = b"\xff" * (len(raw) - page * 2)  # keep the header page, wreck the rest
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreCorruptError):
        with Store.open(path) as s:
            s.stats()


def test_locked_database_is_a_clear_error(tmp_path):
    path = tmp_path / "h.db"
    Store.open(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with Store.open(path, busy_timeout_s=0.2) as s:
            with pytest.raises(StoreLockedError, match="locked by another process"):
                s.add_fingerprint("org/a", "s", small_fp())
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_folder_as_database_path(tmp_path):
    with pytest.raises(StoreError, match="is a folder"):
        Store.open(tmp_path)


def test_vocabularies_past_the_quota_keep_their_hash_and_minhash_but_not_their_tokens(tmp_path):
    # A flood of distinct (hostile) vocabularies: the store grows by their MinHash rows only.
    import hashlib

    def vocab(tag: str) -> list[str]:  # ~70 KB compressed each: hex digests barely compress
        return [hashlib.sha256(f"{tag}{i}".encode()).hexdigest() for i in range(2000)]

    with Store.open(tmp_path / "q.db", vocabulary_quota_bytes=100_000) as store:
        first, second = small_fp(1, vocab=vocab("a")), small_fp(2, vocab=vocab("b"))
        store.add_fingerprint("org/a", "s1", first)
        store.add_fingerprint("org/b", "s2", second)
        stats = store.stats()
        assert stats["vocabularies"] == 2 and stats["vocabularies_over_quota"] == 1
        assert 50_000 < stats["vocabulary_token_bytes"] <= 100_000
        assert store.vocabulary(first.tokenizer.vocab_hash) == vocab("a")
        assert store.vocabulary(second.tokenizer.vocab_hash) is None
        # Still a candidate through its exact vocabulary key, and loadable without its tokens.
        assert store.load_fingerprint(store.find_fingerprint("org/b", "s2").id).tokenizer.vocab_hash == \
            second.tokenizer.vocab_hash
    with Store.open(tmp_path / "q.db") as unlimited:  # 0: no quota
        unlimited.add_fingerprint("org/c", "s3", small_fp(3, vocab=vocab("c")))
        assert unlimited.vocabulary(small_fp(3, vocab=vocab("c")).tokenizer.vocab_hash) == vocab("c")
