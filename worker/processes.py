"""``--processes N``: one run spread over N worker processes forked on this machine.

One Python process runs one event loop on one core; when signing, sending and recording are
CPU-bound (a fast API, a high or unlimited ``--rate``), more cores need more processes. Each child
runs the ordinary pipeline over its shard of the input (``--shard`` composed with the child's
index: an operator's shard I/C becomes I + C*j of C*N) or, for a queue, as one more consumer of the
group, with an equal share of ``--concurrency``, ``--rate``/``--burst``, the retry budget and
``--max-deletes``, so the run as a whole keeps every limit it was given. All children write one
journal (SQLite's WAL lock serialises their group commits) and append to one outcomes file (one
``write`` per batch, so lines never interleave).

Before it forks, the parent sends one signed GET (``first_request.parent_ended_first``): a refused
AK/SK then costs one request, not one a child. It forks after every import (children start at once
and share the loaded code), forwards SIGTERM/SIGINT (children have their own process group, so a
terminal's Ctrl-C reaches them once, through the parent), shows progress from a shared counter
array (with a bar on a terminal, the children's log lines come to the parent through pipes and
print above it), then merges the children's statistics into one report and one exit code. The
forwarding, the reaping, the log relay and a child's death with its parent (a killed parent leaves
no orphans sending requests) are ``worker.supervise``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.sharedctypes import RawArray
from pathlib import Path
from typing import IO, Any, NoReturn

from worker.ending import announce_end, save_report
from worker.errors import CleanupError, ConfigError, InputError, JournalError
from worker.journal import Journal
from worker.logs import get_logger
from worker.models import (
    ABORT_REASONS,
    EXIT_ABORTED,
    EXIT_FAILURES,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    TaskResult,
    new_run_id,
)
from worker.preflight import check_outputs, check_request
from worker.progress import ProcessesProgress, progress_mode
from worker.reading import is_stream
from worker.report import LatencyHistogram, RunStats, write_report
from worker.runlock import RunLock
from worker.settings import Settings
from worker.supervise import FORWARDED, LogRelay, Supervisor, die_with_parent

log = get_logger()


@dataclass
class Part:
    """What a child process knows of the whole: its index, the run, where its figures go."""

    index: int
    count: int
    run_id: str
    done: Any  # a shared array of int64: tasks finished, one slot per process
    stats_path: Path
    journal_kept: bool = True  # the run has a --journal (not one in a folder that goes)

    def counting(
        self, inner: Callable[[Sequence[TaskResult]], None]
    ) -> Callable[[Sequence[TaskResult]], None]:
        """``inner`` plus a bump of this process's slot in the shared progress counters."""

        def on_batch(batch: Sequence[TaskResult]) -> None:
            self.done[self.index] += len(batch)
            inner(batch)

        return on_batch

    def save(self, report: dict[str, Any], stats: RunStats) -> None:
        """This child's report and latency histogram, for the parent to merge."""
        write_report(self.stats_path, {"report": report, "latency": stats.latency.state()})


def check(settings: Settings) -> None:
    """Refuse what cannot be split over processes, before anything is forked or sent."""
    n = settings.processes
    if n <= 1:
        return
    if not hasattr(os, "fork"):
        raise ConfigError("--processes above 1 needs a system with fork() (Linux, macOS)")
    if settings.input == "-":
        raise ConfigError("--processes above 1 reads a file or a queue, not stdin (--input -)")
    if settings.input is not None and is_stream(settings.input):
        msg = f"--processes above 1 reads a regular file, not a pipe or FIFO ({settings.input})"
        raise ConfigError(msg)
    if settings.queue is not None and not settings.until_empty:
        msg = (
            "--processes above 1 is for batch runs (--input, or --queue with --until-empty); "
            "scale a long-running consumer with more replicas"
        )
        raise ConfigError(msg)
    if n > settings.concurrency:
        msg = f"--processes {n} needs --concurrency of at least {n} (one request each)"
        raise ConfigError(msg)


def share(total: int, n: int, index: int) -> int:
    """Process ``index``'s share of ``total`` split as evenly as integers allow."""
    return total // n + (1 if index < total % n else 0)


def _created(path: Path, run_id: str, *, count: bool, keep: float | None) -> int | None:
    """Create the run's journal, forgetting what it holds from more than ``keep`` seconds ago
    (``--journal-retention``); with ``count`` (``--retry-failed``), the tasks it holds to
    retry, before any child claims one (``Journal.count_unfinished``)."""
    journal = Journal(path, run_id)
    try:
        if keep:
            journal.forget_older_than(keep)
        return journal.count_unfinished() if count else None
    finally:
        journal.close()


def child_settings(settings: Settings, index: int, journal: Path, parent_pid: int) -> Settings:
    """The settings of child ``index``: its shard, its share of every limit, no report."""
    n = settings.processes
    update: dict[str, Any] = {
        "processes": 1,
        "concurrency": share(settings.concurrency, n, index),
        "journal": journal,
        "report": None,
        "progress": "off",
        "retry_budget": settings.retry_budget / n,
    }
    if settings.max_deletes is not None:
        update["max_deletes"] = share(settings.max_deletes, n, index)
    if settings.shared_rate_key is None and settings.rate > 0:
        update["rate"] = settings.rate / n
        update["burst"] = max(1, math.ceil(settings.burst / n))
    if settings.queue is not None:
        base = settings.consumer or f"{socket.gethostname()}-{parent_pid}"
        update["consumer"] = f"{base}-{index}"
    else:
        shard_index, shard_count = settings.shard_spec() or (0, 1)
        update["shard"] = f"{shard_index + shard_count * index}/{shard_count * n}"
        update["shard_count"] = None
    return settings.model_copy(update=update)


def run_processes(
    settings: Settings,
    run_child: Callable[[Settings, Part], int],
    *,
    first_request_stops: Callable[[str, RunStats], bool],
    summary_stream: IO[str] | None = None,
) -> int:
    """Fork ``settings.processes`` children, wait for them, merge; return the exit code.
    ``first_request_stops(run_id, stats)`` runs before any fork, counting what it sends in the
    run's ``stats``: True ends the run with exit 3 and no child started (the credentials
    remembered as refused, or the parent's own first request refused; it wrote the report)."""

    check(settings)
    check_request(settings, None)
    check_outputs(settings)
    if settings.input is not None and not Path(settings.input).exists():
        raise ConfigError(f"input {settings.input}: no such file")
    settings.base_url()  # an endpoint or region is required: say so once, not per child
    # One run at a time on a journal; the children share this lock (they inherit it).
    with RunLock(settings.journal) if settings.journal else contextlib.nullcontext():
        run_id, stats = new_run_id(), RunStats()
        if first_request_stops(run_id, stats):
            return EXIT_ABORTED
        return _fork_and_merge(settings, run_child, run_id, stats, summary_stream=summary_stream)


def _fork_and_merge(
    settings: Settings,
    run_child: Callable[[Settings, Part], int],
    run_id: str,
    stats: RunStats,
    *,
    summary_stream: IO[str] | None = None,
) -> int:
    n = settings.processes
    folder = Path(tempfile.mkdtemp(prefix="dcs-cleanup-processes-"))
    try:
        journal_path = settings.journal or folder / "journal.sqlite"
        # Created (schema, WAL) once here, so the children never race to create it.
        retry_total = _created(
            journal_path,
            run_id,
            count=bool(settings.retry_failed),
            keep=settings.retention_at_start_s(),
        )
        done = RawArray("q", n)
        kept = settings.journal is not None
        parts = [Part(j, n, run_id, done, folder / f"process-{j}.json", kept) for j in range(n)]
        log.info("cleanup.processes_starting", run_id=run_id, processes=n)
        parent_pid = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        # Worked out before any fork: nothing in a child may raise into the parent's frames.
        plans = [(child_settings(settings, p.index, journal_path, parent_pid), p) for p in parts]
        relay = LogRelay(n if progress_mode(settings.progress, sys.stderr) == "bar" else 0)
        with Supervisor(settings) as supervisor, relay:
            for plan, part in plans:
                # Signals held across fork(): a child must never run the parent's forwarding
                # handler; it resets them to the default before it lets them through.
                signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
                try:
                    pid = os.fork()
                    if pid == 0:
                        relay.in_child(part.index)
                        _child(plan, part, run_child)  # never returns
                    supervisor.add(pid, part.index)
                finally:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
            relay.children_started()
            codes = supervisor.wait(ProcessesProgress(settings, done, retry_total), relay)
        report = merge(settings, run_id, stats, parts, codes)
        save_report(settings, report)
        journal = Journal(journal_path, run_id)
        try:
            journal.finish_run(report["exit_code"], json.dumps(report))
        except JournalError as exc:
            log.error("cleanup.journal_error", error=str(exc))
        finally:
            journal.close()
        announce_end(report, summary_stream)
        return int(report["exit_code"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _child(settings: Settings, part: Part, run_child: Callable[[Settings, Part], int]) -> NoReturn:
    """The forked child: its own process group, dies with the parent; never returns."""
    code = EXIT_ABORTED
    try:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        os.setpgid(0, 0)
        die_with_parent()
        import structlog

        structlog.contextvars.bind_contextvars(process=part.index)
        code = run_child(settings, part)
    except (ConfigError, InputError) as exc:
        log.error("cleanup.process_failed", process=part.index, error=str(exc))
        code = EXIT_USAGE
    except (JournalError, CleanupError) as exc:
        log.error("cleanup.process_failed", process=part.index, error=str(exc))
    except BaseException:  # a child must never return into the parent's code
        log.exception("cleanup.process_crashed", process=part.index)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


def combine_exit(codes: Sequence[int], reasons: Sequence[str | None]) -> tuple[int, str | None]:
    """One exit code for the run from the children's (negative: killed by that signal)."""
    interrupted_by = {-signal.SIGTERM, -signal.SIGINT, -signal.SIGHUP}
    died = [c for c in codes if c not in (0, 1, 2, 3, 4) and c not in interrupted_by]
    aborts = [r for r in reasons if r in ABORT_REASONS]
    if codes and all(c == EXIT_USAGE for c in codes):
        return EXIT_USAGE, None
    if died or EXIT_USAGE in codes:
        return EXIT_ABORTED, "worker_process_failed"
    if aborts or EXIT_ABORTED in codes:
        return EXIT_ABORTED, aborts[0] if aborts else "worker_process_failed"
    if any(c == EXIT_INTERRUPTED or c in interrupted_by for c in codes):
        return EXIT_INTERRUPTED, next((r for r in reasons if r), "signal")
    if EXIT_FAILURES in codes:
        return EXIT_FAILURES, None
    return EXIT_OK, None


def merge(
    settings: Settings,
    run_id: str,
    stats: RunStats,
    parts: Sequence[Part],
    codes: dict[int, int],
) -> dict[str, Any]:
    """The run's report from the children's: their counts added to the parent's ``stats``
    (its first request), latency histograms merged."""
    children: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    for part in parts:
        data = _load(part.stats_path)
        code = codes.get(part.index, EXIT_ABORTED)
        entry: dict[str, Any] = {"index": part.index, "exit_code": code}
        if data is None:
            entry["error"] = "no report: the process died before writing it"
        else:
            child = data["report"]
            reports.append(child)
            stats.absorb(child, LatencyHistogram.from_state(data["latency"]))
            entry |= {
                "stop_reason": child["stop_reason"],
                "tasks": child["tasks"],
                "requests": child["requests"],
                "rate": child.get("rate"),
            }
        children.append(entry)
    stats.finished = time.time()
    exit_code, stop_reason = combine_exit(
        [codes.get(p.index, EXIT_ABORTED) for p in parts],
        [r["stop_reason"] for r in reports],
    )
    if exit_code == EXIT_USAGE:  # 2 says no DELETE went out (the parent's GET is no DELETE)
        exit_code = EXIT_ABORTED if any(r["requests"] for r in reports) else EXIT_USAGE
    details = [r.get("stop_detail") for r in reports if r["stop_reason"] == stop_reason]
    extra: dict[str, Any] = {
        "stop_detail": next((d for d in details if d), None),
        "processes": children,
        "input_fully_read": len(reports) == len(parts)
        and all(r.get("input_fully_read") for r in reports),
        "retry_budget": {
            "capacity": settings.retry_budget,
            "remaining": round(sum(r["retry_budget"]["remaining"] for r in reports), 2),
            "denied": sum(r["retry_budget"]["denied"] for r in reports),
        },
        "breaker": {
            "window": settings.breaker_window,
            "threshold": settings.breaker_threshold,
            "opened": any(r["breaker"]["opened"] for r in reports),
        },
        "journal": str(settings.journal) if settings.journal else None,
        "rate": {
            "final": round(sum((r.get("rate") or {}).get("final", 0.0) for r in reports), 3),
            "adaptive": settings.adaptive_on(),
            # Each child's is the lowest limit its 429s stated; so is the run's (README).
            "quota_stated": min(
                (q for r in reports if (q := (r.get("rate") or {}).get("quota_stated"))),
                default=None,
            ),
        },
    }
    user_shard = settings.shard_spec()
    sharded = [r for r in reports if "shard" in r]
    if user_shard is not None and sharded:
        # Every child reads the whole input: lines read = its other shards' lines + its own.
        read = max(r["shard"]["other_shards"] + r["tasks"] for r in sharded)
        extra["shard"] = {
            "index": user_shard[0],
            "count": user_shard[1],
            "other_shards": max(0, read - stats.total),
        }
    queues = [r["queue"] for r in reports if "queue" in r]
    if queues:
        extra["queue"] = {
            "stream": queues[0]["stream"],
            "group": queues[0]["group"],
            "consumers": [q["consumer"] for q in queues],
            "acked": sum(q["acked"] for q in queues),
            "dead_lettered": sum(q["dead_lettered"] for q in queues),
            "dead_letter_stream": queues[0]["dead_letter_stream"],
            "trimmed": sum(q["trimmed"] for q in queues),
        }
    return stats.build_report(
        run_id=run_id,
        settings=settings.public_view(),
        exit_code=exit_code,
        stop_reason=stop_reason,
        extra=extra,
    )
