"""Where task IDs come from: files (text, CSV, JSON Lines, gzip) and stdin.

Every source implements ``TaskSource``; the Redis stream source (``worker.queue``) does too, and
``tests/test_sources.py`` runs one contract suite against each. A source yields batches whose items
are either a ``TaskRef`` to send or an already-final ``TaskResult`` (``skipped``: a bad line, with
its line number). A single bad line never stops the source; only an input that cannot be opened or
decoded as a whole raises ``InputError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import select
import stat
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, cast

import anyio.to_thread

from worker.errors import InputError
from worker.logs import get_logger
from worker.models import Outcome, TaskRef, TaskResult

log = get_logger()
BATCH = 512
_GZIP_MAGIC = b"\x1f\x8b"
# A UTF-16 byte-order mark (little- or big-endian) as a UTF-8 reader with surrogateescape sees it.
_UTF16_MARKS = ("\udcff\udcfe", "\udcfe\udcff")
# However --id-pattern is widened, these can never be part of an ID: each could change the path,
# query or fragment of the request, or hide a character in logs.
_NEVER_IN_ID = re.compile(r"[/\\?#%\s\x00-\x1f\x7f\ud800-\udfff]")
_PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# The most of a line held in memory (characters). A longer line (a binary file, a JSON document on
# one line) is passed over in pieces of this size and is one bad line: no entry of any format
# comes near it, and held whole it could take gigabytes.
MAX_LINE = 1024 * 1024

SourceItem = TaskRef | TaskResult


class TaskSource(Protocol):
    """A stream of task IDs. ``acknowledge`` is told of every final outcome it produced."""

    name: str
    finite: bool

    def batches(self) -> AsyncGenerator[list[SourceItem], None]: ...

    async def acknowledge(self, results: Sequence[TaskResult]) -> None: ...

    async def aclose(self) -> None: ...


class IdValidator:
    """Checks task and project IDs against the allow-list and the never-allowed characters."""

    __slots__ = ("_pattern",)

    def __init__(self, pattern: str) -> None:
        self._pattern = re.compile(pattern)

    def problem(self, task_id: str) -> str | None:
        """Why ``task_id`` must not be sent, or None when it may be."""
        if _NEVER_IN_ID.search(task_id):
            return (
                "contains a path separator, %, ?, #, whitespace, a control character "
                "or bytes that are not UTF-8"
            )
        if task_id in (".", ".."):
            return "is a relative path segment"
        if not self._pattern.fullmatch(task_id):
            return f"does not match {self._pattern.pattern}"
        return None


def skipped(
    task_id: str,
    project_id: str,
    source: str,
    line: int,
    code: str,
    msg: str,
    ack: str | None = None,
) -> TaskResult:
    return TaskResult(
        task_id=task_id[:128],
        project_id=project_id[:128],
        outcome=Outcome.SKIPPED,
        error_code=code,
        error_msg=f"{source}:{line}: {msg}",
        source=source,
        line=line,
        ack=ack,
    )


def check_task(
    validator: IdValidator,
    task_id: str,
    project_id: str | None,
    source: str,
    line: int,
    message: str | None = None,
    ack: str | None = None,
) -> SourceItem:
    """A task to send, or why it is skipped: the one check every source applies to an entry
    (``project_id`` is the entry's own or the default, already chosen by the caller)."""
    problem = validator.problem(task_id)
    if problem:
        msg = f"task_id {task_id[:80]!r} {problem}"
        return skipped(task_id, project_id or "", source, line, "invalid_id", msg, ack)
    if not project_id:
        msg = "no project_id for this task and no --project-id"
        return skipped(task_id, "", source, line, "missing_project_id", msg, ack)
    if not _PROJECT_ID.fullmatch(project_id):
        msg = f"project_id {project_id[:80]!r} is not a valid project ID"
        return skipped(task_id, project_id, source, line, "invalid_project_id", msg, ack)
    return TaskRef(task_id, project_id, source, line, message, ack)


class FileSource:
    """Reads a file (or ``-`` for stdin) line by line in a worker thread, in batches of
    ``BATCH``; a stream input (a pipe, FIFO or terminal) through a ``_Pump`` instead."""

    def __init__(
        self,
        path: str,
        default_project: str | None,
        validator: IdValidator,
        fmt: str = "auto",
        message: str | None = None,
    ) -> None:
        self.path = path
        self.name = "stdin" if path == "-" else path
        # A pipe, FIFO or terminal: its reads wait for the writer, so a stop cuts them short
        # (not finite) and lines are handed over as they come (``_Pump``), not 512 at a time.
        self.stream_input = is_stream(path)
        self.finite = not self.stream_input
        self._pump: _Pump | None = None
        self._taken = 0  # the line number of the last item handed to the run
        self._default_project = default_project
        self._validator = validator
        self._format = fmt
        self._message = message
        self._stream: IO[str] | None = None
        # Set by a ShardFilter: this file then yields only shard ``index`` of ``count`` and
        # counts the other shards' lines it passes over.
        self.shard: tuple[int, int] | None = None
        self.passed_over = 0

    def _open(self, before_wait: Callable[[], None] | None = None) -> IO[str]:
        try:
            raw: io.BufferedReader
            if before_wait is not None:  # a stream, read by a _Pump
                fd = sys.stdin.fileno() if self.path == "-" else os.open(self.path, os.O_RDONLY)
                raw = io.BufferedReader(_WaitAnnouncingReader(fd, before_wait, self.path != "-"))
            elif self.path == "-":  # stdin is left open for the process
                raw = cast("io.BufferedReader", sys.stdin.buffer)
            else:  # closed in aclose()
                raw = Path(self.path).open("rb")  # noqa: SIM115
            binary = _decompressed(raw)
            return io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="")
        except OSError as exc:
            msg = f"input {self.name}: cannot open it: {exc.strerror or exc}"
            raise InputError(msg) from None

    def _detect(self, first: str) -> str:
        if self._format != "auto":
            return self._format
        lowered = self.path.lower().removesuffix(".gz")
        if lowered.endswith((".jsonl", ".ndjson", ".json")):
            return "jsonl"
        if lowered.endswith(".csv"):
            return "csv"
        stripped = first.strip()
        if stripped.startswith("{"):
            return "jsonl"
        if "," in stripped and ("task_id" in stripped or stripped.startswith(("id,", '"id",'))):
            return "csv"
        return "text"

    def _lines(self, before_wait: Callable[[], None] | None = None) -> Iterator[SourceItem]:
        stream = self._open(before_wait)
        if before_wait is None:
            self._stream = stream  # a stream's is closed by its pump's thread, at its end
        try:
            lines = _Lines(stream)
            first, head = self._first_line(lines)
            fmt = self._detect(head)
            if fmt == "jsonl":
                self._refuse_json_document(head, lines, cut=first is CUT)
            items: Iterator[SourceItem]
            if fmt == "text" and not self._default_project:
                items = self._each_line(first, lines, self._text_line_without_project)
            elif fmt == "text" and self.shard is not None:
                # Filters as it parses: most other shards' lines are never checked.
                items = self._each_line(first, lines, self._text_of_shard(*self.shard))
            else:
                if fmt == "csv":
                    items = self._csv(first, lines)
                else:
                    parse = self._jsonl_line if fmt == "jsonl" else self._text_line
                    items = self._each_line(first, lines, parse)
                if self.shard is not None:
                    items = self._of_shard(items, *self.shard)
            yield from items
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            msg = f"input {self.name}: read failed: {exc}"
            raise InputError(msg) from None

    def _first_line(self, lines: _Lines) -> tuple[str, str]:
        """The first line (``CUT`` if too long) and its start, to tell the format by, both
        without a UTF-8 byte-order mark, which Excel's "CSV UTF-8" and Windows editors write:
        left in, it hid the CSV header and spoilt the first ID or JSON line. A UTF-16 file (its
        mark, undecodable as UTF-8) is an input error: read as UTF-8, every line of it would be
        skipped as invalid and the run would end 0 having sent nothing. So are NUL bytes in the
        first line's first 64 characters, which no text holds: a binary file (a journal, an
        archive, a program) given by mistake, whose odd runs of letters could otherwise be sent
        as IDs."""
        first = next(lines, "")
        head = lines.cut[0][1] if first is CUT else first
        if head.startswith(_UTF16_MARKS):
            msg = f"input {self.name}: line 1: the file is UTF-16; save it as UTF-8"
            raise InputError(msg)
        if head[:64].count("\x00") >= 2:  # one stray NUL is that line's problem alone
            msg = (
                f"input {self.name}: line 1: NUL bytes; this is not a text, CSV or JSON Lines file"
            )
            raise InputError(msg)
        if first is CUT:
            return first, head.removeprefix("\ufeff")
        first = first.removeprefix("\ufeff")
        return first, first

    def _refuse_json_document(self, first: str, lines: _Lines, *, cut: bool) -> None:
        """A JSON document read as JSON Lines: a saved ListCenterTask response (pretty-printed,
        or on one line) or an array. Each of its lines would be skipped as a bad line and the
        run end 0 having sent nothing, so it is an input error naming the file instead.
        ``cut``: ``first`` is the start of a line over ``MAX_LINE``."""
        text = first.strip()
        if text.startswith(("{", "[")) and _starts_a_document(text, lines, cut=cut):
            msg = (
                f"input {self.name}: line 1: one JSON document, not JSON Lines (an object with "
                "a task_id a line); for a ListCenterTask response, its tasks one a line: "
                f"jq -c '.tasks[]' {self.name}"
            )
            raise InputError(msg)

    def _each_line(
        self, first: str, lines: _Lines, parse: Callable[[str, int], SourceItem | None]
    ) -> Iterator[SourceItem]:
        lineno = 0
        for line in itertools.chain((first,), lines):
            lineno += 1
            if line is CUT:
                cut = lines.cut_line(self.name)
                if self.shard is None or in_shard(cut, *self.shard):
                    yield cut
                else:
                    self.passed_over += 1
                continue
            item = parse(line, lineno)
            if item is not None:
                yield item

    def _check(
        self, task_id: str, project_id: str | None, lineno: int, message: str | None = None
    ) -> SourceItem:
        return check_task(
            self._validator,
            task_id,
            project_id or self._default_project,
            self.name,
            lineno,
            message or self._message,
        )

    def _text_line(self, line: str, lineno: int) -> SourceItem | None:
        text = _id_text(line)
        return None if text is None else self._check(text, None, lineno)

    def _text_line_without_project(self, line: str, lineno: int) -> SourceItem | None:
        """Plain text and no ``--project-id``: no line could ever be sent. Every line skipped
        and exit 0 would let a CronJob that lost its ``--project-id`` delete nothing for ever."""
        if _id_text(line) is None:
            return None
        msg = (
            f"input {self.name}: line {lineno}: plain-text lines name no project: give "
            "--project-id (or use CSV or JSON Lines with a project_id column)"
        )
        raise InputError(msg)

    def _text_of_shard(self, index: int, count: int) -> Callable[[str, int], SourceItem | None]:
        """``_text_line`` and ``in_shard``, with another shard's line passed over unchecked
        where that is sure. With ``--processes N`` every child reads every line: this spares
        most of the N - 1 checks of each."""
        # A valid ID goes by its hash (with the default project: text has no other); an
        # invalid one by its line number.
        hash_shard = shard_of_task(self._default_project or "", count)

        def parse(line: str, lineno: int) -> SourceItem | None:
            text = _id_text(line)
            if text is None:
                return None
            by_hash = hash_shard(text) == index
            by_line = lineno % count == index
            if by_hash or by_line:
                item = self._check(text, None, lineno)
                if by_hash if isinstance(item, TaskRef) else by_line:
                    return item
            self.passed_over += 1
            return None

        return parse

    def _of_shard(
        self, items: Iterator[SourceItem], index: int, count: int
    ) -> Iterator[SourceItem]:
        """``items`` of shard ``index`` of ``count`` only; the rest counted as passed over."""
        for item in items:
            if in_shard(item, index, count):
                yield item
            else:
                self.passed_over += 1

    def _jsonl_line(self, line: str, lineno: int) -> SourceItem | None:
        text = line.strip()
        if not text:
            return None
        try:
            obj = json.loads(text)
        except ValueError:
            return skipped(text[:64], "", self.name, lineno, "bad_line", "not valid JSON")
        if not isinstance(obj, dict):
            return skipped(text[:64], "", self.name, lineno, "bad_line", "not a JSON object")
        task_id = obj.get("task_id")
        if task_id is None:  # a task as ListCenterTask gives it (jq -c '.tasks[]')
            task_id = obj.get("id")
        if not isinstance(task_id, str):
            msg = "no string task_id (or id) field"
            return skipped(text[:64], "", self.name, lineno, "bad_line", msg)
        project = obj.get("project_id")
        message = obj.get("message")
        return self._check(
            task_id,
            project if isinstance(project, str) and project else None,
            lineno,
            message if isinstance(message, str) else None,
        )

    def _csv(self, header: str, lines: _Lines) -> Iterator[SourceItem]:
        if header is CUT:
            msg = f"input {self.name}: line 1: the CSV header is longer than {MAX_LINE} characters"
            raise InputError(msg)
        names = next(csv.reader([header]), [])
        names = [name.strip() for name in names]
        # A task list exported as it is (ListCenterTask's fields) names the ID column ``id``.
        column = "task_id" if "task_id" in names else "id"
        if column not in names:
            msg = (
                f"input {self.name}: line 1: CSV header has no task_id (or id) column "
                f"(got {names!r})"
            )
            raise InputError(msg)
        reader = csv.DictReader(lines, fieldnames=names)
        rows = iter(reader)
        while True:
            before = reader.line_num
            row: dict[str, str | None] | csv.Error | None
            try:
                row = next(rows)
            except StopIteration:
                row = None
            except csv.Error as exc:  # e.g. a field over csv's limit: that row only
                row = exc
            while lines.cut:  # too long: the csv module read each as a blank row
                yield lines.cut_line(self.name)
            if row is None:
                return
            if isinstance(row, csv.Error):
                msg = f"not valid CSV: {row}"
                yield skipped("", "", self.name, before + 2, "bad_line", msg)
                continue
            lineno = reader.line_num + 1
            task_id = (row.get(column) or "").strip()
            if not task_id:
                if any((value or "").strip() for value in row.values() if isinstance(value, str)):
                    yield skipped("", "", self.name, lineno, "bad_line", f"empty {column}")
                continue
            project = (row.get("project_id") or "").strip() or None
            yield self._check(task_id, project, lineno)

    def count_lines(self) -> int | None:
        """Lines that may hold an ID (not blank, not ``#``), for a progress total; a file only."""
        if self.path == "-" or self.stream_input:  # counting would read the writer's lines
            return None
        try:
            with Path(self.path).open("rb") as raw:
                stream = _decompressed(raw)
                count = 0
                starts_a_line = True
                for piece in iter(functools.partial(stream.readline, MAX_LINE), b""):
                    if starts_a_line and piece.strip() and not piece.lstrip().startswith(b"#"):
                        count += 1
                    starts_a_line = piece.endswith(b"\n")
        except (OSError, EOFError):
            return None
        fmt = self._detect("") if self._format == "auto" else self._format
        return count - 1 if fmt == "csv" else count

    async def batches(self) -> AsyncGenerator[list[SourceItem], None]:
        if self.stream_input:
            self._pump = pump = _Pump(self._lines)
            try:
                async for batch in pump.batches():
                    self._taken = batch[-1].line
                    yield batch
            finally:  # the end of the input, or a stop that cut its read short
                if pump.close():
                    log.warning(
                        "cleanup.input_cut_short",
                        source=self.name,
                        last_line_taken=self._taken,
                        detail="the lines after it were not taken in: give them to a new run",
                    )
            return
        lines = self._lines()
        failed: list[InputError] = []

        def take() -> list[SourceItem]:
            out: list[SourceItem] = []
            try:
                for item in lines:
                    out.append(item)
                    if len(out) >= BATCH:
                        break
            except InputError as exc:
                # The lines read before the bad point go out first; the error comes next.
                failed.append(exc)
            return out

        while True:
            batch = await anyio.to_thread.run_sync(take)
            if batch:
                yield batch
            if failed:
                raise failed[0]
            if not batch:
                return

    async def acknowledge(self, results: Sequence[TaskResult]) -> None:
        """Files need no acknowledgement; the journal records progress."""

    async def aclose(self) -> None:
        if self._pump is not None:
            self._pump.close()
        if self._stream is not None and self.path != "-":
            self._stream.close()


def is_stream(path: str) -> bool:
    """Whether ``path`` (``-``: stdin) is a pipe, FIFO, terminal or socket rather than a
    regular file: reading it may wait for a writer. One that cannot be looked at counts as a
    file (opening it gives the error)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode if path == "-" else os.stat(path).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return not stat.S_ISREG(mode)


class _WaitAnnouncingReader(io.RawIOBase):
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


class _Pump:
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
    """The type of ``CUT``: a line longer than ``MAX_LINE``, as ``_Lines`` hands it on."""

    __slots__ = ()


# A blank CSV row to the csv module (which passes over it); found by identity everywhere else.
CUT = _Cut("\r\n")


class _Lines:
    """The lines of a text stream, none held longer than ``MAX_LINE`` characters: a longer one
    is read through in pieces and handed on as ``CUT``, its number and first characters kept
    in ``cut`` until the reader takes them."""

    __slots__ = ("_iter", "_stream", "cut")

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.cut: list[tuple[int, str]] = []
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
        for lineno, line in enumerate(iter(readline, ""), 1):
            if len(line) >= MAX_LINE and line[-1] not in "\r\n":
                rest = line
                while rest and rest[-1] not in "\r\n":
                    rest = readline()
                self.cut.append((lineno, line[:64]))
                yield CUT
            else:
                yield line

    def cut_line(self, source: str) -> TaskResult:
        """The bad line of the oldest cut line not yet taken."""
        lineno, head = self.cut.pop(0)
        msg = f"line longer than {MAX_LINE // 1024 // 1024} MiB, starting {head[:40]!r}"
        return skipped(head, "", source, lineno, "bad_line", msg)


def _starts_a_document(text: str, lines: _Lines, *, cut: bool) -> bool:
    """Whether a first line (starting ``{`` or ``[``) is, or opens, one JSON document rather
    than an entry of JSON Lines: an array, a list answer (``tasks``, no ``task_id`` or ``id``),
    ``{`` or ``[`` alone; or, followed by a line that is no JSON either, a line over
    ``MAX_LINE`` (``cut``: ``text`` is its start) or a broken one ending as a document's first
    line may (``{``, ``[`` or ``,``). A broken first entry followed by good ones is only that
    line's problem."""
    if cut:
        return _no_json_next(lines)
    try:
        obj = json.loads(text)
    except ValueError:
        return text in ("{", "[") or (text.endswith(("{", "[", ",")) and _no_json_next(lines))
    if isinstance(obj, list):
        return True
    return (
        isinstance(obj, dict)
        and "task_id" not in obj
        and "id" not in obj
        and isinstance(obj.get("tasks"), list)
    )


def _no_json_next(lines: _Lines) -> bool:
    """Whether the next line (peeked, left to be read) is no JSON: a document's second line."""
    second = lines.peek()
    if second is CUT:
        return True
    try:
        json.loads(second)
    except ValueError:
        return True
    return False


def _id_text(line: str) -> str | None:
    """The ID on a plain-text line, or None for a blank line or a ``#`` comment. Only the line
    break and surrounding spaces and tabs are trimmed; anything else is part of the ID."""
    text = line.rstrip("\r\n").strip(" \t")
    return None if not text or text.startswith("#") else text


def _decompressed(raw: io.BufferedReader) -> io.BufferedReader:
    """``raw``, or a gzip reader over it when it starts with gzip's magic bytes."""
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        return cast("io.BufferedReader", gzip.GzipFile(fileobj=raw))
    return raw


def shard_of(project_id: str, task_id: str, count: int) -> int:
    """The shard a task belongs to: a stable hash, the same on every machine and run."""
    digest = hashlib.blake2b(f"{project_id}/{task_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def shard_of_task(project_id: str, count: int) -> Callable[[str], int]:
    """``shard_of`` for one project: the hash state after ``project_id/`` is kept and copied,
    a third cheaper a line than hashing it all again."""
    prefix = hashlib.blake2b(f"{project_id}/".encode(), digest_size=8)

    def shard(task_id: str) -> int:
        state = prefix.copy()
        state.update(task_id.encode())
        return int.from_bytes(state.digest(), "big") % count

    return shard


def in_shard(item: SourceItem, index: int, count: int) -> bool:
    """Whether shard ``index`` of ``count`` takes ``item``: a task by the hash of its project
    and ID, a bad line by its line number, so each is reported by one shard."""
    if isinstance(item, TaskRef):
        return shard_of(item.project_id, item.task_id, count) == index
    return item.line % count == index


class ShardFilter:
    """Keeps this shard's share of another source (``in_shard``; Kubernetes Indexed Jobs, and
    each child of ``--processes``). A file source filters as it reads, cheaper than here."""

    def __init__(self, inner: TaskSource, index: int, count: int) -> None:
        self.name = f"{inner.name} (shard {index}/{count})"
        self.finite = inner.finite
        self.index = index
        self.count = count
        self.inner = inner
        self._dropped = 0
        self._file = inner if isinstance(inner, FileSource) else None
        if self._file is not None:
            self._file.shard = (index, count)

    @property
    def other_shards(self) -> int:
        """Lines (or entries) read that belong to other shards."""
        return self._dropped + (self._file.passed_over if self._file is not None else 0)

    async def batches(self) -> AsyncGenerator[list[SourceItem], None]:
        async with contextlib.aclosing(self.inner.batches()) as batches:
            async for batch in batches:
                if self._file is not None:  # already this shard's
                    yield batch
                    continue
                mine = [item for item in batch if in_shard(item, self.index, self.count)]
                self._dropped += len(batch) - len(mine)
                if mine:
                    yield mine

    async def acknowledge(self, results: Sequence[TaskResult]) -> None:
        await self.inner.acknowledge(results)

    async def aclose(self) -> None:
        await self.inner.aclose()


class IterableSource:
    """A source over an in-memory sequence of IDs (the demo and tests feed it)."""

    def __init__(self, name: str, items: Sequence[SourceItem]) -> None:
        self.name = name
        self.finite = True
        self._items = items

    async def batches(self) -> AsyncGenerator[list[SourceItem], None]:
        for start in range(0, len(self._items), BATCH):
            yield list(self._items[start : start + BATCH])

    async def acknowledge(self, results: Sequence[TaskResult]) -> None:
        """Nothing to acknowledge."""

    async def aclose(self) -> None:
        """Nothing to close."""
