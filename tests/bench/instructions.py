"""Instructions per task under callgrind: deterministic where CPU time on a shared machine is not.

Not part of the test run. Each program runs twice under ``valgrind --tool=callgrind`` against a
loopback nginx, with 1 task and with N tasks; (instructions(N) - instructions(1)) / (N - 1) is
its cost per task with start-up taken out (for ``--processes 2``, every process's count summed).
Usage, from the project root (about 4 minutes):

    uv run python tests/bench/instructions.py [N]       # N defaults to 4000

Needs ``apt-get install nginx-light valgrind``. Crypto counts run higher than natively (valgrind
does not take OpenSSL's SHA extensions path); compare programs, not absolute numbers.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root
from tests.bench.bench import ids_file, loopback_nginx, program_cmd, run_under


def instructions(cmd: list[str], folder: Path) -> int:
    out = folder / "callgrind.out"
    said = run_under(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"], cmd)
    # One count per process: callgrind follows fork(), and a child's count starts from its
    # parent's at the fork; the 1-task run, subtracted, takes that start-up out again.
    found = re.findall(r"Collected : (\d+)", said)
    if not found:
        raise SystemExit(f"{cmd[:4]}: no instruction count\n{said[-2000:]}")
    return sum(int(count) for count in found)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    programs = {
        "bare aiohttp, asyncio loop": "bare",
        "bare aiohttp, uvloop": "bare_uvloop",
        "worker: signed, journal, outcomes, report": "worker",
        "the same, --processes 2 (all processes)": "worker_2",
    }
    with loopback_nginx("dcs-instr-") as (folder, url):
        print(f"{'program':<44} {'instructions a task':>20}")
        for name, kind in programs.items():
            one = instructions(program_cmd(kind, url, ids_file(folder, 1), folder), folder)
            many = instructions(program_cmd(kind, url, ids_file(folder, n), folder), folder)
            print(f"{name:<44} {(many - one) / (n - 1):>20,.0f}")


if __name__ == "__main__":
    main()
