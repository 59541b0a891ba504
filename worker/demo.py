"""The commands that need no cloud account: ``demo`` (the embedded emulator, with tasks and
realistic faults, and the real pipeline run against it) and ``emulator`` (the emulator served on
loopback for trials by hand and other tools' tests)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
from pathlib import Path

from pydantic import SecretStr

from worker.errors import ConfigError
from worker.settings import Settings


def cmd_demo(args: argparse.Namespace) -> int:
    """``dcs-cleanup demo``: the emulator with tasks and faults, and a real run against it."""
    from worker.commands import run_async
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
    input_path = out / "task_ids.txt"
    lines = ["# demo input: existing tasks, already-deleted IDs and a few bad lines", *ids]
    lines[len(lines) // 2 : len(lines) // 2] = ["../instances/x", "abc?x=1", ids[0]]
    try:
        out.mkdir(parents=True, exist_ok=True)
        input_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"--out {out}: cannot write the demo's files there: {exc.strerror or exc}"
        ) from None
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
        code = run_async(execute, settings)
        print(
            f"demo: emulator deleted {sum(state.deleted.values())} of {args.tasks}; "
            f"{state.remaining()} left. Report: {out / 'report.json'}; "
            f"outcomes: {out / 'outcomes.jsonl'}",
            file=sys.stderr,
        )
    return code


def cmd_emulator(args: argparse.Namespace) -> int:
    """``dcs-cleanup emulator``: the emulator served on loopback until a signal."""
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
        try:
            args.ids_out.write_text("\n".join(ids) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"--ids-out {args.ids_out}: cannot write it: {exc.strerror or exc}"
            ) from None
    state.set_faults(
        Faults(
            error_rate=args.error_rate,
            fail_first=args.fail_first,
            fail_first_share=args.fail_first_share,
            html_502_rate=args.html_502_rate,
            reset_rate=args.reset_rate,
            quota_rate=args.quota_rate,
            quota_burst=args.quota_burst,
            quota_unstated=args.quota_unstated,
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
    signatures = "off" if args.no_verify else "checked with " + creds

    def ready(port: int) -> None:
        print(
            f"emulator: http://{args.host}:{port} project {args.project_id}, "
            f"{args.tasks} tasks, signatures {signatures}",
            file=sys.stderr,
            flush=True,
        )

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_forever(state, args.host, args.port, ready))
    except OSError as exc:
        where = f"{args.host}:{args.port}"
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"--port {args.port}: cannot listen on {where}: {why}") from None
    return 0
