"""``dcs-cleanup``: ``main``, the ``run`` command, and the table of commands (``demo`` and
``emulator`` are in ``worker.demo``; ``list`` and ``report`` in ``worker.commands``; ``enqueue``
and ``redrive`` in ``worker.stream_writers``).

``main`` turns this project's errors into exit 2 (nothing sent) with one line, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import gc
import io
import os
import sys
from collections.abc import Sequence

from worker.commands import cmd_list, cmd_report, run_async, settings_and_logs
from worker.demo import cmd_demo, cmd_emulator
from worker.errors import CleanupError, ConfigError, InputError, JournalError
from worker.models import EXIT_ABORTED, EXIT_USAGE
from worker.parser import build_parser
from worker.settings import Settings
from worker.stream_writers import cmd_enqueue, cmd_redrive


def _tune_gc() -> None:
    """Fewer cyclic-GC passes on the hot path: every request allocates dozens of objects, and
    with the default threshold (700) the collector ran every few tasks. The objects of the
    imports are frozen out of its scans. Memory stays flat (the benchmark's RSS rows show it);
    40,000 tasks against nginx take ~8% less CPU."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def cmd_run(args: argparse.Namespace) -> int:
    from worker.first_request import parent_ended_first
    from worker.preflight import check_deadline, check_open_files, tell_settings_ignored
    from worker.runner import execute

    settings = settings_and_logs(args)
    # Here, not in each process: a deadline moments away could pass before a child starts.
    check_deadline(settings)
    tell_settings_ignored(settings)
    _tune_gc()
    if settings.processes > 1:
        from worker.processes import Part, run_processes
        from worker.report import RunStats

        # In the parent, so the message names the --concurrency given, not a process's share.
        check_open_files(settings.concurrency, settings.processes)

        def run_child(child: Settings, part: Part) -> int:
            return run_async(functools.partial(execute, part=part), child)

        def stops_first(run_id: str, stats: RunStats) -> bool:
            return bool(run_async(parent_ended_first, settings, run_id, stats))

        return run_processes(settings, run_child, first_request_stops=stops_first)
    return run_async(execute, settings)


COMMANDS = {
    "run": cmd_run,
    "demo": cmd_demo,
    "emulator": cmd_emulator,
    "enqueue": cmd_enqueue,
    "redrive": cmd_redrive,
    "list": cmd_list,
    "report": cmd_report,
}


def _plug_closed_standard_streams() -> None:
    """A process started with standard output or error closed (``>&-``, some daemons) has
    None there, and its first log line was an AttributeError, exit 1, no report. Such a
    stream writes to /dev/null instead, on its own descriptor, so that no file the run opens
    later (the journal, the outcomes) takes descriptor 1 or 2 and gets written to. A closed
    standard input reads /dev/null: otherwise the first socket took descriptor 0, and uvloop,
    closing it at the end, aborted the process (SIGABRT, exit 134) after a run that went well."""
    for fd, name, flags, mode in (
        (0, "stdin", os.O_RDONLY, "r"),
        (1, "stdout", os.O_WRONLY, "w"),
        (2, "stderr", os.O_WRONLY, "w"),
    ):
        if getattr(sys, name) is None:
            null = os.open(os.devnull, flags)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def _never_fail_on_encoding() -> None:
    """Standard output and error in an encoding that cannot write every character (a latin-1
    locale, PYTHONIOENCODING=ascii) raised UnicodeEncodeError on the first log line naming
    a task ID or an error message with such a character, and the run died (exit 1). Such a
    character is written as a backslash escape instead."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    _plug_closed_standard_streams()
    _never_fail_on_encoding()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, InputError) as exc:
        print(f"dcs-cleanup: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JournalError as exc:
        print(f"dcs-cleanup: {exc}", file=sys.stderr)
        return EXIT_ABORTED
    except CleanupError as exc:
        print(f"dcs-cleanup: {exc}", file=sys.stderr)
        return EXIT_ABORTED


def entrypoint() -> None:
    sys.exit(main())


__all__ = ["entrypoint", "main"]
