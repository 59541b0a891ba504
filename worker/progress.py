"""Progress as an operator sees it: a tqdm bar on a terminal (log lines are written above it), else
a ``cleanup.progress`` log line every ``--progress-interval`` seconds. ``Progress`` is a run's,
``ProcessesProgress`` the ``--processes`` parent's, from the counters its children share.

For a file input, its tasks are counted in a thread while the run goes on (``count_total``): the
bar's total, and in the log line ``total``, ``percent`` and ``eta_s`` (the tasks left at the rate
of the last interval), so an operator reading a CronJob's log sees when it will end; a
``--retry-failed`` run's total is the journal's tasks to retry. Until the count is done, and for
stdin, a queue or one shard of a file, the line has ``done`` and the rate.
A queue run's line has the group's ``queue_lag`` (entries not yet delivered to it) and
``queue_pending`` (delivered, not yet acknowledged) instead: whether the consumers keep up.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from worker.files import FileSource
from worker.logs import get_logger, route_lines
from worker.models import TaskResult
from worker.report import RunStats
from worker.settings import Settings
from worker.sources import IdValidator

if TYPE_CHECKING:
    from worker.pipeline import Pipeline

log = get_logger()


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


def towards(done: int, total: int | None, rate: float) -> dict[str, float]:
    """The log line's ``total``, ``percent`` and ``eta_s`` (seconds at ``rate`` tasks a second,
    while there is a rate and tasks are left), once the input's tasks are counted."""
    if total is None:
        return {}
    fields: dict[str, float] = {"total": total, "percent": round(100 * done / max(total, 1), 1)}
    if rate > 0 and total > done:
        fields["eta_s"] = round((total - done) / rate)
    return fields


def queue_fields(state: dict[str, float] | None) -> dict[str, int | None]:
    """The log line's view of a queue (``RedisStreamSource.look``): nothing when Redis did not
    answer; a lag Redis cannot tell (NaN) is null."""
    if state is None:
        return {}
    lag = state["lag"]
    return {
        "queue_lag": None if math.isnan(lag) else int(lag),
        "queue_pending": int(state["pending"]),
    }


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
        self._total: int | None = None
        self._look: Callable[[], Awaitable[dict[str, float] | None]] | None = None

    def watch_queue(self, look: Callable[[], Awaitable[dict[str, float] | None]]) -> None:
        """Put the queue's lag and pending entries (``look``) in each log line."""
        self._look = look

    def set_total(self, total: int) -> None:
        self._total = total
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
            # The queue first: a task done while Redis answers is then counted in ``done``.
            queue = queue_fields(await self._look()) if self._look is not None else {}
            now = time.monotonic()
            total = self._stats.total
            rate = (total - last_total) / max(now - last_time, 1e-9)
            log.info(
                "cleanup.progress",
                done=total,
                **towards(total, self._total, rate),
                rate_per_s=round(rate, 1),
                **queue,
                inflight=pipeline.inflight,
                requests=self._stats.requests,
                retries=self._stats.retries,
                throttled=self._stats.throttled,
                # Keys as their words: a console line showed <Outcome.DELETED: 'deleted'>.
                outcomes={str(k): v for k, v in self._stats.outcomes.items()},
            )
            last_total, last_time = total, now

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


async def count_total(source: FileSource, progress: Progress) -> None:
    """Give the progress a total: count the input's tasks in a thread while the run goes on."""
    total = await anyio.to_thread.run_sync(source.count_lines, abandon_on_cancel=True)
    if total is not None:
        progress.set_total(total)


class ProcessesProgress:
    """The parent's view of the run: a bar on a terminal, else a log line every interval."""

    def __init__(self, settings: Settings, done: Any, retry_total: int | None = None) -> None:
        """``retry_total``: a ``--retry-failed`` run's tasks to retry, counted before the
        children started (the single process's total is the same count)."""
        self._done = done
        self._mode = progress_mode(settings.progress, sys.stderr)
        self._interval = settings.progress_interval
        self._last = (0, time.monotonic())
        self._bar: ProgressBar | None = None
        self._total: int | None = retry_total
        if self._mode == "bar":
            self._bar = ProgressBar(sys.stderr)
            if retry_total is not None:
                self._bar.set_total(retry_total)
        if self._mode in ("bar", "log") and settings.input and settings.shard_spec() is None:
            # The children's shards make up the whole file, so its count is the run's total
            # (not so with --shard: the file's count would be N shards' total).
            source = FileSource(settings.input, None, IdValidator(settings.id_pattern))
            threading.Thread(target=self._count, args=(source,), daemon=True).start()

    def _count(self, source: FileSource) -> None:
        total = source.count_lines()
        if total is None:
            return
        self._total = total
        if self._bar is not None:
            self._bar.set_total(total)

    def tick(self) -> None:
        done = sum(self._done)
        if self._bar is not None:
            self._bar.update(done - self._bar.done)
            return
        now = time.monotonic()
        if self._mode == "log" and now - self._last[1] >= self._interval:
            rate = (done - self._last[0]) / max(now - self._last[1], 1e-9)
            log.info(
                "cleanup.progress",
                done=done,
                **towards(done, self._total, rate),
                rate_per_s=round(rate, 1),
            )
            self._last = (done, now)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(sum(self._done) - self._bar.done)
            self._bar.close()
            self._bar = None
