"""Never lose work: kill -9 and resume, SIGTERM, deadlines, outages, hostile servers."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import (
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
from worker.configuration import load_settings
from worker.emulator import EmulatorServer, Faults
from worker.journal import Journal
from worker.models import TaskRef
from worker.pipeline import Pipeline
from worker.policy import CircuitBreaker, RateLimiter, RetryBudget
from worker.report import OutcomeWriter, RunStats
from worker.sources import IterableSource


def journal_outcomes(path: Path) -> Counter[str]:
    with sqlite3.connect(path) as db:
        return Counter(row[0] for row in db.execute("SELECT outcome FROM tasks"))


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
def test_kill_9_then_resume_finishes_everything(
    trial: int, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """SIGKILL at a random point of a 3,000-task run; the resumed run ends every task deleted or
    absent, and the emulator received at most tasks + concurrency DELETEs in all."""
    rng = random.Random(trial)
    tasks, concurrency = 3000, 16
    ids = seed(emulator, tasks, Faults(latency_ms=2, latency_jitter_ms=6, seed=trial))
    path = write_ids(tmp_path / "ids.txt", ids)
    journal = tmp_path / "journal.sqlite"
    extra = ("--journal", str(journal), "--concurrency", str(concurrency))
    child = spawn(emulator, tmp_path, path, *extra)
    deadline = time.monotonic() + 60
    target = rng.uniform(0.15, 0.85) * tasks
    while emulator.state.deletes_received < target and child.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed_at = emulator.state.deletes_received
    assert 0 < emulator.state.remaining() < tasks, "the kill landed mid-run"
    assert run(emulator, tmp_path, path, *extra) == 0
    assert emulator.state.remaining() == 0
    assert journal_outcomes(journal).keys() <= {"deleted", "absent"}
    assert emulator.state.deletes_received <= tasks + concurrency, (
        killed_at,
        emulator.state.stats(),
    )
    assert max(emulator.state.deleted.values()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_on_slow_server_exits_4_within_grace(
    sig: signal.Signals, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """SIGTERM mid-run: exit 4 within the grace period, report written, outcomes' deleted count
    equals what the emulator deleted; a resumed run finishes the rest. SIGHUP (the terminal of
    a run started by hand went away) stops it the same way; it used to kill it outright."""
    ids = seed(emulator, 400, Faults(latency_ms=300))
    path = write_ids(tmp_path / "ids.txt", ids)
    journal = tmp_path / "journal.sqlite"
    grace = 5.0
    child = spawn(
        emulator,
        tmp_path,
        path,
        "--journal",
        str(journal),
        "--concurrency",
        "8",
        "--grace",
        str(grace),
    )
    while emulator.state.deletes_received < 30:
        time.sleep(0.01)
    sent = time.monotonic()
    child.send_signal(sig)
    assert child.wait(timeout=grace + 10) == 4
    assert time.monotonic() - sent < grace + 2
    rep = report(tmp_path)
    assert rep["exit_code"] == 4
    assert rep["stop_reason"] == "signal"
    rows = outcomes(tmp_path)
    deleted = sum(r["outcome"] == "deleted" for r in rows)
    assert deleted == len(emulator.state.deleted) > 0
    assert rep["outcomes"]["not_attempted"] == 400 - deleted
    assert rep["input_fully_read"] is True
    emulator.state.set_faults(Faults())
    assert run(emulator, tmp_path, path, "--journal", str(journal)) == 0
    assert emulator.state.remaining() == 0
    assert report(tmp_path)["skipped_reasons"] == {"already_done": deleted}


@pytest.mark.parametrize("reader", ["pipe", "terminal"])
def test_a_log_reader_that_goes_away_does_not_end_the_run(
    reader: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The logs' reader goes away mid-run: ``dcs-cleanup run … | head -1`` (EPIPE), or the
    terminal of a run started by hand (EIO, console logs and a progress bar). The next log
    line used to end the run with a traceback, exit 1. The run now goes on without its logs:
    every task deleted, exit 0, the report and outcomes written."""
    ids = seed(emulator, 1500, Faults(latency_ms=2))
    path = write_ids(tmp_path / "ids.txt", ["bad/1", *ids])
    args = [sys.executable, "-m", "worker", *run_args(emulator, tmp_path, path)]
    if reader == "pipe":
        child = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path
        )
        assert child.stdout is not None
        assert b"cleanup.run_started" in child.stdout.readline()
        child.stdout.close()
    else:
        term, side = os.openpty()
        for flag in ("--log-format", "--progress"):  # auto: console logs and a bar
            at = args.index(flag)
            del args[at : at + 2]
        child = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=side, stderr=side, cwd=tmp_path
        )
        os.close(side)
        assert os.read(term, 1024)  # the first output is on the terminal
        os.close(term)
    assert child.wait(timeout=60) == 0
    assert emulator.state.remaining() == 0
    assert report(tmp_path)["outcomes"]["deleted"] == len(ids)
    assert len(outcomes(tmp_path)) == len(ids) + 1


def wait_for(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_pipe_on_stdin_is_read_as_it_comes_and_a_stop_does_not_wait_for_it(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """``producer | dcs-cleanup run --input -`` with a producer that writes a few IDs and goes
    quiet: they are deleted at once (not held until 512 lines or the end of the pipe), and a
    SIGTERM ends the run (exit 4) while the pipe stays open, naming the last line taken in."""
    ids = seed(emulator, 5)
    child = subprocess.Popen(
        [sys.executable, "-m", "worker", *run_args(emulator, tmp_path, None, "--input", "-")],
        stdin=subprocess.PIPE,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    assert child.stdin is not None
    try:
        child.stdin.write(("\n".join(ids[:3]) + "\n").encode())
        child.stdin.flush()
        assert wait_for(lambda: len(emulator.state.deleted) == 3, 10), "lines held back"
        child.stdin.write(f"{ids[3]}\n".encode())
        child.stdin.flush()
        assert wait_for(lambda: len(emulator.state.deleted) == 4, 10), "line held back"
        sent = time.monotonic()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 4
        assert time.monotonic() - sent < 5
    finally:
        child.kill()
        child.stdin.close()
        child.wait()
    assert set(emulator.state.deleted) == set(ids[:4])
    rep = report(tmp_path)
    assert rep["outcomes"]["deleted"] == 4
    assert rep["input_fully_read"] is False
    lines = (tmp_path / "worker.log").read_text().splitlines()
    logs = [json.loads(line) for line in lines if line.startswith("{")]
    cut = [entry for entry in logs if entry["event"] == "cleanup.input_cut_short"]
    assert [(c["source"], c["last_line_taken"]) for c in cut] == [("stdin", 4)]


def test_a_stop_that_leaves_lines_unread_does_not_offer_retry_failed(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """With --grace 0 a SIGTERM leaves the rest of the file unread, so not in the journal:
    --retry-failed would pass those tasks by. The summary offers the same run command only."""
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 5000, Faults(latency_ms=200)))
    journal = tmp_path / "journal.sqlite"
    child = spawn(
        emulator, tmp_path, path, "--journal", str(journal), "--concurrency", "4",
        "--grace", "0",
    )  # fmt: skip
    assert wait_for(lambda: len(emulator.state.deleted) >= 5, 20)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=20) == 4
    rep = report(tmp_path)
    assert rep["input_fully_read"] is False
    assert rep["outcomes"]["not_attempted"] > 0
    said = (tmp_path / "worker.log").read_text()
    assert "again: the same run command skips the tasks that ended deleted or absent\n" in said
    assert "--retry-failed" not in said


def test_stdin_on_a_terminal_says_what_it_waits_for(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """``run --input -`` started at a terminal without a pipe waited for ever, saying nothing.
    It says it reads IDs from the terminal until Ctrl-D, then reads them as typed."""
    ids = seed(emulator, 2)
    leader, follower = pty.openpty()
    err = tmp_path / "err.txt"
    with err.open("wb") as err_out:
        child = subprocess.Popen(
            [sys.executable, "-m", "worker", *run_args(emulator, tmp_path, None, "--input", "-")],
            stdin=follower,
            stdout=subprocess.DEVNULL,
            stderr=err_out,
        )
    os.close(follower)
    try:
        hint = "reading task IDs from the terminal, one a line; end with Ctrl-D"
        assert wait_for(lambda: hint in err.read_text(), 20), err.read_text()
        os.write(leader, ("\n".join(ids) + "\n").encode() + b"\x04")  # Ctrl-D: the end
        assert child.wait(timeout=20) == 0
    finally:
        child.kill()
        child.wait()
        os.close(leader)
    assert set(emulator.state.deleted) == set(ids)
    assert report(tmp_path)["outcomes"]["deleted"] == 2


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("hard", [False, True])
def test_an_open_file_limit_below_the_concurrency_is_raised_or_refused(
    hard: bool, processes: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """``--concurrency 200`` under ``ulimit -n 64``: connections failed with "Too many open
    files", the circuit breaker opened on them (exit 3, most tasks not attempted) and the
    report could not be written. The soft limit is raised to what the run needs (exit 0, all
    deleted); when the hard limit is too low as well, exit 2 says so before anything is sent.
    Over --processes it names the --concurrency given, and each process's share (it named the
    share as if it were the flag's value)."""
    hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if not hard and hard_limit != resource.RLIM_INFINITY and hard_limit < 264:
        pytest.skip(f"this machine's hard limit ({hard_limit}) is below what the run needs")
    ids = seed(emulator, 600, Faults(latency_ms=50))
    path = write_ids(tmp_path / "ids.txt", ids)
    limit = "-n 64" if hard else "-S -n 64"  # both limits, or the soft one
    args = run_args(emulator, tmp_path, path, "--concurrency", "200", "--processes", processes)
    code = run_limited(limit, args, tmp_path)
    said = (tmp_path / "worker.log").read_text()
    if hard:
        assert code == 2
        each = "" if processes == "1" else " in each of --processes 2 (100 requests each)"
        need = 264 if processes == "1" else 164
        told = f"--concurrency 200 needs about {need} open files{each} and this process may open 64"
        assert told in said
        assert "--concurrency 100 " not in said  # a process's share, as if it were the flag's
        assert emulator.state.requests == 0
    else:
        assert code == 0, said[-2000:]
        assert emulator.state.remaining() == 0
        assert report(tmp_path)["outcomes"]["deleted"] == 600


def test_a_fifo_input_is_read_to_its_end(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A named pipe as --input PATH: read as it is written, to the writer's end (exit 0, every
    task deleted); --processes, which would have each process open it, refuses it."""
    ids = seed(emulator, 30)
    fifo = tmp_path / "ids.fifo"
    os.mkfifo(fifo)

    def writer() -> None:
        with fifo.open("w") as out:
            for task_id in ids:
                out.write(task_id + "\n")
                out.flush()
                time.sleep(0.005)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert run(emulator, tmp_path, fifo) == 0
    thread.join(5)
    assert emulator.state.remaining() == 0
    assert report(tmp_path)["input_fully_read"] is True
    assert run(emulator, tmp_path, fifo, "--processes", "2") == 2


def test_one_run_at_a_time_on_a_journal(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second run on a journal in use (a second terminal, an overlapping job) exits 2 at once,
    naming the other run's pid, rather than claim its pending tasks again and send every DELETE
    twice; --processes too. Once the first is killed (-9), the journal is free and a run over
    the same input finishes it."""
    ids = seed(emulator, 300, Faults(latency_ms=200))
    path = write_ids(tmp_path / "ids.txt", ids)
    journal = str(tmp_path / "journal.sqlite")
    first = spawn(emulator, tmp_path, path, "--journal", journal, "--concurrency", "4")
    try:
        assert wait_for(lambda: emulator.state.deletes_received >= 4, 20)
        for extra in ((), ("--processes", "2")):
            assert run(emulator, tmp_path, path, "--journal", journal, *extra) == 2
            err = capsys.readouterr().err
            assert f"--journal {journal}: another run (pid {first.pid}) is using it" in err
    finally:
        first.kill()
        first.wait()
    emulator.state.set_faults(Faults())
    assert run(emulator, tmp_path, path, "--journal", journal) == 0
    assert emulator.state.remaining() == 0
    assert max(emulator.state.delete_calls.values()) <= 2


@pytest.mark.slow
def test_second_signal_stops_at_once(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A second SIGTERM cancels in-flight requests instead of waiting out the grace period."""
    ids = seed(emulator, 50, Faults(latency_ms=20_000))
    path = write_ids(tmp_path / "ids.txt", ids)
    child = spawn(
        emulator, tmp_path, path, "--concurrency", "4", "--grace", "60", "--timeout", "120"
    )
    while emulator.state.deletes_received < 1:  # the run's first request, which goes alone
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # later than the same stop delivered twice (below)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=10) == 4
    rep = report(tmp_path)
    assert rep["outcomes"]["not_attempted"] == 50


def test_one_stop_delivered_twice_still_lets_requests_in_flight_finish(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A SIGTERM sent to the process group and forwarded by a wrapper (``timeout``; ``uv run``
    200 ms later) reaches the run twice within a moment. That is one stop: the requests in
    flight finish within grace and their outcomes are known. It used to be taken for a second
    signal, "stop now", which cancelled them."""
    ids = seed(emulator, 60, Faults(latency_ms=1500))
    path = write_ids(tmp_path / "ids.txt", ids)
    child = spawn(emulator, tmp_path, path, "--concurrency", "4", "--grace", "20")
    while emulator.state.deletes_received < 5:  # the first alone, then four in flight
        time.sleep(0.01)
    at_signal = len(emulator.state.deleted)
    child.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=20) == 4
    log = (tmp_path / "worker.log").read_text()
    assert "cleanup.signal_repeated" in log
    assert "cleanup.signal_received_again" not in log
    rep = report(tmp_path)
    assert rep["outcomes"]["deleted"] == len(emulator.state.deleted) >= at_signal + 4
    assert rep["outcomes"]["not_attempted"] == 60 - rep["outcomes"]["deleted"]


def test_deadline_stops_like_sigterm(emulator: EmulatorServer, tmp_path: Path) -> None:
    """--deadline: stop intake when it passes, exit 4, the rest not_attempted."""
    ids = seed(emulator, 300, Faults(latency_ms=100))
    path = write_ids(tmp_path / "ids.txt", ids)
    code = run(emulator, tmp_path, path, "--deadline", "0.5", "--concurrency", "4", "--grace", "5")
    assert code == 4
    rep = report(tmp_path)
    assert rep["stop_reason"] == "deadline"
    assert rep["outcomes"]["deleted"] == len(emulator.state.deleted)
    assert rep["outcomes"]["deleted"] + rep["outcomes"]["not_attempted"] == 300


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_deadline_time_already_past_is_refused_before_reading(
    processes: str,
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--deadline 2026-11-29T09:00:00+08:00`` meant for UTC (three hours gone): the run read
    its whole input to mark every task not_attempted and ended 4, looking like a run cut short
    by its deadline. A time already past is exit 2 now, naming it, with nothing written."""
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 20))
    past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3 * 3600))
    assert run(emulator, tmp_path, ids, "--deadline", past, "--processes", processes) == 2
    err = capsys.readouterr().err
    assert f"--deadline {past}: that time passed 10,8" in err  # 10,800 s and a moment
    assert "a date or time zone off?" in err
    assert emulator.state.requests == 0
    assert not (tmp_path / "report.json").exists()
    assert not (tmp_path / "outcomes.jsonl").exists()
    ahead = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    assert run(emulator, tmp_path, ids, "--deadline", ahead, "--processes", processes) == 0
    assert emulator.state.remaining() == 0


@pytest.mark.slow
def test_full_outage_is_bounded_and_resumable(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every answer 500 on a 10,000-task run: requests stay under both bounds, the breaker opens,
    exit 3, and its log line says what the answers were; after the outage the same journal lets a
    run finish everything."""
    tasks, concurrency, budget, window = 10_000, 32, 200, 200
    ids = seed(emulator, tasks, Faults(error_rate=1.0))
    path = write_ids(tmp_path / "ids.txt", ids)
    journal = tmp_path / "journal.sqlite"
    code = run(
        emulator, tmp_path, path, "--journal", str(journal),
        "--concurrency", str(concurrency), "--retry-budget", str(budget),
        "--breaker-window", str(window),
    )  # fmt: skip
    assert code == 3
    rep = report(tmp_path)
    assert rep["stop_reason"] == "circuit_open"
    assert rep["breaker"]["opened"] is True
    received = emulator.state.deletes_received
    # The breaker opens at the window-th failed answer; only requests already in flight follow.
    assert received <= window + concurrency
    # Whatever the breaker does, the budget bounds retries: requests <= tasks + budget.
    assert rep["requests"] - rep["retries"] <= tasks
    assert rep["retries"] <= budget
    assert rep["outcomes"]["not_attempted"] + rep["outcomes"]["failed"] == tasks
    assert "answers failed; the last: HTTP 500 DCS.5000" in capsys.readouterr().out
    assert rep["stop_detail"] == "100% of the last 200 answers failed; the last: HTTP 500 DCS.5000"
    emulator.state.set_faults(Faults())
    assert run(emulator, tmp_path, path, "--journal", str(journal)) == 0
    assert emulator.state.remaining() == 0


def _run_on_a_full_disk(
    emulator: EmulatorServer, tmp_path: Path, *extra: str
) -> tuple[list[str], Path, dict[str, Any]]:
    """2,000 tasks with an outcomes file that refuses every write (/dev/full): the run must
    stop (exit 3, output_error) within 30 s. Returns the IDs, the input and the report."""
    ids = seed(emulator, 2000)
    path = write_ids(tmp_path / "ids.txt", ids)
    child = spawn(emulator, tmp_path, path, *extra, "--outcomes", "/dev/full", "--concurrency", "8")
    try:
        assert child.wait(timeout=30) == 3
    finally:
        child.kill()
    rep = report(tmp_path)
    assert rep["stop_reason"] == "output_error"
    return ids, path, rep


def test_a_full_disk_under_the_outcomes_file_stops_the_run_and_loses_nothing(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The outcomes file refuses writes (ENOSPC: /dev/full stands in for a full volume). The
    run used to hang for ever with its event loop idle. It now stops sending (exit 3,
    output_error, the detail saying how to get the outcomes back), every answer it had is in
    the journal, ``report --journal`` writes them all, and a new run finishes the rest."""
    journal = tmp_path / "journal.sqlite"
    ids, path, rep = _run_on_a_full_disk(emulator, tmp_path, "--journal", str(journal))
    assert rep["stop_detail"] == (
        "outcomes /dev/full: write failed: No space left on device; dcs-cleanup report "
        f"--journal {journal} --outcomes NEW_FILE writes them all"
    )
    deleted = set(emulator.state.deleted)
    assert 0 < len(deleted) < len(ids)
    assert rep["outcomes"]["deleted"] == len(deleted)
    assert journal_outcomes(journal)["deleted"] == len(deleted)
    again = tmp_path / "again.jsonl"
    args = ["report", "--journal", str(journal), "--outcomes", str(again)]
    assert main([*args, "--report", str(tmp_path / "again.json")]) == 0
    rows = [json.loads(line) for line in again.read_text().splitlines()]
    assert {r["task_id"] for r in rows if r["outcome"] == "deleted"} == deleted
    assert run(emulator, tmp_path, path, "--journal", str(journal)) == 0
    assert emulator.state.remaining() == 0


def test_an_outcomes_file_deleted_mid_run_is_named_with_where_its_lines_are(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """``rm outcomes.jsonl`` (or a cleaner of /tmp) while the run writes it: every write
    succeeded into the unlinked file, the run ended 0, and nothing said the lines were gone.
    A warning now names the file and the command that writes them again from the journal."""
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 300, Faults(latency_ms=20)))
    journal = tmp_path / "journal.sqlite"
    child = spawn(emulator, tmp_path, ids, "--concurrency", "4", "--journal", str(journal))
    written = tmp_path / "outcomes.jsonl"
    deadline = time.monotonic() + 30
    while not (written.exists() and written.stat().st_size):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    written.unlink()
    assert child.wait(timeout=60) == 0
    events = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines()
              if line.startswith("{")]  # fmt: skip
    [told] = [e for e in events if e["event"] == "cleanup.outcomes_deleted"]
    assert told["level"] == "warning"
    assert told["path"] == str(written)
    assert f"dcs-cleanup report --journal {journal} --outcomes NEW_FILE" in told["detail"]
    again = tmp_path / "again.jsonl"
    assert main(["report", "--journal", str(journal), "--outcomes", str(again)]) == 0
    assert len(again.read_text().splitlines()) == 300


@pytest.mark.parametrize("journal", [True, False])
def test_a_full_disk_under_processes_points_to_a_journal_that_is_kept(
    journal: bool, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """--processes 2 and an outcomes file that refuses writes: exit 3, output_error. The
    detail names the journal to write the outcomes from only when there is one to keep: a
    run without --journal pointed at its children's temporary journal, deleted at the end."""
    extra = ["--journal", str(tmp_path / "journal.sqlite")] if journal else []
    _, _, rep = _run_on_a_full_disk(emulator, tmp_path, *extra, "--processes", "2")
    detail = rep["stop_detail"]
    assert detail.startswith("outcomes /dev/full: write failed: No space left on device; ")
    if journal:
        assert detail.endswith(
            f"dcs-cleanup report --journal {tmp_path / 'journal.sqlite'} --outcomes NEW_FILE "
            "writes them all"
        )
    else:
        assert detail.endswith("the report counts them (no --journal to write them from)")


def run_limited(limit: str, args: list[str], tmp_path: Path) -> int:
    """``python -m worker`` under ``ulimit {limit}`` (bash's: ``-f 24`` lets no file of its
    grow over 24 KiB, as on a disk filling up; ``-S -n 64`` lets it open 64 files). Its exit
    code, once its log (worker.log) shows no traceback."""
    limited = ["bash", "-c", f'ulimit {limit} && exec "$@"', "-"]
    with (tmp_path / "worker.log").open("wb") as out:
        child = subprocess.Popen(
            [*limited, sys.executable, "-m", "worker", *args],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path,
        )  # fmt: skip
        code = child.wait(timeout=60)
    assert "Traceback" not in (tmp_path / "worker.log").read_text()
    return code


def run_with_small_files(kib: int, args: list[str], tmp_path: Path) -> int:
    """``run_limited`` with no file allowed to grow over ``kib`` KiB."""
    return run_limited(f"-f {kib}", args, tmp_path)


def test_a_disk_filling_up_mid_line_leaves_whole_outcome_lines(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The outcomes file holds 4 MiB of earlier runs' lines and may grow by 24 KiB only, so a
    batch's write stops part-way through a line (the journal, new, has room). That part of a
    line stayed at the end of the file, and the next run's first line was glued to it: one
    line that no JSON reader parses. The run still stops (exit 3, output_error); the file now
    ends with a whole line, and a later run's lines, appended once there is room, all parse."""
    ids = seed(emulator, 2000)
    path = write_ids(tmp_path / "ids.txt", ids)
    earlier = [{"task_id": f"earlier-{n:07}", "outcome": "deleted"} for n in range(90_000)]
    out = tmp_path / "outcomes.jsonl"
    out.write_text("".join(json.dumps(row) + "\n" for row in earlier))
    limit = out.stat().st_size + 24 * 1024
    assert run_with_small_files(limit // 1024, run_args(emulator, tmp_path, path), tmp_path) == 3
    assert report(tmp_path)["stop_reason"] == "output_error"
    data = out.read_bytes()
    assert data.endswith(b"\n")
    first = outcomes(tmp_path)
    assert first[: len(earlier)] == earlier
    assert 0 < len(first) - len(earlier) < len(ids)
    assert {row["outcome"] for row in first[len(earlier) :]} == {"deleted"}
    assert run(emulator, tmp_path, path) == 0
    rows = outcomes(tmp_path)
    assert rows[: len(first)] == first
    assert sorted(row["task_id"] for row in rows[len(first) :]) == sorted(ids)


def test_lines_appended_to_a_file_cut_mid_line_start_on_a_line_of_their_own(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """An outcomes file left ending inside a line (a power cut mid-write) gets one newline
    before this run's lines: its first line was glued to that fragment. Two processes append,
    and still one newline, not one each."""
    ids = seed(emulator, 200)
    path = write_ids(tmp_path / "ids.txt", ids)
    cut = '{"task_id": "cut-off-by-a-power-c'
    (tmp_path / "outcomes.jsonl").write_text(cut)
    assert run(emulator, tmp_path, path, "--processes", "2") == 0
    first, *lines = (tmp_path / "outcomes.jsonl").read_text().splitlines()
    assert first == cut
    assert sorted(json.loads(line)["task_id"] for line in lines) == sorted(ids)


def test_an_outcomes_fifo_whose_reader_leaves_stops_the_run(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """``--outcomes`` on a FIFO whose reader goes away after the first lines (``| head``): the
    next write fails (EPIPE) and the run stops, exit 3 output_error, with its report. Opened
    for reading as well as writing (to look at the file's last byte), the FIFO had a reader
    for as long as the worker lived: no EPIPE, and the run hung once the pipe was full."""
    ids = seed(emulator, 3000)
    path = write_ids(tmp_path / "ids.txt", ids)
    fifo = tmp_path / "outcomes.fifo"
    os.mkfifo(fifo)
    first: list[bytes] = []

    def read_a_little() -> None:
        with fifo.open("rb") as reader:
            first.append(reader.readline())

    reader = threading.Thread(target=read_a_little, daemon=True)
    reader.start()
    child = spawn(emulator, tmp_path, path, "--outcomes", str(fifo), "--concurrency", "8")
    try:
        assert child.wait(timeout=60) == 3
    finally:
        child.kill()
    reader.join(timeout=10)
    assert json.loads(first[0])["outcome"] == "deleted"
    rep = report(tmp_path)
    assert rep["stop_reason"] == "output_error"
    assert "Broken pipe" in rep["stop_detail"]
    assert fifo.is_fifo()


def test_a_journal_that_cannot_grow_stops_the_run_before_sending(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The journal's first claim fails (the file may not grow: RLIMIT_FSIZE stands in for a
    full disk). The claim's error escaped the pipeline: a traceback, exit 1 and no report. It
    is now exit 3, journal_error, with the report, and no task of the unclaimed batch sent."""
    ids = seed(emulator, 600)
    path = write_ids(tmp_path / "ids.txt", ids)
    journal = tmp_path / "journal.sqlite"

    args = run_args(emulator, tmp_path, path, "--journal", str(journal))
    assert run_with_small_files(64, args, tmp_path) == 3
    rep = report(tmp_path)
    assert rep["stop_reason"] == "journal_error"
    assert rep["stop_detail"].startswith(f"journal {journal}: claim failed: ")
    assert emulator.state.requests == 0
    assert emulator.state.remaining() == len(ids)


def test_a_journal_that_fills_up_mid_run_still_reports_every_answer(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The journal may grow to 256 KiB (RLIMIT_FSIZE stands in for a full disk): its first
    claim fits, a later commit of outcomes does not. The run stops (exit 3, journal_error), but
    the answers in that commit and after it (the requests in flight) and the claimed tasks never
    sent were left out of the outcomes file and the report: 46 requests, 18 outcomes counted and
    14 lines. Every task the server deleted is now in both, the rest of the claim
    ``not_attempted``."""
    ids = seed(emulator, 2000, Faults(latency_ms=20))
    path = write_ids(tmp_path / "ids.txt", ids)
    journal = tmp_path / "journal.sqlite"
    args = run_args(emulator, tmp_path, path, "--journal", str(journal), "--concurrency", "16")
    assert run_with_small_files(256, args, tmp_path) == 3
    rep = report(tmp_path)
    assert rep["stop_reason"] == "journal_error"
    assert rep["stop_detail"].startswith(f"journal {journal}: write failed: ")
    deleted = set(emulator.state.deleted)
    assert 0 < len(deleted) < len(ids)
    rows = outcomes(tmp_path)
    assert {r["task_id"] for r in rows if r["outcome"] == "deleted"} == deleted
    assert {r["outcome"] for r in rows} == {"deleted", "not_attempted"}
    assert rep["outcomes"]["deleted"] == len(deleted)
    assert rep["tasks"] == len(rows) == len({r["task_id"] for r in rows})


def test_retry_failed_progress_lines_count_the_tasks_to_retry(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --retry-failed run's progress lines have the tasks the journal holds to retry as
    their total (its failed ones here, not the deleted), and how far along it is."""
    ids = seed(emulator, 400, Faults(fail_first=1, fail_first_share=0.75, seed=5))
    journal = tmp_path / "journal.sqlite"
    path = write_ids(tmp_path / "ids.txt", ids)
    assert run(emulator, tmp_path, path, "--journal", str(journal), "--max-attempts", "1") == 1
    failed = report(tmp_path)["outcomes"]["failed"]
    assert 200 < failed < 400
    capsys.readouterr()
    from worker.cli import main

    code = main(
        ["run", "--retry-failed", "--journal", str(journal), "--endpoint", emulator.url,
         "--rate", "150", "--burst", "1", "--log-format", "json", "--progress", "log",
         "--progress-interval", "0.25"]
    )  # fmt: skip
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "{" in line]
    lines = [e for e in events if e["event"] == "cleanup.progress"]
    assert len(lines) >= 3
    assert all(e["total"] == failed for e in lines)
    assert all(e["percent"] == round(100 * e["done"] / failed, 1) for e in lines)


def test_retry_failed_takes_its_tasks_from_the_journal(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--retry-failed re-attempts failed tasks from the journal alone, no input needed; three
    pages of them, so paging the journal overlaps the sink's writes to it. Once they are all
    deleted, another --retry-failed sends nothing and says there was nothing to retry."""
    ids = seed(emulator, 1500, Faults(error_rate=1.0))
    path = write_ids(tmp_path / "ids.txt", ids)
    journal = tmp_path / "journal.sqlite"
    first = run(
        emulator, tmp_path, path, "--journal", str(journal), "--max-attempts", "1",
        "--breaker-window", "100000",
    )  # fmt: skip
    assert first == 1
    assert journal_outcomes(journal) == {"failed": 1500}
    emulator.state.set_faults(Faults())
    from worker.cli import main

    code = main(
        ["run", "--retry-failed", "--journal", str(journal), "--endpoint", emulator.url,
         "--report", str(tmp_path / "report.json"), "--rate", "0", "--progress", "off"]
    )  # fmt: skip
    assert code == 0
    assert emulator.state.remaining() == 0
    assert max(emulator.state.deleted.values()) == 1
    assert report(tmp_path)["outcomes"]["deleted"] == 1500
    assert journal_outcomes(journal) == {"deleted": 1500}
    capsys.readouterr()
    requests = emulator.state.requests
    assert (
        main(["run", "--retry-failed", "--journal", str(journal), "--endpoint", emulator.url]) == 0
    )
    assert emulator.state.requests == requests
    assert '"event": "cleanup.nothing_to_retry"' in capsys.readouterr().out


@pytest.mark.parametrize("kept", [True, False])
def test_a_report_that_cannot_be_written_says_how_to_get_it_again(
    kept: bool, emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --report on a full disk (/dev/full) is an error line, the run's exit code its tasks'.
    The line names the command that renders the report from the journal; without --journal
    (a temporary one, deleted at the end) it says that nothing can. That command on a full
    disk ended in a traceback (exit 1); it is one line, exit 3."""
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 20))
    journal = tmp_path / "journal.sqlite"
    extra = ["--journal", str(journal)] if kept else []
    assert main([*run_args(emulator, tmp_path, path, *extra), "--report", "/dev/full"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    failed = [e for e in lines if e["event"] == "cleanup.report_failed"]
    assert len(failed) == 1
    assert failed[0]["path"] == "/dev/full"
    if kept:
        assert failed[0]["again"] == f"dcs-cleanup report --journal {journal} --report NEW_FILE"
        again = tmp_path / "again.json"
        assert main(["report", "--journal", str(journal), "--report", str(again)]) == 0
        assert json.loads(again.read_text())["outcomes"]["deleted"] == 20
        # The report command on a full disk: one line and exit 3, as for its outcomes file.
        assert main(["report", "--journal", str(journal), "--report", "/dev/full"]) == 3
        err = capsys.readouterr().err
        assert "dcs-cleanup: report /dev/full: write failed: No space left on device" in err
        assert "Traceback" not in err
    else:
        assert failed[0]["again"].startswith("not from this run: it had no --journal")


def test_retry_failed_on_a_journal_that_is_not_there_is_refused(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--retry-failed with a mistyped --journal made a new, empty journal and ended 0 having
    retried nothing. It is exit 2 naming the path, and no file is made."""
    journal = tmp_path / "jounral.sqlite"
    args = run_args(emulator, tmp_path, None, "--retry-failed", "--journal", str(journal))
    assert main(args) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert f"--journal {journal}: no such file" in capsys.readouterr().err


def test_max_deletes_guard_never_exceeds(emulator: EmulatorServer, tmp_path: Path) -> None:
    """--max-deletes 30 of 100: exit 3 and exactly 30 deleted, never more."""
    ids = seed(emulator, 100)
    path = write_ids(tmp_path / "ids.txt", ids)
    assert run(emulator, tmp_path, path, "--max-deletes", "30", "--concurrency", "16") == 3
    assert len(emulator.state.deleted) == 30
    rep = report(tmp_path)
    assert rep["stop_reason"] == "max_deletes"
    assert rep["outcomes"]["deleted"] == 30


def test_slow_drip_server_cannot_hold_a_slot(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A server dribbling its answer for 60 s: each attempt ends at --timeout; the run ends."""
    ids = seed(emulator, 4, Faults(drip_seconds=60))
    path = write_ids(tmp_path / "ids.txt", ids)
    started = time.monotonic()
    code = run(emulator, tmp_path, path, "--timeout", "1", "--max-attempts", "2")
    assert time.monotonic() - started < 10
    assert code == 1
    rows = outcomes(tmp_path)
    assert all(r["outcome"] == "failed" and r["error_code"] == "timeout" for r in rows)
    assert all(r["attempts"] == 2 for r in rows)


@pytest.mark.slow
def test_50mb_error_body_is_not_buffered(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A 50 MB error body: read capped, connection dropped; the worker's peak RSS stays small."""
    ids = seed(emulator, 6, Faults(big_body_bytes=50 * 1024 * 1024))
    path = write_ids(tmp_path / "ids.txt", ids)
    child = spawn(emulator, tmp_path, path, "--max-attempts", "2", "--concurrency", "3")
    # The worker's own peak (VmHWM), polled until it exits: wait4's ru_maxrss would also count
    # the memory of this test process, which the child carries until its exec().
    peak_kib = 0
    while child.poll() is None:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib = max(peak_kib, int(line.split()[1]))
        time.sleep(0.02)
    assert child.returncode == 1
    assert 0 < peak_kib < 120 * 1024  # far below one 50 MB body per slot
    rows = outcomes(tmp_path)
    assert all(r["outcome"] == "failed" and r["status"] == 500 for r in rows)
    assert all(r["error_msg"].startswith("unparsed body: xxxx") for r in rows)


def test_unknown_ids_after_timeouts_count_as_absent(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A 404 that follows failed attempts of the same task is absent, not rejected."""
    ids = unknown_ids(20)
    emulator.state.set_faults(Faults(fail_first=1, fail_first_share=1.0))
    path = write_ids(tmp_path / "ids.txt", ids)
    assert run(emulator, tmp_path, path) == 0
    rows = outcomes(tmp_path)
    assert all(r["outcome"] == "absent" and r["attempts"] == 2 for r in rows)


def test_a_redirect_is_never_followed_and_stops_the_run(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A 307 to another host: the signed DELETE is not replayed there. No API endpoint
    redirects its calls (a website's address given as --endpoint, a captive portal), so every
    task would get the same: each was ``rejected``, all of them sent. Now the first redirect
    stops the run (exit 3, ``redirected``, the rest ``not_attempted``), naming where it
    pointed; with the redirect gone the same journal deletes them all."""
    journal = ("--journal", str(tmp_path / "j.sqlite"), "--concurrency", "4")
    with EmulatorServer() as elsewhere:
        ids = seed(emulator, 40, Faults(redirect_to=elsewhere.url))
        path = write_ids(tmp_path / "ids.txt", ids)
        assert run(emulator, tmp_path, path, *journal) == 3
        assert elsewhere.state.requests == 0
    assert emulator.state.requests == 1  # the run's first request goes alone
    first = report(tmp_path)
    assert first["stop_reason"] == "redirected"
    assert first["outcomes"]["not_attempted"] == 40
    assert first["stop_detail"].startswith(f"HTTP 307 REDIRECT: redirect to '{elsewhere.url}/v2/")
    assert first["stop_detail"].endswith(
        "not followed; an API endpoint does not redirect its calls: is it DCS's "
        "(https://dcs.REGION.myhuaweicloud.com)?"
    )
    emulator.state.set_faults(Faults())
    assert run(emulator, tmp_path, path, *journal) == 0
    assert emulator.state.remaining() == 0


@pytest.mark.anyio
async def test_a_stop_while_intake_waits_hands_over_exactly_what_it_counts(
    tmp_path: Path,
) -> None:
    """Intake blocked on a full work buffer, then a stop and a worker taking a task in the same
    step: every task the intake counts as sent is in a worker's hands or the buffer, and no
    other. (anyio's send() could hand a task over and still raise the stop's cancellation; the
    intake then also recorded that task not_attempted: two outcomes for one task.)"""
    settings = load_settings({"endpoint": "http://127.0.0.1:1", "project_id": "p1"})
    journal = Journal(tmp_path / "journal.sqlite", "run")
    pipeline = Pipeline(
        settings,
        None,
        IterableSource("test", []),
        journal,
        OutcomeWriter(None),
        RunStats(),
        limiter=RateLimiter(0, 1),
        budget=RetryBudget(10),
        breaker=CircuitBreaker(10, 1.0),
    )
    refs = [TaskRef(f"t{n}", "p1", "test", n) for n in range(3)]
    tx, rx = anyio.create_memory_object_stream[TaskRef](1)
    sent: list[int] = []

    async def intake() -> None:
        sent.append(await pipeline._send(tx, refs))

    async with anyio.create_task_group() as tg:
        tg.start_soon(intake)
        await anyio.wait_all_tasks_blocked()  # t0 buffered, intake waiting to send t1
        pipeline.request_stop("signal")
        taken = [rx.receive_nowait()]  # a worker takes t0 before the intake runs again
    with contextlib.suppress(anyio.WouldBlock):
        while True:
            taken.append(rx.receive_nowait())
    journal.close()
    assert [ref.task_id for ref in taken] == [ref.task_id for ref in refs[: sent[0]]]


def test_a_journal_locked_by_another_writer_mid_run_loses_nothing(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Another process holds the journal's write lock for 0.6 s mid-run (as a second replica
    writing, or an operator's sqlite3 shell): the run waits for it in a thread and ends with
    every task deleted once, in the journal and in the outcomes file."""
    ids = seed(emulator, 400, Faults(latency_ms=10))
    journal = tmp_path / "journal.sqlite"
    held: list[int] = []

    def deleted_so_far() -> int:
        if not journal.exists():  # (connecting would create it)
            return 0
        try:
            return journal_outcomes(journal)["deleted"]
        except sqlite3.OperationalError:  # the run has not created the table yet
            return 0

    def hold_the_lock() -> None:
        while deleted_so_far() < 50:
            time.sleep(0.01)
        other = sqlite3.connect(journal, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        time.sleep(0.6)
        held.append(emulator.state.deletes_received)
        other.execute("COMMIT")
        other.close()

    locker = threading.Thread(target=hold_the_lock)
    locker.start()
    code = run(
        emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids),
        "--concurrency", "8", "--journal", str(journal),
    )  # fmt: skip
    locker.join(10)
    assert code == 0
    assert held
    assert held[0] < 400  # the lock was taken and released while tasks were still left
    rows = outcomes(tmp_path)
    assert sorted(r["task_id"] for r in rows) == sorted(ids)
    assert {r["outcome"] for r in rows} == {"deleted"}
    assert journal_outcomes(journal) == {"deleted": 400}
    assert max(emulator.state.deleted.values()) == 1
