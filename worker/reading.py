"""Reading an input's lines, whatever it is: no line held longer than ``MAX_LINE``
(``Lines``), gzip recognised by its magic bytes (``decompressed``), and a stream input (a pipe,
FIFO or terminal: ``is_stream``) read on a thread of its own that hands lines over as they come
(``Pump``), so a writer gone quiet holds back neither the lines it wrote nor a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import io
import itertools
import os
import select
import stat
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import IO, Any, cast

from worker.models import TaskResult
from worker.sources import BATCH, SourceItem, skipped

_GZIP_MAGIC = b"\x1f\x8b"
# The most of a line held in memory (characters). A longer line (a binary file, a JSON document on
# one line) is passed over in pieces of this size and is one bad line: no entry of any format
# comes near it, and held whole it could take gigabytes.
MAX_LINE = 1024 * 1024


def is_stream(path: str) -> bool:
    """Whether ``path`` (``-``: stdin) is a pipe, FIFO, terminal or socket rather than a
    regular file: reading it may wait for a writer. One that cannot be looked at counts as a
    file (opening it gives the error)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode if path == "-" else os.stat(path).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return not stat.S_ISREG(mode)


class WaitAnnouncingReader(io.RawIOBase):
    """The raw reader of a stream input: calls ``before_wait`` when a read is about to wait
    for the writer (nothing to read yet), so what was read so far can be handed over first."""

    def __init__(self, fd: int, before_wait: Callable[[], None], closefd: bool) -> None:
        super().__init__()
        self._fd = fd
        self._before_wait = before_wait
        self._closefd = closefd

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer: Any) -> int:
        if not select.select([self._fd], [], [], 0)[0]:
            self._before_wait()
        data = os.read(self._fd, len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and self._closefd:
            os.close(self._fd)
        super().close()


class Pump:
    """Reads a stream input on a daemon thread of its own and hands lines to the event loop as
    they come: whatever was read goes over before a read waits for the writer, and at the
    latest every ``BATCH`` lines. The thread stays at most a batch ahead of the run. A read
    that waits for ever (a writer that went quiet) neither holds a stop (``batches`` is
    cancelled at its ``await``) nor the process's exit (the thread is a daemon)."""

    def __init__(self, read: Callable[[Callable[[], None]], Iterator[SourceItem]]) -> None:
        self._cond = threading.Condition()
        self._ready: list[SourceItem] = []  # read by the thread, not yet taken by the run
        self._ended = False  # the thread is done: end of input, an error, or closed
        self._error: Exception | None = None  # raised in batches(), as a file's read would be
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._read = read
        thread = threading.Thread(target=self._run, name="dcs-cleanup input", daemon=True)
        thread.start()

    def _run(self) -> None:
        out: list[SourceItem] = []
        error: Exception | None = None

        def before_wait() -> None:
            self._hand_over(out, wait=False)

        try:
            for item in self._read(before_wait):
                out.append(item)
                if len(out) >= BATCH:
                    self._hand_over(out, wait=True)
                if self._closed:
                    return
        except Exception as exc:  # noqa: BLE001 - handed to the run, after the lines before it
            error = exc
        finally:
            with self._cond:
                self._ready += out
                self._error = error
                self._ended = True
            self._wake()

    def _hand_over(self, out: list[SourceItem], *, wait: bool) -> None:
        """Move ``out`` to the run; with ``wait``, then wait while a batch is still waiting to
        be taken (or until the run closes the pump)."""
        if out:
            with self._cond:
                self._ready += out
            out.clear()
            self._wake()
        if wait:
            with self._cond:
                while len(self._ready) >= BATCH and not self._closed:
                    self._cond.wait()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the run is over
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def batches(self) -> AsyncGenerator[list[SourceItem], None]:
        while True:
            self._wakeup.clear()
            with self._cond:
                batch, self._ready = self._ready, []
                ended, error = self._ended, self._error
                self._cond.notify()
            if batch:
                yield batch
            elif ended:
                if error is not None:
                    raise error
                return
            else:
                await self._wakeup.wait()

    def close(self) -> bool:
        """Stop the thread at its next line; True if the input was not read to its end."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            return not self._ended or bool(self._ready)


class _Cut(str):
    """The type of ``CUT``: a line longer than ``MAX_LINE``, as ``Lines`` hands it on."""

    __slots__ = ()


# A blank CSV row to the csv module (which passes over it); found by identity everywhere else.
CUT = _Cut("\r\n")


class Lines:
    """The lines of a text stream, none held longer than ``MAX_LINE`` characters: a longer one
    is read through in pieces and handed on as ``CUT``, its number and first characters kept
    in ``cut`` until the reader takes them."""

    __slots__ = ("_iter", "_stream", "cut", "failed_at")

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.cut: list[tuple[int, str]] = []
        self.failed_at = 0  # the line whose read failed (a gzip cut short, a disk's error)
        self._iter = self._read()

    def __iter__(self) -> Iterator[str]:
        return self._iter

    def __next__(self) -> str:
        return next(self._iter)

    def peek(self) -> str:
        """The next line ("" at the end), left to be read again."""
        line = next(self._iter, "")
        if line:
            self._iter = itertools.chain((line,), self._iter)
        return line

    def _read(self) -> Iterator[str]:
        readline = functools.partial(self._stream.readline, MAX_LINE)
        lineno = 0  # lines read whole
        try:
            for line in iter(readline, ""):
                if len(line) >= MAX_LINE and line[-1] not in "\r\n":
                    rest = line
                    while rest and rest[-1] not in "\r\n":
                        rest = readline()
                    lineno += 1
                    self.cut.append((lineno, line[:64]))
                    yield CUT
                else:
                    lineno += 1
                    yield line
        except (OSError, EOFError):
            self.failed_at = lineno + 1
            raise

    def cut_line(self, source: str) -> TaskResult:
        """The bad line of the oldest cut line not yet taken."""
        lineno, head = self.cut.pop(0)
        msg = f"line longer than {MAX_LINE // 1024 // 1024} MiB, starting {head[:40]!r}"
        return skipped(head, "", source, lineno, "bad_line", msg)


def decompressed(raw: io.BufferedReader) -> io.BufferedReader:
    """``raw``, or a gzip reader over it when it starts with gzip's magic bytes."""
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        return cast("io.BufferedReader", gzip.GzipFile(fileobj=raw))
    return raw
