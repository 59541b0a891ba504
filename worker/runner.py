"""Assembles one run from settings: credentials, client, journal, source, outputs, signals.

``execute`` is what ``dcs-cleanup run`` and ``dcs-cleanup demo`` call; it returns the exit code of
PRODUCT.md and never lets a known outcome go unwritten.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import anyio
import anyio.abc

from worker.adaptive import AdaptiveRate
from worker.client import DcsClient
from worker.errors import ConfigError, JournalError, TransportError
from worker.files import FileSource
from worker.journal import Journal, RunLock
from worker.logs import GuardedStream, get_logger, route_lines
from worker.models import TaskRef, TaskResult
from worker.pipeline import EXIT_ABORTED, EXIT_USAGE, Pipeline, RunEnd
from worker.policy import CircuitBreaker, Limiter, RateLimiter, RetryBudget
from worker.report import OutcomeWriter, RunStats, summary_table, write_report
from worker.settings import Settings, redact_url
from worker.shards import ShardFilter
from worker.signer import Credentials, Signer
from worker.sources import IdValidator, SourceItem, TaskSource

if TYPE_CHECKING:
    from worker.metrics import Metrics
    from worker.processes import Part

log = get_logger()


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def credentials_from(settings: Settings) -> Credentials:
    if settings.ak is None or settings.sk is None:
        msg = (
            "credentials missing: set CLOUD_SDK_AK and CLOUD_SDK_SK "
            "(and CLOUD_SDK_SECURITY_TOKEN for temporary credentials)"
        )
        raise ConfigError(msg)
    token = settings.security_token.get_secret_value() if settings.security_token else None
    return Credentials(settings.ak.get_secret_value(), settings.sk.get_secret_value(), token)


class JournalSource:
    """``--retry-failed``: the tasks a journal holds as failed, not_attempted or pending."""

    def __init__(self, journal: Journal) -> None:
        self.name = f"journal:{journal.path}"
        self.finite = True
        self._journal = journal

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


def progress_mode(mode: str, stream: IO[str]) -> str:
    """``auto``: a bar on a terminal, else log lines."""
    if mode == "auto":
        return "bar" if stream.isatty() else "log"
    return mode


class ProgressBar:
    """A tqdm bar on ``stream``; while it is drawn, log lines are written above it."""

    def __init__(self, stream: IO[str]) -> None:
        from tqdm import tqdm

        # tqdm stops drawing by itself on a terminal that hung up (EIO). Its stream stays the
        # plain one: tqdm.write() clears the bar before a log line only on sys.stdout/stderr.
        self._bar: Any = tqdm(unit=" tasks", file=stream, dynamic_ncols=True, mininterval=0.2)
        route_lines(lambda line: tqdm.write(line, file=sys.stdout))

    @property
    def done(self) -> int:
        return int(self._bar.n)

    def set_total(self, total: int) -> None:
        self._bar.total = total
        self._bar.refresh()

    def update(self, count: int) -> None:
        self._bar.update(count)

    def close(self) -> None:
        self._bar.close()
        route_lines(None)


class Progress:
    """A bar on a terminal, else a ``cleanup.progress`` log line every ``interval`` seconds."""

    def __init__(
        self, mode: str, interval: float, stats: RunStats, stream: IO[str] | None = None
    ) -> None:
        self._stream = stream or sys.stderr
        self.mode = progress_mode(mode, self._stream)
        self._interval = interval
        self._stats = stats
        self._bar = ProgressBar(self._stream) if self.mode == "bar" else None

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.set_total(total)

    def on_batch(self, batch: Sequence[TaskResult]) -> None:
        if self._bar is not None:
            self._bar.update(len(batch))

    async def run(self, pipeline: Pipeline) -> None:
        if self.mode != "log":
            return
        last_total, last_time = 0, time.monotonic()
        while True:
            await anyio.sleep(self._interval)
            now = time.monotonic()
            total = self._stats.total
            log.info(
                "cleanup.progress",
                done=total,
                rate_per_s=round((total - last_total) / max(now - last_time, 1e-9), 1),
                inflight=pipeline.inflight,
                requests=self._stats.requests,
                retries=self._stats.retries,
                throttled=self._stats.throttled,
                outcomes=dict(self._stats.outcomes),
            )
            last_total, last_time = total, now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


async def _watch_signals(pipeline: Pipeline, task_status: anyio.abc.TaskStatus[None]) -> None:
    # SIGHUP: the terminal of a run started by hand went away (an ssh session dropped).
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        count = 0
        async for signum in signals:
            count += 1
            name = signal.Signals(signum).name
            if count == 1:
                log.warning("cleanup.signal_received", signal=name, grace_s=pipeline.settings.grace)
                pipeline.request_stop("signal")
            else:
                log.warning("cleanup.signal_received_again", signal=name, action="stop now")
                pipeline.hard_stop()


async def _drive(
    pipeline: Pipeline,
    source: TaskSource,
    progress: Progress,
    metrics: Metrics | None,
    *,
    handle_signals: bool,
) -> RunEnd:
    """Run the pipeline with its watchers: signals, deadline, progress, the bar's total, and for
    a queue consumer the health and metrics endpoint."""
    async with anyio.create_task_group() as tg:
        if metrics is not None and _consumer_mode(pipeline.settings):
            await tg.start(_serve_health, pipeline, metrics, source)
        if handle_signals:
            await tg.start(_watch_signals, pipeline)
        deadline = pipeline.settings.deadline_in()
        if deadline is not None:
            tg.start_soon(_watch_deadline, pipeline, deadline)
        tg.start_soon(progress.run, pipeline)
        if progress.mode == "bar" and isinstance(source, FileSource) and source.path != "-":
            tg.start_soon(_count_for_bar, source, progress)
        end = await pipeline.run()
        tg.cancel_scope.cancel()
    return end


def _metrics_for(settings: Settings) -> Metrics | None:
    """Prometheus metrics when something reads them: a consumer's ``/metrics`` or a push."""
    if not (_consumer_mode(settings) or settings.pushgateway):
        return None
    from worker.metrics import Metrics  # prometheus_client only for runs that use it

    return Metrics()


def _consumer_mode(settings: Settings) -> bool:
    return settings.queue is not None and not settings.until_empty


async def _serve_health(
    pipeline: Pipeline,
    metrics: Metrics,
    source: TaskSource,
    task_status: anyio.abc.TaskStatus[None],
) -> None:
    """``/healthz`` (503 once stopping) and ``/metrics`` for a long-running queue consumer.

    Redis out of reach leaves ``/healthz`` ok: a restart would not bring it back, and the
    consumer goes on by itself when it returns. ``dcs_cleanup_queue_up`` is the thing to alert
    on, with the stream's lag and pending entries, which ``/metrics`` reads at each scrape."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def healthz(request: web.Request) -> web.Response:
        del request
        ok = pipeline.stop_reason is None
        body = {"status": "ok" if ok else "stopping", "inflight": pipeline.inflight}
        return web.json_response(body, status=200 if ok else 503)

    async def metrics_page(request: web.Request) -> web.Response:
        del request
        metrics.inflight.set(pipeline.inflight)
        metrics.rate.set(pipeline.limiter.rate)
        if queue is not None:
            metrics.on_queue(await queue.look(), queue.counts())
        data = generate_latest(metrics.registry)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    from worker.queue import RedisStreamSource

    inner = source.inner if isinstance(source, ShardFilter) else source
    queue = inner if isinstance(inner, RedisStreamSource) else None
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    settings = pipeline.settings
    site = web.TCPSite(runner, settings.health_host, settings.health_port)
    await site.start()
    log.info("cleanup.health_serving", host=settings.health_host, port=settings.health_port)
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


async def _push(metrics: Metrics, gateway: str, part: Part | None) -> None:
    grouping = {"process": str(part.index)} if part is not None else None
    try:
        await anyio.to_thread.run_sync(metrics.push, gateway, "dcs-cleanup", grouping)
    except OSError as exc:
        log.warning("cleanup.pushgateway_failed", gateway=redact_url(gateway), error=str(exc))
    else:
        log.info("cleanup.metrics_pushed", gateway=redact_url(gateway))


async def _make_limiter(settings: Settings, stack: AsyncExitStack) -> Limiter:
    if settings.shared_rate_key is None or (settings.rate == 0 and not settings.adaptive_on()):
        return RateLimiter(settings.rate, settings.burst)
    url = settings.redis or settings.queue
    if url is None:
        raise ConfigError("--shared-rate-key needs --redis URL (or --queue URL)")
    from worker import queue, shared_rate  # redis is imported only by runs that use it

    client = queue.connect(url)
    stack.push_async_callback(client.aclose)
    limiter = shared_rate.SharedRateLimiter(
        client, settings.shared_rate_key, settings.rate, settings.burst
    )
    await limiter.check()  # Redis must answer before anything is sent
    return limiter


async def _count_for_bar(source: FileSource, progress: Progress) -> None:
    """Give the bar a total: count the input's lines in a thread while the run goes on."""
    total = await anyio.to_thread.run_sync(source.count_lines, abandon_on_cancel=True)
    if total is not None:
        progress.set_total(total)


async def _watch_deadline(pipeline: Pipeline, seconds: float) -> None:
    await anyio.sleep(max(0.0, seconds))
    log.warning("cleanup.deadline_reached", deadline=pipeline.settings.deadline)
    pipeline.request_stop("deadline")


async def _probe(client: DcsClient, settings: Settings) -> int | None:
    """Dry run: one signed ListCenterTask GET checks endpoint and credentials. None = fine."""
    project = settings.project_id
    if project is None:
        return None
    try:
        answer = await client.list_tasks(project)
    except TransportError as exc:
        log.error("cleanup.endpoint_unreachable", endpoint=settings.base_url(), error=str(exc))
        return EXIT_USAGE
    if answer.status == 401:
        log.error(
            "cleanup.credentials_refused",
            error_code=answer.error_code,
            request_id=answer.request_id,
        )
        return EXIT_ABORTED
    log.info("cleanup.dry_run_probe", status=answer.status, error_code=answer.error_code)
    return None


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
    signer = Signer(credentials_from(settings))
    base_url = settings.base_url()
    run_id = new_run_id() if part is None else part.run_id
    metrics = _metrics_for(settings)
    stats = RunStats(metrics=metrics)
    async with AsyncExitStack() as stack:
        journal_path, kept = _journal_path(settings, stack, part)
        journal = Journal(journal_path, run_id, kept=kept)
        stack.callback(journal.close)
        if source is None:
            source = _make_source(settings, journal)
        stack.push_async_callback(source.aclose)
        try:
            outcomes = OutcomeWriter(settings.outcomes, run_id)
        except OSError as exc:
            raise ConfigError(f"--outcomes {settings.outcomes}: {exc.strerror or exc}") from None
        stack.callback(outcomes.close)
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
        if settings.dry_run:
            code = await _probe(client, settings)
            if code is not None:
                return code
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
            adaptive=AdaptiveRate(limiter, settings.rate) if settings.adaptive_on() else None,
            budget=RetryBudget(settings.retry_budget, settings.retry_refund),
            breaker=CircuitBreaker(settings.breaker_window, settings.breaker_threshold),
            on_batch=progress.on_batch if part is None else part.counting(progress.on_batch),
        )
        if on_pipeline is not None:
            on_pipeline(pipeline)
        end = await _drive(pipeline, source, progress, metrics, handle_signals=handle_signals)
        progress.close()
        report = _build_report(settings, stats, pipeline, end, run_id, source)
        if metrics is not None and settings.pushgateway and not _consumer_mode(settings):
            await _push(metrics, settings.pushgateway, part)
        if part is not None:
            part.save(report, stats)
            return end.exit_code
        save_report(settings, report)
        try:
            journal.finish_run(end.exit_code, json.dumps(report))
        except JournalError as exc:
            log.error("cleanup.journal_error", error=str(exc))
        announce_end(report, summary_stream)
        return end.exit_code
    return EXIT_ABORTED  # pragma: no cover - the stack above always returns


def announce_end(report: dict[str, Any], stream: IO[str] | None) -> None:
    log.info(
        "cleanup.run_finished",
        run_id=report["run_id"],
        exit_code=report["exit_code"],
        stop_reason=report["stop_reason"],
        outcomes={k: v for k, v in report["outcomes"].items() if v},
        requests=report["requests"],
        duration_s=report["duration_s"],
    )
    print(summary_table(report), file=GuardedStream(stream or sys.stderr), flush=True)


def check_outputs(settings: Settings) -> None:
    """Create the folders of ``--journal``, ``--outcomes`` and ``--report`` now and refuse one
    that cannot be used (exit 2), before anything is sent rather than in a traceback later."""
    for flag, path in (
        ("--journal", settings.journal),
        ("--outcomes", settings.outcomes),
        ("--report", settings.report),
    ):
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"{flag} {path}: cannot create its folder: {exc.strerror or exc}"
            raise ConfigError(msg) from None
        if path.is_dir():
            raise ConfigError(f"{flag} {path}: is a folder; give a file path")
        if not os.access(path if path.exists() else path.parent, os.W_OK):
            raise ConfigError(f"{flag} {path}: not writable")
    _refuse_shared_files(settings)


def _refuse_shared_files(settings: Settings) -> None:
    """Each output needs a file of its own, and none may be the input: ``--report ids.txt``
    replaced the input with the report at the end, ``--report`` and ``--outcomes`` on one
    path lost every outcome line, and ``--outcomes`` on the journal appended JSON to the
    database. Devices (``/dev/null``) may be shared."""
    journal = settings.journal
    files: list[tuple[str, Path]] = []
    if settings.input is not None and settings.input != "-":
        files.append(("--input", Path(settings.input)))
    if journal is not None:
        files += [("--journal", journal)] + [
            ("--journal", Path(f"{journal}{suffix}")) for suffix in ("-wal", "-shm", ".lock")
        ]
    files += [
        (flag, path)
        for flag, path in (("--outcomes", settings.outcomes), ("--report", settings.report))
        if path is not None
    ]
    for i, (flag, path) in enumerate(files):
        for other_flag, other in files[:i]:
            if other_flag != flag and _same_file(path, other):
                msg = f"{flag} {path} is the file of {other_flag} {other}: give each its own"
                raise ConfigError(msg)


def _same_file(a: Path, b: Path) -> bool:
    """One regular file (or one path yet to be made) under two names: the same resolved path,
    or a hard link. A device such as /dev/null is no file of anyone's."""
    try:
        a_stat, b_stat = a.stat(), b.stat()
    except OSError:  # one is still to be made
        return a.resolve() == b.resolve()
    if not (stat.S_ISREG(a_stat.st_mode) and stat.S_ISREG(b_stat.st_mode)):
        return False
    return (a_stat.st_dev, a_stat.st_ino) == (b_stat.st_dev, b_stat.st_ino)


def save_report(settings: Settings, report: dict[str, Any]) -> None:
    """Write ``--report``; a failure now (disk full) is logged, not raised: every outcome is
    already in the journal, and ``dcs-cleanup report --journal`` renders the report again."""
    if settings.report is None:
        return
    try:
        write_report(settings.report, report)
    except OSError as exc:
        log.error("cleanup.report_failed", path=str(settings.report), error=str(exc))


def check_request(settings: Settings, source: TaskSource | None) -> None:
    if (
        source is None
        and settings.input is None
        and settings.queue is None
        and not settings.retry_failed
    ):
        msg = (
            "nothing to read: give --input PATH (or - for stdin), --queue URL, "
            "or --retry-failed with --journal"
        )
        raise ConfigError(msg)
    if settings.queue is not None and settings.input is not None:
        raise ConfigError("give either --input or --queue, not both")
    if settings.retry_failed and (settings.input is not None or settings.queue is not None):
        # Not silently one or the other: the journal's unfinished tasks are the whole input.
        raise ConfigError("--retry-failed reads its tasks from --journal: drop --input/--queue")
    if settings.until_empty and settings.queue is None:
        raise ConfigError("--until-empty goes with --queue")
    if settings.retry_failed and settings.journal is None:
        raise ConfigError("--retry-failed needs --journal")
    if settings.retry_failed and settings.journal is not None and not settings.journal.exists():
        # A mistyped path would make a new, empty journal and end 0 having retried nothing.
        msg = f"--journal {settings.journal}: no such file; --retry-failed reads an existing one"
        raise ConfigError(msg)
    if settings.backoff_cap < settings.backoff_base:
        raise ConfigError("backoff_cap must be at least backoff_base")


def _build_report(
    settings: Settings,
    stats: RunStats,
    pipeline: Pipeline,
    end: RunEnd,
    run_id: str,
    source: TaskSource,
) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "rate": pipeline.adaptive.summary()
        if pipeline.adaptive is not None
        else {"final": pipeline.limiter.rate, "adaptive": False},
    }
    if isinstance(source, ShardFilter):
        extra["shard"] = {
            "index": source.index,
            "count": source.count,
            "other_shards": source.other_shards,
        }
    inner = source.inner if isinstance(source, ShardFilter) else source
    queue = sys.modules.get("worker.queue")  # loaded only if a run used Redis
    if queue is not None and isinstance(inner, queue.RedisStreamSource):
        extra["queue"] = {
            "stream": inner.stream,
            "group": inner.group,
            "consumer": inner.consumer,
            "acked": inner.acked,
            "dead_lettered": inner.dead_lettered,
            "dead_letter_stream": inner.dead_letter,
            "trimmed": inner.trimmed,
        }
    budget, breaker = pipeline.budget, pipeline.breaker
    return stats.build_report(
        run_id=run_id,
        settings=settings.public_view(),
        exit_code=end.exit_code,
        stop_reason=end.stop_reason,
        extra={
            "stop_detail": pipeline.stop_detail,
            "input_fully_read": pipeline.input_fully_read,
            "retry_budget": {
                "capacity": budget.capacity,
                "remaining": round(budget.tokens, 2),
                "denied": budget.denied,
            },
            "breaker": {
                "window": breaker.window,
                "threshold": breaker.threshold,
                "opened": breaker.opened,
            },
            "journal": str(settings.journal) if settings.journal else None,
            **extra,
        },
    )


def _make_source(settings: Settings, journal: Journal) -> TaskSource:
    validator = IdValidator(settings.id_pattern)
    source: TaskSource
    if settings.retry_failed:
        source = JournalSource(journal)
    elif settings.queue is not None:
        from worker import queue  # redis is imported only by runs that use it

        consumer = settings.consumer or f"{socket.gethostname()}-{os.getpid()}"
        source = queue.RedisStreamSource(
            queue.connect(settings.queue),
            settings.stream,
            settings.group,
            consumer,
            settings.project_id,
            validator,
            until_empty=settings.until_empty,
            claim_idle=settings.claim_idle,
            keep_acked=settings.keep_acked,
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
