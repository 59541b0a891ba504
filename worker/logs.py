"""structlog setup: JSON lines on stdout when not on a terminal, console rendering on one.

Event names are stable, namespaced strings (``cleanup.task_failed``); fields are data. A last
processor masks any registered secret wherever it appears in an event, as a second line of defence
behind never logging credentials in the first place.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Callable, Iterable, MutableMapping
from typing import IO, Any, TextIO, cast

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` in it shown as ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class SecretMasker:
    """A structlog processor replacing each registered secret in string values with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def __call__(
        self, logger: object, name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if self._secrets:
            for key, value in event.items():
                if isinstance(value, str):
                    event[key] = mask(value, self._secrets)
        return event


def drop_lost_stream(stream: IO[str]) -> None:
    """The reader of ``stream`` is gone: a closed pipe (``dcs-cleanup run … | head``: EPIPE) or
    a hung-up terminal (EIO). Its descriptor is pointed at /dev/null, so that every later write
    to it, by anyone, goes nowhere instead of ending the run with a traceback and no report. The
    report, the outcomes file and the journal still carry what the logs would have said."""
    with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)


class GuardedStream:
    """A text stream whose write errors are not the run's (``drop_lost_stream``): the logs'
    and the end-of-run summary's."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError:
            drop_lost_stream(self.stream)
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError:
            drop_lost_stream(self.stream)

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


class _Output(GuardedStream):
    """The logs' stream; while a progress bar is drawn, whole lines go through a hook instead,
    so a log line never lands in the middle of the bar. A stream whose reader is gone is
    dropped (``drop_lost_stream``), and the run goes on."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self.hook: Callable[[str], None] | None = None
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        if self.hook is None:
            return super().write(text)
        self._parts.append(text)
        if text.endswith("\n"):
            line, self._parts = "".join(self._parts), []
            try:
                self.hook(line.rstrip("\n"))  # to stdout, above the bar
            except OSError:
                drop_lost_stream(self.stream)
        return len(text)


_output: _Output | None = None
_debug = False


def debug_enabled() -> bool:
    """Whether debug events are emitted; hot paths check it before building an event."""
    return _debug


def route_lines(hook: Callable[[str], None] | None) -> None:
    """Send each log line to ``hook`` (None: back to the stream)."""
    if _output is not None:
        _output.hook = hook


def write_line(line: str) -> None:
    """Print an already rendered log line (a ``--processes`` child's, relayed by the parent)
    the way this process prints its own: above the progress bar while one is drawn."""
    if _output is None:
        sys.stdout.write(line + "\n")  # one write, as structlog's WriteLogger makes
        sys.stdout.flush()
    else:
        _output.write(line + "\n")
        _output.flush()


def resolve_format(fmt: str, stream: IO[str]) -> str:
    if fmt != "auto":
        return fmt
    return "console" if stream.isatty() else "json"


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the process (idempotent; the last call wins)."""
    global _output, _debug  # noqa: PLW0603 - structlog's configuration is process-wide too
    _debug = level == "debug"
    out = stream or sys.stdout
    _output = _Output(out)
    renderer: structlog.typing.Processor
    if resolve_format(fmt, out) == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            SecretMasker(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # One write a line, its newline included: PrintLogger's print() writes the two apart,
        # and on an unbuffered stdout (PYTHONUNBUFFERED, as the image sets) a --processes
        # child's line could land between another's text and its newline.
        logger_factory=structlog.WriteLoggerFactory(file=cast("TextIO", _output)),
        cache_logger_on_first_use=False,
    )


def get_logger() -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger("dcs_cleanup")
    return logger
