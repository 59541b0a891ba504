"""The commands besides ``run``: ``list`` and ``report`` (``enqueue`` and ``redrive`` are in
``worker.stream_writers``); and what every command shares: its settings and logging from the
parsed flags (``settings_and_logs``), the event loop it runs on (``run_async``: uvloop where
installed) and a stop by signal (``until_signal``).

Each command takes the namespace ``worker.parser`` parsed and returns an exit code of PRODUCT.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import gzip
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

import anyio
import anyio.abc

from worker.configuration import load_settings
from worker.errors import ConfigError, OutputError
from worker.models import EXIT_INTERRUPTED
from worker.settings import SECRET_FIELDS, Settings

_T = TypeVar("_T")


def run_async(fn: Any, *args: Any) -> int:
    """``anyio.run`` on uvloop where it is installed; the exit code ``fn`` returns."""
    options: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401

        options["use_uvloop"] = True
    except ImportError:
        pass
    result: int = anyio.run(fn, *args, backend="asyncio", backend_options=options)
    return result


def settings_and_logs(args: argparse.Namespace, log_stream: TextIO | None = None) -> Settings:
    """The settings a command's flags give (with the environment, ``.env`` and ``--config``),
    and its logging configured from them, every credential masked."""
    from worker.logs import configure_logging

    flags = {
        k: v for k, v in vars(args).items() if k in Settings.model_fields and k not in SECRET_FIELDS
    }
    settings = load_settings(flags, args.config, args.env_file)
    secrets = [
        s.get_secret_value() for s in (settings.ak, settings.sk, settings.security_token) if s
    ]
    configure_logging(settings.log_level, settings.log_format, secrets, stream=log_stream)
    return settings


async def _stop_on_signal(
    scope: anyio.CancelScope,
    stopped_by: list[str],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``scope`` at SIGTERM, SIGINT or SIGHUP, naming the signal in ``stopped_by``."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            stopped_by.append(signal.Signals(signum).name)
            scope.cancel()
            return


async def until_signal(work: Callable[[], Awaitable[_T]]) -> tuple[_T | None, str | None]:
    """Run ``work()`` until it ends or SIGTERM, SIGINT or SIGHUP stops it: (its result, None),
    or (None, the signal's name). An exception of ``work`` is raised as it is, not inside an
    ExceptionGroup, so ``main`` reports a usage error as exit 2 with one line."""
    stopped_by: list[str] = []
    result: _T | None = None
    finished = False
    with own_errors():
        async with anyio.create_task_group() as group:
            await group.start(_stop_on_signal, group.cancel_scope, stopped_by)
            result = await work()
            finished = True
            group.cancel_scope.cancel()
    return result, None if finished else (stopped_by[0] if stopped_by else "a signal")


@contextlib.contextmanager
def own_errors() -> Iterator[None]:
    """The exception of a task group's one failing task raised as it is, not inside an
    ExceptionGroup, so ``main`` reports a usage error as exit 2 with one line."""
    try:
        yield
    except BaseExceptionGroup as failed:
        if len(failed.exceptions) == 1 and isinstance(failed.exceptions[0], Exception):
            raise failed.exceptions[0] from None
        raise


def _remove_dead_partials(output: Path) -> None:
    """A list killed outright (SIGKILL, the OOM killer) leaves its part beside ``--output`` as
    ``.NAME.PID.partial``; remove those whose process is gone. A live one (a list running now)
    stays, and so does one whose pid was reused since: leaving a part costs nothing."""
    for part in output.parent.glob(f".{glob.escape(output.name)}.*.partial"):
        pid = part.name.removeprefix(f".{output.name}.").removesuffix(".partial")
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            part.unlink(missing_ok=True)
        except OSError:  # another user's process: alive
            continue


def cmd_list(args: argparse.Namespace) -> int:
    """Page through ListCenterTask and write the tasks that match."""
    from worker.listing import Listed, end_time_for, list_remembering
    from worker.logs import get_logger
    from worker.signer import Signer

    settings = settings_and_logs(args, sys.stderr)  # standard output is the list
    end_time = args.end_time
    if args.older_than_days is not None:
        if end_time is not None:
            raise ConfigError("give --end-time or --older-than-days, not both")
        end_time = end_time_for(args.older_than_days)
    signer = Signer(settings.credentials())

    async def go(out: TextIO) -> int:
        """The list, or exit 4 once a signal stopped it (saying how far it got)."""
        done = Listed()
        code, stopped_by = await until_signal(
            functools.partial(
                list_remembering,
                settings,
                signer,
                out,
                fmt=args.format,
                statuses=args.status,
                names=args.name,
                start_time=args.start_time,
                end_time=end_time,
                page_size=args.page_size,
                done=done,
            )
        )
        if code is None:
            get_logger().warning(
                "cleanup.list_interrupted",
                signal=stopped_by,
                listed=done.listed,
                written=done.written,
                detail="a part of the list; an --output file is not written",
            )
            return EXIT_INTERRUPTED
        return code

    if args.output is None or str(args.output) == "-":  # -: standard output, as --input - reads
        return run_async(go, sys.stdout)
    from worker.report import written_in_place

    # Written beside it and renamed onto it at the end, so a list that stopped part-way is never
    # left where the whole one is expected; a FIFO or device in place (the exit code tells).
    in_place = written_in_place(args.output)
    if not in_place:
        _remove_dead_partials(args.output)
    target = (
        args.output
        if in_place
        else args.output.with_name(f".{args.output.name}.{os.getpid()}.partial")
    )
    try:
        out: TextIO
        if args.output.name.endswith(".gz"):  # run reads it as it is
            out = gzip.open(target, "wt", encoding="utf-8")  # noqa: SIM115 - closed below
        else:
            out = target.open("w", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"--output {args.output}: cannot write it: {exc.strerror or exc}"
        ) from None
    try:
        with out:
            code = run_async(go, out)
        if code == 0 and not in_place:
            target.replace(args.output)
        return code
    finally:
        if not in_place:
            target.unlink(missing_ok=True)


def cmd_report(args: argparse.Namespace) -> int:
    from worker.journal import Journal
    from worker.preflight import check_files
    from worker.report import OutcomeWriter, RunStats, write_report
    from worker.runlock import RunLock
    from worker.summary import summary_table

    if not args.journal.exists():
        raise ConfigError(f"--journal {args.journal}: no such file")
    check_files([("--outcomes", args.outcomes), ("--report", args.report)], args.journal)
    if args.outcomes is not None and args.outcomes.is_file() and args.outcomes.stat().st_size:
        # Appended to, a run's outcomes file would hold its tasks twice.
        msg = f"--outcomes {args.outcomes}: holds lines already; give a new file"
        raise ConfigError(msg)
    running = RunLock.holder(args.journal)
    journal = Journal(args.journal, "report", reader=True)
    stats = RunStats()
    writer = OutcomeWriter(args.outcomes)
    try:
        batch = []
        for result in journal.results():
            batch.append(result)
            if len(batch) >= 1000:
                stats.on_results(batch)
                writer.write(batch)
                batch = []
        stats.on_results(batch)
        writer.write(batch)
        seen = stats.add_runs(journal.runs())
    finally:
        writer.close()
        journal.close()
    failures = stats.outcomes["rejected"] + stats.outcomes["failed"]
    unfinished = stats.outcomes["not_attempted"]
    code = 1 if failures else (4 if unfinished else 0)
    # Read while a run writes it, its tasks in flight and still to come read as not_attempted.
    report = stats.build_report(
        run_id="journal",
        settings={"journal": str(args.journal)},
        exit_code=code,
        stop_reason=None if running is None else "run_in_progress",
        extra={"runs": seen.runs, "runs_unfinished": seen.unfinished},
        duration_s=seen.seconds,
    )
    if running is not None:
        print(
            f"dcs-cleanup: journal {args.journal}: a run (pid {running}) is still writing it; "
            "these are its counts so far",
            file=sys.stderr,
        )
    if args.report:
        try:
            write_report(args.report, report)
        except OSError as exc:  # as its outcomes file's: one line, exit 3, not a traceback
            msg = f"report {args.report}: write failed: {exc.strerror or exc}"
            raise OutputError(msg) from None
    else:
        print(json.dumps(report, indent=2))
    print(summary_table(report), file=sys.stderr)
    return 0
