"""Input sources: every format, one contract; bad lines become skipped outcomes with a line."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import sqlite3
import sys
import threading
import tracemalloc
import zlib
from pathlib import Path

import anyio
import pytest
import redis.asyncio

from worker.errors import InputError
from worker.files import FileSource
from worker.models import Outcome, TaskRef, TaskResult
from worker.queue import RedisStreamSource
from worker.reading import MAX_LINE
from worker.settings import DEFAULT_ID_PATTERN
from worker.shards import ShardFilter, shard_of
from worker.sources import BATCH, IdValidator, SourceItem, TaskSource, check_task

P = "p" * 32


async def collect(source: FileSource) -> list[SourceItem]:
    out: list[SourceItem] = []
    async for batch in source.batches():
        out.extend(batch)
    await source.aclose()
    return out


async def read_until_failure(source: FileSource, match: str = "read failed") -> list[SourceItem]:
    """Every item a source yields before its read fails (it must fail with ``match``)."""
    got: list[SourceItem] = []

    async def read_all() -> None:
        async for batch in source.batches():
            got.extend(batch)

    with pytest.raises(InputError, match=match):
        await read_all()
    await source.aclose()
    return got


def make(path: Path | str, fmt: str = "auto") -> FileSource:
    return FileSource(str(path), P, IdValidator(DEFAULT_ID_PATTERN), fmt)


FORMATS = {
    "ids.txt": "# a comment\n\nt1\n  t2  \nbad/id\nt3\n",
    "ids.csv": "task_id,project_id\nt1,\nt2,\nbad/id,\nt3,\n",
    "ids.jsonl": (
        '{"task_id": "t1"}\n\n{"task_id": "t2"}\n{"task_id": "bad/id"}\n{"task_id": "t3"}\n'
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("windows", [False, True])
async def test_every_format_yields_the_same_tasks(
    name: str, compressed: bool, windows: bool, tmp_path: Path
) -> None:
    """Text, CSV, JSON Lines, plain or gzipped, and as Windows saves them (a UTF-8 byte-order
    mark, as Excel's "CSV UTF-8" writes, and CRLF line ends): the same IDs; the bad one skipped
    with its line."""
    path = tmp_path / (name + (".gz" if compressed else ""))
    text = FORMATS[name]
    data = ("\ufeff" + text.replace("\n", "\r\n")).encode() if windows else text.encode()
    path.write_bytes(gzip.compress(data) if compressed else data)
    items = await collect(make(path))
    refs = [i for i in items if isinstance(i, TaskRef)]
    assert [r.task_id for r in refs] == ["t1", "t2", "t3"]
    assert all(r.project_id == P for r in refs)
    bad = [i for i in items if isinstance(i, TaskResult)]
    assert len(bad) == 1
    assert bad[0].outcome is Outcome.SKIPPED
    expected_line = {"ids.txt": 5, "ids.csv": 4, "ids.jsonl": 4}[name]
    assert bad[0].line == expected_line
    assert bad[0].error_msg is not None
    assert f":{expected_line}: " in bad[0].error_msg


def _mixed_lines(fmt: str) -> str:
    """200 IDs with every kind of line a shard must place: bad IDs, repeats, lines too long,
    blanks, comments (text), a line with another project (CSV, JSON Lines)."""
    ids = [f"t{n:03d}" if n % 17 else f"bad/{n}" for n in range(200)] + ["t001", "t002"]
    ids[50] = ids[121] = "x" * (MAX_LINE + 10)  # too long: bad lines
    if fmt == "text":
        return "# tasks\n" + "".join(
            f"{i}\n" + ("\n" if n % 9 == 0 else "") for n, i in enumerate(ids)
        )
    if fmt == "csv":
        return "task_id,project_id\n" + "".join(
            f"{i},{'q' * 32 if n % 5 == 0 else ''}\n" for n, i in enumerate(ids)
        )
    return (
        "".join(
            f'{{"task_id": "{i}"' + (f', "project_id": "{"q" * 32}"' if n % 5 == 0 else "") + "}\n"
            for n, i in enumerate(ids)
        )
        + "not json\n"
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fmt", "project"), [("text", P), ("csv", P), ("csv", None), ("jsonl", P), ("jsonl", None)]
)
@pytest.mark.parametrize("count", [2, 3])
async def test_shards_of_a_file_split_it_exactly(
    fmt: str, project: str | None, count: int, tmp_path: Path
) -> None:
    """Shards of one file: every line read once by exactly one shard (a task by its hash, a
    bad line by its line number) and counted as another shard's by all the rest."""
    path = tmp_path / f"ids.{ {'text': 'txt'}.get(fmt, fmt) }"
    path.write_text(_mixed_lines(fmt), encoding="utf-8")

    def source() -> FileSource:
        return FileSource(str(path), project, IdValidator(DEFAULT_ID_PATTERN))

    whole = await collect(source())
    assert any(isinstance(i, TaskRef) for i in whole)
    key = [(type(i).__name__, i.task_id, i.project_id, i.line) for i in whole]
    seen: list[tuple[str, str, str, int]] = []
    for index in range(count):
        shard = ShardFilter(source(), index, count)
        mine: list[SourceItem] = []
        async for batch in shard.batches():
            mine.extend(batch)
        await shard.aclose()
        for item in mine:
            if isinstance(item, TaskRef):
                assert shard_of(item.project_id, item.task_id, count) == index
            else:
                assert item.line % count == index
        assert shard.other_shards == len(whole) - len(mine)
        seen += [(type(i).__name__, i.task_id, i.project_id, i.line) for i in mine]
    assert sorted(seen) == sorted(key)


@pytest.mark.anyio
@pytest.mark.parametrize("shard", [None, (1, 2)])
async def test_plain_text_without_a_project_is_an_input_error(
    shard: tuple[int, int] | None, tmp_path: Path
) -> None:
    """Plain-text lines name no project: with no default one, the first ID line is an error
    naming the input and the line (not every line skipped), sharded or not."""
    path = tmp_path / "ids.txt"
    path.write_text("# tasks\n\nt1\nt2\n")
    source = FileSource(str(path), None, IdValidator(DEFAULT_ID_PATTERN))
    if shard is not None:
        ShardFilter(source, *shard)
    with pytest.raises(InputError, match=rf"input {re.escape(str(path))}: line 3: plain-text"):
        await collect(source)


@pytest.mark.anyio
async def test_a_fifo_gives_its_lines_then_its_error(tmp_path: Path) -> None:
    """Through a FIFO (read by the stream pump's thread) as from a file: the lines before a
    read error come out first, then the error itself reaches the reader."""
    fifo = tmp_path / "ids.fifo"
    os.mkfifo(fifo)
    packed = gzip.compress(("\n".join(f"t{n}" for n in range(2000)) + "\n").encode())

    def writer() -> None:
        with fifo.open("wb") as out:
            out.write(packed[: len(packed) // 2])

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    source = make(fifo)
    assert source.stream_input
    assert not source.finite
    got = await read_until_failure(source)
    thread.join(5)
    assert len(got) > 100
    assert [i.task_id for i in got] == [f"t{n}" for n in range(len(got))]


@pytest.mark.anyio
async def test_a_csv_row_csv_cannot_read_is_one_bad_line(tmp_path: Path) -> None:
    """A field over the csv module's limit (131,072 characters) used to end the run with a
    traceback; it is that row skipped as bad_line, with its line number, and the rest read."""
    path = tmp_path / "ids.csv"
    path.write_text(f'task_id,project_id\nt1,\n"{"x" * 200_000}",\nt2,\n')
    items = await collect(make(path))
    assert [(i.task_id, i.line) for i in items if isinstance(i, TaskRef)] == [("t1", 2), ("t2", 4)]
    bad = [i for i in items if isinstance(i, TaskResult)]
    assert [(b.error_code, b.line) for b in bad] == [("bad_line", 3)]
    assert bad[0].error_msg is not None
    assert "field larger than field limit" in bad[0].error_msg


@pytest.mark.anyio
async def test_the_csv_header_repeated_is_a_bad_line_not_a_task(tmp_path: Path) -> None:
    """Two exports joined with ``cat`` carry the header twice. ``task_id`` is a valid ID, so
    the second header went out as a DELETE of a task called ``task_id`` (and again for each
    file joined). It is a bad line now, named as the header; a task that only shares the
    column's name, in a row that is not the header, is still a task."""
    path = tmp_path / "ids.csv"
    path.write_text("task_id,project_id\nt1,\ntask_id,project_id\nt2,\ntask_id,\n")
    items = await collect(make(path))
    refs = [(i.task_id, i.line) for i in items if isinstance(i, TaskRef)]
    assert refs == [("t1", 2), ("t2", 4), ("task_id", 5)]
    [bad] = [i for i in items if isinstance(i, TaskResult)]
    assert (bad.error_code, bad.line) == ("bad_line", 3)
    assert bad.error_msg == f"{path}:3: the CSV header again (files joined, each with its header?)"


LONG_LINES = {
    "ids.txt": ("t1\n{long}\nt2\n", 2),
    "ids.csv": ("task_id,project_id\nt1,\n{long},\nt2,\n", 3),
    "ids.jsonl": ('{{"task_id": "t1"}}\n{{"task_id": "{long}"}}\n{{"task_id": "t2"}}\n', 2),
}


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(LONG_LINES))
@pytest.mark.parametrize("compressed", [False, True])
async def test_a_line_too_long_is_one_bad_line_and_never_held_whole(
    name: str, compressed: bool, tmp_path: Path
) -> None:
    """A 40 MiB line (a binary file, a JSON document on one line) is read through in pieces:
    the reader's memory stays a few MiB, where it held the whole line (and a CronJob's memory
    limit could end the run with no report). The line is one bad_line, the rest are read."""
    template, long_line = LONG_LINES[name]
    data = template.format(long="a" * (40 * 1024 * 1024)).encode()
    path = tmp_path / (name + (".gz" if compressed else ""))
    path.write_bytes(gzip.compress(data, compresslevel=1) if compressed else data)
    del data
    tracemalloc.start()
    try:
        items = await collect(make(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * 1024 * 1024
    assert [i.task_id for i in items if isinstance(i, TaskRef)] == ["t1", "t2"]
    bad = [i for i in items if isinstance(i, TaskResult)]
    assert [(b.line, b.error_code) for b in bad] == [(long_line, "bad_line")]
    assert f"{path}:{long_line}: line longer than 1 MiB, starting " in str(bad[0].error_msg)


def test_the_bars_line_count_reads_a_long_line_in_pieces(tmp_path: Path) -> None:
    """The progress bar's total counts a 40 MiB line once, without holding it whole."""
    path = tmp_path / "ids.txt"
    path.write_bytes(b"# ids\nt1\n" + b"a" * (40 * 1024 * 1024) + b"\n\nt2\n")
    tracemalloc.start()
    try:
        total = make(path).count_lines()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total == 3
    assert peak < 4 * 1024 * 1024


@pytest.mark.anyio
async def test_a_first_line_too_long_is_a_bad_line_or_tells_the_format(tmp_path: Path) -> None:
    """Cut at line 1: plain text goes on after it; a CSV header that long is an input error;
    JSON that opens a document that long is the JSON document error, but a first entry that
    long followed by good ones is one bad line."""
    long = "a" * (MAX_LINE + 1)
    text = tmp_path / "ids.txt"
    text.write_text(f"{long}\nt1\n")
    items = await collect(make(text))
    assert [(type(i).__name__, i.line) for i in items] == [("TaskResult", 1), ("TaskRef", 2)]
    header = tmp_path / "ids.csv"
    header.write_text(f"task_id,{long}\nt1\n")
    with pytest.raises(InputError, match="line 1: the CSV header is longer than"):
        await collect(make(header))
    document = tmp_path / "list.json"
    document.write_text(f'{{"task_count": "1", "tasks": [{{"id": "{long}"}}]}}\n')
    with pytest.raises(InputError, match="line 1: one JSON document, not JSON Lines"):
        await collect(make(document))
    entries = tmp_path / "ids.jsonl"  # an absurd first entry, then good ones: that line only
    entries.write_text(f'{{"task_id": "{long}"}}\n{{"task_id": "t1"}}\n')
    items = await collect(make(entries))
    assert [(type(i).__name__, i.line) for i in items] == [("TaskResult", 1), ("TaskRef", 2)]


PROGRAM = Path(sys.executable).resolve()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["journal", "gzip of a journal", "program"])
async def test_a_binary_file_is_an_input_error(kind: str, tmp_path: Path) -> None:
    """A binary file given by mistake (the journal itself, an archive, a program) is refused at
    line 1 by its NUL byte: its runs of letters would have been read as IDs and some sent."""
    journal = tmp_path / "j.sqlite"
    with contextlib.closing(sqlite3.connect(journal)) as db:
        db.execute("CREATE TABLE tasks (task_id TEXT)")
        db.executemany("INSERT INTO tasks VALUES (?)", [(f"task{n}",) for n in range(100)])
        db.commit()
    path = {"journal": journal, "program": PROGRAM}.get(kind)
    if path is None:
        path = tmp_path / "j.sqlite.gz"
        path.write_bytes(gzip.compress(journal.read_bytes()))
    pattern = rf"input {re.escape(str(path))}: line 1: NUL bytes; this is not a text"
    with pytest.raises(InputError, match=pattern):
        await collect(make(path))


@pytest.mark.anyio
async def test_one_stray_nul_on_line_1_is_that_lines_problem_alone(tmp_path: Path) -> None:
    """A text file with one NUL on its first line is no binary file: that line is skipped, the
    rest are read (one bad ID never stops the other tasks)."""
    path = tmp_path / "ids.txt"
    path.write_bytes(b"t\x001\nt2\nt3\n")
    items = await collect(make(path))
    assert [i.task_id for i in items if isinstance(i, TaskRef)] == ["t2", "t3"]
    assert [(i.line, i.error_code) for i in items if isinstance(i, TaskResult)] == [
        (1, "invalid_id")
    ]


@pytest.mark.anyio
async def test_a_bad_ids_message_names_the_character_and_where_it_is(tmp_path: Path) -> None:
    """A skipped line's message says what in the ID is wrong and at which character, not the
    list of everything an ID may not hold: a long ID's fault need not be found by eye."""
    path = tmp_path / "ids.txt"
    lines = [
        b"../instances/x", b"abc?x=1", b"tab\there", b"caf\xc3\xa9", b"x" * 70, b"-lead",
        b"a:b", b"bad\xffbyte", b"ok1",
    ]  # fmt: skip
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = await collect(make(path))
    assert [i.task_id for i in items if isinstance(i, TaskRef)] == ["ok1"]
    msgs = {i.line: str(i.error_msg) for i in items if isinstance(i, TaskResult)}
    why = {line: msg.split("' ", 1)[1] for line, msg in msgs.items()}
    never = "(no ID may hold a path separator, %, ?, #, whitespace or a control character)"
    allowed = "(an ID is letters, digits, _, . and -)"
    assert why == {
        1: f"contains '/' at character 3 {never}",
        2: f"contains '?' at character 4 {never}",
        3: f"contains '\\t' (U+0009) at character 4 {never}",
        4: f"contains '\u00e9' at character 4 {allowed}",
        5: "is 70 characters long (at most 64)",
        6: "must begin with a letter or digit",
        7: f"contains ':' at character 2 {allowed}",
        8: "has byte 0xFF at character 4, which is not UTF-8",
    }
    assert all(msg.startswith(f"{path}:{line}: task_id ") for line, msg in msgs.items())
    narrowed = FileSource(str(path), P, IdValidator(r"^[a-z]{3}$"), "auto")
    last = (await collect(narrowed))[-1]
    assert isinstance(last, TaskResult)
    assert str(last.error_msg).endswith("task_id 'ok1' does not match --id-pattern ^[a-z]{3}$")


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be"])
async def test_a_utf16_file_is_an_input_error(encoding: str, tmp_path: Path) -> None:
    """A file saved as UTF-16 ("Unicode" in Windows editors) read as UTF-8 would skip every
    line as invalid and end 0 having sent nothing: it is an error naming the file instead."""
    path = tmp_path / "ids.txt"
    data = "t1\r\nt2\r\n".encode(encoding)
    path.write_bytes(data if encoding == "utf-16" else b"\xfe\xff" + data)
    with pytest.raises(InputError, match=rf"input {re.escape(str(path))}: line 1: .*UTF-16"):
        await collect(make(path))


@pytest.mark.anyio
@pytest.mark.parametrize("header", ["", "task_id\n"])
async def test_lines_before_a_read_error_come_out_before_the_error(
    header: str, tmp_path: Path
) -> None:
    """A gzip file cut short, text or CSV: the whole lines before the cut are yielded, then the
    error, which names the input and the line the cut fell in."""
    ids = [f"t{n:05d}" for n in range(3000)]
    packed = gzip.compress((header + "\n".join(ids) + "\n").encode())
    cut = packed[: len(packed) // 2]
    path = tmp_path / ("ids.csv.gz" if header else "ids.txt.gz")
    path.write_bytes(cut)
    whole_lines = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut).count(b"\n")
    assert whole_lines > 2 * BATCH
    assert whole_lines % BATCH  # the cut is inside a batch
    error = rf"^input {re.escape(str(path))}: line {whole_lines + 1}: read failed: "
    got = await read_until_failure(make(path), error)
    assert [i.task_id for i in got] == ids[: whole_lines - bool(header)]


@pytest.mark.anyio
async def test_per_line_project_id_overrides_default(tmp_path: Path) -> None:
    """A project_id column or field wins over --project-id for that line."""
    path = tmp_path / "ids.csv"
    path.write_text("task_id,project_id\nt1,other\nt2,\n")
    refs = [i for i in await collect(make(path)) if isinstance(i, TaskRef)]
    assert [(r.task_id, r.project_id) for r in refs] == [("t1", "other"), ("t2", P)]


@pytest.mark.anyio
async def test_bad_json_and_missing_field_are_skipped_not_fatal(tmp_path: Path) -> None:
    """Broken JSON Lines are skipped with their line; the good ones still come through."""
    path = tmp_path / "ids.jsonl"
    path.write_text('{"task_id": "t1"}\n{oops\n{"name": "x"}\n["t3"]\n{"task_id": "t2"}\n')
    items = await collect(make(path))
    assert [i.task_id for i in items if isinstance(i, TaskRef)] == ["t1", "t2"]
    bad = [i for i in items if isinstance(i, TaskResult)]
    assert [(i.line, i.error_code) for i in bad] == [
        (2, "bad_line"),
        (3, "bad_line"),
        (4, "bad_line"),
    ]
    assert [str(i.error_msg).split(": ", 1)[1] for i in bad] == [
        "not valid JSON",
        "no string task_id (or id) field",
        "not a JSON object",
    ]


@pytest.mark.anyio
async def test_an_entry_message_longer_than_message_allows_skips_its_line(tmp_path: Path) -> None:
    """``--message`` is refused over 1,024 characters, but a JSON Lines line's (or a queue
    entry's) own message of any length went out as the DELETE's body. Such a line is now a bad
    line saying the length; a message of exactly 1,024 still goes."""
    path = tmp_path / "ids.jsonl"
    lines = [{"task_id": "t1", "message": "m" * 1025}, {"task_id": "t2", "message": "m" * 1024}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    items = await collect(make(path))
    assert [(i.task_id, len(i.message or "")) for i in items if isinstance(i, TaskRef)] == [
        ("t2", 1024)
    ]
    [bad] = [i for i in items if isinstance(i, TaskResult)]
    assert (bad.task_id, bad.line, bad.error_code) == ("t1", 1, "bad_line")
    assert bad.error_msg == f"{path}:1: message of 1,025 characters: at most 1,024, as --message"


@pytest.mark.anyio
async def test_a_project_id_or_message_that_is_not_a_string_skips_its_line(
    tmp_path: Path,
) -> None:
    """A JSON Lines project_id written as a number (or any non-string) was dropped and the
    task sent to --project-id's project; a non-string message was dropped. Each is now a bad
    line naming the field; null and "" still mean the default, and other lines go on."""
    path = tmp_path / "ids.jsonl"
    path.write_text(
        '{"task_id": "t1", "project_id": 5}\n'
        '{"task_id": "t2", "project_id": {"id": "x"}}\n'
        '{"task_id": "t3", "message": 7}\n'
        '{"task_id": "t4", "project_id": null, "message": null}\n'
        '{"task_id": "t5", "project_id": "", "message": "bye"}\n'
        '{"task_id": "t6", "project_id": "other"}\n'
    )
    items = await collect(make(path))
    refs = [i for i in items if isinstance(i, TaskRef)]
    assert [(r.task_id, r.project_id, r.message) for r in refs] == [
        ("t4", P, None),
        ("t5", P, "bye"),
        ("t6", "other", None),
    ]
    bad = [i for i in items if isinstance(i, TaskResult)]
    assert [(i.task_id, i.line, i.error_code, i.error_msg) for i in bad] == [
        ("t1", 1, "bad_line", f"{path}:1: project_id is a JSON number, not a string"),
        ("t2", 2, "bad_line", f"{path}:2: project_id is a JSON object, not a string"),
        ("t3", 3, "bad_line", f"{path}:3: message is a JSON number, not a string"),
    ]


@pytest.mark.anyio
async def test_a_key_given_twice_in_a_json_line_skips_its_line(tmp_path: Path) -> None:
    """A JSON object that gives task_id (or id, project_id, message) twice was read by its last
    one, silently choosing the task or project sent. Such a line is now a bad line naming the
    key, however the key is spelt; another key twice, or a read key once, still goes."""
    path = tmp_path / "ids.jsonl"
    path.write_text(
        '{"task_id": "t1", "task_id": "t2"}\n'
        '{"task_id": "t3", "project_id": "other", "project_id": "p"}\n'
        '{"task\\u005fid": "t4", "task_id": "t5"}\n'
        '{"id": "t6", "id": "t7"}\n'
        '{"task_id": "t8", "name": "x", "name": "y", "note": "\\"id\\" and \\"id\\""}\n'
        '{"task_id": "t9", "tags": {"task_id": "inner"}}\n'
    )
    items = await collect(make(path))
    assert [i.task_id for i in items if isinstance(i, TaskRef)] == ["t8", "t9"]
    bad = [i for i in items if isinstance(i, TaskResult)]
    assert [(i.line, i.error_code, str(i.error_msg).split(": ", 1)[1]) for i in bad] == [
        (n, "bad_line", f"the key {key} is given twice: which one is meant is not clear")
        for n, key in ((1, "task_id"), (2, "project_id"), (3, "task_id"), (4, "id"))
    ]


@pytest.mark.anyio
async def test_a_task_as_the_list_api_gives_it_is_read_by_its_id(tmp_path: Path) -> None:
    """``jq -c '.tasks[]'`` over a ListCenterTask response gives objects with ``id``, not
    ``task_id``: each is read as its task (task_id wins when a line has both)."""
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"id": "t1", "name": "EXTEND", "status": "SUCCESS"}\n'
        '{"task_id": "t2", "id": "not-this"}\n'
        '{"id": "bad/id"}\n'
    )
    items = await collect(make(path))
    assert [i.task_id for i in items if isinstance(i, TaskRef)] == ["t1", "t2"]
    assert [(i.line, i.error_code) for i in items if isinstance(i, TaskResult)] == [
        (3, "invalid_id")
    ]


LIST_RESPONSE = {"task_count": "2", "tasks": [{"id": "t1"}, {"id": "t2"}]}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("list.json", json.dumps(LIST_RESPONSE, indent=2)),
        ("list.json", json.dumps(LIST_RESPONSE)),
        ("list.json", json.dumps(LIST_RESPONSE, indent=1).replace("\n", "", 1)),
        ("tasks.jsonl", json.dumps(LIST_RESPONSE["tasks"])),
        ("tasks.jsonl", json.dumps(LIST_RESPONSE["tasks"], indent=2)),
        ("no-extension", json.dumps(LIST_RESPONSE, indent=4)),
    ],
)
async def test_a_json_document_is_an_input_error(name: str, content: str, tmp_path: Path) -> None:
    """A saved ListCenterTask response or a JSON array, pretty-printed or on one line, is not
    JSON Lines: every line of it would be skipped and the run end 0 having sent nothing. It
    is an error naming the file and line 1, with the command that makes it JSON Lines."""
    path = tmp_path / name
    path.write_text(content + "\n")
    assert content.lstrip().startswith(("{", "["))
    pattern = rf"input {re.escape(str(path))}: line 1: one JSON document, not JSON Lines"
    with pytest.raises(InputError, match=pattern) as caught:
        await collect(make(path))
    assert f"jq -c '.tasks[]' {path}" in str(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "first",
    [
        '{"task_id": "t1"}',
        "{oops",
        '{"task_id": "t0",',  # broken as a document's first line may be; the next is JSON
        '{"task_id": "t1", "tasks": []}',
        '{"id": "t1", "tasks": []}',
    ],
)
async def test_a_json_lines_file_whatever_its_first_line_is_not_a_document(
    first: str, tmp_path: Path
) -> None:
    """The document check refuses only documents: JSON Lines whose first line is a task, or
    broken, are read line by line as before."""
    path = tmp_path / "ids.jsonl"
    path.write_text(first + '\n{"task_id": "t2"}\n')
    items = await collect(make(path))
    assert [i.task_id for i in items if isinstance(i, TaskRef)][-1] == "t2"
    assert len(items) == 2


@pytest.mark.anyio
async def test_invalid_utf8_line_is_skipped(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 never become an ID."""
    path = tmp_path / "ids.txt"
    path.write_bytes(b"t1\nab\xff\xfe\nt2\n")
    items = await collect(make(path))
    assert [i.task_id for i in items if isinstance(i, TaskRef)] == ["t1", "t2"]
    assert [i.line for i in items if isinstance(i, TaskResult)] == [2]


@pytest.mark.anyio
async def test_csv_without_task_id_column_is_an_input_error(tmp_path: Path) -> None:
    """A CSV whose header lacks task_id (and id) cannot be read at all: InputError naming the
    file."""
    path = tmp_path / "ids.csv"
    path.write_text("name,status\n1,x\n")
    with pytest.raises(InputError, match=r"ids.csv: line 1: CSV header has no task_id \(or id\)"):
        await collect(make(path))


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["tasks.csv", "tasks.txt"])
async def test_a_task_list_exported_as_csv_is_read_by_its_id_column(
    tmp_path: Path, name: str
) -> None:
    """A ListCenterTask export as CSV names its ID column ``id`` (as its JSON does): it was
    refused as a .csv, and as a .txt read as text, every row skipped and exit 0. Its IDs are
    read now, a task_id column still winning where both are given."""
    path = tmp_path / name
    path.write_text(
        "id,name,status\nc4bf11bf,EXTEND,SUCCESS\n,BindEip,SUCCESS\n2e43974f,modify,SUCCESS\n"
    )
    items = await collect(make(path))
    assert [(i.task_id, i.line) for i in items if isinstance(i, TaskRef)] == [
        ("c4bf11bf", 2),
        ("2e43974f", 4),
    ]
    assert [(i.line, i.error_msg) for i in items if isinstance(i, TaskResult)] == [
        (3, f"{path}:3: empty id")
    ]
    both = tmp_path / "both.csv"
    both.write_text("id,task_id\nrow-1,t1\n")
    assert [i.task_id for i in await collect(make(both)) if isinstance(i, TaskRef)] == ["t1"]


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["tasks.csv", "tasks.txt"])
@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        (["Task ID", "Project ID", "note"], ","),
        (["TASK_ID", "PROJECT_ID", "note"], ","),
        ([" TaskId ", " project-id ", "note"], ","),
        (["Task ID", "Project ID", "note"], ";"),
        (["task_id", "project_id", "note"], "\t"),
    ],
)
async def test_csv_as_spreadsheets_export_it_is_read(
    tmp_path: Path, name: str, header: list[str], delimiter: str
) -> None:
    """A spreadsheet's export says ``Task ID`` or ``TASK_ID``, and in a locale whose decimal
    mark is a comma it separates with ``;`` (a TSV with tabs). As a .csv such a file was
    refused ("no task_id column"); as a .txt it was read as text and every line skipped. The
    columns and the delimiter are found now (a comma inside a field stays in it), the project
    column too, and a project-less row takes the default project."""
    path = tmp_path / name
    note = "a, b" if delimiter != "," else "a"
    rows = [header, ["t1", P, note], ["t2", "", "c"]]
    path.write_text("".join(delimiter.join(row) + "\n" for row in rows))
    items = await collect(FileSource(str(path), "d" * 32, IdValidator(DEFAULT_ID_PATTERN)))
    assert [(i.task_id, i.project_id, i.line) for i in items if isinstance(i, TaskRef)] == [
        ("t1", P, 2),
        ("t2", "d" * 32, 3),
    ]
    assert not [i for i in items if isinstance(i, TaskResult)]


@pytest.mark.anyio
async def test_csv_columns_that_differ_only_in_case_must_be_told_apart(tmp_path: Path) -> None:
    """``task_id`` itself wins over a look-alike; two look-alikes and no ``task_id`` is an input
    error naming both, not a guess."""
    both = tmp_path / "both.csv"
    both.write_text("Task ID,task_id\nrow-1,t1\n")
    assert [i.task_id for i in await collect(make(both)) if isinstance(i, TaskRef)] == ["t1"]
    two = tmp_path / "two.csv"
    two.write_text("TASK_ID,task-id\nt1,t2\n")
    with pytest.raises(InputError, match=r"2 columns that may be task_id \('TASK_ID', 'task-id'\)"):
        await collect(make(two))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("header", "wanted"),
    [("task_id,note,task_id", "task_id"), ("id,project_id,project_id", "project_id")],
)
async def test_a_csv_column_named_twice_is_an_input_error(
    tmp_path: Path, header: str, wanted: str
) -> None:
    """A header naming task_id (or project_id) twice was read by its last column, silently
    choosing which of two IDs went out; it is now an input error naming the column."""
    path = tmp_path / "twice.csv"
    path.write_text(f"{header}\nt1,x,t2\n")
    expected = rf"line 1: CSV header has 2 columns that may be {wanted} \('{wanted}', '{wanted}'\)"
    expected += "; keep one"
    with pytest.raises(InputError, match=expected):
        await collect(make(path))


@pytest.mark.anyio
async def test_stdin_is_read_gzip_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """'-' reads stdin, gzip recognised by its magic bytes."""
    raw = io.BufferedReader(io.BytesIO(gzip.compress(b"t1\nt2\n")))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))
    items = await collect(make("-"))
    assert [i.task_id for i in items if isinstance(i, TaskRef)] == ["t1", "t2"]
    assert all(i.source == "stdin" for i in items if isinstance(i, TaskRef))


@pytest.mark.parametrize(
    "task_id",
    ["../x", "a/b", "%2e", "x y", "..", ".", "a?b", "a#b", "a" * 65, "a\\b", "a\x00b", "\t", "ä"],
)
def test_validator_refuses_whatever_the_pattern(task_id: str) -> None:
    """Even a pattern that allows anything cannot let a path or query character through."""
    assert IdValidator(DEFAULT_ID_PATTERN).problem(task_id) is not None
    if len(task_id) <= 64 and task_id != "ä":
        assert IdValidator(r".*").problem(task_id) is not None


def test_large_file_is_streamed_in_batches(tmp_path: Path) -> None:
    """A big file arrives in bounded batches (it is never read whole)."""
    path = tmp_path / "ids.txt"
    path.write_text("".join(f"t{i}\n" for i in range(5000)))
    sizes: list[int] = []

    async def go() -> None:
        async for batch in make(path).batches():
            sizes.append(len(batch))

    anyio.run(go)
    assert sum(sizes) == 5000
    assert max(sizes) <= 512


CONTRACT_IDS = ["t1", "t2", "bad/id", "t3"]


async def make_source(kind: str, tmp: Path, redis_url: str | None) -> TaskSource:
    """One source of each kind, holding CONTRACT_IDS."""
    validator = IdValidator(DEFAULT_ID_PATTERN)
    if kind == "redis":
        assert redis_url is not None
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        for task_id in CONTRACT_IDS:
            await client.xadd("contract", {"task_id": task_id})
        return RedisStreamSource(
            client, "contract", "g", "c", P, validator, until_empty=True, claim_idle=30
        )
    body = {
        "text": "\n".join(CONTRACT_IDS) + "\n",
        "csv": "task_id\n" + "\n".join(CONTRACT_IDS) + "\n",
        "jsonl": "".join(f'{{"task_id": "{t}"}}\n' for t in CONTRACT_IDS),
    }[kind]
    path = tmp / f"ids.{kind}.gz"
    path.write_bytes(gzip.compress(body.encode()))
    return FileSource(str(path), P, validator)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["text", "csv", "jsonl", "redis"])
async def test_source_contract(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Every source: valid IDs in order with the default project, the bad one a skipped outcome,
    the end of input reached, acknowledgement accepted, close clean."""
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    source = await make_source(kind, tmp_path, redis_url)
    assert source.name
    items: list[SourceItem] = []
    with anyio.fail_after(10):
        async for batch in source.batches():
            items.extend(batch)
            refs = [i for i in batch if isinstance(i, TaskRef)]
            done = [TaskResult(r.task_id, r.project_id, Outcome.DELETED, ack=r.ack) for r in refs]
            await source.acknowledge(done + [i for i in batch if isinstance(i, TaskResult)])
    refs = [i for i in items if isinstance(i, TaskRef)]
    assert [(r.task_id, r.project_id) for r in refs] == [("t1", P), ("t2", P), ("t3", P)]
    bad = [i for i in items if isinstance(i, TaskResult)]
    assert [(b.task_id, b.outcome, b.error_code) for b in bad] == [
        ("bad/id", Outcome.SKIPPED, "invalid_id")
    ]
    await source.aclose()


def test_project_id_allow_list_holds_whatever_the_id_pattern() -> None:
    """Every source checks project IDs against the project allow-list, not --id-pattern."""
    wide = IdValidator(r".{1,200}")
    long_project = "p" * 100
    item = check_task(wide, "t" * 100, long_project, "redis:s/1-0", 0, ack="1-0")
    assert isinstance(item, TaskResult)
    assert (item.error_code, item.ack) == ("invalid_project_id", "1-0")
    ok = check_task(wide, "t" * 100, P, "f.txt", 3)
    assert isinstance(ok, TaskRef)
