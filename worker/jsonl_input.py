"""A JSON Lines input: each line's object as a task or a skipped line, and the refusal of one
JSON document (a saved ListCenterTask answer, an array) given as JSON Lines. ``FileSource``
tells a JSON Lines input from the name or the first line and reads it through here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from worker.errors import InputError
from worker.reading import CUT, Lines
from worker.sources import SourceItem, skipped

# check(task_id, project_id or None, line, message or None): a task, or why it is skipped.
Check = Callable[[str, str | None, int, str | None], SourceItem]

_JSON_TYPES = {int: "number", float: "number", bool: "boolean", dict: "object", list: "array"}
# The keys a JSON Lines line is read by. Of a key given twice json.loads keeps the last: for these
# that would choose between two tasks (or projects, or messages) without a word.
_READ_KEYS = frozenset(("task_id", "id", "project_id", "message"))
_QUOTED_KEYS = tuple(f'"{key}"' for key in sorted(_READ_KEYS))


def _json_object(text: str) -> dict[str, Any] | str:
    """A JSON Lines line's object, or why it has none that can be read."""
    try:
        obj = json.loads(text)
    except ValueError:
        return "not valid JSON"
    if not isinstance(obj, dict):
        return "not a JSON object"
    repeated = _repeated_key(text)
    if repeated is not None:
        return f"the key {repeated} is given twice: which one is meant is not clear"
    return obj


def _repeated_key(text: str) -> str | None:
    """The first key a line is read by that its JSON object gives twice, or None. Only a line
    that names one of them twice, or has an escape (which may spell one), is parsed again."""
    if "\\" not in text and all(text.count(key) < 2 for key in _QUOTED_KEYS):
        return None
    pairs: list[tuple[str, object]] = json.loads(text, object_pairs_hook=list)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in _READ_KEYS:
            if key in seen:
                return key
            seen.add(key)
    return None


def jsonl_item(source: str, line: str, lineno: int, check: Check) -> SourceItem | None:
    """The item of a JSON Lines line of input ``source``: its task (``check(task_id,
    project_id or None, line, message)``), why it is skipped, or None for a blank line."""
    text = line.strip()
    if not text:
        return None
    obj = _json_object(text)
    if isinstance(obj, str):
        return skipped(text[:64], "", source, lineno, "bad_line", obj)
    task_id = obj.get("task_id")
    if task_id is None:  # a task as ListCenterTask gives it (jq -c '.tasks[]')
        task_id = obj.get("id")
    if not isinstance(task_id, str):
        msg = "no string task_id (or id) field"
        return skipped(text[:64], "", source, lineno, "bad_line", msg)
    project = obj.get("project_id")
    message = obj.get("message")
    # Another type is not the default project, nor no message: a project ID written as a
    # number (its leading zeros lost) must not send the task to --project-id's project.
    for name, value in (("project_id", project), ("message", message)):
        if value is not None and not isinstance(value, str):
            msg = f"{name} is a JSON {_JSON_TYPES.get(type(value), 'value')}, not a string"
            return skipped(task_id, "", source, lineno, "bad_line", msg)
    return check(task_id, project or None, lineno, message)


def refuse_json_document(source: str, first: str, lines: Lines, *, cut: bool) -> None:
    """Raise ``InputError`` for a JSON document read as JSON Lines: a saved ListCenterTask
    response (pretty-printed, or on one line) or an array. Each of its lines would be skipped
    as a bad line and the run end 0 having sent nothing, so it is an input error naming the
    file instead.
    ``cut``: ``first`` is the start of a line over ``MAX_LINE``."""
    text = first.strip()
    if text.startswith(("{", "[")) and _starts_a_document(text, lines, cut=cut):
        msg = (
            f"input {source}: line 1: one JSON document, not JSON Lines (an object with "
            "a task_id a line); for a ListCenterTask response, its tasks one a line: "
            f"jq -c '.tasks[]' {source}"
        )
        raise InputError(msg)


def _starts_a_document(text: str, lines: Lines, *, cut: bool) -> bool:
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


def _no_json_next(lines: Lines) -> bool:
    """Whether the next line (peeked, left to be read) is no JSON: a document's second line."""
    second = lines.peek()
    if second is CUT:
        return True
    try:
        json.loads(second)
    except ValueError:
        return True
    return False
