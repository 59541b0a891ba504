"""The emulator's own API (ListCenterTask, stats) and re-rendering a report from a journal."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import anyio
import pytest

from tests.conftest import (
    PROJECT,
    outcomes,
    report,
    run,
    run_args,
    seed,
    spawn,
    unknown_ids,
    write_ids,
)
from worker.cli import main
from worker.client import DcsClient
from worker.emulator import EmulatorServer, Faults
from worker.emulator.app import DEMO_AK, DEMO_SK
from worker.signer import Credentials, Signer


def test_list_center_task_pages_with_signed_get(emulator: EmulatorServer) -> None:
    """GET /v2/{project}/tasks: task_count is a string, pages by offset/limit, limit 1..1000."""
    seed(emulator, 25)

    async def go() -> tuple[int, int]:
        signer = Signer(Credentials(DEMO_AK, DEMO_SK))
        async with DcsClient(emulator.url, signer, concurrency=2, timeout=5) as client:
            page = await client.list_tasks(PROJECT, offset=20, limit=10)
            bad = await client.list_tasks(PROJECT, offset=0, limit=1001)
        return page.status, bad.status

    ok, bad = anyio.run(go)
    assert ok == 200
    assert bad == 400
    url = f"{emulator.url}/_emulator/stats"
    stats = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert stats["by_status"] == {"200": 1, "400": 1}
    assert stats["remaining"] == 25


def test_stats_endpoint_tells_what_was_received(emulator: EmulatorServer, tmp_path: Path) -> None:
    """/_emulator/stats counts requests, statuses and deletions as a test or operator sees them."""
    ids = seed(emulator, 30) + unknown_ids(5)
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids)) == 0
    stats = json.loads(urllib.request.urlopen(f"{emulator.url}/_emulator/stats", timeout=5).read())
    assert stats["deleted"] == 30
    assert stats["deleted_twice"] == 0
    assert stats["by_status"] == {"200": 30, "404": 5}
    assert stats["remaining"] == 0


def test_report_command_rerenders_from_the_journal(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """report --journal: the final state of every task across runs, as report and outcomes.
    It only reads: the journal's runs table is as the run left it (a "report" run that never
    finished was added to it)."""
    ids = seed(emulator, 40, Faults(reject_share=0.25))
    journal = tmp_path / "journal.sqlite"
    path = write_ids(tmp_path / "ids.txt", [*ids, *unknown_ids(4)])
    assert run(emulator, tmp_path, path, "--journal", str(journal)) == 1
    first = Counter(r["outcome"] for r in outcomes(tmp_path))
    runs = "SELECT run_id, finished_at, exit_code FROM runs"
    with contextlib.closing(sqlite3.connect(journal)) as db:
        before = db.execute(runs).fetchall()
    out_dir = tmp_path / "rerender"
    out_dir.mkdir()
    code = main(
        ["report", "--journal", str(journal), "--report", str(out_dir / "report.json"),
         "--outcomes", str(out_dir / "outcomes.jsonl")]
    )  # fmt: skip
    assert code == 0
    with contextlib.closing(sqlite3.connect(journal)) as db:
        assert db.execute(runs).fetchall() == before
    assert len(before) == 1
    again = Counter(r["outcome"] for r in outcomes(out_dir))
    assert again == first
    assert {r["run_id"] for r in outcomes(out_dir)} == {before[0][0]}
    rep = report(out_dir)
    assert rep["outcomes"]["rejected"] == first["rejected"] > 0
    assert rep["exit_code"] == 1
    assert "rejected" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("target", "needle"),
    [
        ("outcomes.jsonl", "holds lines already; give a new file"),
        ("journal.sqlite", "is the file of --journal"),
        ("folder", "is a folder; give a file path"),
    ],
)
def test_report_command_refuses_an_outcomes_file_it_would_spoil(
    target: str,
    needle: str,
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """report --outcomes appended to the file it was given: the run's own outcomes file
    then held every task twice, and the journal itself got JSON lines appended to the
    database. A folder was a traceback. Each is exit 2 now, the file as it was."""
    ids = seed(emulator, 20)
    journal = tmp_path / "journal.sqlite"
    assert (
        run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids), "--journal", str(journal))
        == 0
    )
    (tmp_path / "folder").mkdir()
    path = tmp_path / target
    before = path.read_bytes() if path.is_file() else None
    assert main(["report", "--journal", str(journal), "--outcomes", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"--outcomes {path}" in err
    assert needle in err
    assert "Traceback" not in err
    assert (path.read_bytes() if path.is_file() else None) == before


def test_an_empty_file_as_the_journal_to_read_exits_2_and_stays_empty(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``report --journal`` of an empty file (a wrong path, a file truncated by hand) made it a
    journal and reported "exit 0: every task deleted" for no tasks; ``run --retry-failed`` of it
    ended 0 having retried nothing. Both are exit 2 now, the file left empty, nothing sent; so
    is a report of a journal that is not there, and no file is made."""
    empty = tmp_path / "journal.sqlite"
    empty.touch()
    assert main(["report", "--journal", str(empty), "--report", str(tmp_path / "r.json")]) == 2
    assert f"journal {empty}: empty: no run has written it" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    missing = tmp_path / "jounral.sqlite"
    assert main(["report", "--journal", str(missing), "--report", str(tmp_path / "r.json")]) == 2
    assert f"--journal {missing}: no such file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.sqlite"]
    assert main(run_args(emulator, tmp_path, None, "--retry-failed", "--journal", str(empty))) == 2
    assert f"--journal {empty}: empty; --retry-failed reads one" in capsys.readouterr().err
    assert empty.stat().st_size == 0
    assert emulator.state.requests == 0


@pytest.mark.parametrize("flag", ["--outcomes", "--report"])
def test_an_output_named_gz_is_refused_not_written_plain_under_that_name(
    flag: str, emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--outcomes outcomes.jsonl.gz`` wrote plain JSON lines under a .gz name, which zcat
    and gzip-reading tools refused after the run. It is exit 2 before any request (for run and
    report both), saying to compress it after the run."""
    ids = seed(emulator, 5)
    path = tmp_path / "out.gz"
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids), flag, str(path)) == 2
    assert f"{flag} {path}: written uncompressed" in capsys.readouterr().err
    assert emulator.state.requests == 0
    journal = tmp_path / "journal.sqlite"
    assert run(emulator, tmp_path, tmp_path / "ids.txt", "--journal", str(journal)) == 0
    assert main(["report", "--journal", str(journal), flag, str(path)]) == 2
    assert "give a name without .gz" in capsys.readouterr().err
    assert not path.exists()


@pytest.mark.parametrize("flag", ["--outcomes", "--report", "--journal"])
def test_an_output_named_dash_is_refused_not_made_a_file_named_dash(
    flag: str,
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--outcomes - (as --input - reads stdin) wrote a file named "-" in the working folder,
    where nobody looks for the outcomes. Standard output carries the log, so it is exit 2,
    before any request, for run and report both."""
    monkeypatch.chdir(tmp_path)
    ids = seed(emulator, 5)
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids), flag, "-") == 2
    said = capsys.readouterr()
    assert f"{flag} -: give a file path (standard output carries the log" in said.err + said.out
    assert emulator.state.requests == 0
    if flag != "--journal":
        journal = tmp_path / "journal.sqlite"
        assert run(emulator, tmp_path, tmp_path / "ids.txt", "--journal", str(journal)) == 0
        assert main(["report", "--journal", str(journal), flag, "-"]) == 2
        assert f"{flag} -: give a file path" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()


def test_report_of_a_journal_a_run_is_still_writing_says_so(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """report --journal during a run gave that run's tasks in flight and still to come as
    not_attempted and "exit 4: interrupted". It now names the run's pid and gives counts so
    far, without taking the run's lock (a run starting then is not turned away); once the run
    ends, the report is final."""
    ids = seed(emulator, 60)
    journal = tmp_path / "journal.sqlite"
    worker = spawn(
        emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids), "--journal", str(journal),
        "--rate", "20", "--concurrency", "2",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while emulator.state.remaining() > 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (
            main(["report", "--journal", str(journal), "--report", str(tmp_path / "r.json")]) == 0
        )
        said = capsys.readouterr().err
        so_far = json.loads((tmp_path / "r.json").read_text())
        assert worker.wait(timeout=30) == 0
    finally:
        worker.kill()
    assert f"a run (pid {worker.pid}) is still writing it" in said
    assert "counts so far, no exit code yet" in said
    assert "exit 4" not in said
    assert so_far["stop_reason"] == "run_in_progress"
    assert 0 < so_far["outcomes"]["deleted"] < 60
    assert (so_far["runs"], so_far["runs_unfinished"], so_far["requests"]) == (1, 1, 0)
    assert (so_far["duration_s"], so_far["throughput_per_s"]) == (0, 0)  # no run has ended
    assert main(["report", "--journal", str(journal), "--report", str(tmp_path / "r.json")]) == 0
    said = capsys.readouterr().err
    assert "still writing" not in said
    assert "exit 0:" in said
    final = json.loads((tmp_path / "r.json").read_text())
    assert final["stop_reason"] is None
    assert final["outcomes"]["deleted"] == 60
    assert (final["runs"], final["runs_unfinished"], final["requests"]) == (1, 0, 60)


def test_report_of_a_journal_counts_the_requests_of_its_runs(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """report --journal gave requests 0, no status, started_at the moment it ran and a
    throughput of its own reading (some 50,000 tasks/s). It now adds up the runs' reports:
    requests, answers by status, retries, from the first run's start to the last's end, and
    the seconds they ran, over which the throughput is."""
    ids = seed(emulator, 40, Faults(error_rate=0.5, seed=3))
    journal = tmp_path / "journal.sqlite"
    path = write_ids(tmp_path / "ids.txt", ids)
    assert run(emulator, tmp_path, path, "--journal", str(journal), "--max-attempts", "1") == 1
    first = report(tmp_path)
    emulator.state.set_faults(Faults())
    assert (
        main(run_args(emulator, tmp_path, None, "--retry-failed", "--journal", str(journal))) == 0
    )
    second = report(tmp_path)
    out = tmp_path / "journal-report.json"
    assert main(["report", "--journal", str(journal), "--report", str(out)]) == 0
    both = json.loads(out.read_text())
    assert both["requests"] == first["requests"] + second["requests"] == emulator.state.requests
    assert both["http_status"] == dict(
        Counter(first["http_status"]) + Counter(second["http_status"])
    )
    assert both["http_status"]["500"] > 0
    assert both["retries"] == first["retries"] + second["retries"]
    assert (both["runs"], both["runs_unfinished"]) == (2, 0)
    assert both["started_at"] == first["started_at"]
    assert both["finished_at"] >= second["finished_at"]
    ran = first["duration_s"] + second["duration_s"]
    assert both["duration_s"] == pytest.approx(ran, abs=0.002)
    assert both["throughput_per_s"] == pytest.approx(40 / ran, rel=0.01)
    said = capsys.readouterr().err
    assert f"requests {both['requests']} · retries" in said
    assert "latency in each run's report" in said


def test_summary_table_reads_well_with_and_without_answers(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The summary printed at the end gives latency percentiles in ms when requests were
    answered, and says "no answers" (not "p50 None ms") when none were sent."""
    ids = seed(emulator, 5)
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids)) == 0
    err = capsys.readouterr().err
    assert "requests 5 · " in err
    assert f"p50 {report(tmp_path)['latency_ms']['p50']} ms · p99 " in err

    assert run(emulator, tmp_path, write_ids(tmp_path / "bad.txt", ["../etc", "a/b"])) == 0
    err = capsys.readouterr().err
    assert "requests 0 · " in err
    assert "no answers" in err
    assert "None" not in err


def test_the_emulator_on_a_port_in_use_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``dcs-cleanup emulator --port P`` with P taken (an emulator left running) was an
    OSError traceback, exit 1, after a line saying it served there. It is exit 2 naming the
    port and the reason, and the serving line is printed only once it listens."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["emulator", "--port", str(port), "--tasks", "1"]) == 2
    err = capsys.readouterr().err
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "emulator: http://" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("command", "flag", "value", "rule"),
    [
        ("emulator", "--port", "70000", "must be 65535 or less"),
        ("emulator", "--error-rate", "2", "must be from 0 to 1"),
        ("emulator", "--reset-rate", "nan", "not a finite number"),
        ("emulator", "--fail-first-share", "1.5", "must be from 0 to 1"),
        ("emulator", "--latency-ms", "-5", "must be 0 or more"),
        ("emulator", "--quota-rate", "-1", "must be 0 or more"),
        ("emulator", "--quota-burst", "0", "must be 1 or more"),
        ("emulator", "--retry-after", "-3", "must be 0 or more"),
        # A project no run can name (run refuses it): every request would be a 404.
        ("emulator", "--project-id", "a/b", "must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$: 'a/b'"),
        ("demo", "--tasks", "0", "must be 1 or more"),
        ("demo", "--unknown", "-1", "must be 0 or more"),
        # These two ended in a pydantic traceback, after the emulator had started.
        ("demo", "--rate", "-1", "must be 0 or more"),
        ("demo", "--rate", "nan", "not a finite number"),
        # So did this one, over run's most of 1,024.
        ("demo", "--concurrency", "100000", "must be 1024 or less"),
    ],
)
def test_emulator_and_demo_flags_out_of_range_exit_2_naming_the_flag(
    command: str, flag: str, value: str, rule: str
) -> None:
    """``emulator --port 70000`` was an OverflowError traceback once the tasks were seeded; a
    share of 2 or nan, a negative latency or quota, a project ID with a ``/`` served as if
    nothing were wrong. Each is exit 2 naming the flag and its rule, as the demo's counts are.
    A child process, with a time limit: the old emulator served such flags for ever."""
    port = ["--port", "0"] if command == "emulator" and flag != "--port" else []
    done = subprocess.run(
        [sys.executable, "-m", "worker", command, *port, flag, value],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert f"argument {flag}: {rule}" in done.stderr
    assert "Traceback" not in done.stderr


def test_emulator_ids_out_that_cannot_be_written_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--ids-out`` into a missing folder was a FileNotFoundError traceback, exit 1."""
    where = tmp_path / "no-such-dir" / "ids.txt"
    assert main(["emulator", "--port", "0", "--ids-out", str(where)]) == 2
    err = capsys.readouterr().err
    assert f"--ids-out {where}: cannot write it: No such file or directory" in err
    assert "Traceback" not in err


def test_emulator_on_port_0_names_the_port_it_listens_on(tmp_path: Path) -> None:
    """``--port 0`` said ``http://127.0.0.1:0``, an address nothing could reach. It names
    the port the system chose, and the emulator answers there."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "emulator",
            "--port",
            "0",
            "--tasks",
            "5",
            "--ids-out",
            str(tmp_path / "ids.txt"),
        ],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = line.split()[1]
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith(":0")
        stats = json.loads(urllib.request.urlopen(f"{url}/_emulator/stats", timeout=5).read())
        assert stats["remaining"] == 5
    finally:
        proc.terminate()
        proc.wait(10)


def test_every_stop_reason_has_a_remedy_in_the_readme() -> None:
    """The README's table of stop reasons says what to do for each one a run can end with (an
    abort, a signal or deadline, a ``--processes`` child lost): a new one without a row fails.
    The summary's ``next:`` line after such a stop says the same words (signals and deadlines
    have the ``again:`` line instead)."""
    from worker.models import ABORT_REASONS
    from worker.summary import NEXT_STEP

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| `stop_reason` | exit | what to do |", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    todo = {
        name: cells[2].strip().replace("`", "")
        for cells in rows
        for name in re.findall(r"`([a-z_]+)`", cells[0])
    }
    assert set(todo) == ABORT_REASONS | {"signal", "deadline", "worker_process_failed"}
    assert {k: v for k, v in todo.items() if k not in ("signal", "deadline")} == NEXT_STEP
