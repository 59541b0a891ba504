"""The journal's claim: which tasks a run sends, on either path (all new, or some known)."""

from __future__ import annotations

from pathlib import Path

from worker.journal import Journal
from worker.models import Outcome, TaskRef, TaskResult


def refs(*ids: str, project: str = "p1") -> list[TaskRef]:
    return [TaskRef(task_id, project, "ids.txt", n) for n, task_id in enumerate(ids, 1)]


def ended(ref: TaskRef, outcome: Outcome) -> TaskResult:
    return TaskResult(task_id=ref.task_id, project_id=ref.project_id, outcome=outcome)


def test_claim_verdicts_in_one_run_and_across_runs(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
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
