"""The sink: outcomes recorded in group commits - the journal, then the outcomes file, the
run's statistics and the source's acknowledgement (a queue's XACK), for every task a worker
finished since the last commit. A worker waits for its task's commit before taking the next, so a
crash loses at most the answers of the requests in flight, and one commit serves them all.

When the journal fails (a full disk, say), the run stops, but what is known still reaches the
outcomes file and the report: the answers of the requests in flight, and the tasks claimed but
never sent (``not_attempted``). Only the journal and the queue's acknowledgement are left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import anyio
import anyio.to_thread

from worker.errors import JournalError, OutputError
from worker.journal import Journal
from worker.logs import get_logger
from worker.models import TaskResult
from worker.report import OutcomeWriter, RunStats
from worker.sources import TaskSource

log = get_logger()


class Sink:
    """Group commit of outcomes to the journal, the outcomes file, the stats and the source."""

    def __init__(
        self,
        journal: Journal,
        outcomes: OutcomeWriter,
        stats: RunStats,
        source: TaskSource,
        on_batch: Callable[[Sequence[TaskResult]], None] | None = None,
        retention: float | None = None,
    ) -> None:
        """``retention``: seconds the journal keeps final outcomes (a long-running consumer's);
        None keeps them all."""
        self._journal = journal
        self._retention = retention
        self._next_prune = time.monotonic()
        self._outcomes = outcomes
        self._stats = stats
        self._source = source
        self._on_batch = on_batch
        self._pending: list[TaskResult] = []
        self._done = anyio.Event()
        self._wakeup = anyio.Event()
        self._closing = False
        # Why the writer task ended, once it has: record() then keeps outcomes itself.
        self._stopped: JournalError | None = None
        self.error: JournalError | None = None
        # The outcomes file failed (disk full): the journal still takes every outcome, and the
        # pipeline stops the run (output_error).
        self.output_error: OutputError | None = None

    async def record(self, results: Sequence[TaskResult]) -> None:
        """Hand over final outcomes and wait until they are durable.

        The results are queued before the first await, so a caller cancelled while waiting
        (a hard stop) still has them written: an outcome that is known is never dropped. Once
        the journal has failed, they are written to the outcomes file and counted all the same,
        then ``JournalError`` is raised.
        """
        if self._stopped is not None:
            self._keep(results)
            raise self._stopped
        self._pending.extend(results)
        done = self._done
        self._wakeup.set()
        await done.wait()
        if self.error is not None:
            raise self.error

    async def run(self) -> None:
        try:
            await self._run()
        except BaseException as exc:
            # However the writer ends, nobody waits for it for ever (a stop's shielded clean-up
            # awaits record()): later calls keep their outcomes themselves and raise.
            if self.error is None:
                self.error = JournalError(f"outcomes not recorded: the writer stopped: {exc!r}")
            self._stopped = self.error
            self._done.set()
            raise

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            batch, self._pending = self._pending, []
            done, self._done = self._done, anyio.Event()
            try:
                if batch:
                    await self._take(batch)
            finally:
                done.set()
            if self.error is None and self._journal.checkpoint_due():
                try:
                    await anyio.to_thread.run_sync(self._journal.checkpoint)
                except JournalError as exc:
                    self.error = exc
            if self.error is None and self._retention and time.monotonic() >= self._next_prune:
                await self._prune(self._retention)
            if self._closing and not self._pending:
                return

    async def _prune(self, retention: float) -> None:
        self._next_prune = time.monotonic() + min(600.0, max(0.25, retention / 4))
        try:
            await anyio.to_thread.run_sync(self._journal.forget_older_than, retention)
        except JournalError as exc:
            self.error = exc

    async def _take(self, batch: list[TaskResult]) -> None:
        """Journal, then outcomes file, statistics, acknowledgement. The journal is written on
        the loop's thread unless another process holds its write lock: then in a worker thread
        that waits for it. Once it has failed, it is left out, and so is the acknowledgement:
        a queue entry stays pending, and its task's next run finds it absent."""
        if self.error is None:
            try:
                if not self._journal.try_record(batch):
                    await anyio.to_thread.run_sync(self._journal.record, batch)
            except JournalError as exc:
                self.error = exc
        self._keep(batch)
        if self.error is None:
            await self._source.acknowledge(batch)

    def _keep(self, batch: Sequence[TaskResult]) -> None:
        """The outcomes file (until it fails: then the journal alone) and the statistics."""
        if self.output_error is None:
            try:
                self._outcomes.write(batch)
            except OutputError as exc:
                self.output_error = exc
                log.error("cleanup.outcomes_failed", error=str(exc))
        self._stats.on_results(batch)
        if self._on_batch is not None:
            self._on_batch(batch)

    def close(self) -> None:
        self._closing = True
        self._wakeup.set()
