"""The journal: claims on either path (all new, or some known), the loop's and the waiting
connection, checkpoints, and how its failures read."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from worker.errors import JournalError
from worker.journal import Journal
from worker.models import Outcome, TaskRef, TaskResult


def refs(*ids: str, project: str = "p1") -> list[TaskRef]:
    return [TaskRef(task_id, project, "ids.txt", n) for n, task_id in enumerate(ids, 1)]


def ended(ref: TaskRef, outcome: Outcome) -> TaskResult:
    return TaskResult(task_id=ref.task_id, project_id=ref.project_id, outcome=outcome)


# The journal's first layout: a table keyed by (project_id, task_id). Files made with it are
# used as they are.
KEYED_LAYOUT = """
CREATE TABLE tasks (
    project_id TEXT NOT NULL, task_id TEXT NOT NULL, outcome TEXT NOT NULL, status INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0, error_code TEXT, error_msg TEXT, request_id TEXT,
    elapsed_ms REAL NOT NULL DEFAULT 0, source TEXT NOT NULL DEFAULT '',
    line INTEGER NOT NULL DEFAULT 0, run_id TEXT NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (project_id, task_id)
) WITHOUT ROWID;
"""


def keyed_journal(path: Path) -> None:
    """An empty journal file of the first layout."""
    made = sqlite3.connect(path)
    made.executescript(KEYED_LAYOUT)
    made.close()


@pytest.mark.parametrize("layout", ["current", "keyed"])
def test_claim_verdicts_in_one_run_and_across_runs(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "journal.sqlite"
    if layout == "keyed":
        keyed_journal(path)
    first = Journal(path, "run-1")
    batch = refs("a", "b", "c", "d")
    assert first.claim(batch) == [None, None, None, None]  # all new
    # Same run: a repeat in a later batch, and a repeat inside one batch next to a new task.
    assert first.claim(refs("b", "e", "e")) == ["duplicate", None, "duplicate"]
    # The same ID in another project is another task.
    assert first.claim(refs("a", project="p2")) == [None]
    first.record([ended(batch[0], Outcome.DELETED), ended(batch[1], Outcome.ABSENT)])
    first.record([ended(batch[2], Outcome.FAILED)])  # d stays pending: a crash
    first.close()

    second = Journal(path, "run-2")
    # Done in run 1 -> already_done; failed or left pending -> sent again; new -> sent.
    assert second.claim(refs("a", "b", "c", "d", "f")) == [
        "already_done",
        "already_done",
        None,
        None,
        None,
    ]
    assert second.claim(refs("c")) == ["duplicate"]
    unfinished = [(r.project_id, r.task_id) for r in second.unfinished()]
    assert unfinished == [("p1", "c"), ("p1", "d"), ("p1", "e"), ("p1", "f"), ("p2", "a")]
    second.close()


def test_a_rejected_fast_claim_leaves_nothing_behind(tmp_path: Path) -> None:
    """A batch with one known task is decided task by task; none of it is claimed twice."""
    journal = Journal(tmp_path / "journal.sqlite", "run-1")
    journal.claim(refs("x"))
    assert journal.claim(refs("y", "x", "z")) == [None, "duplicate", None]
    assert journal.claim(refs("y", "z")) == ["duplicate", "duplicate"]
    assert sorted(r.task_id for r in journal.results()) == ["x", "y", "z"]
    journal.close()


def test_a_busy_journal_is_reported_at_once_on_the_loop_and_waited_for_in_a_thread(
    tmp_path: Path,
) -> None:
    """Another process holds the write lock: try_claim/try_record change nothing and return at
    once (the event loop never waits on SQLite); claim/record wait for the lock, then write."""
    path = tmp_path / "journal.sqlite"
    journal = Journal(path, "run-1")
    other = sqlite3.connect(path, isolation_level=None)
    batch = refs("a", "b")
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    assert journal.try_claim(batch) is None
    assert time.monotonic() - started < 1.0  # the waiting connection would take 5 s
    verdicts: list[list[str | None]] = []
    waiter = threading.Thread(target=lambda: verdicts.append(journal.claim(batch)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # waits for the lock ...
    other.execute("COMMIT")
    waiter.join(5)
    assert verdicts == [[None, None]]  # ... and claims once it is free

    other.execute("BEGIN IMMEDIATE")
    assert journal.try_record([ended(batch[0], Outcome.DELETED)]) is False
    other.execute("COMMIT")
    assert journal.try_record([ended(batch[0], Outcome.DELETED)]) is True
    assert journal.try_claim(refs("c")) == [None]
    other.close()
    outcome = {r.task_id: r.outcome for r in journal.results()}
    assert outcome == {"a": Outcome.DELETED, "b": Outcome.NOT_ATTEMPTED, "c": Outcome.NOT_ATTEMPTED}
    journal.close()


def test_the_wal_is_folded_back_by_checkpoint_not_by_the_loops_commits(tmp_path: Path) -> None:
    """Writes through the loop's connection never checkpoint (SQLite's own would, with an
    fsync, at 1,000 pages), so the WAL grows until checkpoint_due says so; checkpoint() then
    empties it and every row is in the database."""
    path = tmp_path / "journal.sqlite"
    journal = Journal(path, "run-1", checkpoint_bytes=2 * 1024 * 1024)
    wal = Path(f"{path}-wal")
    due = 0
    for start in range(0, 3000, 10):  # small group commits, as a busy sink makes them
        batch = refs(*(f"task-{n:05d}" for n in range(start, start + 10)))
        assert journal.try_claim(batch) == [None] * 10
        assert journal.try_record([ended(ref, Outcome.DELETED) for ref in batch])
        if journal.checkpoint_due():
            due += 1
            assert wal.stat().st_size >= 2 * 1024 * 1024
    assert due >= 1
    assert wal.stat().st_size > 1000 * 4096  # past SQLite's auto-checkpoint, yet ...
    assert path.stat().st_size < 64 * 1024  # ... no page reached the database file
    journal.checkpoint()
    assert wal.stat().st_size == 0
    assert path.stat().st_size > 64 * 1024
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT outcome, count(*) FROM tasks GROUP BY 1").fetchall() == [
        ("deleted", 3000)
    ]
    reader.close()
    journal.close()


def test_a_task_deleted_after_a_failure_keeps_no_error(tmp_path: Path) -> None:
    """The deleted row's own statement clears what an earlier attempt's failure left."""
    path = tmp_path / "journal.sqlite"
    first = Journal(path, "run-1")
    (ref,) = refs("a")
    first.claim([ref])
    failed = TaskResult(
        task_id="a", project_id="p1", outcome=Outcome.FAILED, status=500, attempts=3,
        error_code="DCS.5000", error_msg="internal error", request_id="r1",
    )  # fmt: skip
    first.record([failed])
    first.close()
    second = Journal(path, "run-2")
    assert second.claim([ref]) == [None]
    deleted = TaskResult(
        task_id="a", project_id="p1", outcome=Outcome.DELETED, status=200, attempts=1,
        request_id="r2", elapsed_ms=4.5,
    )  # fmt: skip
    assert second.try_record([deleted])
    (row,) = second.results()
    assert (row.outcome, row.status, row.attempts, row.error_code, row.error_msg) == (
        Outcome.DELETED, 200, 1, None, None,
    )  # fmt: skip
    assert (row.request_id, row.elapsed_ms) == ("r2", 4.5)
    second.close()


def test_a_broken_journal_fails_with_its_path_and_the_step(tmp_path: Path) -> None:
    """A SQLite failure (here: the table dropped under the run) is a JournalError naming the
    journal and the step on either connection; only a busy lock is reported as busy."""
    path = tmp_path / "journal.sqlite"
    journal = Journal(path, "run-1")
    other = sqlite3.connect(path)
    other.execute("DROP TABLE tasks")
    other.close()
    (ref,) = refs("a")
    calls: list[tuple[str, Callable[[], object]]] = [
        ("claim", lambda: journal.claim([ref])),
        ("claim", lambda: journal.try_claim([ref])),
        ("write", lambda: journal.record([ended(ref, Outcome.FAILED)])),
        ("write", lambda: journal.try_record([ended(ref, Outcome.DELETED)])),
    ]
    for step, call in calls:
        with pytest.raises(JournalError) as caught:
            call()
        assert str(caught.value) == f"journal {path}: {step} failed: no such table: tasks"
    journal.close()


@pytest.mark.parametrize("layout", ["current", "keyed"])
def test_prune_forgets_old_final_outcomes_and_keeps_pending_claims(
    tmp_path: Path, layout: str
) -> None:
    """A long-running consumer's journal kept every task it ever saw. prune(before) forgets
    final outcomes written before then, in batches, on both layouts; a pending claim (a
    request in flight) and later outcomes stay, and a forgotten task is claimed as new."""
    path = tmp_path / "journal.sqlite"
    if layout == "keyed":
        keyed_journal(path)
    journal = Journal(path, "consumer")
    old = refs("a", "b", "c", "d", "e")
    assert journal.claim(old) == [None] * 5
    journal.record([ended(old[0], Outcome.DELETED), ended(old[1], Outcome.ABSENT)])
    journal.record([ended(old[2], Outcome.FAILED), ended(old[3], Outcome.REJECTED)])
    cutoff = time.time() + 0.001
    time.sleep(0.01)
    late = refs("f")
    journal.claim(late)
    journal.record([ended(late[0], Outcome.DELETED)])
    assert journal.prune(cutoff, batch=3) == 4
    left = {(r.task_id, r.outcome) for r in journal.results()}
    assert left == {("e", Outcome.NOT_ATTEMPTED), ("f", Outcome.DELETED)}  # e: still pending
    assert journal.claim(refs("a")) == [None]  # forgotten: a new task again
    journal.close()
