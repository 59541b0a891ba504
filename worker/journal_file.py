"""The journal's file: its schema, a connection to it, and refusing a file that is not one.

A database given as ``--journal`` by mistake is left as it was: before anything is changed (WAL
mode included), the file must be empty (a new journal) or hold a tasks table with every column of
``SCHEMA``. ``worker.journal`` does the claiming, recording and reading over such connections.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from worker.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    project_id TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    status     INTEGER,
    attempts   INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error_msg  TEXT,
    request_id TEXT,
    elapsed_ms REAL NOT NULL DEFAULT 0,
    source     TEXT NOT NULL DEFAULT '',
    line       INTEGER NOT NULL DEFAULT 0,
    run_id     TEXT NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (project_id, task_id)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    started_at  REAL NOT NULL,
    finished_at REAL,
    exit_code   INTEGER,
    report      TEXT
);
"""
# Every column SCHEMA gives the tasks table: a journal must have them all.
_COLUMNS = frozenset(
    re.findall(
        r"^\s+(\w+)\s+(?:TEXT|INTEGER|REAL)",
        SCHEMA.partition("CREATE TABLE IF NOT EXISTS runs")[0],
        re.MULTILINE,
    )
)

# A page cache of up to 16 MiB per connection keeps the index's pages in memory instead of
# reading them back from the WAL.
CACHE_KIB = 16 * 1024


def connect(path: Path, *, first: bool = False, reader: bool = False) -> sqlite3.Connection:
    """A connection to the journal; the ``first`` one checks, before it changes anything (WAL
    mode included), that the file is a journal or empty (a ``reader``: a journal)."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    if first:
        try:
            _refuse_another_database(db, path, reader=reader)
        except ConfigError:
            db.close()
            raise
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a commit survives a process crash (SIGKILL); only power loss may undo
    # the last commits, which then get a 404 -> absent on the re-run.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    return db


def _refuse_another_database(db: sqlite3.Connection, path: Path, *, reader: bool) -> None:
    """A database given as ``--journal`` by mistake is left as it was (no table added): it
    must be empty (a new journal; not for a ``reader``) or have a tasks table with every column
    of ours."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables and reader:
        # ``report`` of an empty file made it a journal and reported "exit 0" for no tasks.
        msg = f"journal {path}: empty: no run has written it"
        raise ConfigError(msg)
    if not tables:
        return
    if "tasks" not in tables:
        msg = f"journal {path}: not a dcs-cleanup journal: it has no tasks table"
        raise ConfigError(msg)
    missing = _COLUMNS - {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
    if missing:
        msg = (
            f"journal {path}: not a dcs-cleanup journal: its tasks table has no "
            f"{', '.join(sorted(missing))} column"
        )
        raise ConfigError(msg)


def is_busy(exc: sqlite3.Error) -> bool:
    """Another connection holds the lock (SQLITE_BUSY, any extended code)."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT: one fsync-free WAL commit per batch. ROLLBACK instead on an
    error, or when the body set ``commit`` to False."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.commit = True

    def __enter__(self) -> Transaction:
        self._db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.commit = self.commit and exc_type is None
        self._db.execute("COMMIT" if self.commit else "ROLLBACK")
