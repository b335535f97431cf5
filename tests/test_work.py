"""The per-revision work table (store/work.py): claims, failures with backoff, skips, migration."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from store import Store
from store.migrations import known_migrations, split_statements
from store.work import RETRY_BASE, RETRY_CAP, retry_delay

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "w.db") as s:
        yield s


def test_a_revision_is_claimed_once_across_feeds_and_processes(store, tmp_path):
    store.list_revisions([("a/x", "s1")], feed="newest", now=T0)
    assert store.claim_revision("a/x", "s1", "proc-1", now=T0)
    with Store.open(tmp_path / "w.db") as other:  # a second connection: another feed's job
        assert not other.claim_revision("a/x", "s1", "proc-1", now=T0)
    store.finish_revision("a/x", "s1", now=T0)
    assert not store.claim_revision("a/x", "s1", "proc-1", now=T0 + timedelta(days=9))
    rev = store.get_revision("a/x", "s1")
    assert (rev.state, rev.attempts, rev.feed) == ("done", 1, "newest")


def test_a_failure_is_recorded_with_its_reason_and_retried_with_exponential_backoff(store):
    assert store.claim_revision("a/x", "s1", "p", now=T0)
    retry_at = store.fail_revision("a/x", "s1", "timeout", "hub timed out", now=T0)
    assert retry_at == T0 + RETRY_BASE
    assert not store.claim_revision("a/x", "s1", "p", now=T0 + RETRY_BASE - timedelta(seconds=1))
    assert store.due_revisions(10, now=T0 + RETRY_BASE - timedelta(seconds=1)) == []
    assert [r.repo_id for r in store.due_revisions(10, now=retry_at)] == ["a/x"]
    assert store.claim_revision("a/x", "s1", "p", now=retry_at)
    second = store.fail_revision("a/x", "s1", "timeout", "again", now=retry_at)
    assert second - retry_at == 2 * RETRY_BASE
    assert retry_delay(50) == RETRY_CAP
    assert store.stats()["revisions_not_done"] == {"failed: timeout": 1}


def test_gated_and_disabled_revisions_are_skipped_without_a_claim(store):
    store.skip_revision("a/gated", "s1", "gated", "gated (manual) in the listing", feed="trending")
    store.skip_revision("a/off", "s2", "disabled", "disabled in the listing")
    assert not store.claim_revision("a/gated", "s1", "p")
    s = store.stats()
    assert s["revisions"]["skipped"] == 2
    assert s["revisions_not_done"] == {"skipped: disabled": 1, "skipped: gated": 1}


def test_a_done_revision_is_never_downgraded_to_skipped(store):
    store.claim_revision("a/x", "s1", "p")
    store.finish_revision("a/x", "s1")
    store.skip_revision("a/x", "s1", "gated", "became gated")
    assert store.get_revision("a/x", "s1").state == "done"


def test_work_left_in_flight_by_a_dead_process_is_picked_up_at_the_next_start(store):
    store.claim_revision("a/x", "s1", "dead-proc", now=T0)
    store.claim_revision("a/y", "s1", "me", now=T0)
    assert store.requeue_abandoned("me") == 1
    assert store.get_revision("a/x", "s1").state == "pending"
    assert store.get_revision("a/y", "s1").state == "in_flight"
    store.release_revision("a/y", "s1")  # stopping: handed back, due at once
    assert [r.repo_id for r in store.due_revisions(10, now=T0)] == ["a/x", "a/y"]


def test_migration_marks_fingerprints_of_a_version_1_store_done(tmp_path):
    from fingerprints.model import FINGERPRINT_VERSION

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    first = known_migrations()[0]
    for statement in split_statements(first.sql):
        conn.execute(statement)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    conn.execute("INSERT INTO schema_migrations VALUES (1, ?, '2026-01-01')", (first.name,))
    conn.execute("INSERT INTO fingerprints (repo_id, sha, version, created_at, blob, bytes_read, shape_family) "
                 "VALUES ('a/x', 's1', ?, '2026-01-01T00:00:00+00:00', x'00', 10, 'none')", (FINGERPRINT_VERSION,))
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        rev = store.get_revision("a/x", "s1")
        assert rev.state == "done" and rev.listed_at == "2026-01-01T00:00:00+00:00"
        assert not store.claim_revision("a/x", "s1", "p")  # its fingerprint is of the current version


def test_a_revision_fingerprinted_before_it_was_listed_is_done(store):
    from store_samples import small_fp

    store.add_fingerprint("a/indexed", "s1", small_fp())  # `index add` before any feed listed it
    store.list_revisions([("a/indexed", "s1"), ("a/new", "s1")], feed="trending")
    assert store.get_revision("a/indexed", "s1").state == "done"
    assert not store.claim_revision("a/indexed", "s1", "p")
    assert store.claim_revision("a/new", "s1", "p")


def test_a_backfilled_revision_awaits_its_comparison_then_its_decision_and_no_feed_takes_it(store):
    from store.rows import TIER_FULL, FingerprintRow
    from store_samples import small_fp

    fp = small_fp()
    assert store.claim_revision("a/x", "s1", "backfill")
    rows = [FingerprintRow.from_fingerprint("a/x", "s1", fp, TIER_FULL)]
    [(fid, created)] = store.add_backfilled(rows, [], feed="backfill")
    assert created and store.get_revision("a/x", "s1").state == "unmatched"
    store.skip_revision("a/x", "s1", "gated", "became gated")  # a feed listing it meanwhile
    assert not store.claim_revision("a/x", "s1", "watcher")
    assert store.revisions_awaiting("unmatched", 10) == [("a/x", "s1")]

    store.add_fingerprint("b/y", "s2", small_fp(seed=1))  # stored by `index add`: no revision row yet
    other = store.find_fingerprint("b/y", "s2").id
    store.finish_matching("a/x", "s1", [fid, other], compact=fp)
    assert store.find_fingerprint("a/x", "s1").tier == "compact"
    assert store.revisions_awaiting("unmatched", 10) == []
    assert store.revisions_awaiting("undecided", 10) == [("a/x", "s1"), ("b/y", "s2")]
    assert store.revision_counts()["undecided"] == 2
    store.finish_decision("a/x", "s1")
    assert store.get_revision("a/x", "s1").state == "done"


def test_a_suspect_not_compared_yet_stays_unmatched(store):
    from store.rows import TIER_FULL, FingerprintRow
    from store_samples import small_fp

    rows = [FingerprintRow.from_fingerprint(repo, "s", small_fp(seed=i), TIER_FULL)
            for i, repo in enumerate(("a/original", "b/copy"))]
    [(original, _), (copy, _)] = store.add_backfilled(rows, [], feed="backfill")
    store.finish_matching("a/original", "s", [copy])  # the original compared first finds the copy
    assert store.get_revision("b/copy", "s").state == "unmatched"  # its own comparison still comes
    # Stored again by someone else, or listed as known: a revision awaiting the backfill keeps its state.
    store.add_backfilled(rows[1:], [("a/original", "s")], feed="backfill")
    assert [store.get_revision(r, "s").state for r in ("a/original", "b/copy")] == ["done", "unmatched"]


def test_migration_5_keeps_every_revision_of_a_version_4_store(tmp_path):
    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    for migration in known_migrations():
        if migration.version > 4:
            break
        for statement in split_statements(migration.sql):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, '2026-01-01')", (migration.version, migration.name))
    conn.execute("INSERT INTO revisions (repo_id, sha, state, reason, detail, attempts, feed, listed_at, "
                 "next_attempt_at) VALUES ('a/x', 's1', 'failed', 'timeout', 'slow', 2, 'newest', '2026-01-01', '2026-01-02')")
    conn.commit()
    conn.close()
    with Store.open(path) as store:
        rev = store.get_revision("a/x", "s1")
        assert (rev.state, rev.reason, rev.attempts, rev.feed, rev.next_attempt_at) == \
            ("failed", "timeout", 2, "newest", "2026-01-02")
        store.conn.execute("UPDATE revisions SET state = 'unmatched'")  # the new states are allowed
        assert store.revision_counts()["unmatched"] == 1


def test_a_revision_done_under_an_older_fingerprint_version_is_made_anew_when_listed_again(store):
    from dataclasses import replace

    from store_samples import small_fp

    from fingerprints.model import FINGERPRINT_VERSION

    store.add_fingerprint("a/old", "s1", replace(small_fp(), version=FINGERPRINT_VERSION - 1))
    store.list_revisions([("a/old", "s1")], feed="trending")
    assert store.claim_revision("a/old", "s1", "p")  # the stored fingerprint is of an older version
    store.add_fingerprint("a/old", "s1", small_fp())
    store.finish_revision("a/old", "s1")
    store.list_revisions([("a/old", "s1")], feed="trending")
    assert store.get_revision("a/old", "s1").state == "done" and not store.claim_revision("a/old", "s1", "p")
    assert store.find_fingerprint("a/old", "s1").version == FINGERPRINT_VERSION
    assert store.claim_revision("a/none", "s1", "p")
    store.finish_revision("a/none", "s1")  # done without any fingerprint: left alone
    store.list_revisions([("a/none", "s1")], feed="trending")
    assert store.get_revision("a/none", "s1").state == "done"
