"""The run: intake -> a fixed pool of workers -> a group-committing sink.

* **Intake** reads batches from the source, turns bad lines into ``skipped`` outcomes, claims the
  rest in the journal (duplicates and tasks finished by an earlier run are skipped there) and feeds
  a bounded stream, so a slow API holds back reading (backpressure).
* **Workers** (``concurrency`` of them, fixed) take one task at a time: pace on the shared rate
  limiter, send, decide (``policy.decide``), back off, repeat. The run's first request goes
  alone, the other workers waiting for its answer (a refused key costs one signature).
* **Sink** writes outcomes in group commits: every worker waits until its task's outcome is in the
  journal and the outcomes file before taking the next task, so a crash loses at most the answers
  of the requests in flight.

Stopping: ``request_stop`` (signal, deadline) and aborts (401, breaker, guard) stop intake at once,
turn queued tasks into ``not_attempted``, let requests in flight finish within ``grace`` seconds and
then cancel them; ``hard_stop`` (a second signal) cancels at once.

What each answer means for the whole run (pacing, the breaker, a row of 403s) is in
``worker.brakes``, the group commit in ``worker.sink``, a task's outcome in ``worker.results``.
What is left here, past STYLE.md's ~400 lines, is one stop state that intake, workers and the
grace timer all read and cancel (the reason, the scopes, the first request's gate): split in
two, each half would hold the other's.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncGenerator, Callable, Sequence

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from worker.adaptive import AdaptiveRate
from worker.brakes import Brakes
from worker.client import DcsClient
from worker.errors import AbortRun, InputError, JournalError, TransportError
from worker.journal import Journal
from worker.logs import get_logger
from worker.models import (
    ABORT_REASONS,
    EXIT_ABORTED,
    EXIT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    SUCCESSES,
    ApiResponse,
    Outcome,
    RunEnd,
    TaskRef,
    TaskResult,
)
from worker.policy import CircuitBreaker, Limiter, RetryBudget, decide
from worker.refusals import Turn
from worker.report import OutcomeWriter, RunStats
from worker.results import describe, log_retry, make_result, skip, unsent
from worker.settings import Settings
from worker.sink import Sink
from worker.sources import SourceItem, TaskSource

log = get_logger()


class Pipeline:
    """One run of the cleanup over one source. ``run()`` returns the exit code and stop reason."""

    def __init__(
        self,
        settings: Settings,
        client: DcsClient | None,
        source: TaskSource,
        journal: Journal,
        outcomes: OutcomeWriter,
        stats: RunStats,
        *,
        limiter: Limiter,
        budget: RetryBudget,
        breaker: CircuitBreaker,
        on_batch: Callable[[Sequence[TaskResult]], None] | None = None,
        rng: random.Random | None = None,
        adaptive: AdaptiveRate | None = None,
        turn: Turn | None = None,
    ) -> None:
        self.settings = settings
        self._client = client
        self._source = source
        self._journal = journal
        self._stats = stats
        # A dry run's probe or a --processes parent's GET came before: not this pipeline's.
        self._requests_before = stats.requests
        self.limiter = limiter
        self.adaptive = adaptive
        self.budget = budget
        self.breaker = breaker
        self._rng = rng or random.Random()
        self._sink = Sink(
            journal, outcomes, stats, source, on_batch, settings.journal_retention_s()
        )
        self._stop_event = anyio.Event()
        self.stop_reason: str | None = None
        self._hard = False
        self._intake_scope: anyio.CancelScope | None = None
        self._room: anyio.Event | None = None
        self._read_scope: anyio.CancelScope | None = None
        self._workers_scope: anyio.CancelScope | None = None
        self._timer_scope: anyio.CancelScope | None = None
        self._finished = False
        self._reserved_deletes = 0
        self.inflight = 0
        self._bad_lines = 0
        self._brakes = Brakes(settings, limiter, breaker, adaptive)
        # The run's first request goes alone, the workers waiting for its answer: a refused
        # AK/SK (Huawei locks one after five refused signatures), a wrong endpoint or clock is
        # then told by one request instead of a whole first wave of up to --burst.
        # With a Redis, that request also waits its turn among the runs with the same
        # credentials (``refusals.FirstRequestTurn``): a fleet started together sends one.
        self._pilot: anyio.Event | None = anyio.Event()
        self._pilot_out = False
        self._turn = turn
        self._abort_detail: str | None = None
        self.input_fully_read = False
        self.input_error: str | None = None

    @property
    def quota_stated(self) -> float | None:
        """Requests a second the gateway's 429s said the account may send, if they said."""
        return self._brakes.quota_stated

    # -- stopping -------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Stop intake now; requests in flight get ``grace`` seconds. Idempotent."""
        if self.stop_reason is None:
            self.stop_reason = reason
            log.warning("cleanup.stopping", reason=reason, inflight=self.inflight)
        self._stop_event.set()
        self._land()
        if self._intake_scope is not None:
            self._intake_scope.cancel()
        if self._read_scope is not None:
            self._read_scope.cancel()

    def _land(self) -> None:
        """The run's first request is answered, or will not be sent: the others go."""
        pilot, self._pilot = self._pilot, None
        if pilot is not None:
            pilot.set()

    def hard_stop(self) -> None:
        """Cancel everything in flight now (a second signal)."""
        self.request_stop(self.stop_reason or "signal")
        self._hard = True
        if self._workers_scope is not None:
            self._workers_scope.cancel()

    async def _grace_timer(self) -> None:
        """After a stop, give requests in flight ``grace`` seconds, then cancel them."""
        with anyio.CancelScope() as scope:
            self._timer_scope = scope
            if self._finished:
                return
            await self._stop_event.wait()
            await anyio.sleep(self.settings.grace)
            if self._workers_scope is not None and self.inflight:
                log.warning("cleanup.grace_expired", cancelled=self.inflight)
                self._workers_scope.cancel()

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> RunEnd:
        concurrency = self.settings.concurrency
        work_tx, work_rx = anyio.create_memory_object_stream[TaskRef](concurrency)
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._sink.run)
            outer.start_soon(self._grace_timer)
            try:
                async with anyio.create_task_group() as workers:
                    self._workers_scope = workers.cancel_scope
                    for _ in range(concurrency):
                        workers.start_soon(self._worker, work_rx.clone())
                    await self._intake(work_tx)
            finally:
                with anyio.CancelScope(shield=True):
                    # Tasks claimed but never taken by a worker (hard stop): not_attempted.
                    leftover = _drain(work_rx)
                    work_rx.close()
                    if leftover:
                        await self._record([unsent(ref, self.stop_reason) for ref in leftover])
                    self._sink.close()
                    self._finished = True
                    if self._timer_scope is not None:
                        self._timer_scope.cancel()
        self._stats.finished = time.time()
        return self._end()

    def _end(self) -> RunEnd:
        if self.stop_reason is None and self.input_error is not None:
            # Exit 2 only if no task was sent: a usage error, fix the input and run again.
            sent = self._stats.requests > self._requests_before
            return RunEnd(EXIT_ABORTED if sent else EXIT_USAGE, "input_error")
        if self.stop_reason in ABORT_REASONS:
            return RunEnd(EXIT_ABORTED, self.stop_reason)
        if self.stop_reason is not None:
            return RunEnd(EXIT_INTERRUPTED, self.stop_reason)
        failures = self._stats.outcomes[Outcome.REJECTED] + self._stats.outcomes[Outcome.FAILED]
        return RunEnd(EXIT_FAILURES if failures else EXIT_OK, None)

    async def _record(self, results: Sequence[TaskResult]) -> bool:
        """Record outcomes durably; on a journal failure abort the run (False)."""
        try:
            await self._sink.record(results)
        except JournalError as exc:
            self._abort("journal_error", str(exc))
            return False
        if self._sink.output_error is not None and self.stop_reason is None:
            where = (
                f"dcs-cleanup report --journal {self._journal.path} --outcomes NEW_FILE "
                "writes them all"
                if self._journal.kept
                else "the report counts them (no --journal to write them from)"
            )
            self._abort("output_error", f"{self._sink.output_error}; {where}")
        return True

    async def _send(self, work_tx: MemoryObjectSendStream[TaskRef], refs: list[TaskRef]) -> int:
        """Hand tasks to the workers; return how many were handed before a stop (if any)."""
        sent = 0
        with anyio.CancelScope() as scope:
            self._intake_scope = scope
            if self.stop_reason is not None:
                scope.cancel()
            for ref in refs:
                while True:
                    try:
                        # No await while a worker is free or the buffer has room: anyio's
                        # send() would pass through the event loop for every task.
                        work_tx.send_nowait(ref)
                        break
                    except anyio.WouldBlock:
                        # Full: wait for a worker to take a task, on an event of our own.
                        # Not in send(): cancelled by a stop, it can raise after a worker
                        # already took the task, which then got two outcomes.
                        self._room = room = anyio.Event()
                        await room.wait()
                sent += 1
        return sent

    async def _intake(self, work_tx: MemoryObjectSendStream[TaskRef]) -> None:
        batches = self._source.batches()
        try:
            async with work_tx:
                while True:
                    batch = await self._read(batches)
                    if batch is None:
                        break
                    refs = await self._claim(batch)
                    sent = await self._send(work_tx, refs)
                    if sent < len(refs):
                        await self._record([unsent(r, self.stop_reason) for r in refs[sent:]])
                    if self.stop_reason is not None:
                        break
            if self.stop_reason is None:
                self.input_fully_read = self.input_error is None
                return
            if (
                self._source.finite
                and not self._hard
                and self.input_error is None
                and self.stop_reason != "journal_error"  # nothing more can be claimed
            ):
                # Account for the rest of a file too (not_attempted), as far as grace allows.
                with anyio.move_on_after(self.settings.grace):
                    async for batch in batches:
                        refs = await self._claim(batch)
                        await self._record([unsent(ref, self.stop_reason) for ref in refs])
                    self.input_fully_read = True
        finally:
            with anyio.CancelScope(shield=True):
                await batches.aclose()

    async def _read(
        self, batches: AsyncGenerator[list[SourceItem], None]
    ) -> list[SourceItem] | None:
        """The next batch, or None at the end or on a stop. A queue read (which may wait for
        new entries for ever) is cancelled by a stop: its entries stay pending in the queue. A
        file read is never cut short, so no line read goes unaccounted for. An input that cannot
        be read on (a CSV header without task_id, a truncated gzip) ends the input there: every
        task read before the bad point still runs to its outcome."""
        try:
            if self._source.finite:
                return await anext(batches, None)
            with anyio.CancelScope() as scope:
                self._read_scope = scope
                if self.stop_reason is not None:
                    scope.cancel()
                return await anext(batches, None)
        except InputError as exc:
            log.error("cleanup.input_failed", error=str(exc))
            self.input_error = str(exc)
        return None

    async def _claim(self, batch: list[SourceItem]) -> list[TaskRef]:
        """Split a batch into tasks to send and already-final results (recorded right away)."""
        refs = [item for item in batch if isinstance(item, TaskRef)]
        final = [item for item in batch if isinstance(item, TaskResult)]
        for bad in final:
            self._warn_bad_input(bad)
        if refs:
            try:
                verdicts = self._journal.try_claim(refs)
                if verdicts is None:  # another process is writing: wait for it in a thread
                    verdicts = await anyio.to_thread.run_sync(self._journal.claim, refs)
            except JournalError as exc:  # nothing claimed, so nothing of the batch is sent
                self._abort("journal_error", str(exc))
                return []
            go: list[TaskRef] = []
            for ref, verdict in zip(refs, verdicts, strict=True):
                if verdict is None:
                    go.append(ref)
                else:
                    final.append(skip(ref, verdict))
            refs = go
        if final and not await self._record(final):
            return []
        return refs

    async def _worker(self, rx: MemoryObjectReceiveStream[TaskRef]) -> None:
        async with rx:
            while True:
                try:
                    try:
                        ref = rx.receive_nowait()
                    except anyio.WouldBlock:
                        ref = await rx.receive()
                except anyio.EndOfStream:
                    return
                room = self._room
                if room is not None:  # intake waits for a free slot: there is one now
                    self._room = None
                    room.set()
                if self.stop_reason is not None:
                    result = unsent(ref, self.stop_reason)
                else:
                    try:
                        result = await self._process(ref)
                    except anyio.get_cancelled_exc_class():
                        await self._record([unsent(ref, self.stop_reason)])
                        raise
                if not await self._record([result]):
                    return

    async def _process(self, ref: TaskRef) -> TaskResult:  # noqa: PLR0912, PLR0915 - one hot loop
        settings = self.settings
        started = time.perf_counter()
        attempts = 0
        last: ApiResponse | TransportError | None = None
        if settings.dry_run:
            return make_result(ref, Outcome.WOULD_DELETE, None, 0, started)
        client = self._client
        assert client is not None  # noqa: S101 - a real run always has a client
        brakes = self._brakes
        while True:
            if self.stop_reason is not None:
                return make_result(ref, Outcome.NOT_ATTEMPTED, last, attempts, started)
            pilot = self._pilot
            if pilot is not None:
                if self._pilot_out:
                    await pilot.wait()  # the run's first request is out: its answer first
                    continue
                self._pilot_out = True
                if self._turn is not None:
                    refused = await self._turn.wait(self._stop_event)
                    if refused is not None:  # met by another run's first request meanwhile
                        self._abort("credentials_refused", refused.describe())
                        continue
            limit = settings.max_deletes
            if limit is not None and self._reserved_deletes >= limit:
                self._abort("max_deletes", f"--max-deletes {limit} reached")
                continue
            try:
                await self.limiter.acquire()
            except AbortRun as exc:  # a shared limiter refused for good (no permission, ...)
                self._abort(exc.reason, exc.detail)
                continue
            if self.stop_reason is not None:
                # Checked again after pacing: no request leaves after a 401 or a stop.
                continue
            attempts += 1
            self._reserved_deletes += 1
            self.inflight += 1
            sent_at = self.adaptive.on_sent() if self.adaptive is not None else 0.0
            try:
                last = await client.delete_task(ref.project_id, ref.task_id, ref.message)
            except TransportError as exc:
                last = exc
            finally:
                self.inflight -= 1
            if pilot is not None:  # (a stop that cancels the request lands it)
                if self._turn is not None:
                    await self._turn.landed(last)
                self._land()
            self._stats.on_answer(last)
            brakes.pace(last, sent_at)
            decision = decide(
                last,
                attempts,
                settings.max_attempts,
                base=settings.backoff_base,
                cap=settings.backoff_cap,
                max_retry_after=settings.max_retry_after,
                rng=self._rng,
                paced=self.adaptive is not None,
            )
            if decision.outcome is not Outcome.DELETED:
                self._reserved_deletes -= 1
            brake = brakes.check(last)
            if brake is not None and self.stop_reason is None:
                self._abort(*brake)
            if decision.abort is not None:
                self._abort(decision.abort, describe(last))
                return make_result(
                    ref, decision.outcome or Outcome.NOT_ATTEMPTED, last, attempts, started
                )
            if decision.outcome is not None:
                if decision.outcome in SUCCESSES:
                    self.budget.on_success()
                return make_result(ref, decision.outcome, last, attempts, started)
            if not self.budget.try_spend(last):
                return make_result(
                    ref, Outcome.FAILED, last, attempts, started, note="retry budget exhausted"
                )
            self._stats.on_retry()
            log_retry(ref, attempts, decision.delay, last)
            with anyio.move_on_after(decision.delay):
                await self._stop_event.wait()

    def _warn_bad_input(self, result: TaskResult) -> None:
        """One warning per bad input line (the first 100; then every 1,000th), naming the line."""
        self._bad_lines += 1
        if self._bad_lines <= 100 or self._bad_lines % 1000 == 0:
            log.warning(
                "cleanup.input_line_skipped",
                source=result.source,
                line=result.line,
                reason=result.error_code,
                detail=result.error_msg,
                skipped_so_far=self._bad_lines,
            )

    def _abort(self, reason: str, detail: str) -> None:
        if self.stop_reason is None:
            log.error("cleanup.aborted", reason=reason, detail=detail)
            self._abort_detail = detail
        self.request_stop(reason)

    @property
    def stop_detail(self) -> str | None:
        """Why the run stopped early, in words, for the report: the abort's detail, or the
        input error that ended the input."""
        if self.stop_reason is None:
            return self.input_error
        return self._abort_detail


def _drain(rx: MemoryObjectReceiveStream[TaskRef]) -> list[TaskRef]:
    out: list[TaskRef] = []
    while True:
        try:
            out.append(rx.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            return out
