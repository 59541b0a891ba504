"""The durable record of outcomes: one SQLite (WAL) row per task, unique by (project_id, task_id).

A task is *claimed* (a ``pending`` row, committed) before its request is sent, and its final outcome
is written (committed) before its worker slot takes the next task, so a crash loses at most the
answers of the requests in flight. The same table is the duplicate check: memory stays flat however
many IDs stream through. Without ``--journal`` the run uses a temporary journal that is deleted at
the end.

Rows are stored in claim order (a rowid table) with a unique index on (project_id, task_id). Task
IDs are random: in a table keyed by them, each row of a group commit sits on a page of its own, and
the commit writes a 4 KiB page to the WAL per task. Outcomes come back in about the order tasks
were claimed, so here a group commit of outcomes rewrites a few adjacent pages; only the claim's
index entry lands on a page of its own. A journal made with the keyed layout (``WITHOUT ROWID``,
before 2026-11-28) is used as it is: every statement works on both.

Two connections. The run's claims and outcome writes go through ``try_claim``/``try_record`` on the
event loop's thread: a WAL commit without a checkpoint is short and needs no fsync, and a thread
hand-off for each group commit cost more CPU than the write itself. That connection never waits:
when another process holds the write lock it reports "busy" at once, and the caller repeats the
call with ``claim``/``record`` in a worker thread, on the second connection, which waits for the
lock (``busy_timeout``). The loop's connection does not checkpoint on commit; ``checkpoint_due``
says when the WAL has grown and ``checkpoint`` (in a worker thread) folds it back into the database,
so the fsync that a checkpoint needs never runs on the loop. One lock serialises the waiting
connection, which worker threads share; the loop's connection is only used on the loop's thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from worker.errors import ConfigError, JournalError
from worker.journal_file import SCHEMA, Transaction, connect, is_busy
from worker.logs import get_logger
from worker.models import Outcome, TaskRef, TaskResult

log = get_logger()
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
# Most outcomes: deleted, no error. Its own statement binds 7 values instead of 10 (no Nones,
# which sqlite3 binds through its adapter lookup).
_RECORD_DELETED = """
UPDATE tasks SET outcome = 'deleted', status = ?, attempts = ?, error_code = NULL,
    error_msg = NULL, request_id = ?, elapsed_ms = ?, updated_at = ?
WHERE project_id = ? AND task_id = ?
"""


# The tasks --retry-failed sends again: ``unfinished`` pages through them, ``count_unfinished``
# counts them, so the total and the pages cannot come to differ.
_UNFINISHED = "outcome IN ('failed', 'not_attempted', 'pending')"

# A claim commit writes about one index page to the WAL per task (random IDs). A 16 MiB WAL folds
# several writes of a page into one checkpoint write (the page cache: ``journal_file``).
CHECKPOINT_BYTES = 16 * 1024 * 1024
_CHECK_EVERY = 1024  # rows written between two looks at the WAL's size


class Journal:
    """One journal file: a waiting connection (any thread, under the journal's lock) and a
    connection that never waits (the event loop's thread only)."""

    def __init__(
        self,
        path: Path,
        run_id: str,
        *,
        checkpoint_bytes: int = CHECKPOINT_BYTES,
        reader: bool = False,
        kept: bool = True,
    ) -> None:
        """``reader``: opened to read (``dcs-cleanup report``), so no run is added to ``runs``.
        ``kept``: the file outlives the run (a ``--journal``, not a temporary one)."""
        self.path = path
        self.kept = kept
        self.run_id = run_id
        self._wal = f"{path}-wal"
        self._checkpoint_bytes = checkpoint_bytes
        self._unchecked = 0
        self._lock = threading.Lock()
        try:
            self._db = connect(path, first=True, reader=reader)
            self._db.executescript(SCHEMA)
            if not reader:
                self._db.execute(
                    "INSERT OR IGNORE INTO runs (run_id, started_at) VALUES (?, ?)",
                    (run_id, time.time()),
                )
            self._now = connect(path)
            self._now.execute("PRAGMA busy_timeout=0")  # busy: the caller goes to a thread
            self._now.execute("PRAGMA wal_autocheckpoint=0")
        except sqlite3.Error as exc:
            # Before anything is sent: a configuration error (exit 2), e.g. another file given
            # as --journal ("file is not a database").
            msg = f"journal {path}: cannot open it: {exc}"
            raise ConfigError(msg) from None

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, run_id={self.run_id!r})"

    def claim(self, refs: Sequence[TaskRef]) -> list[str | None]:
        """Claim the tasks, waiting for the write lock if another process holds it."""
        with self._lock, self._failing("claim"):
            return self._claim(self._db, refs)

    def try_claim(self, refs: Sequence[TaskRef]) -> list[str | None] | None:
        """``claim`` on the event loop's thread; None (nothing done) if the journal is busy."""
        with self._failing("claim", busy_ok=True):
            verdicts = self._claim(self._now, refs)
            self._unchecked += len(refs)
            return verdicts
        return None

    def _claim(self, db: sqlite3.Connection, refs: Sequence[TaskRef]) -> list[str | None]:
        """Mark each task pending for this run; per task None (send it) or why it is skipped.

        ``duplicate``: already claimed by this run. ``already_done``: a previous run ended it
        ``deleted`` or ``absent``. Anything else a previous run left is claimed again.
        """
        now = time.time()
        if self._claim_new(db, refs, now):
            return [None] * len(refs)
        keys = [(ref.project_id, ref.task_id) for ref in refs]
        known = _known(db, list(set(keys)))
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
        with Transaction(db):
            db.executemany(_INSERT, inserts)
            db.executemany(_RECLAIM, reclaims)
        return out

    def _claim_new(self, db: sqlite3.Connection, refs: Sequence[TaskRef], now: float) -> bool:
        """The usual case, in one statement: every task of the batch is new to the journal.
        Inserts them all (committed) and returns True, or changes nothing and returns False
        when any task is already known (or repeated in the batch)."""
        rows = [
            (ref.project_id, ref.task_id, self.run_id, ref.source, ref.line, now) for ref in refs
        ]
        before = db.total_changes
        with Transaction(db) as tx:
            db.executemany(_INSERT_NEW, rows)
            # Otherwise roll back: the general path decides task by task.
            tx.commit = db.total_changes - before == len(rows)
        return tx.commit

    def record(self, results: Sequence[TaskResult]) -> None:
        """Write final outcomes of claimed tasks and commit (skipped lines are not stored),
        waiting for the write lock if another process holds it."""
        with self._lock, self._failing("write"):
            self._record(self._db, results)

    def try_record(self, results: Sequence[TaskResult]) -> bool:
        """``record`` on the event loop's thread; False (nothing done) if the journal is busy."""
        with self._failing("write", busy_ok=True):
            self._unchecked += self._record(self._now, results)
            return True
        return False

    @staticmethod
    def _record(db: sqlite3.Connection, results: Sequence[TaskResult]) -> int:
        now = time.time()
        deleted = []
        other = []
        for r in results:
            outcome = r.outcome
            if outcome is Outcome.DELETED and r.error_code is None and r.error_msg is None:
                deleted.append(
                    (r.status, r.attempts, r.request_id, r.elapsed_ms, now, r.project_id, r.task_id)
                )
            elif outcome is not Outcome.SKIPPED:
                other.append(
                    (
                        outcome.value,
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
                )
        if deleted or other:
            with Transaction(db):
                if deleted:
                    db.executemany(_RECORD_DELETED, deleted)
                if other:
                    db.executemany(_RECORD, other)
        return len(deleted) + len(other)

    def prune(self, before: float, batch: int = 10_000) -> int:
        """Forget the final outcomes written before ``before`` (epoch seconds), and the runs
        that finished before it, so ``dcs-cleanup report`` sums the requests of the runs whose
        tasks it still counts; pending rows stay. A long-running consumer's journal, or a
        nightly job's, would otherwise keep every task it ever saw. In batches, so the write
        lock is held briefly; run it in a worker thread. Returns the task rows removed."""
        removed = 0
        while True:
            with self._lock, self._failing("prune"), Transaction(self._db):
                # By key, not rowid: a journal of the older WITHOUT ROWID layout has none.
                count = self._db.execute(
                    "DELETE FROM tasks WHERE (project_id, task_id) IN (SELECT project_id, "
                    "task_id FROM tasks WHERE updated_at < ? AND outcome != 'pending' LIMIT ?)",
                    (before, batch),
                ).rowcount
                if count < batch:
                    self._db.execute("DELETE FROM runs WHERE finished_at < ?", (before,))
            removed += count
            if count < batch:
                return removed

    def forget_older_than(self, seconds: float) -> int:
        """``prune`` what was written more than ``seconds`` ago, and say how many task rows
        went (``cleanup.journal_pruned``). Run it in a worker thread."""
        removed = self.prune(time.time() - seconds)
        if removed:
            log.info("cleanup.journal_pruned", rows=removed, older_than_s=seconds)
        return removed

    def checkpoint_due(self) -> bool:
        """True when the WAL has grown past ``checkpoint_bytes`` (looked at every 1,024 rows
        written through the loop's connection)."""
        if self._unchecked < _CHECK_EVERY:
            return False
        self._unchecked = 0
        try:
            return os.stat(self._wal).st_size >= self._checkpoint_bytes
        except OSError:
            return False

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (waits for other writers; run it in
        a worker thread)."""
        with self._lock, self._failing("checkpoint"):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def count_unfinished(self) -> int | None:
        """How many tasks ``unfinished`` pages through: a ``--retry-failed`` run's total. None
        when SQLite cannot count them: the total is for the progress alone, and the run's own
        reads of the journal then say why."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            query = f"SELECT count(*) FROM tasks WHERE {_UNFINISHED}"  # noqa: S608 - a constant
            return int(self._db.execute(query).fetchone()[0])
        return None

    def unfinished(self, after: tuple[str, str] = ("", ""), limit: int = 512) -> list[TaskRef]:
        """Up to ``limit`` tasks after key ``after`` that a run left ``failed``, ``not_attempted``
        or ``pending`` (for ``--retry-failed``), in key order so claiming them while paging is safe.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT task_id, project_id, source, line FROM tasks "  # noqa: S608 - a constant
                f"WHERE {_UNFINISHED} "
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
            "request_id, elapsed_ms, source, line, run_id FROM tasks"
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
                run_id=row[11],
            )

    def runs(self) -> list[tuple[float, float | None, str | None]]:
        """Every run's (started_at, finished_at, report JSON), None where it did not finish."""
        return self._db.execute(
            "SELECT started_at, finished_at, report FROM runs ORDER BY started_at"
        ).fetchall()

    def finish_run(self, exit_code: int, report_json: str) -> None:
        with self._lock, self._failing("write"):
            self._db.execute(
                "UPDATE runs SET finished_at = ?, exit_code = ?, report = ? WHERE run_id = ?",
                (time.time(), exit_code, report_json, self.run_id),
            )

    def close(self) -> None:
        self._now.close()
        self._db.close()

    @contextlib.contextmanager
    def _failing(self, what: str, *, busy_ok: bool = False) -> Iterator[None]:
        """SQLite errors in the block become ``JournalError("journal P: <what> failed: ...")``.
        With ``busy_ok`` a busy journal (another connection holds the lock) is not an error:
        the block is left and the code after the ``with`` runs."""
        try:
            yield
        except sqlite3.Error as exc:
            if busy_ok and is_busy(exc):
                return
            raise JournalError(f"journal {self.path}: {what} failed: {exc}") from None


def _known(
    db: sqlite3.Connection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """(outcome, run_id) of the rows among ``keys`` that exist, by lookups on the task key."""
    by_project: dict[str, list[str]] = {}
    for project_id, task_id in keys:
        by_project.setdefault(project_id, []).append(task_id)
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for project_id, task_ids in by_project.items():
        for start in range(0, len(task_ids), 500):
            chunk = task_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                "SELECT task_id, outcome, run_id FROM tasks "  # noqa: S608 - marks only
                f"WHERE project_id = ? AND task_id IN ({marks})",
                [project_id, *chunk],
            )
            for task_id, outcome, run_id in rows:
                found[(project_id, task_id)] = (outcome, run_id)
    return found
