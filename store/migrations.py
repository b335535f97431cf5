"""Versioned schema migrations: ``migrations/NNNN_name.sql`` files applied in order, exactly once.

Applied versions are rows of ``schema_migrations``. Each migration runs in one IMMEDIATE
transaction together with its bookkeeping row, so a crash leaves it either fully applied or not at
all, and two processes opening a fresh file at once apply it once (the second re-checks under the
lock). A database that has a version this code does not know was written by a newer hubwatch:
opening it fails rather than risk writing rows the newer schema would misread.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources

from .db import transaction
from .errors import SchemaTooNewError, StoreError

MIGRATION_FILE_RX = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def known_migrations() -> list[Migration]:
    """The migrations shipped in ``store/migrations``, by ascending version."""
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        m = MIGRATION_FILE_RX.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    # Numbers are handed out to parallel branches in advance, so one may land before a lower one:
    # a gap is allowed, and a store that ran 3 before 2 existed runs 2 when it arrives.
    if len(set(versions)) != len(versions):
        raise StoreError(f"store migrations must have distinct numbers, found {versions}")
    return found


def latest_version() -> int:
    return known_migrations()[-1].version


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (sqlite3's own completeness test, so ';' in
    strings or comments does not cut a statement)."""
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip() and not current.strip().startswith("--"):
        raise StoreError(f"migration ends with an incomplete statement: {current.strip()[:60]!r}")
    return statements


def applied_versions(conn: sqlite3.Connection) -> set[int]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def check_not_newer(path: str, applied: set[int], known: list[Migration]) -> None:
    unknown = applied - {mig.version for mig in known}
    if not unknown:
        return
    newest, latest = max(unknown), known[-1].version
    what = (f"newer than the {latest} this hubwatch knows" if newest > latest
            else f"which this hubwatch (schema up to {latest}) does not have")
    raise SchemaTooNewError(
        f"database {path} has schema version {newest}, {what}: it was written by a newer hubwatch; upgrade "
        "hubwatch (or use another --db file)")


def migrate(conn: sqlite3.Connection, path: str) -> list[int]:
    """Apply every missing migration; return the versions applied now (empty when up to date)."""
    known = known_migrations()
    applied = applied_versions(conn)
    check_not_newer(path, applied, known)
    done: list[int] = []
    for mig in known:
        if mig.version in applied:
            continue
        with transaction(conn):
            # Re-check under the write lock: another process may have applied it meanwhile.
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (mig.version,)).fetchone():
                continue
            for statement in split_statements(mig.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (mig.version, mig.name, datetime.now(timezone.utc).isoformat(timespec="seconds")),
            )
        done.append(mig.version)
    return done
