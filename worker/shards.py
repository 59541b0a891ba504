"""Shards: a stable share of an input for each of several workers (Kubernetes Indexed Jobs,
``--shard I/N``, and each child of ``--processes``). A task belongs to a shard by the hash of its
project and ID, the same on every machine and run; a bad line by its line number, so each is
reported by one shard.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Protocol, runtime_checkable

from worker.models import TaskRef, TaskResult
from worker.sources import SourceItem, TaskSource


@runtime_checkable
class ReadsItsShard(Protocol):
    """A source that keeps only its shard as it parses (a file: cheaper than filtering here,
    and it need not check most of the other shards' lines)."""

    shard: tuple[int, int] | None
    passed_over: int


def shard_of(project_id: str, task_id: str, count: int) -> int:
    """The shard a task belongs to: a stable hash, the same on every machine and run."""
    digest = hashlib.blake2b(f"{project_id}/{task_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def shard_of_task(project_id: str, count: int) -> Callable[[str], int]:
    """``shard_of`` for one project: the hash state after ``project_id/`` is kept and copied,
    a third cheaper a line than hashing it all again."""
    prefix = hashlib.blake2b(f"{project_id}/".encode(), digest_size=8)

    def shard(task_id: str) -> int:
        state = prefix.copy()
        state.update(task_id.encode())
        return int.from_bytes(state.digest(), "big") % count

    return shard


def in_shard(item: SourceItem, index: int, count: int) -> bool:
    """Whether shard ``index`` of ``count`` takes ``item``: a task by the hash of its project
    and ID, a bad line by its line number, so each is reported by one shard."""
    if isinstance(item, TaskRef):
        return shard_of(item.project_id, item.task_id, count) == index
    return item.line % count == index


def unsharded(source: TaskSource) -> TaskSource:
    """The source a ``ShardFilter`` keeps a shard of, else ``source`` itself: what a run reads
    (a queue's lag, its consumer's counts) whether or not it reads one shard of it."""
    return source.inner if isinstance(source, ShardFilter) else source


class ShardFilter:
    """Keeps this shard's share of another source (``in_shard``; Kubernetes Indexed Jobs, and
    each child of ``--processes``). A file source filters as it reads, cheaper than here."""

    def __init__(self, inner: TaskSource, index: int, count: int) -> None:
        self.name = f"{inner.name} (shard {index}/{count})"
        self.finite = inner.finite
        self.index = index
        self.count = count
        self.inner = inner
        self._dropped = 0
        self._file = inner if isinstance(inner, ReadsItsShard) else None
        if self._file is not None:
            self._file.shard = (index, count)

    @property
    def other_shards(self) -> int:
        """Lines (or entries) read that belong to other shards."""
        return self._dropped + (self._file.passed_over if self._file is not None else 0)

    async def batches(self) -> AsyncGenerator[list[SourceItem], None]:
        async with contextlib.aclosing(self.inner.batches()) as batches:
            async for batch in batches:
                if self._file is not None:  # already this shard's
                    yield batch
                    continue
                mine = [item for item in batch if in_shard(item, self.index, self.count)]
                self._dropped += len(batch) - len(mine)
                if mine:
                    yield mine

    async def acknowledge(self, results: Sequence[TaskResult]) -> None:
        await self.inner.acknowledge(results)

    async def aclose(self) -> None:
        await self.inner.aclose()
