"""Python bytecodes per task, by package and by function: where a task's interpreted work goes.

Not part of the test run. ``instructions.py`` counts machine instructions per shared object, so
all interpreted code is one "libpython" line; this counts the bytecodes each Python function runs
(``sys.settrace`` with ``f_trace_opcodes``), for the worker and for the bare aiohttp script, each
with N tasks and with 1 task, the 1-task run subtracted. Code in C (uvloop, aiohttp's parser and
header writer, sqlite, OpenSSL, orjson) runs no bytecodes and is not counted. Usage, from the
project root (about 2 minutes; tracing makes each run some 50 times slower):

    uv run python tests/bench/opcodes.py [N]       # N defaults to 2001
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root
from tests.bench.bench import AK, SK, ids_file, loopback_nginx, program_cmd

Key = tuple[str, int, str]  # file, first line, function

# Run as ``python opcodes.py --trace OUT CMD...``: trace CMD (``-m module ...`` or a script) in
# this process and write its counts to OUT.
TRACER = "--trace"


def trace(out: str, argv: list[str]) -> None:
    import runpy
    import threading
    from types import FrameType
    from typing import Any

    counts: collections.Counter[Key] = collections.Counter()

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            counts[(code.co_filename, code.co_firstlineno, code.co_name)] += 1
        return local

    def start(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return local

    sys.argv = argv
    sys.settrace(start)
    threading.settrace(start)
    try:
        if argv[0] == "-m":
            sys.argv = argv[1:]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit:
        pass
    finally:
        sys.settrace(None)
        Path(out).write_text(json.dumps([[*key, n] for key, n in counts.items()]))


def counted(cmd: list[str], out: Path) -> collections.Counter[Key]:
    """Bytecodes by function of ``cmd`` (``[python, ...]``) run under the tracer."""
    subprocess.run(
        [cmd[0], __file__, TRACER, str(out), *cmd[1:]],
        env={**os.environ, "CLOUD_SDK_AK": AK, "CLOUD_SDK_SK": SK},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    counts: collections.Counter[Key] = collections.Counter()
    for file, line, name, n in json.loads(out.read_text()):
        counts[(file, line, name)] += n
    return counts


def where(file: str) -> str:
    """``aiohttp/client.py``, ``worker/pipeline.py``, ``asyncio/base_events.py``."""
    if "site-packages/" in file:
        return file.rsplit("site-packages/", maxsplit=1)[-1]
    if "/worker/" in file:
        return "worker/" + file.rsplit("/worker/", maxsplit=1)[-1]
    return "/".join(file.split("/")[-2:])


def package(file: str) -> str:
    """An installed package by its name (``aiohttp``), any other code by its file."""
    if "site-packages/" in file:
        return where(file).split("/", maxsplit=1)[0]
    return where(file)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2001
    with loopback_nginx("dcs-opcodes-", 18081) as (folder, url):
        for kind in ("worker", "bare"):
            runs: dict[int, collections.Counter[Key]] = {}
            for count in (n, 1):
                ids = ids_file(folder, count)
                cmd = program_cmd(kind, url, ids, folder)
                runs[count] = counted(cmd, folder / f"{kind}-{count}.json")
            per = {k: (v - runs[1].get(k, 0)) / (n - 1) for k, v in runs[n].items()}
            by_package: dict[str, float] = collections.defaultdict(float)
            for (file, _, _), value in per.items():
                by_package[package(file)] += value
            label = "worker: signed, journal, outcomes, report" if kind == "worker" else (
                "bare aiohttp, asyncio loop"
            )  # fmt: skip
            print(f"{label}: {sum(per.values()):,.0f} bytecodes a task")
            for name, value in sorted(by_package.items(), key=lambda kv: -kv[1])[:12]:
                print(f"  {value:8,.0f}  {name}")
            print("  the functions that run the most:")
            for (file, line, name), value in sorted(per.items(), key=lambda kv: -kv[1])[:12]:
                print(f"  {value:8,.0f}  {where(file)}:{line} {name}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == TRACER:
        trace(sys.argv[2], sys.argv[3:])
    else:
        main()
