"""What a run checks before it sends anything: that its flags make one run (``check_request``)
and that its outputs can be written, each to a file of its own (``check_outputs``). A refusal is
a ``ConfigError``, exit 2, said before a request leaves rather than in a traceback later.
"""

from __future__ import annotations

import contextlib
import os
import resource
import stat
from collections.abc import Sequence
from pathlib import Path

from worker.errors import ConfigError
from worker.logs import get_logger
from worker.settings import Settings
from worker.sources import TaskSource

log = get_logger()

# The settings only a --queue run reads.
QUEUE_ONLY = (
    "stream",
    "group",
    "consumer",
    "claim_idle",
    "keep_acked",
    "dead_letter_maxlen",
    "health_host",
    "health_port",
)


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
    if settings.retry_failed and settings.journal is not None and _empty_file(settings.journal):
        msg = f"--journal {settings.journal}: empty; --retry-failed reads one a run has written"
        raise ConfigError(msg)
    if settings.backoff_cap < settings.backoff_base:
        raise ConfigError("backoff_cap must be at least backoff_base")


def tell_settings_ignored(settings: Settings) -> None:
    """``--queue``-only settings given (by flag, environment or file) to a run that reads no
    queue are ignored, and so is ``--journal-retention`` where the journal is temporary. Not an
    error, since a config file may serve several kinds of run, but said once: ``--stream
    other`` beside ``--input`` would otherwise pass for taken."""
    given = settings.model_fields_set
    if settings.queue is None and (queue_only := [n for n in QUEUE_ONLY if n in given]):
        log.warning(
            "cleanup.settings_ignored",
            settings=["--" + name.replace("_", "-") for name in queue_only],
            detail="they apply to --queue runs only; this run reads no queue",
        )
    if (
        "journal_retention" in given
        and settings.journal is None
        and settings.journal_retention_s() is None
    ):
        log.warning(
            "cleanup.settings_ignored",
            settings=["--journal-retention"],
            detail="it applies to a --journal, or to a long-running --queue consumer's; "
            "this run's journal is temporary",
        )


# Descriptors a run holds besides its connections: the journal (two connections, its WAL,
# index and lock files), the outcomes file, Redis, the health server, the event loop's own,
# standard streams, and a thread's temporary files.
SPARE_FILES = 64


def check_deadline(settings: Settings) -> None:
    """A ``--deadline`` time already past when the run starts: every task would be read only to
    be marked ``not_attempted``. More likely a typo or a time zone off; said before anything
    is read or sent."""
    ago = settings.deadline_passed()
    if ago is not None:
        msg = (
            f"--deadline {settings.deadline}: that time passed {ago:,.0f} s ago, so nothing would "
            "be sent (a date or time zone off?)"
        )
        raise ConfigError(msg)


def check_open_files(concurrency: int, processes: int = 1) -> None:
    """Each request in flight holds a socket. Below ``concurrency`` + ``SPARE_FILES``
    descriptors (``ulimit -n``: 1,024 by default on Linux, 256 on macOS), connections failed
    with "Too many open files", the circuit breaker opened on them (exit 3) and the report
    could not be written. The soft limit is raised to what the run needs when the hard one
    allows; when it does not, exit 2 before anything is sent. With ``processes``, each takes
    its share of ``concurrency`` and inherits the limit: the parent checks for the largest."""
    each = -(-concurrency // processes)
    need = each + SPARE_FILES
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard == resource.RLIM_INFINITY or hard >= need:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            return
    per = f" in each of --processes {processes} ({each} requests each)" if processes > 1 else ""
    msg = (
        f"--concurrency {concurrency} needs about {need} open files{per} and this process may "
        f"open {soft} (ulimit -n; hard limit {hard}): lower --concurrency or raise the limit"
    )
    raise ConfigError(msg)


def _empty_file(path: Path) -> bool:
    try:
        return path.is_file() and path.stat().st_size == 0
    except OSError:
        return False


def check_outputs(settings: Settings) -> None:
    """Create the folders of ``--journal``, ``--outcomes``, ``--report`` and ``--refusal-file``
    now and refuse one that cannot be used (exit 2), or two on one file, before anything is
    sent rather than in a traceback later."""
    source = Path(settings.input) if settings.input not in (None, "-") else None
    outputs = [
        ("--outcomes", settings.outcomes),
        ("--report", settings.report),
        ("--refusal-file", settings.refusal_path()),  # replaced whole at a refusal
    ]
    if settings.journal is not None:
        check_files([("--journal", settings.journal), *outputs], settings.journal, source)
    else:
        check_files(outputs, None, source)


def check_files(
    outputs: Sequence[tuple[str, Path | None]],
    journal: Path | None,
    source: Path | None = None,
) -> None:
    """Each output (flag, path; None: not given) writable, its folder made; and none of them
    the file of another, of the journal (read or written) or of ``source``. Else
    ``ConfigError``."""
    for flag, path in outputs:
        if path is None:
            continue
        if str(path) == "-":
            # Not standard output: that carries the log lines. It made a file named "-".
            msg = f"{flag} -: give a file path (standard output carries the log; /dev/stdout mixes)"
            raise ConfigError(msg)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"{flag} {path}: cannot create its folder: {exc.strerror or exc}"
            raise ConfigError(msg) from None
        if path.name.endswith(".gz") and flag in ("--outcomes", "--report"):
            # Written as plain text under that name, it was unreadable to zcat and the like.
            why = " (each batch appended as it is known)" if flag == "--outcomes" else ""
            msg = (
                f"{flag} {path}: written uncompressed{why}; give a name without .gz and "
                "compress it after the run"
            )
            raise ConfigError(msg)
        if path.is_dir():
            raise ConfigError(f"{flag} {path}: is a folder; give a file path")
        if not os.access(path if path.exists() else path.parent, os.W_OK):
            raise ConfigError(f"{flag} {path}: not writable")
    _refuse_shared_files(outputs, journal, source)


def _refuse_shared_files(
    outputs: Sequence[tuple[str, Path | None]], journal: Path | None, source: Path | None
) -> None:
    """Each output needs a file of its own, and none may be the input: ``--report ids.txt``
    replaced the input with the report at the end, ``--report`` and ``--outcomes`` on one
    path lost every outcome line, and ``--outcomes`` on the journal appended JSON to the
    database. Devices (``/dev/null``) may be shared."""
    files: list[tuple[str, Path]] = []
    if source is not None:
        files.append(("--input", source))
    if journal is not None:
        files += [("--journal", journal)] + [
            ("--journal", Path(f"{journal}{suffix}")) for suffix in ("-wal", "-shm", ".lock")
        ]
    files += [(flag, path) for flag, path in outputs if path is not None and flag != "--journal"]
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
