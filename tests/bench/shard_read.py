"""Reading cost of a sharded input: what ``--processes N`` spends on the input, as a table.

Not part of the test run. With ``--processes N`` every child reads the whole input file and keeps
its shard, so the input is read N times over. This measures the file source alone (no network):
every shard of N reading a file of random task IDs, per input line, in CPU time (40,000 lines,
the best of seven: the least disturbed by the machine's other work) and, with ``--instructions``,
in instructions under callgrind (10,000 lines minus 1; deterministic, where CPU time on a shared
machine is not). Usage, from the project root:

    uv run python tests/bench/shard_read.py                  # a few seconds
    uv run python tests/bench/shard_read.py --instructions   # about two minutes; needs valgrind
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root
from tests.bench.bench import PROJECT, ids_file
from worker.files import FileSource
from worker.settings import DEFAULT_ID_PATTERN
from worker.shards import ShardFilter
from worker.sources import IdValidator

COUNTS = (1, 2, 4, 8)


def read_all(path: Path, count: int) -> tuple[float, int]:
    """CPU seconds for all ``count`` shards to read ``path``, and how many items they kept."""
    spent, kept = 0.0, 0
    for index in range(count):
        source = FileSource(str(path), PROJECT, IdValidator(DEFAULT_ID_PATTERN))
        if count > 1:
            ShardFilter(source, index, count)  # the file source then keeps this shard only
        started = time.process_time()
        kept += sum(1 for _ in source._lines())  # the reading alone, no thread hand-off
        spent += time.process_time() - started
    return spent, kept


def instructions(count: int, path: Path) -> int:
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--read", str(count), str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", proc.stderr)
    assert found is not None, proc.stderr[-2000:]
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--read", nargs=2, metavar=("N", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:  # one reading, under callgrind
        read_all(Path(args.read[1]), int(args.read[0]))
        return
    with tempfile.TemporaryDirectory(prefix="dcs-shard-read-") as name:
        folder = Path(name)
        path = ids_file(folder, 40_000)
        header = f"{'processes':>9}  {'CPU us a line, all processes':>28}  {'ratio to 1':>10}"
        if args.instructions:
            header += f"  {'instructions a line':>19}  {'ratio to 1':>10}"
            small, one = ids_file(folder, 10_000), ids_file(folder, 1)
        print(header)
        base = base_ir = 0.0
        for count in COUNTS:
            runs = [read_all(path, count) for _ in range(7)]
            assert all(kept == 40_000 for _, kept in runs)  # each line kept by one shard
            cost = min(spent for spent, _ in runs) / 40_000 * 1e6
            base = base or cost
            row = f"{count:>9}  {cost:>28.2f}  {cost / base:>10.2f}"
            if args.instructions:
                ir = (instructions(count, small) - instructions(count, one)) / 9_999
                base_ir = base_ir or ir
                row += f"  {ir:>19,.0f}  {ir / base_ir:>10.2f}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
