"""Opening the SQLite file and turning sqlite3 exceptions into one-line StoreErrors."""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from .errors import StoreCorruptError, StoreError, StoreLockedError

# How long a writer waits for another writer before giving up. The watcher's write transactions
# last milliseconds; 5 s rides out a concurrent `hubwatch index add` batch without hanging a CLI.
DEFAULT_BUSY_TIMEOUT_S = 5.0

P = ParamSpec("P")
R = TypeVar("R")

_CORRUPT_MARKERS = ("not a database", "malformed", "corrupt", "encrypted")
_LOCKED_MARKERS = ("locked", "busy")


def describe_sqlite_error(path: str, exc: sqlite3.Error) -> StoreError:
    """The StoreError (with an actionable one-line message) for a sqlite3 exception on ``path``."""
    text = str(exc).strip() or type(exc).__name__
    low = text.lower()
    if any(m in low for m in _CORRUPT_MARKERS):
        return StoreCorruptError(
            f"database {path} is not a hubwatch database or is damaged ({text}); "
            "restore it from a backup or point --db / HUBWATCH_DB at another file")
    if any(m in low for m in _LOCKED_MARKERS):
        return StoreLockedError(
            f"database {path} is locked by another process ({text}); "
            "wait for it to finish or stop the other hubwatch process")
    if "readonly" in low or "read-only" in low or "unable to open" in low:
        return StoreError(f"cannot write database {path} ({text}); check the path and its permissions")
    return StoreError(f"database {path}: {text}")


def translating(path_of: Callable[..., str]):
    """Decorator: re-raise sqlite3 errors of the wrapped method as StoreErrors naming the file."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except sqlite3.Error as exc:
                raise describe_sqlite_error(path_of(*args), exc) from exc

        return inner

    return wrap


# The store holds who watches what and the alert outbox: readable by its owner only. SQLite gives
# the -wal and -shm files the database file's permissions.
DATABASE_FILE_MODE = 0o600


def _create_private(path: str) -> None:
    """Create the database file owner-only (sqlite3 would create it 0644 under the usual umask)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, DATABASE_FILE_MODE))
    except FileExistsError:
        pass  # an existing store keeps the permissions its operator gave it
    except OSError as exc:
        raise StoreError(f"cannot create database {path}: {exc.strerror or exc}") from None


def connect(path: str, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with a busy timeout; transactions are explicit (autocommit mode)."""
    if os.path.isdir(path):
        raise StoreError(f"database path {path} is a folder; give a file name such as hubwatch.db")
    if path != ":memory:" and not path.startswith("file:"):
        _create_private(path)
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise describe_sqlite_error(path, exc) from exc
    with closing_on_error(conn, path):
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        mode = _switch_to_wal(conn, busy_timeout_s)
        if str(mode).lower() != "wal" and path != ":memory:":
            raise StoreError(f"database {path}: cannot switch to WAL journaling (got {mode})")
        # NORMAL is durable across application crashes in WAL mode (only an OS crash can lose the
        # last commits), which is the failure the outbox must survive (kill -9 of the watcher).
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout_s: float) -> str:
    """The journal mode after asking for WAL. Switching a new database needs its exclusive lock,
    and SQLite answers "database is locked" at once there instead of calling the busy handler: so
    several processes or threads opening one new database together (the watcher's feeds) retry
    here, within the busy timeout. A database already in WAL mode is not switched again."""
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return mode
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


@contextmanager
def closing_on_error(conn: sqlite3.Connection, path: str) -> Iterator[sqlite3.Connection]:
    """Close ``conn`` when the block fails (no half-open handle holds the file); SQLite errors
    leave as one-line StoreErrors."""
    try:
        yield conn
    except sqlite3.Error as exc:
        conn.close()
        raise describe_sqlite_error(path, exc) from exc
    except StoreError:
        conn.close()
        raise


@contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception.

    IMMEDIATE takes the write lock up front, so two writers queue on the busy timeout instead of
    one failing with SQLITE_BUSY half-way through (a deferred transaction cannot wait to upgrade).
    """
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
