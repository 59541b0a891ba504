"""The durable record of outcomes: one SQLite (WAL) row per task, keyed by (project_id, task_id).

A task is *claimed* (a ``pending`` row, committed) before its request is sent, and its final outcome
is written (committed) before its worker slot takes the next task, so a crash loses at most the
answers of the requests in flight. The same table is the duplicate check: memory stays flat however
many IDs stream through. Without ``--journal`` the run uses a temporary journal that is deleted at
the end. All calls are synchronous and short, run from worker threads; one lock per journal
serialises them, as the one SQLite connection must not be used by two threads at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from worker.errors import JournalError
from worker.models import Outcome, TaskRef, TaskResult

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
    PRIMARY KEY (project_id, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    started_at  REAL NOT NULL,
    finished_at REAL,
    exit_code   INTEGER,
    report      TEXT
);
"""
PENDING = "pending"
_DONE = (Outcome.DELETED.value, Outcome.ABSENT.value)
_INSERT = """
INSERT INTO tasks (project_id, task_id, outcome, run_id, source, line, updated_at)
VALUES (?, ?, 'pending', ?, ?, ?, ?)
"""
_INSERT_NEW = _INSERT.replace("INSERT INTO", "INSERT OR IGNORE INTO")
_RECLAIM = """
UPDATE tasks SET outcome = 'pending', run_id = ?, source = ?, line = ?, updated_at = ?
WHERE project_id = ? AND task_id = ?
"""
_RECORD = """
UPDATE tasks SET outcome = ?, status = ?, attempts = ?, error_code = ?, error_msg = ?,
    request_id = ?, elapsed_ms = ?, updated_at = ?
WHERE project_id = ? AND task_id = ?
"""


class Journal:
    """One journal file. Every public method holds the journal's lock while it runs."""

    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives a process crash (SIGKILL); only power loss may undo
            # the last commits, which then get a 404 -> absent on the re-run.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO runs (run_id, started_at) VALUES (?, ?)",
                (run_id, time.time()),
            )
        except sqlite3.Error as exc:
            msg = f"journal {path}: cannot open it: {exc}"
            raise JournalError(msg) from None

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, run_id={self.run_id!r})"

    def claim(self, refs: Sequence[TaskRef]) -> list[str | None]:
        with self._lock:
            return self._claim(refs)

    def _claim(self, refs: Sequence[TaskRef]) -> list[str | None]:
        """Mark each task pending for this run; per task None (send it) or why it is skipped.

        ``duplicate``: already claimed by this run. ``already_done``: a previous run ended it
        ``deleted`` or ``absent``. Anything else a previous run left is claimed again.
        """
        now = time.time()
        try:
            if self._claim_new(refs, now):
                return [None] * len(refs)
            keys = [(ref.project_id, ref.task_id) for ref in refs]
            known = self._known(list(set(keys)))
            out: list[str | None] = []
            inserts, reclaims = [], []
            seen: set[tuple[str, str]] = set()
            for ref, key in zip(refs, keys, strict=True):
                prev = known.get(key)
                if key in seen or (prev is not None and prev[1] == self.run_id):
                    out.append("duplicate")
                elif prev is not None and prev[0] in _DONE:
                    out.append("already_done")
                else:
                    row = (self.run_id, ref.source, ref.line, now)
                    if prev is None:
                        inserts.append((ref.project_id, ref.task_id, *row))
                    else:
                        reclaims.append((*row, ref.project_id, ref.task_id))
                    out.append(None)
                seen.add(key)
            with self._tx():
                self._db.executemany(_INSERT, inserts)
                self._db.executemany(_RECLAIM, reclaims)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: claim failed: {exc}") from None
        return out

    def _claim_new(self, refs: Sequence[TaskRef], now: float) -> bool:
        """The usual case, in one statement: every task of the batch is new to the journal.
        Inserts them all (committed) and returns True, or changes nothing and returns False
        when any task is already known (or repeated in the batch)."""
        rows = [
            (ref.project_id, ref.task_id, self.run_id, ref.source, ref.line, now) for ref in refs
        ]
        before = self._db.total_changes
        with self._tx() as tx:
            self._db.executemany(_INSERT_NEW, rows)
            # Otherwise roll back: the general path decides task by task.
            tx.commit = self._db.total_changes - before == len(rows)
        return tx.commit

    def _known(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
        """(outcome, run_id) of the rows among ``keys`` that exist, by primary-key lookups."""
        by_project: dict[str, list[str]] = {}
        for project_id, task_id in keys:
            by_project.setdefault(project_id, []).append(task_id)
        found: dict[tuple[str, str], tuple[str, str]] = {}
        for project_id, task_ids in by_project.items():
            for start in range(0, len(task_ids), 500):
                chunk = task_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    "SELECT task_id, outcome, run_id FROM tasks "  # noqa: S608 - marks only
                    f"WHERE project_id = ? AND task_id IN ({marks})",
                    [project_id, *chunk],
                )
                for task_id, outcome, run_id in rows:
                    found[(project_id, task_id)] = (outcome, run_id)
        return found

    def record(self, results: Sequence[TaskResult]) -> None:
        """Write final outcomes of claimed tasks and commit (skipped lines are not stored)."""
        with self._lock:
            self._record(results)

    def _record(self, results: Sequence[TaskResult]) -> None:
        now = time.time()
        rows = [
            (
                r.outcome.value,
                r.status,
                r.attempts,
                r.error_code,
                r.error_msg,
                r.request_id,
                r.elapsed_ms,
                now,
                r.project_id,
                r.task_id,
            )
            for r in results
            if r.outcome is not Outcome.SKIPPED
        ]
        if not rows:
            return
        try:
            with self._tx():
                self._db.executemany(_RECORD, rows)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: write failed: {exc}") from None

    def unfinished(self, after: tuple[str, str] = ("", ""), limit: int = 512) -> list[TaskRef]:
        """Up to ``limit`` tasks after key ``after`` that a run left ``failed``, ``not_attempted``
        or ``pending`` (for ``--retry-failed``), in key order so claiming them while paging is safe.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT task_id, project_id, source, line FROM tasks "
                "WHERE outcome IN ('failed', 'not_attempted', 'pending') "
                "AND (project_id, task_id) > (?, ?) "
                "ORDER BY project_id, task_id LIMIT ?",
                (*after, limit),
            ).fetchall()
        return [
            TaskRef(task_id, project_id, source, line) for task_id, project_id, source, line in rows
        ]

    def results(self) -> Iterator[TaskResult]:
        """Every task's latest record, for re-rendering a report."""
        cursor = self._db.execute(
            "SELECT task_id, project_id, outcome, status, attempts, error_code, error_msg, "
            "request_id, elapsed_ms, source, line FROM tasks"
        )
        for row in cursor:
            outcome = Outcome.NOT_ATTEMPTED if row[2] == PENDING else Outcome(row[2])
            yield TaskResult(
                task_id=row[0],
                project_id=row[1],
                outcome=outcome,
                status=row[3],
                attempts=row[4],
                error_code=row[5],
                error_msg=row[6],
                request_id=row[7],
                elapsed_ms=row[8],
                source=row[9],
                line=row[10],
            )

    def finish_run(self, exit_code: int, report_json: str) -> None:
        try:
            with self._lock:
                self._db.execute(
                    "UPDATE runs SET finished_at = ?, exit_code = ?, report = ? WHERE run_id = ?",
                    (time.time(), exit_code, report_json, self.run_id),
                )
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: write failed: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT: one fsync-free WAL commit per batch. ROLLBACK instead on an
    error, or when the body set ``commit`` to False."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.commit = True

    def __enter__(self) -> _Transaction:
        self._db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.commit = self.commit and exc_type is None
        self._db.execute("COMMIT" if self.commit else "ROLLBACK")
