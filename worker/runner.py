"""Assembles one run from settings: credentials, client, journal, source, outputs, signals.

``execute`` is what ``dcs-cleanup run`` and ``dcs-cleanup demo`` call; it returns the exit code of
PRODUCT.md and never lets a known outcome go unwritten.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
import anyio.abc

from worker.adaptive import AdaptiveRate
from worker.client import DcsClient
from worker.ending import (
    announce_end,
    build_report,
    end_unsent,
    save_report,
    tell_outcomes_deleted,
)
from worker.errors import ConfigError, JournalError
from worker.files import FileSource
from worker.first_request import ended_before_sending, probe, turn_for
from worker.health import consumer_mode, metrics_for, push_metrics, serve_health
from worker.journal import Journal
from worker.logs import get_logger
from worker.models import EXIT_ABORTED, RunEnd, TaskRef, TaskResult, new_run_id
from worker.pipeline import Pipeline
from worker.policy import CircuitBreaker, Limiter, RateLimiter, RetryBudget
from worker.preflight import check_open_files, check_outputs, check_request
from worker.progress import Progress, count_total
from worker.refusals import Memory, memory_for
from worker.report import OutcomeWriter, RunStats
from worker.runlock import RunLock
from worker.settings import Settings
from worker.shards import ShardFilter, unsharded
from worker.signer import Signer
from worker.sources import IdValidator, SourceItem, TaskSource
from worker.stop_signals import StopSignals

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from worker.processes import Part

log = get_logger()


class JournalSource:
    """``--retry-failed``: the tasks a journal holds as failed, not_attempted or pending."""

    def __init__(self, journal: Journal) -> None:
        self.name = f"journal:{journal.path}"
        self.finite = True
        self._journal = journal

    async def count(self, progress: Progress) -> None:
        """Give the progress its total: the tasks there are to retry, counted before any (none
        from a journal SQLite cannot count: the run's own reads of it say why)."""
        total = await anyio.to_thread.run_sync(self._journal.count_unfinished)
        if total is not None:
            progress.set_total(total)

    async def batches(self) -> AsyncGenerator[list[SourceItem], None]:
        after = ("", "")
        while True:
            refs: list[TaskRef] = await anyio.to_thread.run_sync(self._journal.unfinished, after)
            if not refs:
                return
            after = (refs[-1].project_id, refs[-1].task_id)
            yield list(refs)

    async def acknowledge(self, results: Sequence[TaskResult]) -> None:
        """The journal itself is the record."""

    async def aclose(self) -> None:
        """Nothing to close: the run owns the journal."""


async def _watch_signals(pipeline: Pipeline, task_status: anyio.abc.TaskStatus[None]) -> None:
    # SIGHUP: the terminal of a run started by hand went away (an ssh session dropped).
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        stops = StopSignals()
        async for signum in signals:
            if stops.take(signum, pipeline.settings.grace):
                pipeline.hard_stop()
            else:
                pipeline.request_stop("signal")


async def _drive(
    pipeline: Pipeline,
    source: TaskSource,
    progress: Progress,
    *,
    handle_signals: bool,
) -> RunEnd:
    """Run the pipeline with its watchers: signals, deadline, progress and its total."""
    async with anyio.create_task_group() as tg:
        if handle_signals:
            await tg.start(_watch_signals, pipeline)
        deadline = pipeline.settings.deadline_in()
        if deadline is not None:
            tg.start_soon(_watch_deadline, pipeline, deadline)
        tg.start_soon(progress.run, pipeline)
        if progress.mode != "off" and isinstance(source, FileSource) and source.path != "-":
            tg.start_soon(count_total, source, progress)
        if progress.mode != "off" and isinstance(source, JournalSource):
            await source.count(progress)  # before the pipeline claims any of them again
        if progress.mode == "log" and pipeline.settings.queue is not None:
            from worker.queue import RedisStreamSource  # redis: only for runs that use it

            inner = unsharded(source)
            if isinstance(inner, RedisStreamSource):
                progress.watch_queue(inner.look)
        end = await pipeline.run()
        tg.cancel_scope.cancel()
    return end


def _adaptive(settings: Settings, limiter: Limiter, part: Part | None) -> AdaptiveRate | None:
    """The adaptive rate, if the run adapts; a ``--processes`` child's holds its share of a
    quota the gateway states (one limiter shared through Redis holds all of it)."""
    if not settings.adaptive_on():
        return None
    share = 1.0 if part is None or settings.shared_rate_key is not None else 1 / part.count
    return AdaptiveRate(limiter, settings.rate, share=share)


async def _make_limiter(settings: Settings, stack: AsyncExitStack) -> Limiter:
    if settings.shared_rate_key is None or (settings.rate == 0 and not settings.adaptive_on()):
        return RateLimiter(settings.rate, settings.burst)
    url = settings.redis or settings.queue
    if url is None:
        raise ConfigError("--shared-rate-key needs --redis URL (or --queue URL)")
    from worker import redis_client, shared_rate  # redis is imported only by runs that use it

    client = await redis_client.open_client(url)
    stack.push_async_callback(client.aclose)
    limiter = shared_rate.SharedRateLimiter(
        client, settings.shared_rate_key, settings.rate, settings.burst
    )
    await limiter.check()  # Redis must answer before anything is sent
    return limiter


async def _watch_deadline(pipeline: Pipeline, seconds: float) -> None:
    await anyio.sleep(max(0.0, seconds))
    log.warning("cleanup.deadline_reached", deadline=pipeline.settings.deadline)
    pipeline.request_stop("deadline")


async def _remember_refusal(
    memory: Memory | None, reason: str | None, detail: str | None, run_id: str
) -> None:
    """Credentials refused later in the run (the first request's refusal is remembered in its
    turn; ``remember`` does not write a marker twice)."""
    if memory is not None and reason == "credentials_refused":
        await memory.remember(detail or "HTTP 401", run_id)


def _journal_path(
    settings: Settings, stack: AsyncExitStack, part: Part | None
) -> tuple[Path, bool]:
    """The journal's path and whether it outlives the run: ``--journal``, held for this run (a
    ``--processes`` child runs under its parent's lock, on the parent's journal or its
    temporary one); without one, a journal in a temporary folder that goes at the end."""
    if settings.journal is None:
        tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="dcs-cleanup-"))
        return Path(tmpdir) / "journal.sqlite", False
    if part is None:
        stack.enter_context(RunLock(settings.journal))
        return settings.journal, True
    return settings.journal, part.journal_kept


async def execute(
    settings: Settings,
    *,
    source: TaskSource | None = None,
    handle_signals: bool = True,
    progress_stream: IO[str] | None = None,
    summary_stream: IO[str] | None = None,
    on_pipeline: Callable[[Pipeline], None] | None = None,
    part: Part | None = None,
) -> int:
    """Run the cleanup described by ``settings``; return the exit code.

    ``part``: this run is one process of a ``--processes`` run; it counts progress in the
    shared array and hands its figures to the parent, which writes the report and summary.
    """
    check_request(settings, source)
    check_outputs(settings)
    check_open_files(settings.concurrency)
    credentials = settings.credentials()
    signer = Signer(credentials)
    memory = memory_for(settings, credentials)
    base_url = settings.base_url()
    run_id = new_run_id() if part is None else part.run_id
    metrics = metrics_for(settings)
    stats = RunStats(metrics=metrics)
    async with AsyncExitStack() as stack:
        turn = turn_for(memory, run_id, settings.timeout, stack)
        journal = await _open_journal(settings, run_id, stack, part)
        if source is None:
            source = _make_source(settings, journal, await _queue_client(settings))
        stack.push_async_callback(source.aclose)
        outcomes = _outcome_writer(settings, run_id)
        stack.callback(outcomes.close)
        if part is None and (  # a --processes parent has checked for its children
            early := await ended_before_sending(
                settings, run_id, stats, memory, probe=False, summary_stream=summary_stream
            )
        ):
            _finish_run(journal, early)
            return EXIT_ABORTED
        client = await stack.enter_async_context(
            DcsClient(base_url, signer, concurrency=settings.concurrency, timeout=settings.timeout)
        )
        log.info(
            "cleanup.run_started",
            run_id=run_id,
            endpoint=base_url,
            source=source.name,
            concurrency=settings.concurrency,
            rate=settings.rate,
            dry_run=settings.dry_run,
            journal=str(settings.journal) if settings.journal else None,
            proxy=str(client.proxy) if client.proxy else None,
        )
        if settings.dry_run and (stop := await probe(client, settings, turn, stats)):
            # Exit 2 has no report, as a configuration error; a child's is its parent's.
            if stop.exit_code == EXIT_ABORTED and part is None:
                early = end_unsent(
                    settings, stats, run_id, stop.reason, stop.detail, summary_stream
                )
                _finish_run(journal, early)
            return stop.exit_code
        progress = Progress(settings.progress, settings.progress_interval, stats, progress_stream)
        stack.callback(progress.close)
        limiter = await _make_limiter(settings, stack)
        pipeline = Pipeline(
            settings,
            client,
            source,
            journal,
            outcomes,
            stats,
            limiter=limiter,
            adaptive=_adaptive(settings, limiter, part),
            budget=RetryBudget(settings.retry_budget, settings.retry_refund),
            breaker=CircuitBreaker(settings.breaker_window, settings.breaker_threshold),
            on_batch=progress.on_batch if part is None else part.counting(progress.on_batch),
            turn=turn,
        )
        if on_pipeline is not None:
            on_pipeline(pipeline)
        if metrics is not None and consumer_mode(settings):
            await serve_health(pipeline, metrics, source, stack)
        end = await _drive(pipeline, source, progress, handle_signals=handle_signals)
        await _remember_refusal(memory, end.stop_reason, pipeline.stop_detail, run_id)
        progress.close()
        if outcomes.deleted():
            tell_outcomes_deleted(settings, journal.kept)
        report = build_report(settings, stats, pipeline, end, run_id, source)
        if metrics is not None and settings.pushgateway and not consumer_mode(settings):
            metrics.on_pipeline(pipeline.inflight, pipeline.limiter.rate, pipeline.quota_stated)
            await push_metrics(metrics, settings.pushgateway, part)
        if part is not None:
            part.save(report, stats)
            return end.exit_code
        save_report(settings, report)
        _finish_run(journal, report)
        announce_end(report, summary_stream)
        return end.exit_code
    return EXIT_ABORTED  # pragma: no cover - the stack above always returns


def _outcome_writer(settings: Settings, run_id: str) -> OutcomeWriter:
    """The ``--outcomes`` file, open; one that cannot be opened is a configuration error."""
    try:
        return OutcomeWriter(settings.outcomes, run_id)
    except OSError as exc:
        raise ConfigError(f"--outcomes {settings.outcomes}: {exc.strerror or exc}") from None


async def _open_journal(
    settings: Settings, run_id: str, stack: AsyncExitStack, part: Part | None
) -> Journal:
    """The run's journal (closed with ``stack``), having forgotten what it holds from before
    ``--journal-retention`` (a ``--processes`` parent forgets it for its children)."""
    journal_path, kept = _journal_path(settings, stack, part)
    journal = Journal(journal_path, run_id, kept=kept)
    stack.callback(journal.close)
    if part is None and (keep := settings.retention_at_start_s()):
        await anyio.to_thread.run_sync(journal.forget_older_than, keep)
    return journal


def _finish_run(journal: Journal, report: dict[str, Any]) -> None:
    """The run's end and report in the journal's ``runs`` table; a failure is logged."""
    try:
        journal.finish_run(report["exit_code"], json.dumps(report))
    except JournalError as exc:
        log.error("cleanup.journal_error", error=str(exc))


async def _queue_client(settings: Settings) -> aioredis.Redis | None:
    """The Redis client of a ``--queue`` run (a cluster's, for a Redis Cluster), else None."""
    if settings.queue is None or settings.retry_failed:
        return None
    from worker import redis_client  # redis is imported only by runs that use it

    return await redis_client.open_client(settings.queue)


def _make_source(
    settings: Settings, journal: Journal, redis_client: aioredis.Redis | None
) -> TaskSource:
    validator = IdValidator(settings.id_pattern)
    source: TaskSource
    if settings.retry_failed:
        source = JournalSource(journal)
    elif settings.queue is not None:
        from worker import queue  # redis is imported only by runs that use it

        consumer = settings.consumer or f"{socket.gethostname()}-{os.getpid()}"
        assert redis_client is not None  # noqa: S101 - made for every --queue run
        source = queue.RedisStreamSource(
            redis_client,
            settings.stream,
            settings.group,
            consumer,
            settings.project_id,
            validator,
            until_empty=settings.until_empty,
            claim_idle=settings.claim_idle,
            keep_acked=settings.keep_acked,
            dead_letter_maxlen=settings.dead_letter_maxlen,
            message=settings.message,
        )
    else:
        assert settings.input is not None  # noqa: S101 - checked by execute()
        if settings.input != "-" and not Path(settings.input).exists():
            raise ConfigError(f"input {settings.input}: no such file")
        source = FileSource(
            settings.input, settings.project_id, validator, settings.input_format, settings.message
        )
    shard = settings.shard_spec()
    if shard is not None:
        source = ShardFilter(source, *shard)
    return source
