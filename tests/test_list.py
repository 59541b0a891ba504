"""``dcs-cleanup list``: the task center's tasks through ListCenterTask, against the emulator, as
an input ``run`` takes as it is."""

from __future__ import annotations

import gzip
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import PROJECT, report, run, seed, write_ids
from worker.cli import main
from worker.emulator import EmulatorServer, Faults
from worker.emulator.app import DEMO_SK


def list_args(emu: EmulatorServer, out: Path, *extra: str) -> list[str]:
    return [
        "list", "--endpoint", emu.url, "--project-id", PROJECT, "--output", str(out),
        "--log-format", "json", *extra,
    ]  # fmt: skip


def created(emu: EmulatorServer) -> dict[str, str]:
    """Each seeded task's creation time, as the list API's time filters write it."""
    tasks = emu.state.tasks[PROJECT]
    return {t: "".join(c for c in task.created_at if c.isdigit())[:14] for t, task in tasks.items()}


def test_list_pages_through_every_task_despite_errors_and_run_deletes_them(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """2,500 tasks over 25 pages, with 30% of the requests answered 500 and retried: every ID
    once, exit 0. That file is an input for run as it is: all deleted."""
    ids = seed(emulator, 2500)
    emulator.state.set_faults(Faults(error_rate=0.3, seed=3))
    out = tmp_path / "ids.txt"
    assert main(list_args(emulator, out, "--max-attempts", "20", "--page-size", "100")) == 0
    listed = out.read_text().splitlines()
    assert sorted(listed) == sorted(ids)
    assert emulator.state.by_status[500] > 0  # pages were retried
    emulator.state.set_faults(Faults())
    assert run(emulator, tmp_path, out) == 0
    assert report(tmp_path)["outcomes"]["deleted"] == 2500
    assert emulator.state.remaining() == 0


def test_a_long_list_says_how_far_it_is_as_it_goes(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A list of a million tasks pages for minutes, and its log said nothing until the end.
    Every --progress-interval seconds a cleanup.list_progress line gives the tasks listed and
    written so far and the API's task count."""
    seed(emulator, 2000, Faults(latency_ms=60))
    out = tmp_path / "ids.txt"
    capsys.readouterr()
    args = list_args(emulator, out, "--page-size", "100", "--progress-interval", "0.2")
    assert main(args) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if "{" in line]
    said = [e for e in events if e["event"] == "cleanup.list_progress"]
    assert len(said) >= 3
    listed = [e["listed"] for e in said]
    assert listed == sorted(set(listed))  # rising, page by page
    assert all(e["listed"] % 100 == 0 and 0 < e["listed"] < 2000 for e in said)
    assert all(e["written"] == e["listed"] and e["task_count"] == 2000 for e in said)
    assert len(out.read_text().splitlines()) == 2000


def test_list_reads_on_when_pages_are_shorter_than_asked(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A gateway that answers at most 100 tasks a page, whatever ``limit`` asks (1,000 by
    default): the first page, shorter than asked, ended the list there, exit 0, with 100 of
    2,500 IDs written as if they were all. The list now reads on to ``task_count``."""
    ids = seed(emulator, 2500)
    emulator.state.set_faults(Faults(list_page_cap=100))
    out = tmp_path / "ids.txt"
    assert main(list_args(emulator, out)) == 0
    assert sorted(out.read_text().splitlines()) == sorted(ids)


def test_list_without_a_task_count_reads_until_an_empty_page(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """An answer without ``task_count`` (or with one that is no number): the list ends at the
    first empty page, not at the first page shorter than asked."""
    ids = seed(emulator, 1050)
    emulator.state.set_faults(Faults(list_page_cap=100, list_count=False))
    out = tmp_path / "ids.txt"
    assert main(list_args(emulator, out, "--page-size", "500")) == 0
    assert sorted(out.read_text().splitlines()) == sorted(ids)


def test_list_filters_by_time_name_and_status(emulator: EmulatorServer, tmp_path: Path) -> None:
    """--start-time/--end-time go to the API; --name and --status are matched here; JSON Lines
    give each task as the API does (``--format JSONL``: the choice in any case, as run's are;
    it was exit 2)."""
    seed(emulator, 300)
    times = created(emulator)
    start, end = sorted(times.values())[50], sorted(times.values())[149]
    out = tmp_path / "window.txt"
    assert main(list_args(emulator, out, "--start-time", start, "--end-time", end)) == 0
    assert set(out.read_text().splitlines()) == {t for t, c in times.items() if start <= c <= end}
    assert len(out.read_text().splitlines()) == 100

    named = tmp_path / "named.jsonl"
    assert main(list_args(emulator, named, "--name", "extend", "--format", "JSONL")) == 0
    rows = [json.loads(line) for line in named.read_text().splitlines()]
    tasks = emulator.state.tasks[PROJECT]
    assert {r["id"] for r in rows} == {t for t, task in tasks.items() if task.name == "EXTEND"}
    assert {r["name"] for r in rows} == {"EXTEND"}

    none = tmp_path / "failed.txt"
    assert main(list_args(emulator, none, "--status", "FAILED")) == 0
    assert none.read_text() == ""

    old = tmp_path / "old.txt"
    target = datetime(2020, 9, 13, 14, 57, 10, tzinfo=UTC)  # half a minute after task 150
    days = (datetime.now(UTC) - target).total_seconds() / 86400
    assert main(list_args(emulator, old, "--older-than-days", f"{days:.9f}")) == 0
    expected = {t for t, c in times.items() if c <= target.strftime("%Y%m%d%H%M%S")}
    assert len(expected) == 151
    assert set(old.read_text().splitlines()) == expected


def test_a_list_named_gz_is_gzip_and_a_run_reads_it(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """``--output ids.txt.gz`` wrote plain text under a .gz name, which zcat refused. It is
    gzip now (each page flushed, the file renamed into place at the end, as before), and
    ``run`` reads it as it reads any .gz input."""
    ids = seed(emulator, 1200)
    out = tmp_path / "ids.txt.gz"
    assert main(list_args(emulator, out, "--page-size", "500")) == 0
    assert sorted(gzip.decompress(out.read_bytes()).decode().splitlines()) == sorted(ids)
    assert [p.name for p in tmp_path.iterdir()] == ["ids.txt.gz"]  # no partial file left
    assert run(emulator, tmp_path, out) == 0
    assert emulator.state.remaining() == 0


def test_a_filter_that_matched_nothing_says_what_there_was(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--status SUCESS`` (a typo) gave an empty list and exit 0, like a project with no such
    tasks. The list still ends 0, and a warning names the statuses and names it saw."""
    seed(emulator, 40)
    out = tmp_path / "ids.txt"
    capsys.readouterr()
    assert main(list_args(emulator, out, "--status", "SUCESS", "--name", "extend")) == 0
    assert out.read_text() == ""
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines() if "{" in line]
    [warned] = [e for e in events if e["event"] == "cleanup.list_filter_matched_nothing"]
    assert warned["level"] == "warning"
    assert warned["status"] == ["SUCESS"]
    assert warned["statuses_seen"] == {"SUCCESS": 40}
    names = emulator.state.tasks[PROJECT].values()
    assert warned["names_seen"] == dict(Counter(task.name for task in names))
    # A filter that matched something says nothing more.
    assert main(list_args(emulator, out, "--status", "success")) == 0
    assert "list_filter_matched_nothing" not in capsys.readouterr().err


def test_list_with_refused_credentials_exits_3_and_keeps_the_secret(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 401 stops the list at once (Huawei locks an AK/SK after repeated failures): exit 3,
    nothing written, the reason on standard error, the secret nowhere."""
    seed(emulator, 10)
    wrong = "not-the-demo-secret-key-0000000000000000"
    monkeypatch.setenv("CLOUD_SDK_SK", wrong)
    out = tmp_path / "ids.txt"
    assert main(list_args(emulator, out)) == 3
    assert not out.exists()  # no part of a list where the whole one is expected
    assert list(tmp_path.iterdir()) == []
    assert emulator.state.by_status[401] == 1
    captured = capsys.readouterr()
    failed = [json.loads(line) for line in captured.err.splitlines() if "list_failed" in line]
    assert len(failed) == 1
    assert failed[0]["error"].startswith(
        "HTTP 401 APIGW.0301: Incorrect IAM authentication information: verify aksk signature"
        " fail; credentials refused: check CLOUD_SDK_AK and CLOUD_SDK_SK"
    )
    assert wrong not in captured.err + captured.out
    assert DEMO_SK not in captured.err + captured.out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--start-time", "2020-09-14"], "--start-time '2020-09-14': give a real time as"),
        # Fourteen digits, but no such moment: it was sent, and the list came back empty.
        (["--start-time", "20201399000000"], "--start-time '20201399000000': give a real time"),
        (["--end-time", "20201131120000"], "--end-time '20201131120000': give a real time"),
        (["--end-time", "20200914000000", "--older-than-days", "3"], "not both"),
        # An empty list, exit 0, looked like a project with no such tasks.
        (
            ["--start-time", "20201001000000", "--end-time", "20200901000000"],
            "--start-time 20201001000000 is after the end time 20200901000000",
        ),
        (["--start-time", "29990101000000", "--older-than-days", "1"], "is after the end time"),
    ],
)
def test_list_with_bad_times_exits_2_before_asking(
    emulator: EmulatorServer,
    tmp_path: Path,
    extra: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed(emulator, 3)
    assert main(list_args(emulator, tmp_path / "ids.txt", *extra)) == 2
    assert needle in capsys.readouterr().err
    assert emulator.state.requests == 0


@pytest.mark.parametrize(
    ("days", "needle"),
    [
        # A negative age reached into the future: every task, the newest too, was listed.
        ("-5", "must be from 0 to 36500 days: -5"),
        # These ended in a traceback (NaN, infinity and 1e12 days make no date).
        ("nan", "not a finite number: 'nan'"),
        ("inf", "not a finite number: 'inf'"),
        ("1e12", "must be from 0 to 36500 days: 1e12"),
    ],
)
def test_list_older_than_days_out_of_range_exits_2_before_asking(
    days: str,
    needle: str,
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed(emulator, 3)
    out = tmp_path / "ids.txt"
    with pytest.raises(SystemExit) as ended:
        main(list_args(emulator, out, f"--older-than-days={days}"))
    assert ended.value.code == 2
    assert f"argument --older-than-days: {needle}" in capsys.readouterr().err
    assert emulator.state.requests == 0
    assert not out.exists()


@pytest.mark.parametrize(("size", "needle"), [("5000", "1000 or less"), ("0", "1 or more")])
def test_list_with_a_page_size_the_api_refuses_exits_2_before_asking(
    size: str,
    needle: str,
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ListCenterTask takes ``limit`` 1 to 1000: --page-size 5000 was sent, refused with a
    400 and ended the list with exit 3. It is now exit 2 before any request."""
    with pytest.raises(SystemExit) as ended:
        main(list_args(emulator, tmp_path / "ids.txt", "--page-size", size))
    assert ended.value.code == 2
    assert f"argument --page-size: must be {needle}" in capsys.readouterr().err
    assert emulator.state.requests == 0


def test_list_output_a_missing_folder_exits_2_and_a_fifo_stays_one(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--output in a folder that is not there was a traceback (exit 1): exit 2, naming it, no
    request. A FIFO is written in place: a temporary file renamed over it would replace the
    FIFO itself (over a device, as root, the device: this test's first run replaced
    /dev/full)."""
    ids = seed(emulator, 30)
    assert main(list_args(emulator, tmp_path / "no" / "ids.txt")) == 2
    assert "--output " + str(tmp_path / "no" / "ids.txt") in capsys.readouterr().err
    assert emulator.state.requests == 0

    fifo = tmp_path / "ids.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(fifo.read_text().splitlines()))
    reader.start()
    assert main(list_args(emulator, fifo)) == 0
    reader.join(timeout=10)
    assert sorted(got) == sorted(ids)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["ids.fifo"]


def test_list_output_dash_is_standard_output(
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--output - wrote the list to a file named "-" and nothing to standard output, where
    a pipeline (a script passing --output - as --input - does) reads it. It is standard
    output now."""
    monkeypatch.chdir(tmp_path)
    ids = seed(emulator, 30)
    assert main(list_args(emulator, Path("-"))) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == sorted(ids)
    assert list(tmp_path.iterdir()) == []


def test_a_list_whose_reader_goes_stops_at_once(emulator: EmulatorServer) -> None:
    """``dcs-cleanup list --output - | head -1``: once the reader has gone, the list stops
    asking for pages, says why (exit 3: the list was not written whole) and prints no
    traceback."""
    seed(emulator, 3000)
    child = subprocess.Popen(
        [sys.executable, "-m", "worker", *list_args(emulator, Path("-"), "--page-size", "10")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert child.stdout is not None
    assert child.stdout.readline()
    child.stdout.close()  # what head does once it has its line
    _, err = child.communicate(timeout=30)
    assert child.returncode == 3
    [failed] = [json.loads(line) for line in err.splitlines() if b"cleanup.list_failed" in line]
    assert failed["error"] == "cannot write: [Errno 32] Broken pipe"
    assert b"Traceback" not in err
    assert emulator.state.requests < 300  # 300 pages in all


def _listing(
    emu: EmulatorServer, out: Path, stderr: IO[bytes], pages: int
) -> subprocess.Popen[bytes]:
    """``list --page-size 10`` as a child process, returned once the emulator has had ``pages``
    of its requests and the child is still running."""
    child = subprocess.Popen(
        [sys.executable, "-m", "worker", *list_args(emu, out, "--page-size", "10")],
        stdout=subprocess.DEVNULL, stderr=stderr, cwd=out.parent,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while emu.state.requests < pages:
        assert time.monotonic() < deadline
        assert child.poll() is None
        time.sleep(0.01)
    return child


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_list_stopped_by_a_signal_exits_4_and_leaves_no_part_of_a_list(
    sig: signal.Signals, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """SIGTERM killed a list part-way (exit 143) and left its part beside ``--output``; SIGINT
    ended it in a traceback. Either now stops it: exit 4, a log line saying how much was read,
    and nothing written where the list is expected, nor beside it."""
    seed(emulator, 2000)
    emulator.state.set_faults(Faults(latency_ms=50))
    out = tmp_path / "ids.txt"
    err = tmp_path / "list.err"
    with err.open("wb") as stderr:
        child = _listing(emulator, out, stderr, pages=5)
        child.send_signal(sig)
        assert child.wait(timeout=30) == 4
    log = err.read_text()
    assert "Traceback" not in log
    stopped = [json.loads(line) for line in log.splitlines() if "list_interrupted" in line]
    assert len(stopped) == 1
    assert stopped[0]["signal"] == sig.name
    assert 0 < stopped[0]["listed"] < 2000
    assert list(tmp_path.iterdir()) == [err]


def test_a_list_clears_the_parts_that_killed_lists_left(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A list killed outright (SIGKILL, the OOM killer) cannot remove its part: it stayed
    beside ``--output`` as ``.NAME.PID.partial`` for good, one a kill. The next list to the
    same file removes those whose process is gone; a list running now keeps its part, and
    other files are left alone."""
    seed(emulator, 30)
    out = tmp_path / "ids.txt"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    dead = tmp_path / f".ids.txt.{gone}.partial"
    live = tmp_path / f".ids.txt.{os.getppid()}.partial"  # this test's parent: running
    other = tmp_path / f".other.txt.{gone}.partial"
    for part in (dead, live, other):
        part.write_text("half a list\n")
    assert main(list_args(emulator, out)) == 0
    assert len(out.read_text().splitlines()) == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, live.name, other.name])


def test_a_list_whose_tasks_go_while_it_pages_warns_that_it_may_have_passed_some(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pages are by offset: tasks deleted behind the offset while the list reads on (a run fed
    by ``list |``) move the rest back, and as many are never on a page. The list ended 0 as if
    whole. It still does, and warns that the task count fell, by how much, and to list again;
    listed again with nothing deleted meanwhile, it gives every task and no warning."""
    ids = seed(emulator, 300)
    emulator.state.set_faults(Faults(latency_ms=50))
    out = tmp_path / "ids.txt"
    err = tmp_path / "list.err"
    with err.open("wb") as stderr:
        child = _listing(emulator, out, stderr, pages=3)
        # The first 100, listed or about to be, deleted through the API as a run would.
        assert run(emulator, tmp_path, write_ids(tmp_path / "go.txt", ids[:100])) == 0
        assert child.poll() is None  # the list was still paging when they went
        assert child.wait(timeout=60) == 0
    missed = set(emulator.state.tasks[PROJECT]) - set(out.read_text().split())
    assert missed  # the harm: tasks still there that the list never gave
    events = [json.loads(line) for line in err.read_text().splitlines()]
    [fell] = [e for e in events if e["event"] == "cleanup.list_count_fell"]
    assert fell["level"] == "warning"
    assert (fell["first_task_count"], fell["lowest_task_count"]) == (300, 200)
    assert fell["detail"].startswith("the task count fell by 100 while listing")
    assert "list again once the deletes are done" in fell["detail"]

    capsys.readouterr()
    assert main(list_args(emulator, out, "--page-size", "50")) == 0
    assert set(out.read_text().split()) == set(emulator.state.tasks[PROJECT])
    assert "cleanup.list_count_fell" not in capsys.readouterr().err
