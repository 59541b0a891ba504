"""What a run tells: the outcomes file (one JSON line per task) and the JSON report (the summary
table read from it is ``worker.summary``).

Counts and latency percentiles are kept in fixed-size structures (a log-bucketed histogram), so a
run of millions of tasks uses the same memory as a run of ten.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import math
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from worker import __version__
from worker.errors import OutputError, RequestTimeoutError, TransportError
from worker.models import ApiResponse, Outcome, TaskResult

if TYPE_CHECKING:
    from worker.metrics import Metrics

_STATUS_KEYS = {status: str(status) for status in range(100, 600)}
_BUCKET_GROWTH = math.log(1.02)  # 2% relative precision on percentiles
_PER_LOG = 1.0 / _BUCKET_GROWTH
_FLOOR_MS = 0.001
# Tasks that never reached the API path: not in the throughput (a dry run's would_delete ones
# neither: its tasks/s was how fast it read the input, some 50,000 a second).
_NOT_SENT = frozenset({Outcome.SKIPPED, Outcome.NOT_ATTEMPTED, Outcome.WOULD_DELETE})


class LatencyHistogram:
    """Log-bucketed latency histogram: bounded memory, percentiles within 2%."""

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.max = 0.0

    def add(self, ms: float) -> None:
        bucket = int(math.log(ms if ms > _FLOOR_MS else _FLOOR_MS) * _PER_LOG)
        buckets = self._buckets
        buckets[bucket] = buckets.get(bucket, 0) + 1
        self.count += 1
        self.max = max(self.max, ms)

    def merge(self, other: LatencyHistogram) -> None:
        """Add another histogram's counts (the runs of several worker processes)."""
        for bucket, n in other._buckets.items():
            self._buckets[bucket] = self._buckets.get(bucket, 0) + n
        self.count += other.count
        self.max = max(self.max, other.max)

    def state(self) -> dict[str, Any]:
        """A JSON-able copy (a child process hands its histogram to the parent)."""
        return {"buckets": [[b, n] for b, n in self._buckets.items()], "max": self.max}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LatencyHistogram:
        hist = cls()
        for bucket, n in state["buckets"]:
            hist._buckets[int(bucket)] = int(n)
            hist.count += int(n)
        hist.max = float(state["max"])
        return hist

    def percentile(self, q: float) -> float | None:
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                return min(self.max, math.exp((bucket + 1) * _BUCKET_GROWTH))
        return self.max


class RunsSeen(NamedTuple):
    """What ``RunStats.add_runs`` found in a journal's runs table."""

    runs: int
    unfinished: int  # no report: killed, or still running
    seconds: float  # the finished runs' durations, summed


@dataclass(slots=True)
class RunStats:
    """Counters for one run; updated by the pipeline on every answer and every outcome."""

    started: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    finished: float | None = None
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    skipped_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    # Why tasks ended failed or rejected: the last answer's error code, else its HTTP status.
    failed_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    rejected_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    http_status: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    metrics: Metrics | None = None

    def on_answer(self, answer: ApiResponse | TransportError) -> None:
        """Count one answer: by HTTP status, or ``timeout``/``network`` when there was none."""
        self.requests += 1
        elapsed_ms: float | None = None
        throttled = False
        if isinstance(answer, ApiResponse):
            key = _STATUS_KEYS.get(answer.status) or str(answer.status)
            elapsed_ms = answer.elapsed_ms
            throttled = answer.status == 429
            self.latency.add(elapsed_ms)
            self.throttled += throttled
        else:
            key = "timeout" if isinstance(answer, RequestTimeoutError) else "network"
        self.http_status[key] += 1
        if self.metrics is not None:
            self.metrics.on_answer(key, elapsed_ms, throttled=throttled)

    def on_retry(self) -> None:
        self.retries += 1
        if self.metrics is not None:
            self.metrics.retries.inc()

    def on_results(self, results: Sequence[TaskResult]) -> None:
        if self.metrics is not None:
            self.metrics.on_results(results)
        outcomes = self.outcomes
        failures = outcomes["failed"] + outcomes["rejected"]
        # Counted in C; Outcome is a StrEnum, so its members count under their string values.
        outcomes.update([r.outcome for r in results])
        skipped = [r.error_code for r in results if r.outcome is Outcome.SKIPPED and r.error_code]
        if skipped:
            self.skipped_reasons.update(skipped)
        if outcomes["failed"] + outcomes["rejected"] != failures:  # a look a batch, not a task
            for r in results:
                if r.outcome is Outcome.FAILED:
                    self.failed_reasons[failure_reason(r.error_code, r.status)] += 1
                elif r.outcome is Outcome.REJECTED:
                    self.rejected_reasons[failure_reason(r.error_code, r.status)] += 1

    def absorb(self, report: dict[str, Any], latency: LatencyHistogram) -> None:
        """Add another run's counts (a child process's report and histogram) to these."""
        self.outcomes.update({k: v for k, v in report["outcomes"].items() if v})
        self.skipped_reasons.update(report["skipped_reasons"])
        self.failed_reasons.update(report["failed_reasons"])
        self.rejected_reasons.update(report["rejected_reasons"])
        self._add_traffic(report)
        self.latency.merge(latency)

    def _add_traffic(self, report: dict[str, Any]) -> None:
        """Add another run's requests and answers, not its tasks."""
        self.http_status.update(report["http_status"])
        self.requests += report["requests"]
        self.retries += report["retries"]
        self.throttled += report["throttled"]

    def add_runs(self, runs: Sequence[tuple[float, float | None, str | None]]) -> RunsSeen:
        """Take a journal's runs, each (started_at, finished_at, report JSON): the requests and
        answers of those that wrote a report, the first start, the last end."""
        ran, unfinished, starts = 0.0, 0, []
        for started, finished, text in runs:
            if finished is None or not text:
                unfinished += 1  # killed, or still running: its report was never written
                starts.append(started)
                continue
            report = json.loads(text)
            self._add_traffic(report)
            ran += report["duration_s"]
            starts.append(datetime.fromisoformat(report["started_at"]).timestamp())
            self.finished = max(self.finished or finished, finished)
        self.started = min(starts, default=self.started)
        return RunsSeen(len(runs), unfinished, ran)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def elapsed(self) -> float:
        return time.monotonic() - self.started_mono

    def build_report(
        self,
        *,
        run_id: str,
        settings: dict[str, Any],
        exit_code: int,
        stop_reason: str | None,
        extra: dict[str, Any] | None = None,
        duration_s: float | None = None,
    ) -> dict[str, Any]:
        """The report; ``duration_s`` the seconds spent running, when not from start to end
        (the runs of a journal, with days between them)."""
        finished = self.finished or time.time()
        duration = max(finished - self.started, 1e-9) if duration_s is None else duration_s
        sent = sum(self.outcomes[o.value] for o in Outcome if o not in _NOT_SENT)
        return {
            "tool": "dcs-task-cleanup",
            "version": __version__,
            "run_id": run_id,
            "started_at": _iso(self.started),
            "finished_at": _iso(finished),
            "duration_s": round(duration, 3),
            "exit_code": exit_code,
            "stop_reason": stop_reason,
            "tasks": self.total,
            "outcomes": {o.value: self.outcomes[o.value] for o in Outcome},
            "skipped_reasons": dict(sorted(self.skipped_reasons.items())),
            "failed_reasons": dict(self.failed_reasons.most_common()),
            "rejected_reasons": dict(self.rejected_reasons.most_common()),
            "requests": self.requests,
            "http_status": dict(sorted(self.http_status.items())),
            "retries": self.retries,
            "throttled": self.throttled,
            "throughput_per_s": round(sent / duration, 2) if duration else 0.0,
            "latency_ms": {
                "p50": _round(self.latency.percentile(0.50)),
                "p90": _round(self.latency.percentile(0.90)),
                "p99": _round(self.latency.percentile(0.99)),
                "max": _round(self.latency.max if self.latency.count else None),
            },
            **(extra or {}),
            "settings": settings,
        }


def failure_reason(error_code: str | None, status: int | str | None) -> str:
    """Why a task failed or was rejected, in a word: its error code (``DCS.4133``, ``timeout``,
    ``ClientConnectorError``), else the HTTP status of its last answer (the report's
    ``failed_reasons``, and ``redrive``'s count of dead letters, whose status is text)."""
    if error_code:
        return error_code
    return f"HTTP {status}" if status not in (None, "") else "unknown"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class OutcomeWriter:
    """Appends one JSON line per task. Each batch goes to the file in one unbuffered append
    ``write``: a crash keeps every batch written, and several worker processes appending to
    one file never interleave inside a line. orjson encodes about ten times as fast as ``json``.
    """

    def __init__(self, path: Path | None, run_id: str | None = None) -> None:
        """``run_id``: the run each line is written for (a result read back from the journal
        carries its own), so the lines of several runs appended to one file can be told apart."""
        self._fd: int | None = None
        self._path = path
        self._run_id = run_id
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            _end_line(self._fd, path)

    def write(self, results: Sequence[TaskResult]) -> None:
        """Append the results' lines; ``OutputError`` if the file refuses them (disk full)."""
        if self._fd is None or not results:
            return
        run_id = self._run_id
        lines = b"".join([_line(r, run_id) for r in results])
        data = memoryview(lines)
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            self._cut_fragment(lines, len(lines) - len(data))
            msg = f"outcomes {self._path}: write failed: {exc.strerror or exc}"
            raise OutputError(msg) from None

    def _cut_fragment(self, lines: bytes, written: int) -> None:
        """After a write that stopped part-way (a disk filling up), cut the part of a line it
        left at the end of the file, so that the file holds whole lines only and a later run's
        lines start on a line of their own. Only when nothing was appended after it (another
        process of the run sharing the file): truncating then would cut that process's lines."""
        fragment = written - (lines.rfind(b"\n", 0, written) + 1)
        if not written or not fragment or self._fd is None:
            return
        with contextlib.suppress(OSError):
            end = os.lseek(self._fd, 0, os.SEEK_CUR)  # where this process's write ended
            if os.fstat(self._fd).st_size == end:
                os.ftruncate(self._fd, end - fragment)

    def deleted(self) -> bool:
        """Whether the file was deleted while open (``rm``, a cleaner of /tmp): the lines
        written went with it, though every write succeeded."""
        if self._fd is None:
            return False
        try:
            st = os.fstat(self._fd)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_nlink == 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _end_line(fd: int, path: Path) -> None:
    """End a file left inside a line (a power cut mid-write) with a newline, so that this run's
    first line is not glued to that fragment. Under a lock: the processes of one run open the
    file together, and only the first may add it. A regular file only, its last byte read
    through a descriptor of its own: a FIFO opened for reading by its writer would have a
    reader for as long as the writer lives, and never tell it that its reader went away."""
    with contextlib.suppress(OSError):  # a file that may be written but not read: leave it
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size:
                reader = os.open(path, os.O_RDONLY)
                try:
                    last = os.pread(reader, 1, size - 1)
                finally:
                    os.close(reader)
                if last != b"\n":
                    os.write(fd, b"\n")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _line(result: TaskResult, run_id: str | None) -> bytes:
    record = result.as_record()
    record["run_id"] = result.run_id or run_id
    try:
        return orjson.dumps(record) + b"\n"
    except orjson.JSONEncodeError:
        # A string orjson refuses (a lone surrogate, e.g. from an undecodable file name).
        return json.dumps(record).encode() + b"\n"


def written_in_place(path: Path) -> bool:
    """Whether ``path`` is there and no regular file (a device, a FIFO, ``/dev/stdout``): such
    an output is written in place, never as a temporary file renamed over it, which would
    replace the device or pipe itself (as root, ``/dev/null`` too)."""
    try:
        return not stat.S_ISREG(path.stat().st_mode)
    except FileNotFoundError:
        return False


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the report atomically (temp file, then rename) so a reader never sees half of it.
    A path that is there and no regular file (``/dev/stdout``, a FIFO) is written in place: the
    rename would have replaced the device or pipe itself (as root, ``/dev/null`` too)."""
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    if written_in_place(path):
        with path.open("w", encoding="utf-8") as out:
            out.write(text)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
