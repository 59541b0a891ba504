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

HELP = {
    "input": "file of task IDs (text, CSV with task_id, JSON Lines; .gz ok); - for stdin",
    "input_format": "input format; auto: from the file name, else the first line",
    "queue": "read from a Redis stream instead: redis://host:port/db",
    "stream": "with --queue: the Redis stream to read",
    "group": "with --queue: the consumer group (created if missing)",
    "consumer": "with --queue: this consumer's name (default: hostname-pid)",
    "until_empty": "with --queue: exit once the stream is drained",
    "claim_idle": "with --queue: seconds a pending entry stays idle before others reclaim it",
    "journal_retention": "with --queue, long-running: seconds the journal keeps final outcomes "
    "(default 3600; 0: all)",
    "keep_acked": "with --queue: leave entries in the stream once acknowledged (default: trim "
    "the ones every consumer group has acknowledged)",
    "dead_letter_maxlen": "with --queue: keep the newest N entries of <stream>:dead, dropping "
    "older ones (default 0: keep all)",
    "shard": "take shard I of N, a stable hash share of the input (Indexed Jobs)",
    "shard_count": "take the shard JOB_COMPLETION_INDEX names, of N",
    "redis": "Redis URL for --shared-rate-key and --refusal-memory when the input is a file",
    "shared_rate_key": "Redis key of one rate limit shared by every replica",
    "refusal_memory": "with --queue, --redis or --refusal-file: seconds refused credentials "
    "are remembered there, so no run (a restart, another replica) sends them again; with a "
    "Redis, runs started together send their first request one at a time (0: neither)",
    "refusal_file": "without a Redis: the file where refused credentials are remembered (on a "
    "volume that outlives the pod, e.g. beside the journal)",
    "health_host": "with --queue, long-running: address of /healthz and /metrics",
    "health_port": "with --queue, long-running: port of /healthz and /metrics",
    "pushgateway": "Prometheus Pushgateway URL: push the run's metrics at the end",
    "id_pattern": "regular expression a task ID must match",
    "project_id": "default project ID (a CSV/JSONL project_id column overrides it)",
    "region": "region, e.g. cn-north-4 (endpoint https://dcs.REGION.myhuaweicloud.com)",
    "endpoint": "API endpoint URL (overrides --region)",
    "concurrency": "requests in flight at most",
    "processes": "worker processes on this machine, each a shard of the input (CPU-bound runs)",
    "rate": "requests per second for the whole run (0 = unknown: find it from 429s)",
    "burst": "requests allowed at once above the rate",
    "max_attempts": "attempts per task, the first included",
    "timeout": "seconds for one whole request (connect, headers and body)",
    "backoff_base": "seconds: retry n waits uniform(0, min(cap, base * 2^(n-1)))",
    "backoff_cap": "seconds: the longest backoff between two attempts",
    "max_retry_after": "seconds: the longest Retry-After honoured",
    "adaptive": "adapt the rate to throttling (default: on with --rate 0; with R, a ceiling)",
    "grace": "seconds in-flight requests get after SIGTERM/SIGINT or the deadline",
    "deadline": "stop by then: seconds or a duration from start (3300, 45m, 1h30m), or an "
    "ISO-8601 timestamp",
    "max_deletes": "safety guard: abort (exit 3) before deleting more than this many tasks",
    "retry_budget": "retries the whole run may spend beyond first attempts (refilled by successes)",
    "retry_refund": "retry tokens each success adds back to the budget",
    "breaker_window": "answers the circuit breaker looks back over",
    "breaker_threshold": "share of failed answers in the window that opens the breaker",
    "forbidden_limit": "abort (exit 3) after this many HTTP 403 answers in a row (0: never)",
    "retry_failed": "re-attempt the journal's failed/not_attempted tasks (not with --input)",
    "journal": "SQLite journal: a re-run skips tasks already deleted",
    "report": "write the JSON report here",
    "outcomes": "append one JSON line per task here",
    "dry_run": "validate input, credentials and endpoint; send no DELETE",
    "message": "optional message body sent with each DELETE",
    "log_level": "the least severe level logged",
    "log_format": "auto: console on a terminal, JSON lines otherwise",
    "progress": "auto: a bar on a terminal, else a log line every --progress-interval",
    "progress_interval": "seconds between progress log lines",
}


# ``run --help`` in sections, in the order an operator thinks of them, each flag with a
# placeholder that says what it takes. Every setting but the credentials is in one section.
GROUPS = (
    ("what to delete", ("input", "input_format", "id_pattern", "shard", "shard_count",
                        "retry_failed", "dry_run", "message")),
    ("where", ("project_id", "region", "endpoint")),
    ("how fast", ("concurrency", "processes", "rate", "burst", "adaptive", "max_attempts",
                  "timeout", "backoff_base", "backoff_cap", "max_retry_after")),
    ("stopping and guards", ("grace", "deadline", "max_deletes", "retry_budget", "retry_refund",
                             "breaker_window", "breaker_threshold", "forbidden_limit")),
    ("records, logs and metrics", ("journal", "report", "outcomes", "log_level", "log_format",
                                   "progress", "progress_interval", "pushgateway")),
    ("queue consumers (--queue)", ("queue", "stream", "group", "consumer", "until_empty",
                                   "claim_idle", "keep_acked", "dead_letter_maxlen",
                                   "journal_retention", "health_host", "health_port")),
    ("shared by runs and replicas", ("redis", "shared_rate_key", "refusal_memory",
                                     "refusal_file")),
)  # fmt: skip
METAVAR = {
    "input": "PATH", "journal": "PATH", "report": "PATH", "outcomes": "PATH",
    "refusal_file": "PATH",
    "queue": "URL", "redis": "URL", "endpoint": "URL", "pushgateway": "URL",
    "id_pattern": "REGEX", "shard": "I/N", "message": "TEXT", "project_id": "ID",
    "region": "NAME", "stream": "NAME", "group": "NAME", "consumer": "NAME",
    "shared_rate_key": "KEY", "health_host": "ADDRESS", "health_port": "PORT",
    "rate": "R", "retry_refund": "R", "breaker_threshold": "SHARE", "deadline": "WHEN",
    "timeout": "SECONDS", "backoff_base": "SECONDS", "backoff_cap": "SECONDS",
    "max_retry_after": "SECONDS", "grace": "SECONDS", "progress_interval": "SECONDS",
    "claim_idle": "SECONDS", "journal_retention": "SECONDS", "refusal_memory": "SECONDS",
}  # fmt: skip
RUN_USAGE = (
    "%(prog)s (--input PATH | --queue URL | --retry-failed --journal PATH)\n"
    "       [--project-id ID] [--region NAME | --endpoint URL] [options]"
)


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


# The settings ``list`` takes as flags (the rest from the environment and files, as for run).
LIST_SETTINGS = (
    "project_id",
    "region",
    "endpoint",
    "timeout",
    "max_attempts",
    "log_level",
    "log_format",
    "refusal_memory",
    "refusal_file",
)
# Where ``list`` means otherwise than ``run``: a project has no CSV column, a page no task.
LIST_HELP = {
    "project_id": "the project whose tasks are listed",
    "max_attempts": "attempts per page request, the first included",
}


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
    parser = argparse.ArgumentParser(
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
        "--tasks", type=positive_int, default=3000, help="existing tasks to seed and delete"
    )
    demo.add_argument(
        "--unknown", type=count, default=200, help="IDs that do not exist (-> absent)"
    )
    demo.add_argument(
        "--concurrency", type=concurrency, default=32, help="requests in flight at most"
    )
    demo.add_argument("--rate", type=rate, default=700.0, help="requests per second")
    demo.add_argument("--out", type=Path, default=None, help="folder for report and outcomes")
    demo.add_argument(
        "--log-format",
        type=any_case,
        choices=["auto", "json", "console"],
        default="auto",
        help=HELP["log_format"],
    )

    emu = sub.add_parser("emulator", help="serve the DCS emulator on loopback")
    emu.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    emu.add_argument("--port", type=port, default=8080, help="port to listen on (0: any free one)")
    emu.add_argument(
        "--project-id", type=project_id, default="0" * 31 + "1", help="project of the seeded tasks"
    )
    emu.add_argument("--tasks", type=count, default=1000, help="tasks to seed")
    emu.add_argument("--ids-out", type=Path, help="write the seeded IDs here, one a line")
    emu.add_argument("--no-verify", action="store_true", help="accept unsigned requests")
    fault = emu.add_argument
    fault("--error-rate", type=share, default=0.0, help="share of requests answered 500")
    fault("--fail-first", type=count, default=0, help="the first N deletes of a task get 500")
    fault("--fail-first-share", type=share, default=0.0, help="share of tasks --fail-first hits")
    fault("--html-502-rate", type=share, default=0.0, help="share answered by a proxy's HTML 502")
    fault(
        "--reset-rate", type=share, default=0.0, help="share of requests whose connection is reset"
    )
    fault("--quota-rate", type=rate, default=0.0, help="requests/s above which 429 (0: none)")
    fault("--quota-burst", type=positive_int, default=10, help="requests at once within the quota")
    fault("--retry-after", type=rate, default=None, help="Retry-After seconds sent with a 429")
    fault("--latency-ms", type=rate, default=0.0, help="milliseconds before each answer")
    fault("--seed", type=int, default=0, help="seed of the random faults (repeatable runs)")

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
    enq.add_argument(
        "--max-backlog",
        type=positive_int,
        default=None,
        metavar="N",
        help="wait while the stream holds this many entries, for consumers to take them "
        "(default: no limit)",
    )

    _add_list_parser(sub)

    rep = sub.add_parser("report", help="re-render the report and outcomes from a journal")
    rep.add_argument(
        "--journal", type=Path, required=True, metavar="PATH", help="the journal of a run"
    )
    rep.add_argument("--report", type=Path, metavar="PATH", help="write its JSON report here")
    rep.add_argument(
        "--outcomes", type=Path, metavar="PATH", help="write one JSON line per task here"
    )
    return parser
