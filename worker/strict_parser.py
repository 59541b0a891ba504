"""argparse as this program's command line uses it: whole flag names only, and a flag it does
not know named with the one it is closest to, under the usage of the command it was given to."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Mapping
from typing import Any


class Parser(argparse.ArgumentParser):
    """The top parser and its commands' (``commands``, by name, for their usage in an error).

    No abbreviations (argparse takes ``--dry`` for ``--dry-run``): a script or manifest written
    with one would break, or change meaning, the day a flag of the same prefix is added."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.commands: Mapping[str, argparse.ArgumentParser] = {}

    def parse_args(  # type: ignore[override]
        self, args: typing.Sequence[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self.commands.get(getattr(parsed, "command", None) or "", self)
            command.error(unknown_arguments(extras, command))
        return parsed


def unknown_arguments(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """argparse's message for arguments it did not take, and for each flag among them the flag
    of ``parser`` it is closest to."""
    import difflib  # 12 ms of start-up, for an error only

    flags = sorted(
        flag for action in parser._actions for flag in action.option_strings if flag[:2] == "--"
    )
    lines = [f"unrecognized arguments: {' '.join(extras)}"]
    for extra in extras:
        name = extra.partition("=")[0]
        if not name.startswith("-") or name in flags:
            continue
        # What it begins or is begun by (--max, --rate-limit), else a misspelling (--concurency):
        # --re begins eight flags, so the one it is spelt most like (--rate) is no answer.
        guesses = [
            flag
            for flag in flags
            if len(name) > 3 and (flag.startswith(name) or name.startswith(flag + "-"))
        ] or difflib.get_close_matches(name, flags, n=1, cutoff=0.75)
        if 0 < len(guesses) <= 3:
            lines.append(f"{name}: did you mean {' or '.join(guesses)}?")
        elif 3 < len(guesses) <= _MAX_GUESSES:
            lines.append(f"{name}: did you mean one of {', '.join(guesses)}?")
    return "\n".join(lines)


_MAX_GUESSES = 8
