"""A CSV input: its header (the delimiter it uses, its task_id or id column and project_id
column, whatever their case, spaces, ``_`` or ``-``) and its rows as tasks or skipped lines.
``FileSource`` tells a CSV input from the name or the first line and reads it through here.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator

from worker.errors import InputError
from worker.reading import CUT, MAX_LINE, Lines
from worker.sources import SourceItem, skipped


def _key(name: str) -> str:
    """A CSV column's name as it is matched: without case, spaces, ``_`` or ``-``."""
    return "".join(ch for ch in name.lower() if ch not in " \t_-")


def header_delimiter(line: str) -> str | None:
    """The delimiter by which ``line`` is a CSV header naming a task_id (or id) column: ``,``,
    or ``;`` or a tab, as spreadsheets export CSV in many locales; None if none is."""
    for delimiter in (",", ";", "\t"):
        if delimiter in line:
            names = next(csv.reader([line], delimiter=delimiter), [])
            if {"taskid", "id"} & {_key(name) for name in names}:
                return delimiter
    return None


def csv_items(
    source: str, header: str, lines: Lines, check: Callable[[str, str | None, int], SourceItem]
) -> Iterator[SourceItem]:
    """The items of a CSV input called ``source`` whose first line is ``header``: each row's
    task (``check(task_id, project_id or None, line)``), or why it is skipped. A header
    without a task_id (or id) column is an ``InputError``."""
    if header is CUT:
        msg = f"input {source}: line 1: the CSV header is longer than {MAX_LINE} characters"
        raise InputError(msg)
    delimiter = header_delimiter(header) or ","
    names = next(csv.reader([header], delimiter=delimiter), [])
    names = [name.strip() for name in names]
    # A task list exported as it is (ListCenterTask's fields) names the ID column ``id``.
    column = _column(source, names, "task_id") or _column(source, names, "id")
    if column is None:
        msg = f"input {source}: line 1: CSV header has no task_id (or id) column (got {names!r})"
        raise InputError(msg)
    project_column = _column(source, names, "project_id")
    reader = csv.DictReader(lines, fieldnames=names, delimiter=delimiter)
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
            yield lines.cut_line(source)
        if row is None:
            return
        if isinstance(row, csv.Error):
            msg = f"not valid CSV: {row}"
            yield skipped("", "", source, before + 2, "bad_line", msg)
            continue
        lineno = reader.line_num + 1
        task_id = (row.get(column) or "").strip()
        if not task_id:
            if any((value or "").strip() for value in row.values() if isinstance(value, str)):
                yield skipped("", "", source, lineno, "bad_line", f"empty {column}")
            continue
        if task_id == column and all((row.get(n) or "").strip() == n for n in names):
            # CSV files joined with ``cat``, each with its header: not a task called task_id.
            msg = "the CSV header again (files joined, each with its header?)"
            yield skipped(task_id, "", source, lineno, "bad_line", msg)
            continue
        project = None
        if project_column is not None:
            project = (row.get(project_column) or "").strip() or None
        yield check(task_id, project, lineno)


def _column(source: str, names: list[str], wanted: str) -> str | None:
    """The header's name for column ``wanted``: that name, or the one name that differs
    from it only in case, spaces, ``_`` or ``-`` (``Task ID``, ``TASK_ID``, ``TaskId``). Two
    such columns (``task_id`` twice, say) are an ``InputError``."""
    like = [name for name in names if name == wanted]
    like = like or [name for name in names if _key(name) == _key(wanted)]
    if len(like) > 1:  # the csv module would read the last of them
        fix = "keep one" if wanted in like else f"name one of them {wanted}"
        msg = (
            f"input {source}: line 1: CSV header has {len(like)} columns that may be "
            f"{wanted} ({', '.join(map(repr, like))}); {fix}"
        )
        raise InputError(msg)
    return like[0] if like else None
