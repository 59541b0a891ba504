"""``--processes N``: one run over N forked worker processes, against the emulator.

The worker runs as a separate ``python -m worker`` process here (it forks; the test process has
the emulator's thread and must not be forked).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import (
    PROJECT,
    outcomes,
    report,
    run,
    run_args,
    seed,
    spawn,
    unknown_ids,
    week_old_and_recent,
    write_ids,
)
from worker.cli import main
from worker.emulator import EmulatorServer, Faults
from worker.emulator.app import DEMO_SK
from worker.processes import combine_exit, share

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _wait_for(condition: object, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def _start_two(
    emulator: EmulatorServer, tmp_path: Path, count: int, latency_ms: float
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """A --processes 2 run with a journal over ``count`` slow tasks, once 20 are deleted."""
    path = write_ids(tmp_path / "ids.txt", seed(emulator, count, Faults(latency_ms=latency_ms)))
    journal = tmp_path / "journal.sqlite"
    child = spawn(
        emulator, tmp_path, path, "--processes", "2", "--concurrency", "8",
        "--journal", str(journal),
    )  # fmt: skip
    _wait_for(lambda: emulator.state.deletes_received >= 20)
    return child, path, journal


def _rerun_finishes(emulator: EmulatorServer, tmp_path: Path, path: Path, journal: Path) -> None:
    """A one-process re-run with the journal ends every task, none deleted twice."""
    emulator.state.set_faults(Faults())
    assert run(emulator, tmp_path, path, "--journal", str(journal)) == 0
    assert emulator.state.remaining() == 0
    assert emulator.state.stats()["deleted_twice"] == 0


def test_two_processes_delete_each_task_once_and_merge_one_report(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """1,500 existing + 100 unknown IDs, 2 duplicates and 2 hostile lines over 2 processes:
    each task deleted exactly once, one intact outcome line per input line, one report whose
    counts are the emulator's, one journal; a re-run sends nothing."""
    existing = seed(emulator, 1500)
    lines = existing + unknown_ids(100)
    lines[700:700] = ["../instances/x", existing[3], "a b", existing[900]]
    path = write_ids(tmp_path / "ids.txt", lines)
    journal = tmp_path / "journal.sqlite"
    child = spawn(
        emulator, tmp_path, path, "--processes", "2", "--concurrency", "16",
        "--journal", str(journal),
    )  # fmt: skip
    assert child.wait(timeout=120) == 0
    stats = emulator.state.stats()
    assert stats["deleted"] == 1500
    assert stats["deleted_twice"] == 0
    assert emulator.state.remaining() == 0
    rows = outcomes(tmp_path)  # every line parses: no interleaved writes
    assert len(rows) == len(lines)
    assert sorted(r["line"] for r in rows) == list(range(1, len(lines) + 1))
    rep = report(tmp_path)
    assert rep["outcomes"]["deleted"] == 1500
    assert rep["outcomes"]["absent"] == 100
    assert rep["skipped_reasons"] == {"duplicate": 2, "invalid_id": 2}
    assert rep["requests"] == emulator.state.requests
    assert rep["exit_code"] == 0
    assert rep["input_fully_read"] is True
    assert [p["index"] for p in rep["processes"]] == [0, 1]
    assert all(p["tasks"] > 300 for p in rep["processes"])  # both did a real share
    assert sum(p["tasks"] for p in rep["processes"]) == len(lines)
    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT run_id) FROM tasks").fetchone() == (
            1600,
            1,
        )
        finished = db.execute("SELECT exit_code, report FROM runs").fetchall()
    assert finished[0][0] == 0
    assert json.loads(finished[0][1])["tasks"] == len(lines)
    before = emulator.state.requests
    assert run(emulator, tmp_path, path, "--journal", str(journal)) == 0
    assert emulator.state.requests == before
    assert report(tmp_path)["outcomes"]["skipped"] == len(lines)


@pytest.mark.parametrize("to", ["parent", "every process"])
def test_sigterm_to_the_parent_stops_every_process_within_grace(
    to: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """SIGTERM to the parent: each process stops within grace, exit 4, every outcome known is
    written (deleted outcomes == the emulator's deletions); a resumed run finishes the rest.
    Also SIGTERM to every process at once, as systemd's KillMode=control-group sends it: each
    child then has it twice (directly, and from the parent), one stop, not "stop now"."""
    ids = seed(emulator, 600, Faults(latency_ms=300))
    path = write_ids(tmp_path / "ids.txt", ids)
    journal = tmp_path / "journal.sqlite"
    grace = 5.0
    child = spawn(
        emulator, tmp_path, path, "--processes", "2", "--concurrency", "8",
        "--journal", str(journal), "--grace", str(grace),
    )  # fmt: skip
    _wait_for(lambda: emulator.state.deletes_received >= 30)
    kids = _children_of(child.pid) if to == "every process" else []
    sent = time.monotonic()
    at_signal = len(emulator.state.deleted)
    for pid in [*kids, child.pid]:
        os.kill(pid, signal.SIGTERM)
    assert child.wait(timeout=grace + 10) == 4
    assert time.monotonic() - sent < grace + 2
    assert "cleanup.signal_received_again" not in (tmp_path / "worker.log").read_text()
    assert len(emulator.state.deleted) > at_signal  # the requests in flight were finished
    rep = report(tmp_path)
    assert rep["stop_reason"] == "signal"
    deleted = sum(r["outcome"] == "deleted" for r in outcomes(tmp_path))
    assert deleted == len(emulator.state.deleted) > 0
    assert rep["outcomes"]["not_attempted"] == 600 - deleted
    assert [p["exit_code"] for p in rep["processes"]] == [4, 4]
    emulator.state.set_faults(Faults())
    again = spawn(
        emulator, tmp_path, path, "--processes", "2", "--journal", str(journal), log="again.log"
    )
    assert again.wait(timeout=60) == 0
    assert emulator.state.remaining() == 0
    assert emulator.state.stats()["deleted_twice"] == 0


@pytest.mark.slow
def test_a_second_signal_stops_every_process_at_once(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Two SIGTERMs to the parent: requests in flight are cancelled, not waited for (60 s grace,
    20 s answers), and every task is accounted for as not_attempted."""
    ids = seed(emulator, 60, Faults(latency_ms=20_000))
    path = write_ids(tmp_path / "ids.txt", ids)
    child = spawn(
        emulator, tmp_path, path, "--processes", "2", "--concurrency", "4",
        "--grace", "60", "--timeout", "120",
    )  # fmt: skip
    _wait_for(lambda: emulator.state.deletes_received >= 2)  # each process's first, alone
    child.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # later than the same stop delivered twice
    sent = time.monotonic()
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=15) == 4
    assert time.monotonic() - sent < 5
    rep = report(tmp_path)
    assert rep["outcomes"]["not_attempted"] == 60


def test_every_log_line_of_processes_sharing_stdout_is_whole(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Two processes write JSON lines to one stdout, unbuffered as the image sets it
    (PYTHONUNBUFFERED): every line is one JSON object. structlog's PrintLogger wrote a line and
    its newline apart, and a line of the other process landed between them: two objects on
    one line, which a log collector cannot parse (11 of 4,000 debug lines, by hand)."""
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 6000))
    args = run_args(emulator, tmp_path, path, "--processes", "2", "--log-level", "debug")
    with (tmp_path / "stdout.log").open("wb") as out:
        code = subprocess.run(
            [sys.executable, "-m", "worker", *args],
            stdout=out,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            check=False,
            timeout=120,
        ).returncode
    assert code == 0
    lines = (tmp_path / "stdout.log").read_text().splitlines()
    assert len(lines) > 6000  # a debug line a task, and more
    broken = [line[:200] for line in lines if not _is_json_object(line)]
    assert broken == []


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_a_killed_parent_takes_its_processes_with_it(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """kill -9 of the parent: the children stop too (no orphan keeps sending); the journal
    lets a re-run finish with no task deleted twice."""
    child, path, journal = _start_two(emulator, tmp_path, 1000, 200)  # ~25 s of work
    kids = _children_of(child.pid)
    assert len(kids) == 2
    child.kill()
    child.wait(timeout=10)
    # Gone within seconds (they finish their requests in flight), not after the ~25 s of work.
    _wait_for(lambda: not any(Path(f"/proc/{k}/stat").exists() for k in kids), timeout=5)
    settled = emulator.state.requests
    time.sleep(0.5)
    assert emulator.state.requests == settled  # nothing is sending any more
    assert emulator.state.remaining() > 500
    _rerun_finishes(emulator, tmp_path, path, journal)


def test_a_process_that_dies_fails_the_run_but_not_the_others(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """One child SIGKILLed: the other finishes its shard, the run exits 3
    (worker_process_failed) with a report naming it; a re-run finishes the dead one's share."""
    child, path, journal = _start_two(emulator, tmp_path, 400, 100)
    os.kill(_children_of(child.pid)[0], signal.SIGKILL)
    assert child.wait(timeout=60) == 3
    rep = report(tmp_path)
    assert rep["stop_reason"] == "worker_process_failed"
    dead = [p for p in rep["processes"] if p["exit_code"] == -signal.SIGKILL]
    alive = [p for p in rep["processes"] if p["exit_code"] == 0]
    assert len(dead) == 1
    assert "error" in dead[0]
    assert len(alive) == 1
    assert alive[0]["tasks"] > 0
    _rerun_finishes(emulator, tmp_path, path, journal)


def test_refused_signature_over_processes_sends_one_request_in_all(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """401 with 8 processes: each child's first request went alone, but that still made one
    refused signature a process, 8, where Huawei locks an AK/SK after five. The parent's own
    signed GET now goes first: exit 3, the refusal said, one request in all and no process
    started. With the right key the same command deletes every task."""
    monkeypatch.setenv("CLOUD_SDK_SK", "not-the-right-secret")
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 300))
    args = ("--processes", "8", "--concurrency", "8")
    assert spawn(emulator, tmp_path, path, *args).wait(timeout=60) == 3
    assert emulator.state.requests == 1
    lines = (tmp_path / "worker.log").read_text().splitlines()
    said = [json.loads(line) for line in lines if line.startswith("{")]
    [refused] = [e for e in said if e["event"] == "cleanup.credentials_refused"]
    assert refused["error_code"] == "APIGW.0301"
    assert not [e for e in said if e["event"] == "cleanup.processes_starting"]
    rep = report(tmp_path)  # a report, as a run stopped by its first DELETE writes
    assert (rep["stop_reason"], rep["requests"], rep["tasks"]) == ("credentials_refused", 1, 0)
    assert rep["stop_detail"].startswith("HTTP 401 APIGW.0301")
    assert emulator.state.remaining() == 300
    monkeypatch.setenv("CLOUD_SDK_SK", DEMO_SK)
    assert spawn(emulator, tmp_path, path, *args).wait(timeout=60) == 0
    assert emulator.state.remaining() == 0
    assert report(tmp_path)["outcomes"]["deleted"] == 300


def test_an_input_every_process_refuses_is_exit_2(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A CSV without a task_id column, over 2 processes: each refuses it at line 1 and no
    DELETE goes out, so the run ends 2 (usage), as with one process, though the parent's
    first request (a GET) went out and is counted."""
    path = tmp_path / "ids.csv"
    path.write_text("name,status\nEXTEND,SUCCESS\n")
    assert spawn(emulator, tmp_path, path, "--processes", "2").wait(timeout=60) == 2
    assert emulator.state.requests == 1
    assert report(tmp_path)["requests"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input", "-"], "not stdin"),
        (["--concurrency", "2", "--processes", "4"], "--concurrency of at least 4"),
    ],
)
def test_what_cannot_be_split_is_refused_before_anything_is_sent(
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    ids = seed(emulator, 10)
    path = None if "--input" in extra else write_ids(tmp_path / "ids.txt", ids)
    args = ["--processes", "2", *extra]
    assert main(run_args(emulator, tmp_path, path, *args)) == 2
    assert message in capsys.readouterr().err
    assert emulator.state.requests == 0


def test_limits_are_shared_out_and_exit_codes_combined() -> None:
    """Each process gets its share of an integer limit; the run's exit code is the worst."""
    assert [share(10, 3, j) for j in range(3)] == [4, 3, 3]
    assert sum(share(7, 4, j) for j in range(4)) == 7
    assert combine_exit([0, 1], [None, None]) == (1, None)
    assert combine_exit([4, 0], ["signal", None]) == (4, "signal")
    assert combine_exit([3, 4], ["credentials_refused", "signal"]) == (3, "credentials_refused")
    assert combine_exit([0, -9], [None]) == (3, "worker_process_failed")
    assert combine_exit([-15, 4], ["signal"]) == (4, "signal")
    assert combine_exit([2, 2], []) == (2, None)


def test_two_processes_drain_a_queue_as_two_consumers(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    """--queue --until-empty --processes 2: two consumers of the group (named <consumer>-0/-1)
    drain it; each task deleted once, nothing pending, one report naming both consumers."""
    ids = seed(emulator, 800, Faults(latency_ms=5))
    ids_file = write_ids(tmp_path / "ids.txt", ids)
    enqueue = ["enqueue", "--queue", redis_url, "--input", str(ids_file), "--project-id", PROJECT]
    assert main(enqueue) == 0
    args = [
        sys.executable, "-m", "worker", "run", "--queue", redis_url, "--until-empty",
        "--consumer", "box", "--processes", "2", "--concurrency", "8",
        "--endpoint", emulator.url, "--rate", "0", "--log-format", "json", "--progress", "off",
        "--report", str(tmp_path / "report.json"),
    ]  # fmt: skip
    with (tmp_path / "worker.log").open("wb") as log:
        done = subprocess.run(args, check=False, stdout=log, stderr=subprocess.STDOUT, timeout=120)
    assert done.returncode == 0
    assert emulator.state.remaining() == 0
    assert emulator.state.stats()["deleted_twice"] == 0
    rep = report(tmp_path)
    assert rep["outcomes"]["deleted"] == 800
    assert sorted(rep["queue"]["consumers"]) == ["box-0", "box-1"]
    assert rep["queue"]["acked"] == 800
    assert all(p["tasks"] > 0 for p in rep["processes"])  # both consumed
    client = redis.Redis.from_url(redis_url)
    assert int(client.xpending("dcs-cleanup:tasks", "dcs-cleanup")["pending"]) == 0


@pytest.mark.parametrize("shard", [None, "0/2"])
def test_the_parent_s_progress_lines_say_how_far_the_run_is(
    emulator: EmulatorServer, tmp_path: Path, shard: str | None
) -> None:
    """--processes 2 in a log: the parent's progress lines have the file's tasks, the share
    done and the seconds left. With --shard the file's count is not this run's total, so the
    lines keep to what is done and the rate."""
    ids = seed(emulator, 300)
    path = write_ids(tmp_path / "ids.txt", ids)
    extra = ["--processes", "2", "--rate", "150", "--burst", "1", "--progress", "log"]
    extra += ["--progress-interval", "0.25", *(["--shard", shard] if shard else [])]
    child = spawn(emulator, tmp_path, path, *extra)
    assert child.wait(timeout=60) == 0
    log = (tmp_path / "worker.log").read_text().splitlines()
    lines = [json.loads(line) for line in log if '"cleanup.progress"' in line]
    assert len(lines) >= 3
    if shard:
        assert not any("total" in e or "eta_s" in e for e in lines)
        return
    counted = [e for e in lines if "total" in e]
    assert counted
    assert all(e["total"] == 300 and e["percent"] == round(e["done"] / 3, 1) for e in counted)
    assert any(0 < e["done"] < 300 and e["eta_s"] >= 1 for e in counted)


def test_limits_hold_for_the_run_as_a_whole(emulator: EmulatorServer, tmp_path: Path) -> None:
    """--max-deletes 100 over 2 processes: the guard trips (exit 3) with at most 100 deleted
    in all, not 100 per process."""
    ids = seed(emulator, 400)
    path = write_ids(tmp_path / "ids.txt", ids)
    child = spawn(emulator, tmp_path, path, "--processes", "2", "--max-deletes", "100")
    assert child.wait(timeout=60) == 3
    assert 0 < len(emulator.state.deleted) <= 100
    rep = report(tmp_path)
    assert rep["stop_reason"] == "max_deletes"
    assert rep["outcomes"]["deleted"] == len(emulator.state.deleted)


def test_operator_shards_compose_with_processes(emulator: EmulatorServer, tmp_path: Path) -> None:
    """--shard 0/2 and --shard 1/2, each over 2 processes: every ID in exactly one of them."""
    ids = seed(emulator, 600)
    path = write_ids(tmp_path / "ids.txt", ids)
    per_shard = []
    for index in range(2):
        folder = tmp_path / f"s{index}"
        folder.mkdir()
        child = spawn(emulator, folder, path, "--processes", "2", "--shard", f"{index}/2")
        assert child.wait(timeout=60) == 0
        rows = outcomes(folder)
        per_shard.append({r["task_id"] for r in rows})
        assert report(folder)["shard"] == {
            "index": index,
            "count": 2,
            "other_shards": 600 - len(rows),
        }
    assert per_shard[0].isdisjoint(per_shard[1])
    assert per_shard[0] | per_shard[1] == set(ids)
    assert emulator.state.remaining() == 0


def test_retry_failed_over_processes(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A run leaves failures in the journal; --retry-failed --processes 2 finishes them. The
    parent's progress lines have the journal's tasks to retry as their total, as a single
    process's do (there is no file to count)."""
    ids = seed(emulator, 300, Faults(fail_first=1, fail_first_share=0.5))
    path = write_ids(tmp_path / "ids.txt", ids)
    journal = tmp_path / "journal.sqlite"
    assert run(emulator, tmp_path, path, "--journal", str(journal), "--max-attempts", "1") == 1
    failed = report(tmp_path)["outcomes"]["failed"]
    assert failed > 50
    requests_before = emulator.state.requests
    child = spawn(
        emulator, tmp_path, None, "--journal", str(journal), "--retry-failed",
        "--processes", "2", "--rate", "100", "--burst", "1", "--progress", "log",
        "--progress-interval", "0.2",
    )  # fmt: skip
    assert child.wait(timeout=60) == 0
    log = (tmp_path / "worker.log").read_text().splitlines()
    lines = [json.loads(line) for line in log if '"cleanup.progress"' in line]
    assert lines
    assert all(e["total"] == failed for e in lines)
    assert any(0 < e["done"] < failed and e["eta_s"] >= 1 for e in lines)
    assert emulator.state.remaining() == 0
    rep = report(tmp_path)
    assert rep["outcomes"]["deleted"] == failed  # only the failed ones were taken up again
    # One DELETE a task, and the parent's first request (a signed GET), counted in the report.
    assert emulator.state.requests - requests_before == failed + 1 == rep["requests"]
    assert all(p["tasks"] > 0 for p in rep["processes"])


def test_journal_retention_over_processes_forgets_once_before_the_children(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """--journal-retention with --processes 2: the parent forgets the outcomes that ended more
    than a week ago once, before it forks; the children send those tasks again (absent) and
    skip the recent ones, and the log says it once."""
    journal, old, recent = week_old_and_recent(emulator, tmp_path, 40, 20)
    sent = emulator.state.deletes_received
    child = spawn(
        emulator, tmp_path, write_ids(tmp_path / "both.txt", old + recent),
        "--journal", str(journal), "--journal-retention", "604800", "--processes", "2",
    )  # fmt: skip
    assert child.wait(timeout=60) == 0
    log = (tmp_path / "worker.log").read_text().splitlines()
    pruned = [json.loads(line) for line in log if '"cleanup.journal_pruned"' in line]
    assert [e["rows"] for e in pruned] == [40]
    assert emulator.state.deletes_received == sent + 40
    rep = report(tmp_path)
    assert (rep["outcomes"]["absent"], rep["skipped_reasons"]) == (40, {"already_done": 20})


def test_processes_share_the_quota_the_gateway_states(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """--rate 0 --processes 2 against a 150/s quota its 429s state: each process holds half of
    it, so the two together keep just under it, not each of them at all of it."""
    ids = seed(emulator, 600, Faults(quota_rate=150, quota_burst=15))
    child = spawn(
        emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids), "--rate", "0",
        "--processes", "2", "--max-attempts", "10",
    )  # fmt: skip
    assert child.wait(timeout=60) == 0
    log = (tmp_path / "worker.log").read_text().splitlines()
    stated = [json.loads(line) for line in log if '"cleanup.quota_stated"' in line]
    assert sorted(e["process"] for e in stated) == [0, 1]
    assert {(e["quota_per_s"], e["rate_at_most"]) for e in stated} == {(150.0, 74.25)}
    rep = report(tmp_path)
    assert rep["outcomes"]["deleted"] == 600
    assert rep["rate"]["quota_stated"] == 150.0
    assert rep["rate"]["final"] <= 148.5  # lower if a 429 came while a process held its share
    assert rep["throttled"] / rep["requests"] < 0.1


def _screen(raw: bytes) -> list[str]:
    """The lines a terminal shows for ``raw``: colours dropped, ``\\r`` back to column 0 (so a
    later write overwrites the line), ``\\n`` ends the line."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode("utf-8", "replace"))
    lines: list[str] = []
    line: list[str] = []
    col = 0
    for ch in text:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        else:
            line[col : col + 1] = [ch]
            col += 1
    return [*lines, "".join(line).rstrip()]


def test_on_a_terminal_each_childs_log_line_prints_whole_above_the_bar(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """--processes 2 on a terminal: the parent draws one bar, and every line a child logs (here
    a warning per rejected task) shows on a line of its own, never glued to the bar."""
    ids = seed(emulator, 300, Faults(reject_share=0.2, latency_ms=15))
    path = write_ids(tmp_path / "ids.txt", ids)
    try:
        main_fd, term_fd = pty.openpty()
    except OSError as exc:  # a machine without pseudo-terminals
        pytest.skip(f"no pty: {exc}")
    fcntl.ioctl(term_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    args = run_args(emulator, tmp_path, path, "--processes", "2", "--concurrency", "4")
    args += ["--progress", "auto", "--log-format", "auto"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", *args],
        stdin=subprocess.DEVNULL,
        stdout=term_fd,
        stderr=term_fd,
        cwd=tmp_path,
    )
    os.close(term_fd)
    raw = bytearray()
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # EIO: every writer of the terminal has exited
            break
        if not chunk:
            break
        raw += chunk
    os.close(main_fd)
    assert proc.wait(timeout=60) == 1  # some tasks rejected
    rejected = report(tmp_path)["outcomes"]["rejected"]
    assert rejected > 20
    # The children's reasons, added up in the parent's report.
    assert report(tmp_path)["rejected_reasons"] == {"DCS.4403": rejected}
    screen = _screen(bytes(raw))
    warnings = [line for line in screen if "cleanup.task_rejected" in line]
    assert len(warnings) == rejected, "\n".join(screen)
    glued = [line for line in warnings if not re.match(r"\d{4}-\d\d-\d\dT", line)]
    assert not glued, "\n".join(glued)
    assert any("tasks/s" in line or " tasks" in line for line in screen)  # the bar was drawn


def test_a_signal_that_interrupts_a_log_line_of_the_parent_still_reaches_the_children() -> None:
    """The parent forwards SIGTERM from a signal handler. It logged the signal there first, and
    a signal that came while the parent was writing a log line (progress, a relayed line) then
    waited for ever on the log's lock, held by the line it interrupted: the parent hung and the
    children never heard of it. The child gets it at once now; the line is logged after."""
    import io
    import threading

    from worker.logs import configure_logging, get_logger
    from worker.settings import Settings
    from worker.supervise import Supervisor

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    supervisor = Supervisor(Settings.model_construct(grace=20.0))
    supervisor.add(child.pid, 0)

    class SignalMidLine(io.StringIO):
        """A log stream that a SIGTERM interrupts while its first line is being written."""

        interrupted = False

        def write(self, text: str) -> int:
            if not self.interrupted:
                self.interrupted = True
                supervisor._forward(signal.SIGTERM, None)  # as the signal would, mid-write
            return super().write(text)

    out = SignalMidLine()
    configure_logging("info", "json", stream=out)
    try:
        writer = threading.Thread(
            target=lambda: get_logger().info("cleanup.progress", done=1), daemon=True
        )
        writer.start()
        writer.join(5)
        assert not writer.is_alive(), "the parent hung on its log's lock"
        assert child.wait(timeout=5) == -signal.SIGTERM
        supervisor._log_signals()  # what the parent's loop does next
    finally:
        child.kill()
        configure_logging("info", "json")
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["cleanup.progress", "cleanup.signal_received"]


def test_a_childs_log_line_is_kept_when_the_parent_stops_reading() -> None:
    """A child whose parent no longer reads its log pipe (the parent failed or was killed)
    prints its lines on its own stdout instead: none is lost, the run goes on."""
    import io

    from worker.logs import configure_logging, get_logger
    from worker.supervise import LogRelay

    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    relay = LogRelay(1)
    try:
        relay.in_child(0)  # closes the read end here too: nobody reads the pipe
        get_logger().warning("cleanup.task_rejected", task_id="t1")
        get_logger().warning("cleanup.task_rejected", task_id="t2")
    finally:
        relay.__exit__(None, None, None)
        configure_logging("info", "json")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["task_id"] for line in lines] == ["t1", "t2"]
