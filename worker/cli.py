"""``dcs-cleanup``: run, demo, emulator, report.

Flags of ``run`` are generated from the settings' fields (``max_attempts`` -> ``--max-attempts``)
and only flags actually given are passed on, so the environment, ``.env`` and the config file fill
the rest in their order. Credentials have no flags on purpose: a flag would show in ``ps``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import random
import signal
import sys
import tempfile
import time
import typing
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio
import anyio.abc
from pydantic import SecretStr

from worker import __version__
from worker.errors import CleanupError, ConfigError, InputError, JournalError
from worker.pipeline import EXIT_ABORTED, EXIT_INTERRUPTED, EXIT_USAGE
from worker.settings import (
    CONFIG_VARIABLE,
    ENV_FILE_VARIABLE,
    SECRET_FIELDS,
    Settings,
    load_settings,
    redact_url,
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
    "shard": "I/N: take shard I of N, a stable hash share of the input (Indexed Jobs)",
    "shard_count": "N: take the shard JOB_COMPLETION_INDEX names, of N",
    "redis": "Redis URL for --shared-rate-key when the input is a file",
    "shared_rate_key": "Redis key of one rate limit shared by every replica",
    "health_host": "with --queue: address of /healthz and /metrics",
    "health_port": "with --queue: port of /healthz and /metrics",
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


def _flag_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if annotation is bool or (args and args[0] is bool and len(args) == 1):
        return bool
    return str


def add_settings_flags(
    parser: argparse.ArgumentParser, only: Collection[str] | None = None
) -> None:
    """A flag for each setting (``only`` those named, if given), credentials excepted. A flag
    not given is not in the parsed namespace, so the environment and files still count."""
    for name, info in Settings.model_fields.items():
        if name in SECRET_FIELDS or (only is not None and name not in only):
            continue
        flag = "--" + name.replace("_", "-")
        default_note = "" if info.default is None else f" (default: {info.default})"
        kind = _flag_type(info.annotation)
        if kind is bool:
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=HELP[name],
            )
        else:
            choices = None
            origin_args = typing.get_args(info.annotation)
            if typing.get_origin(info.annotation) is typing.Literal:
                choices = list(origin_args)
            parser.add_argument(
                flag,
                dest=name,
                default=argparse.SUPPRESS,
                choices=choices,
                help=HELP[name] + default_note,
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
)


def add_file_flags(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--env-file``: where settings are read besides flags and environment."""
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get(CONFIG_VARIABLE),
        help=f"TOML config file (keys are the flag names with _); env {CONFIG_VARIABLE}",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=os.environ.get(ENV_FILE_VARIABLE),
        help=f"dotenv file to read (default: ./.env); env {ENV_FILE_VARIABLE}",
    )


def _add_list_parser(sub: Any) -> None:
    lst = sub.add_parser(
        "list", help="write the task center's task IDs (ListCenterTask), an input for run"
    )
    add_file_flags(lst)
    add_settings_flags(lst, LIST_SETTINGS)
    lst.add_argument("--start-time", help="tasks created from then on: yyyyMMddHHmmss, UTC")
    lst.add_argument("--end-time", help="tasks created until then: yyyyMMddHHmmss, UTC")
    lst.add_argument(
        "--older-than-days", type=float, help="tasks created more than this many days ago"
    )
    lst.add_argument(
        "--status", action="append", default=[], help="only tasks in this status (repeatable)"
    )
    lst.add_argument(
        "--name", action="append", default=[], help="only tasks of this name, e.g. EXTEND"
    )
    lst.add_argument(
        "--format", choices=["ids", "jsonl"], default="ids", help="an ID a line, or JSON Lines"
    )
    lst.add_argument("--output", type=Path, help="write here instead of standard output")
    lst.add_argument("--page-size", type=_positive_int, default=1000, help="tasks a request")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dcs-cleanup",
        description="Bulk, safe, rate-limited deletion of Huawei Cloud DCS task-center tasks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="read IDs, delete them, report")
    add_file_flags(run)
    add_settings_flags(run)

    demo = sub.add_parser("demo", help="the main job against the embedded emulator")
    demo.add_argument("--tasks", type=int, default=3000, help="existing tasks to seed and delete")
    demo.add_argument("--unknown", type=int, default=200, help="IDs that do not exist (-> absent)")
    demo.add_argument("--concurrency", type=int, default=32, help="requests in flight at most")
    demo.add_argument("--rate", type=float, default=700.0, help="requests per second")
    demo.add_argument("--out", type=Path, default=None, help="folder for report and outcomes")
    demo.add_argument(
        "--log-format", choices=["auto", "json", "console"], default="auto", help=HELP["log_format"]
    )

    emu = sub.add_parser("emulator", help="serve the DCS emulator on loopback")
    emu.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    emu.add_argument("--port", type=int, default=8080, help="port to listen on")
    emu.add_argument("--project-id", default="0" * 31 + "1", help="project of the seeded tasks")
    emu.add_argument("--tasks", type=int, default=1000, help="tasks to seed")
    emu.add_argument("--ids-out", type=Path, help="write the seeded IDs here, one a line")
    emu.add_argument("--no-verify", action="store_true", help="accept unsigned requests")
    fault = emu.add_argument
    fault("--error-rate", type=float, default=0.0, help="share of requests answered 500")
    fault("--fail-first", type=int, default=0, help="the first N deletes of a task get 500")
    fault("--fail-first-share", type=float, default=0.0, help="share of tasks --fail-first hits")
    fault("--html-502-rate", type=float, default=0.0, help="share answered by a proxy's HTML 502")
    fault(
        "--reset-rate", type=float, default=0.0, help="share of requests whose connection is reset"
    )
    fault("--quota-rate", type=float, default=0.0, help="requests/s above which 429 (0: none)")
    fault("--quota-burst", type=int, default=10, help="requests at once within the quota")
    fault("--retry-after", type=float, default=None, help="Retry-After seconds sent with a 429")
    fault("--latency-ms", type=float, default=0.0, help="milliseconds before each answer")
    fault("--seed", type=int, default=0, help="seed of the random faults (repeatable runs)")

    enq = sub.add_parser("enqueue", help="push task IDs onto the Redis stream")
    enq.add_argument("--queue", required=True, help="redis://host:port/db")
    enq.add_argument(
        "--input", required=True, help="file of task IDs (any run format); - for stdin"
    )
    enq.add_argument("--stream", default="dcs-cleanup:tasks", help="the Redis stream to add to")
    enq.add_argument("--project-id", default=None, help="project for lines that name none")
    enq.add_argument("--message", default=None, help="message field for every entry")
    enq.add_argument("--id-pattern", default=None, help="task ID allow-list (default: run's)")
    enq.add_argument(
        "--from-line",
        type=_positive_int,
        default=1,
        help="start at this line of the input (an enqueue that stopped part-way names it)",
    )
    enq.add_argument(
        "--max-backlog",
        type=_positive_int,
        default=None,
        help="wait while the stream holds this many entries, for consumers to take them "
        "(default: no limit)",
    )

    _add_list_parser(sub)

    rep = sub.add_parser("report", help="re-render the report and outcomes from a journal")
    rep.add_argument("--journal", type=Path, required=True, help="the journal of a run")
    rep.add_argument("--report", type=Path, help="write its JSON report here")
    rep.add_argument("--outcomes", type=Path, help="write one JSON line per task here")
    return parser


def _run_async(fn: Any, *args: Any) -> int:
    options: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401

        options["use_uvloop"] = True
    except ImportError:
        pass
    result: int = anyio.run(fn, *args, backend="asyncio", backend_options=options)
    return result


def _tune_gc() -> None:
    """Fewer cyclic-GC passes on the hot path: every request allocates dozens of objects, and
    with the default threshold (700) the collector ran every few tasks. The objects of the
    imports are frozen out of its scans. Memory stays flat (the benchmark's RSS rows show it);
    40,000 tasks against nginx take ~8% less CPU."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _settings_and_logs(args: argparse.Namespace, log_stream: TextIO | None = None) -> Settings:
    """The settings a command's flags give (with the environment, ``.env`` and ``--config``),
    and its logging configured from them, every credential masked."""
    from worker.logs import configure_logging

    flags = {
        k: v for k, v in vars(args).items() if k in Settings.model_fields and k not in SECRET_FIELDS
    }
    settings = load_settings(flags, args.config, args.env_file)
    secrets = [
        s.get_secret_value() for s in (settings.ak, settings.sk, settings.security_token) if s
    ]
    configure_logging(settings.log_level, settings.log_format, secrets, stream=log_stream)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from worker.runner import execute

    settings = _settings_and_logs(args)
    _tune_gc()
    if settings.processes > 1:
        from worker.processes import Part, run_processes

        def run_child(child: Settings, part: Part) -> int:
            return _run_async(functools.partial(execute, part=part), child)

        return run_processes(settings, run_child)
    return _run_async(execute, settings)


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.emulator import EmulatorServer, EmulatorState, Faults
    from worker.emulator.app import DEMO_AK, DEMO_SK
    from worker.logs import configure_logging
    from worker.runner import execute

    project = "0" * 31 + "1"
    state = EmulatorState()
    ids = state.seed_tasks(project, args.tasks)
    rng = random.Random(7)
    ids += [f"{rng.getrandbits(128):032x}" for _ in range(args.unknown)]
    rng.shuffle(ids)
    state.set_faults(
        Faults(
            error_rate=0.02,
            fail_first=1,
            fail_first_share=0.05,
            html_502_rate=0.01,
            quota_rate=600.0,
            quota_burst=60,
            retry_after=1.0,
            latency_ms=2.0,
            latency_jitter_ms=8.0,
            seed=1,
        )
    )
    out = args.out or Path(tempfile.mkdtemp(prefix="dcs-cleanup-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    input_path = out / "task_ids.txt"
    lines = ["# demo input: existing tasks, already-deleted IDs and a few bad lines", *ids]
    lines[len(lines) // 2 : len(lines) // 2] = ["../instances/x", "abc?x=1", ids[0]]
    input_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    configure_logging("info", args.log_format, [DEMO_SK])
    with EmulatorServer(state) as emu:
        print(
            f"demo: emulator at {emu.url} with {args.tasks} tasks; "
            f"{len(lines) - 1} input lines in {input_path}",
            file=sys.stderr,
        )
        settings = Settings(
            input=str(input_path),
            project_id=project,
            endpoint=emu.url,
            concurrency=args.concurrency,
            rate=args.rate,
            burst=50,
            max_attempts=8,
            timeout=10.0,
            backoff_base=0.05,
            journal=out / "journal.sqlite",
            report=out / "report.json",
            outcomes=out / "outcomes.jsonl",
            ak=SecretStr(DEMO_AK),
            sk=SecretStr(DEMO_SK),
            log_format=args.log_format,
            _env_file=None,  # type: ignore[call-arg]
        )
        code = _run_async(execute, settings)
        print(
            f"demo: emulator deleted {sum(state.deleted.values())} of {args.tasks}; "
            f"{state.remaining()} left. Report: {out / 'report.json'}; "
            f"outcomes: {out / 'outcomes.jsonl'}",
            file=sys.stderr,
        )
    return code


def cmd_emulator(args: argparse.Namespace) -> int:
    from worker.emulator import EmulatorState, Faults
    from worker.emulator.app import DEMO_AK
    from worker.emulator.server import serve_forever
    from worker.settings import is_loopback

    if not is_loopback(args.host):
        raise ConfigError(f"--host {args.host}: the emulator serves loopback addresses only")
    state = EmulatorState(verify_signatures=not args.no_verify)
    ak = os.environ.get("CLOUD_SDK_AK")
    sk = os.environ.get("CLOUD_SDK_SK")
    if ak and sk:
        state.credentials = {ak: sk}
    ids = state.seed_tasks(args.project_id, args.tasks)
    if args.ids_out:
        args.ids_out.write_text("\n".join(ids) + "\n", encoding="utf-8")
    state.set_faults(
        Faults(
            error_rate=args.error_rate,
            fail_first=args.fail_first,
            fail_first_share=args.fail_first_share,
            html_502_rate=args.html_502_rate,
            reset_rate=args.reset_rate,
            quota_rate=args.quota_rate,
            quota_burst=args.quota_burst,
            retry_after=args.retry_after,
            latency_ms=args.latency_ms,
            seed=args.seed,
        )
    )
    creds = (
        "CLOUD_SDK_AK/CLOUD_SDK_SK from the environment"
        if ak and sk
        else f"AK {DEMO_AK} and the demo SK"
    )
    print(
        f"emulator: http://{args.host}:{args.port} project {args.project_id}, {args.tasks} tasks, "
        f"signatures {'off' if args.no_verify else 'checked with ' + creds}",
        file=sys.stderr,
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(state, args.host, args.port))
    return 0


async def _stop_on_signal(
    scope: anyio.CancelScope,
    stopped_by: list[str],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``scope`` at SIGTERM, SIGINT or SIGHUP, naming the signal in ``stopped_by``."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            stopped_by.append(signal.Signals(signum).name)
            scope.cancel()
            return


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {value}")
    return value


def cmd_enqueue(args: argparse.Namespace) -> int:
    """Validate IDs like ``run`` does, then XADD them in pipelined batches."""
    from worker import enqueue, queue
    from worker.files import FileSource
    from worker.settings import DEFAULT_ID_PATTERN
    from worker.sources import IdValidator

    flags = {"queue": args.queue, "project_id": args.project_id}
    # A flag not given must not hide its DCS_CLEANUP_* variable.
    settings = load_settings({k: v for k, v in flags.items() if v is not None})
    if args.input != "-" and not Path(args.input).exists():
        raise ConfigError(f"--input {args.input}: no such file")
    source = FileSource(
        args.input, settings.project_id, IdValidator(args.id_pattern or DEFAULT_ID_PATTERN)
    )

    told = [float("-inf")]

    def waiting(length: int) -> None:
        if time.monotonic() - told[0] < 60:  # once a minute at most
            return
        told[0] = time.monotonic()
        print(
            f"dcs-cleanup: {args.stream} holds {length} entries (--max-backlog "
            f"{args.max_backlog}); waiting for consumers to take them",
            file=sys.stderr,
        )

    async def go() -> int:
        client = queue.connect(args.queue)
        done = enqueue.Enqueued(next_line=args.from_line)
        stopped_by: list[str] = []
        finished = False
        try:
            async with anyio.create_task_group() as group:
                await group.start(_stop_on_signal, group.cancel_scope, stopped_by)
                await enqueue.enqueue(
                    client,
                    args.stream,
                    source.batches(),
                    done,
                    message=args.message,
                    max_backlog=args.max_backlog or 0,
                    waiting=waiting,
                )
                finished = True
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()
                await source.aclose()
        for result in done.shown:
            print(f"dcs-cleanup: skipped {result.error_msg}", file=sys.stderr)
        if done.bad > len(done.shown):
            print(f"dcs-cleanup: ... and {done.bad - len(done.shown)} more", file=sys.stderr)
        print(
            f"enqueued {done.added} task(s) on {args.stream}; {done.bad} bad line(s) skipped",
            file=sys.stderr,
        )
        interrupted = bool(stopped_by) and not finished
        if interrupted:
            done.stopped_at, done.error = done.next_line, f"interrupted by {stopped_by[0]}"
        if done.stopped_at is None:
            return 1 if done.bad else 0
        where = f"--queue {redact_url(args.queue)}: stopped at line {done.stopped_at}"
        error = (done.error or "")[:400]
        if not done.added:
            print(f"dcs-cleanup: {where}: {error}; nothing was added", file=sys.stderr)
        else:
            print(
                f"dcs-cleanup: {where} of {args.input}: {error}; the tasks before it are on "
                f"the stream: go on with --from-line {done.stopped_at}",
                file=sys.stderr,
            )
        if interrupted:
            return EXIT_INTERRUPTED
        return EXIT_ABORTED if done.added else EXIT_USAGE

    from redis.exceptions import RedisError

    try:
        return _run_async(go)
    except (OSError, RedisError) as exc:
        raise ConfigError(f"--queue {redact_url(args.queue)}: {exc}") from None


def cmd_list(args: argparse.Namespace) -> int:
    """Page through ListCenterTask and write the tasks that match."""
    from worker.listing import end_time_for, list_tasks
    from worker.runner import credentials_from
    from worker.signer import Signer

    settings = _settings_and_logs(args, sys.stderr)  # standard output is the list
    end_time = args.end_time
    if args.older_than_days is not None:
        if end_time is not None:
            raise ConfigError("give --end-time or --older-than-days, not both")
        end_time = end_time_for(args.older_than_days)
    signer = Signer(credentials_from(settings))
    go = functools.partial(
        list_tasks,
        settings,
        signer,
        fmt=args.format,
        statuses=args.status,
        names=args.name,
        start_time=args.start_time,
        end_time=end_time,
        page_size=args.page_size,
    )
    if args.output is None:
        return _run_async(go, sys.stdout)
    from worker.report import written_in_place

    # Written beside it and renamed onto it at the end, so a list that stopped part-way is never
    # left where the whole one is expected; a FIFO or device in place (the exit code tells).
    in_place = written_in_place(args.output)
    target = (
        args.output
        if in_place
        else args.output.with_name(f".{args.output.name}.{os.getpid()}.partial")
    )
    try:
        out = target.open("w", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--output {args.output}: cannot write it: {exc.strerror}") from None
    try:
        with out:
            code = _run_async(go, out)
        if code == 0 and not in_place:
            target.replace(args.output)
        return code
    finally:
        if not in_place:
            target.unlink(missing_ok=True)


def cmd_report(args: argparse.Namespace) -> int:
    from worker.journal import Journal
    from worker.report import OutcomeWriter, RunStats, summary_table, write_report

    if not args.journal.exists():
        raise ConfigError(f"--journal {args.journal}: no such file")
    journal = Journal(args.journal, "report", reader=True)
    stats = RunStats()
    writer = OutcomeWriter(args.outcomes)
    try:
        batch = []
        for result in journal.results():
            batch.append(result)
            if len(batch) >= 1000:
                stats.on_results(batch)
                writer.write(batch)
                batch = []
        stats.on_results(batch)
        writer.write(batch)
    finally:
        writer.close()
        journal.close()
    failures = stats.outcomes["rejected"] + stats.outcomes["failed"]
    unfinished = stats.outcomes["not_attempted"]
    code = 1 if failures else (4 if unfinished else 0)
    report = stats.build_report(
        run_id="journal", settings={"journal": str(args.journal)}, exit_code=code, stop_reason=None
    )
    if args.report:
        write_report(args.report, report)
    else:
        print(json.dumps(report, indent=2))
    print(summary_table(report), file=sys.stderr)
    return 0


COMMANDS = {
    "run": cmd_run,
    "demo": cmd_demo,
    "emulator": cmd_emulator,
    "enqueue": cmd_enqueue,
    "list": cmd_list,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, InputError) as exc:
        print(f"dcs-cleanup: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JournalError as exc:
        print(f"dcs-cleanup: {exc}", file=sys.stderr)
        return EXIT_ABORTED
    except CleanupError as exc:
        print(f"dcs-cleanup: {exc}", file=sys.stderr)
        return EXIT_ABORTED


def entrypoint() -> None:
    sys.exit(main())


__all__ = ["entrypoint", "main"]
