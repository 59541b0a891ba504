"""The commands that write to the Redis stream consumers read: ``enqueue`` (task IDs from a
file) and ``redrive`` (the dead letters of ``<stream>:dead`` back on the stream). Both read the
queue settings from where ``run`` does, wait under ``--max-backlog``, say how far they are every
``--progress-interval`` seconds, and stop between two pipelines on a signal (exit 4).
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from worker.commands import own_errors, run_async, until_signal
from worker.configuration import load_settings
from worker.errors import ConfigError
from worker.models import EXIT_ABORTED, EXIT_INTERRUPTED, EXIT_USAGE
from worker.settings import Settings, redact_url


def _queue_settings(
    args: argparse.Namespace, command: str, names: tuple[str, ...]
) -> tuple[Settings, str, str]:
    """The settings ``names`` of a command that writes to the stream (``enqueue``,
    ``redrive``), read from where ``run`` reads them, so a producer and its consumers given
    one config file or environment agree on the stream (a flag not given must not hide its
    DCS_CLEANUP_* variable); and its Redis URL and stream."""
    given = {name: getattr(args, name, None) for name in names}  # a setting's flag not given
    flags = {name: value for name, value in given.items() if value is not None}  # is absent
    settings = load_settings(flags, args.config, args.env_file)
    if settings.queue is None:
        msg = f"{command} needs --queue URL (or DCS_CLEANUP_QUEUE, or queue in --config)"
        raise ConfigError(msg)
    return settings, settings.queue, settings.stream


def _backlog_teller(stream: str, max_backlog: int | None) -> Callable[[int], None]:
    """What is said, once a minute at most, while ``--max-backlog`` holds a writer back."""
    told = [float("-inf")]

    def waiting(length: int) -> None:
        if time.monotonic() - told[0] < 60:
            return
        told[0] = time.monotonic()
        print(
            f"dcs-cleanup: {stream} holds {length} entries (--max-backlog {max_backlog}); "
            "waiting for consumers to take them",
            file=sys.stderr,
        )

    return waiting


def cmd_enqueue(args: argparse.Namespace) -> int:
    """Validate IDs like ``run`` does, then XADD them in pipelined batches."""
    from redis.exceptions import RedisError

    from worker import enqueue
    from worker.files import FileSource
    from worker.redis_client import clause
    from worker.sources import IdValidator

    names = ("queue", "stream", "project_id", "id_pattern", "message", "progress_interval")
    settings, queue, stream = _queue_settings(args, "enqueue", names)
    if args.input != "-" and not Path(args.input).exists():
        raise ConfigError(f"--input {args.input}: no such file")
    source = FileSource(args.input, settings.project_id, IdValidator(settings.id_pattern))
    waiting = _backlog_teller(stream, args.max_backlog)

    async def go() -> int:
        client = await enqueue.open_stream(queue, stream)
        done = enqueue.Enqueued(next_line=args.from_line)
        add = functools.partial(
            enqueue.enqueue,
            client,
            stream,
            source.batches(),
            done,
            message=settings.message,
            max_backlog=args.max_backlog or 0,
            waiting=waiting,
        )

        def so_far() -> str:
            return f"enqueued {done.added} task(s) so far, up to line {done.next_line - 1}"

        try:
            stopped_by = await _until_signal_telling(add, so_far, settings.progress_interval)
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()
                await source.aclose()
        for result in done.shown:
            print(f"dcs-cleanup: skipped {result.error_msg}", file=sys.stderr)
        if done.bad > len(done.shown):
            print(f"dcs-cleanup: ... and {done.bad - len(done.shown)} more", file=sys.stderr)
        print(
            f"enqueued {done.added} task(s) on {stream}; {done.bad} bad line(s) skipped",
            file=sys.stderr,
        )
        if stopped_by is not None:
            done.stopped_at, done.error = done.next_line, f"interrupted by {stopped_by}"
        if done.stopped_at is None and args.from_line > done.last_line + 1:
            # An enqueue stopped by a signal after its last line names the line after it; no
            # enqueue names a line further on, so this is a mistyped line.
            print(
                f"dcs-cleanup: --from-line {args.from_line} is past the last line of "
                f"{args.input} that holds a task ({done.last_line}); nothing was added",
                file=sys.stderr,
            )
            return EXIT_USAGE
        if done.stopped_at is None:
            return 1 if done.bad else 0
        where = f"--queue {redact_url(queue)}: stopped at line {done.stopped_at}"
        error = clause(done.error or "")
        if not done.added:
            print(f"dcs-cleanup: {where}: {error}; nothing was added", file=sys.stderr)
        else:
            print(
                f"dcs-cleanup: {where} of {args.input}: {error}; the tasks before it are on "
                f"the stream: go on with --from-line {done.stopped_at}",
                file=sys.stderr,
            )
        if stopped_by is not None:
            return EXIT_INTERRUPTED
        return EXIT_ABORTED if done.added else EXIT_USAGE

    try:
        return run_async(go)
    except (OSError, RedisError) as exc:
        raise ConfigError(f"--queue {redact_url(queue)}: {exc}") from None


def cmd_redrive(args: argparse.Namespace) -> int:
    """Put ``<stream>:dead``'s dead letters of the chosen outcomes back on the stream."""
    from redis.exceptions import RedisError

    from worker import enqueue, redrive
    from worker.redis_client import clause

    names = ("queue", "stream", "message", "progress_interval")
    settings, queue, stream = _queue_settings(args, "redrive", names)
    chosen = tuple(dict.fromkeys(args.outcome or ["failed"]))
    waiting = _backlog_teller(stream, args.max_backlog)
    verb = "would put back" if args.dry_run else "put back"

    async def go() -> int:
        client = await enqueue.open_stream(queue, stream, doing="nothing was put back")
        done = redrive.Redriven()
        move = functools.partial(
            redrive.redrive,
            client,
            stream,
            chosen,
            done,
            dry_run=args.dry_run,
            limit=args.limit,
            message=settings.message,
            max_backlog=args.max_backlog or 0,
            waiting=waiting,
        )

        def so_far() -> str:
            return f"{verb} {done.added} of the {done.held} dead letter(s) so far"

        try:
            stopped_by = await _until_signal_telling(move, so_far, settings.progress_interval)
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()
        counts = ", ".join(f"{k} {v}" for k, v in sorted(done.outcomes.items()))
        print(
            f"{verb} {done.added} of the {done.held} dead letter(s) in {stream}:dead on "
            f"{stream} ({counts or ' or '.join(chosen) + ' 0'})",
            file=sys.stderr,
        )
        if done.reasons:
            said = ", ".join(f"{k} {v}" for k, v in done.reasons.most_common(10))
            print(f"by reason: {said}", file=sys.stderr)
        if stopped_by is not None:
            print(
                f"dcs-cleanup: interrupted by {stopped_by}; run it again for the rest",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        if done.error is not None:
            error = clause(done.error)
            then = "run it again for the rest" if done.added else "nothing was put back"
            print(f"dcs-cleanup: --queue {redact_url(queue)}: {error}; {then}", file=sys.stderr)
            return EXIT_ABORTED if done.added else EXIT_USAGE
        return 0

    try:
        return run_async(go)
    except (OSError, RedisError) as exc:
        raise ConfigError(f"--queue {redact_url(queue)}: {exc}") from None


async def _until_signal_telling(
    work: Callable[[], Awaitable[None]], say: Callable[[], str], every: float
) -> str | None:
    """``work()`` until it ends or a signal stops it (``until_signal``: the signal's name, or
    None), with ``say()`` on standard error every ``every`` seconds while it goes: an enqueue
    of millions of IDs, or one waiting under ``--max-backlog``, was silent to its end."""

    async def tell() -> None:
        while True:
            await anyio.sleep(every)
            print(f"dcs-cleanup: {say()}", file=sys.stderr)

    async def telling() -> None:
        with own_errors():
            async with anyio.create_task_group() as group:
                group.start_soon(tell)
                await work()
                group.cancel_scope.cancel()

    _, stopped_by = await until_signal(telling)
    return stopped_by
