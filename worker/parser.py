"""The command line's grammar: ``build_parser`` for every command of ``dcs-cleanup``.

Flags of ``run`` are generated from the settings' fields (``max_attempts`` -> ``--max-attempts``),
and a flag not given is left out of the parsed namespace, so the environment, ``.env`` and the
config file fill the rest in their order. Credentials have no flags on purpose: a flag would show
in ``ps``.
"""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from worker import __version__
from worker.flag_help import GROUPS, HELP, LIST_HELP, LIST_SETTINGS, METAVAR, RUN_USAGE
from worker.flag_values import (
    concurrency,
    count,
    days,
    non_empty,
    page_size,
    port,
    positive_int,
    project_id,
    rate,
    share,
)
from worker.settings import (
    CONFIG_VARIABLE,
    ENV_FILE_VARIABLE,
    SECRET_FIELDS,
    Settings,
    any_case,
)
from worker.strict_parser import Parser

# Flags whose second use is refused rather than replacing the first: ``--input a --input b``
# read b alone, and the run's summary was easy to take for both files'.
ONCE = frozenset({"input"})


class Once(argparse.Action):
    """Store the value; a second one is an argument error naming both."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        before = getattr(namespace, self.dest, None)
        if before is not None:
            msg = (
                f"given twice ({before} and {values}): one input is read; join them, e.g. "
                f"cat A B | dcs-cleanup {parser.prog.split()[-1]} --input -"
            )
            raise argparse.ArgumentError(self, msg)
        setattr(namespace, self.dest, values)


def _flag_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation is bool or (args and args[0] is bool and len(args) == 1):
        return bool
    return str


def add_settings_flags(
    parser: argparse.ArgumentParser,
    only: Collection[str] | None = None,
    helps: Mapping[str, str] | None = None,
) -> None:
    """A flag for each setting (``only`` those named, if given; else in ``GROUPS``' sections),
    credentials excepted, with ``helps`` instead of ``HELP`` where the command means otherwise.
    A flag not given is not in the parsed namespace, so the environment and files still count."""
    helps = {**HELP, **(helps or {})}
    section: dict[str, Any] = {}
    if only is None:
        for title, names in GROUPS:
            group = parser.add_argument_group(title)
            section |= dict.fromkeys(names, group)
    fields = Settings.model_fields
    # ``only`` in its order; else the sections' flags in theirs, then any other setting.
    order = list(only) if only is not None else [*section, *(n for n in fields if n not in section)]
    for name in order:
        info = fields[name]
        if name in SECRET_FIELDS:
            continue
        target = section.get(name, parser)
        flag = "--" + name.replace("_", "-")
        said = info.default is None or "(default" in helps[name]  # the help says it itself
        default_note = "" if said else f" (default: {info.default})"
        kind = _flag_type(info.annotation)
        if kind is bool:
            target.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=helps[name],
            )
        else:
            choices = None
            origin_args = typing.get_args(info.annotation)
            if typing.get_origin(info.annotation) is typing.Literal:
                choices = list(origin_args)
            target.add_argument(
                flag,
                dest=name,
                default=argparse.SUPPRESS,
                type=any_case if choices else str,
                choices=choices,
                metavar=None if choices else METAVAR.get(name, "N"),
                help=helps[name] + default_note,
                action=Once if name in ONCE else "store",
            )


def add_file_flags(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--env-file``: where settings are read besides flags and environment."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        default=os.environ.get(CONFIG_VARIABLE) or None,
        help=f"TOML config file (keys are the flag names with _); env {CONFIG_VARIABLE}",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        default=os.environ.get(ENV_FILE_VARIABLE) or None,
        help=f"dotenv file to read (default: ./.env); env {ENV_FILE_VARIABLE}",
    )


def add_writer_flags(parser: argparse.ArgumentParser) -> None:
    """``--max-backlog`` and ``--progress-interval``, of the commands that write to the
    stream."""
    parser.add_argument(
        "--max-backlog",
        type=positive_int,
        default=None,
        metavar="N",
        help="wait while the stream holds this many entries, for consumers to take them "
        "(default: no limit)",
    )
    add_settings_flags(
        parser,
        ("progress_interval",),
        {"progress_interval": "seconds between two lines on standard error of how far it is"},
    )


def _add_redrive_parser(sub: Any) -> None:
    red = sub.add_parser(
        "redrive", help="put the dead-letter stream's failed entries back on the stream"
    )
    add_file_flags(red)
    red.add_argument("--queue", metavar="URL", help="redis://host:port/db")
    red.add_argument(
        "--stream",
        type=non_empty,
        metavar="NAME",
        help="the stream whose dead letters (NAME:dead) go back on it (default: dcs-cleanup:tasks)",
    )
    red.add_argument(
        "--outcome",
        action="append",
        choices=("failed", "rejected"),
        metavar="OUTCOME",
        help="dead letters of this outcome: failed (the default) or rejected (repeatable)",
    )
    red.add_argument(
        "--message", default=None, metavar="TEXT", help="message field for every entry"
    )
    red.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="put back the oldest N of them alone (a few first, to watch them go through)",
    )
    add_writer_flags(red)
    red.add_argument(
        "--dry-run",
        action="store_true",
        help="count the dead letters it would put back, by outcome and error; change nothing",
    )


def _add_list_parser(sub: Any) -> None:
    lst = sub.add_parser(
        "list", help="write the task center's task IDs (ListCenterTask), an input for run"
    )
    add_file_flags(lst)
    add_settings_flags(lst, LIST_SETTINGS, LIST_HELP)
    lst.add_argument(
        "--start-time", metavar="TIME", help="tasks created from then on: yyyyMMddHHmmss, UTC"
    )
    lst.add_argument(
        "--end-time", metavar="TIME", help="tasks created until then: yyyyMMddHHmmss, UTC"
    )
    lst.add_argument(
        "--older-than-days",
        type=days,
        metavar="DAYS",
        help="tasks created more than this many days ago",
    )
    lst.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="STATUS",
        help="only tasks in this status (repeatable)",
    )
    lst.add_argument(
        "--name", action="append", default=[], help="only tasks of this name, e.g. EXTEND"
    )
    lst.add_argument(
        "--format",
        type=any_case,
        choices=["ids", "jsonl"],
        default="ids",
        help="an ID a line, or JSON Lines",
    )
    lst.add_argument(
        "--output",
        type=Path,
        metavar="PATH",
        help="write here instead of standard output (-: standard output)",
    )
    lst.add_argument(
        "--page-size",
        type=page_size,
        default=1000,
        metavar="N",
        help="tasks a request: 1 to 1000, the API's",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dcs-cleanup",
        description="Bulk, safe, rate-limited deletion of Huawei Cloud DCS task-center tasks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="read IDs, delete them, report", usage=RUN_USAGE)
    add_file_flags(run)
    add_settings_flags(run)

    demo = sub.add_parser("demo", help="the main job against the embedded emulator")
    demo.add_argument(
        "--tasks",
        type=positive_int,
        default=3000,
        metavar="N",
        help="existing tasks to seed and delete (default: %(default)s)",
    )
    demo.add_argument(
        "--unknown",
        type=count,
        default=200,
        metavar="N",
        help="IDs that do not exist (-> absent) (default: %(default)s)",
    )
    demo.add_argument(
        "--concurrency",
        type=concurrency,
        default=32,
        metavar="N",
        help="requests in flight at most (default: %(default)s)",
    )
    demo.add_argument(
        "--rate",
        type=rate,
        default=700.0,
        metavar="R",
        help="requests per second (default: %(default)s)",
    )
    demo.add_argument(
        "--out", type=Path, default=None, metavar="PATH", help="folder for report and outcomes"
    )
    demo.add_argument(
        "--log-format",
        type=any_case,
        choices=["auto", "json", "console"],
        default="auto",
        help=HELP["log_format"],
    )

    emu = sub.add_parser("emulator", help="serve the DCS emulator on loopback")
    emu.add_argument(
        "--host", default="127.0.0.1", metavar="ADDRESS", help="loopback address to listen on"
    )
    emu.add_argument(
        "--port",
        type=port,
        default=8080,
        metavar="PORT",
        help="port to listen on (0: any free one; default: %(default)s)",
    )
    emu.add_argument(
        "--project-id",
        type=project_id,
        default="0" * 31 + "1",
        metavar="ID",
        help="project of the seeded tasks",
    )
    emu.add_argument(
        "--tasks",
        type=count,
        default=1000,
        metavar="N",
        help="tasks to seed (default: %(default)s)",
    )
    emu.add_argument(
        "--ids-out", type=Path, metavar="PATH", help="write the seeded IDs here, one a line"
    )
    emu.add_argument("--no-verify", action="store_true", help="accept unsigned requests")
    fault = emu.add_argument
    fault(
        "--error-rate",
        type=share,
        default=0.0,
        metavar="SHARE",
        help="share of requests answered 500",
    )
    fault(
        "--fail-first",
        type=count,
        default=0,
        metavar="N",
        help="the first N deletes of a task get 500",
    )
    fault(
        "--fail-first-share",
        type=share,
        default=0.0,
        metavar="SHARE",
        help="share of tasks --fail-first hits",
    )
    fault(
        "--html-502-rate",
        type=share,
        default=0.0,
        metavar="SHARE",
        help="share answered by a proxy's HTML 502",
    )
    fault(
        "--reset-rate",
        type=share,
        default=0.0,
        metavar="SHARE",
        help="share of requests whose connection is reset",
    )
    fault(
        "--quota-rate",
        type=rate,
        default=0.0,
        metavar="R",
        help="requests/s above which 429 (0: none)",
    )
    fault(
        "--quota-burst",
        type=positive_int,
        default=10,
        metavar="N",
        help="requests at once within the quota (default: %(default)s)",
    )
    fault(
        "--quota-unstated",
        action="store_true",
        help="429s say no limit (Huawei's gateway says limit:N,time:1 minute)",
    )
    fault(
        "--retry-after",
        type=rate,
        default=None,
        metavar="SECONDS",
        help="Retry-After seconds sent with a 429",
    )
    fault(
        "--latency-ms", type=rate, default=0.0, metavar="MS", help="milliseconds before each answer"
    )
    fault(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the random faults (repeatable runs)",
    )

    enq = sub.add_parser("enqueue", help="push task IDs onto the Redis stream")
    add_file_flags(enq)
    enq.add_argument("--queue", metavar="URL", help="redis://host:port/db")
    enq.add_argument(
        "--input",
        required=True,
        action=Once,
        metavar="PATH",
        help="file of task IDs (any run format); - for stdin",
    )
    enq.add_argument(
        "--stream",
        type=non_empty,
        metavar="NAME",
        help="the Redis stream to add to (default: dcs-cleanup:tasks)",
    )
    enq.add_argument(
        "--project-id", default=None, metavar="ID", help="project for lines that name none"
    )
    enq.add_argument(
        "--message", default=None, metavar="TEXT", help="message field for every entry"
    )
    enq.add_argument(
        "--id-pattern", default=None, metavar="REGEX", help="task ID allow-list (default: run's)"
    )
    enq.add_argument(
        "--from-line",
        type=positive_int,
        default=1,
        metavar="N",
        help="start at this line of the input (an enqueue that stopped part-way names it)",
    )
    add_writer_flags(enq)

    _add_redrive_parser(sub)
    _add_list_parser(sub)

    rep = sub.add_parser("report", help="re-render the report and outcomes from a journal")
    rep.add_argument(
        "--journal", type=Path, required=True, metavar="PATH", help="the journal of a run"
    )
    rep.add_argument("--report", type=Path, metavar="PATH", help="write its JSON report here")
    rep.add_argument(
        "--outcomes", type=Path, metavar="PATH", help="write one JSON line per task here"
    )
    parser.commands = sub.choices
    return parser
