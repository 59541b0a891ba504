"""CPU time per task by library, natively: where the worker's CPU goes beside the bare script's.

Not part of the test run. ``instructions.py`` counts under valgrind, which does not take
OpenSSL's SHA extensions path and counts no system time; this samples real runs with
``perf record -e cpu-clock`` (a software clock: it works in a VM without hardware counters) and
splits the samples by shared object. Each program runs with N tasks and with 1 task against a
loopback nginx; (time(N) - time(1)) / (N - 1) is its cost per task with start-up taken out.
Sampling and a shared machine make each figure noisy by a few microseconds. Usage, from the
project root (about 1 minute):

    uv run python tests/bench/libraries.py [N]       # N defaults to 40000

Needs ``apt-get install nginx-light linux-perf`` and ``kernel.perf_event_paranoid`` <= 2.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root
from tests.bench.bench import ids_file, loopback_nginx, program_cmd, run_under

HZ = 4000  # samples a second of CPU: one every 250 microseconds


def samples(cmd: list[str], folder: Path) -> collections.Counter[str]:
    """CPU samples of ``cmd`` (and its children) by shared object."""
    data = folder / "perf.data"
    run_under(
        ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(HZ), "-o", str(data), "--"], cmd
    )
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    counts: collections.Counter[str] = collections.Counter()
    for line in report.splitlines():
        found = re.match(r"\s*[\d.]+%\s+(\d+)\s+(\S+)", line)
        if found:  # libpython3.11.so.1.0, _multidict.cpython-311-x86_64-linux-gnu.so: short
            counts[re.split(r"\.cpython|\.so", found.group(2))[0]] += int(found.group(1))
    return counts


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40000
    if shutil.which("perf") is None:
        raise SystemExit("perf is needed: apt-get install linux-perf")
    programs = {"worker": "worker", "bare": "bare", "bare uvloop": "bare_uvloop"}  # label: kind
    per_task: dict[str, dict[str, float]] = {}
    with loopback_nginx("dcs-libs-") as (folder, url):
        for name, kind in programs.items():
            one = samples(program_cmd(kind, url, ids_file(folder, 1), folder), folder)
            many = samples(program_cmd(kind, url, ids_file(folder, n), folder), folder)
            per_task[name] = {
                lib: (many[lib] - one[lib]) * 1e6 / HZ / (n - 1) for lib in many | one
            }
    worker = per_task["worker"]
    libs = sorted(worker, key=lambda lib: -worker[lib])[:12]
    print(f"CPU microseconds a task, {n:,} tasks minus 1 (perf record -e cpu-clock, {HZ} Hz)")
    print(f"{'library':<24}" + "".join(f"{name:>13}" for name in programs) + "  worker - bare")
    for lib in [*libs, "total"]:
        values = [
            sum(row.values()) if lib == "total" else row.get(lib, 0.0) for row in per_task.values()
        ]
        print(
            f"{lib:<24}" + "".join(f"{v:13.1f}" for v in values) + f"{values[0] - values[1]:15.1f}"
        )


if __name__ == "__main__":
    main()
