"""A file or stdin as a source: ``FileSource`` reads plain text, CSV or JSON Lines, gzipped or
not, as a stream (a worker thread reads it in batches; a pipe or FIFO through ``reading.Pump``),
tells the format from the name or the first line, and refuses as a whole only an input none of
whose lines could be sent (UTF-16, a binary file, one JSON document, plain text and no project).
"""

from __future__ import annotations

import functools
import gzip
import io
import itertools
import os
import sys
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, cast

import anyio.to_thread

from worker.csv_input import csv_items, header_delimiter
from worker.errors import InputError
from worker.jsonl_input import jsonl_item, refuse_json_document
from worker.logs import get_logger
from worker.models import TaskRef, TaskResult
from worker.reading import (
    CUT,
    MAX_LINE,
    Lines,
    Pump,
    WaitAnnouncingReader,
    decompressed,
    is_stream,
)
from worker.shards import in_shard, shard_of_task
from worker.sources import BATCH, IdValidator, SourceItem, check_task

log = get_logger()
# A UTF-16 byte-order mark (little- or big-endian) as a UTF-8 reader with surrogateescape sees it.
_UTF16_MARKS = ("\udcff\udcfe", "\udcfe\udcff")


class FileSource:
    """Reads a file (or ``-`` for stdin) line by line in a worker thread, in batches of
    ``BATCH``; a stream input (a pipe, FIFO or terminal) through a ``Pump`` instead."""

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
        # (not finite) and lines are handed over as they come (``Pump``), not 512 at a time.
        self.stream_input = is_stream(path)
        self.finite = not self.stream_input
        self._pump: Pump | None = None
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
        if self.path == "-" and sys.stdin is not None and sys.stdin.isatty():
            # Otherwise a run started without a pipe waits for ever, saying nothing.
            print(
                "dcs-cleanup: reading task IDs from the terminal, one a line; end with Ctrl-D "
                "(or give --input FILE)",
                file=sys.stderr,
                flush=True,
            )
        try:
            raw: io.BufferedReader
            if before_wait is not None:  # a stream, read by a Pump
                fd = sys.stdin.fileno() if self.path == "-" else os.open(self.path, os.O_RDONLY)
                raw = io.BufferedReader(WaitAnnouncingReader(fd, before_wait, self.path != "-"))
            elif self.path == "-":  # stdin is left open for the process
                raw = cast("io.BufferedReader", sys.stdin.buffer)
            else:  # closed in aclose()
                raw = Path(self.path).open("rb")  # noqa: SIM115
            binary = decompressed(raw)
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
        if header_delimiter(stripped) is not None:
            return "csv"
        return "text"

    def _lines(self, before_wait: Callable[[], None] | None = None) -> Iterator[SourceItem]:
        stream = self._open(before_wait)
        if before_wait is None:
            self._stream = stream  # a stream's is closed by its pump's thread, at its end
        lines = Lines(stream)
        try:
            first, head = self._first_line(lines)
            fmt = self._detect(head)
            if fmt == "jsonl":
                refuse_json_document(self.name, head, lines, cut=first is CUT)
            items: Iterator[SourceItem]
            if fmt == "text" and not self._default_project:
                items = self._each_line(first, lines, self._text_line_without_project)
            elif fmt == "text" and self.shard is not None:
                # Filters as it parses: most other shards' lines are never checked.
                items = self._each_line(first, lines, self._text_of_shard(*self.shard))
            else:
                if fmt == "csv":
                    items = csv_items(self.name, first, lines, self._check)
                else:
                    parse = self._jsonl_line if fmt == "jsonl" else self._text_line
                    items = self._each_line(first, lines, parse)
                if self.shard is not None:
                    items = self._of_shard(items, *self.shard)
            yield from items
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            at = f"line {lines.failed_at}: " if lines.failed_at else ""  # 0: not a line's read
            msg = f"input {self.name}: {at}read failed: {exc}"
            raise InputError(msg) from None

    def _first_line(self, lines: Lines) -> tuple[str, str]:
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

    def _each_line(
        self, first: str, lines: Lines, parse: Callable[[str, int], SourceItem | None]
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
        return jsonl_item(self.name, line, lineno, self._check)

    def count_lines(self) -> int | None:
        """Lines that may hold an ID (not blank, not ``#``), for a progress total; a file only."""
        if self.path == "-" or self.stream_input:  # counting would read the writer's lines
            return None
        try:
            with Path(self.path).open("rb") as raw:
                stream = decompressed(raw)
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
            self._pump = pump = Pump(self._lines)
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


def _id_text(line: str) -> str | None:
    """The ID on a plain-text line, or None for a blank line or a ``#`` comment. Only the line
    break and surrounding spaces and tabs are trimmed; anything else is part of the ID."""
    text = line.rstrip("\r\n").strip(" \t")
    return None if not text or text.startswith("#") else text
