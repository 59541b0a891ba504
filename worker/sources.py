"""Where task IDs come from, and what every source has in common.

Every source implements ``TaskSource``: a file or stdin (``worker.files``), the Redis stream
(``worker.queue``), an in-memory list (``IterableSource``: the demo and tests); ``ShardFilter``
(``worker.shards``) keeps one shard of any of them. ``tests/test_sources.py`` runs one contract
suite against each. A source yields batches whose items are either a ``TaskRef`` to send or an
already-final ``TaskResult`` (``skipped``: a bad line, with its line number). A single bad line
never stops the source; only an input that cannot be opened or decoded as a whole raises
``InputError``. Every entry goes through ``check_task``, the one check of IDs.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

from worker.models import Outcome, TaskRef, TaskResult
from worker.settings import DEFAULT_ID_PATTERN, MAX_MESSAGE

BATCH = 512
# However --id-pattern is widened, these can never be part of an ID: each could change the path,
# query or fragment of the request, or hide a character in logs.
_NEVER_IN_ID = re.compile(r"[/\\?#%\s\x00-\x1f\x7f\ud800-\udfff]")
_PROJECT_ID = re.compile(DEFAULT_ID_PATTERN)  # as settings.safe_project_id, compiled once

SourceItem = TaskRef | TaskResult


class TaskSource(Protocol):
    """A stream of task IDs. ``acknowledge`` is told of every final outcome it produced."""

    name: str
    finite: bool

    def batches(self) -> AsyncGenerator[list[SourceItem], None]: ...

    async def acknowledge(self, results: Sequence[TaskResult]) -> None: ...

    async def aclose(self) -> None: ...


class IdValidator:
    """Checks task and project IDs against the allow-list and the never-allowed characters."""

    __slots__ = ("_pattern",)

    def __init__(self, pattern: str) -> None:
        self._pattern = re.compile(pattern)

    def problem(self, task_id: str) -> str | None:
        """Why ``task_id`` must not be sent, or None when it may be: the first offending
        character and where it is, so a long ID's fault need not be searched for by eye."""
        never = _NEVER_IN_ID.search(task_id)
        if never:
            return _never(never.group(), never.start() + 1)
        if task_id in (".", ".."):
            return "is a relative path segment"
        if self._pattern.fullmatch(task_id):
            return None
        if self._pattern.pattern == DEFAULT_ID_PATTERN:
            return _default_pattern_problem(task_id)
        return f"does not match --id-pattern {self._pattern.pattern}"


_NOT_ID_CHAR = re.compile(r"[^A-Za-z0-9_.-]")


def _never(char: str, at: int) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: a byte the input's UTF-8 could not decode
        return f"has byte 0x{code - 0xDC00:02X} at character {at}, which is not UTF-8"
    if 0xD800 <= code <= 0xDFFF:
        return f"has a lone surrogate (U+{code:04X}) at character {at}"
    return (
        f"contains {_shown(char)} at character {at} (no ID may hold a path separator, %, ?, "
        "#, whitespace or a control character)"
    )


def _shown(char: str) -> str:
    """A character as a reason names it: printable ones quoted, others by code point too."""
    if char.isprintable() and not char.isspace():
        return repr(char)
    return f"{char!a} (U+{ord(char):04X})"


def _default_pattern_problem(task_id: str) -> str:
    """Which part of ``^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`` an ID breaks."""
    bad = _NOT_ID_CHAR.search(task_id)
    if bad:
        return (
            f"contains {_shown(bad.group())} at character {bad.start() + 1} (an ID is letters, "
            "digits, _, . and -)"
        )
    if not task_id:
        return "is empty"
    if len(task_id) > 64:
        return f"is {len(task_id)} characters long (at most 64)"
    return "must begin with a letter or digit"


# Why a line of input is no task: the skips that tell of bad input (not a duplicate, not a task
# an earlier run finished).
BAD_INPUT = frozenset({"invalid_id", "bad_line", "missing_project_id", "invalid_project_id"})


def skipped(
    task_id: str,
    project_id: str,
    source: str,
    line: int,
    code: str,
    msg: str,
    ack: str | None = None,
) -> TaskResult:
    return TaskResult(
        task_id=task_id[:128],
        project_id=project_id[:128],
        outcome=Outcome.SKIPPED,
        error_code=code,
        # A stream entry has no line: its source (``stream/entry-id``) names it.
        error_msg=f"{source}:{line}: {msg}" if line else f"{source}: {msg}",
        source=source,
        line=line,
        ack=ack,
    )


def check_task(
    validator: IdValidator,
    task_id: str,
    project_id: str | None,
    source: str,
    line: int,
    message: str | None = None,
    ack: str | None = None,
) -> SourceItem:
    """A task to send, or why it is skipped: the one check every source applies to an entry
    (``project_id`` is the entry's own or the default, already chosen by the caller)."""
    problem = validator.problem(task_id)
    if problem:
        msg = f"task_id {task_id[:80]!r} {problem}"
        return skipped(task_id, project_id or "", source, line, "invalid_id", msg, ack)
    if not project_id:
        msg = "no project_id for this task and no --project-id"
        return skipped(task_id, "", source, line, "missing_project_id", msg, ack)
    if not _PROJECT_ID.fullmatch(project_id):
        msg = f"project_id {project_id[:80]!r} is not a valid project ID"
        return skipped(task_id, project_id, source, line, "invalid_project_id", msg, ack)
    if message is not None and len(message) > MAX_MESSAGE:
        msg = f"message of {len(message):,} characters: at most {MAX_MESSAGE:,}, as --message"
        return skipped(task_id, project_id, source, line, "bad_line", msg, ack)
    return TaskRef(task_id, project_id, source, line, message, ack)


class IterableSource:
    """A source over an in-memory sequence of IDs (the demo and tests feed it)."""

    def __init__(self, name: str, items: Sequence[SourceItem]) -> None:
        self.name = name
        self.finite = True
        self._items = items

    async def batches(self) -> AsyncGenerator[list[SourceItem], None]:
        for start in range(0, len(self._items), BATCH):
            yield list(self._items[start : start + BATCH])

    async def acknowledge(self, results: Sequence[TaskResult]) -> None:
        """Nothing to acknowledge."""

    async def aclose(self) -> None:
        """Nothing to close."""
