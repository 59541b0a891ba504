"""Queue-fed and scaled out: Redis Streams consumer groups, dead letters, a shared rate limit,
shards, health and metrics. Against a real redis-server and the emulator."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    PROJECT,
    free_port,
    outcomes,
    report,
    run,
    seed,
    spawn,
    start_redis,
    unknown_ids,
    write_ids,
)
from worker import queue
from worker.cli import main
from worker.emulator import EmulatorServer, Faults
from worker.logs import configure_logging
from worker.models import Outcome, TaskRef, TaskResult
from worker.settings import DEFAULT_ID_PATTERN
from worker.sources import IdValidator

STREAM = "dcs-cleanup:tasks"
GROUP = "dcs-cleanup"


def enqueue(redis_url: str, path: Path) -> int:
    return main(["enqueue", "--queue", redis_url, "--input", str(path), "--project-id", PROJECT])


def consumer_args(emu: EmulatorServer, redis_url: str, name: str, *extra: str) -> list[str]:
    return [
        "run", "--queue", redis_url, "--consumer", name, "--endpoint", emu.url,
        "--rate", "0", "--backoff-base", "0.01", "--log-format", "json", "--progress", "off",
        *extra,
    ]  # fmt: skip


def stopped_at_the_backlog(
    client: redis.Redis, command: list[str], sig: signal.Signals
) -> tuple[subprocess.Popen[str], str]:
    """``command`` run with ``--max-backlog 100`` (saying how far it is every 0.2 s), sent
    ``sig`` once the stream holds 100 entries and it waits for room; the ended process and its
    standard error."""
    flags = ["--max-backlog", "100", "--progress-interval", "0.2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", *command, *flags],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while client.xlen(STREAM) < 100:
        assert time.monotonic() < deadline
        assert proc.poll() is None
        time.sleep(0.02)
    time.sleep(0.5)  # waiting for room now
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc, err


def add_failed_dead_letters(client: redis.Redis, ids: list[str]) -> None:
    """A dead letter of outcome ``failed`` for each task, oldest first, as a consumer writes
    them (the fields redrive reads)."""
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            fields: dict[Any, Any] = {
                "task_id": task_id,
                "project_id": PROJECT,
                "outcome": "failed",
            }
            pipe.xadd(STREAM + ":dead", fields)
        pipe.execute()


def holders(client: redis.Redis) -> dict[str, int]:
    """Entries each consumer holds pending (none before the group exists)."""
    try:
        consumers: Any = client.xinfo_consumers(STREAM, GROUP)
    except redis.ResponseError:
        return {}
    return {c["name"]: int(c["pending"]) for c in consumers if int(c["pending"])}


def entries(client: redis.Redis, stream: str) -> list[dict[str, str]]:
    """The fields of every entry of a stream, oldest first."""
    reply: Any = client.xrange(stream)
    return [fields for _, fields in reply]


def pending(redis_url: str) -> int:
    info = redis.Redis.from_url(redis_url).xpending(STREAM, GROUP)
    return int(info["pending"])


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child processes a test starts; killed at the end whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_three_consumers_survive_a_kill_9(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
) -> None:
    """3,000 IDs, three --until-empty consumers, one SIGKILLed after 2 s: the survivors exit 0,
    every task was deleted exactly once, nothing is left pending."""
    ids = seed(emulator, 3000, Faults(latency_ms=15, latency_jitter_ms=10))
    assert enqueue(redis_url, write_ids(tmp_path / "ids.txt", ids)) == 0
    for name in ("c1", "c2", "c3"):
        folder = tmp_path / name
        folder.mkdir()
        args = consumer_args(
            emulator, redis_url, name, "--until-empty", "--claim-idle", "2", "--concurrency", "4",
            "--report", str(folder / "report.json"),
        )  # fmt: skip
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "worker", *args],
                stdout=(folder / "log").open("wb"),
                stderr=subprocess.STDOUT,
                cwd=folder,
            )
        )
    started = time.monotonic()
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    # Kill after two seconds, once every consumer demonstrably holds entries.
    while time.monotonic() - started < 2 or len(holders(client)) < 3:
        assert time.monotonic() - started < 30
        time.sleep(0.02)
    assert holders(client)["c1"] > 0
    assert emulator.state.remaining() > 0, "the kill must land mid-run"
    children[0].send_signal(signal.SIGKILL)
    assert children[0].wait() == -signal.SIGKILL
    assert [c.wait(timeout=120) for c in children[1:]] == [0, 0]
    assert emulator.state.remaining() == 0
    assert len(emulator.state.deleted) == 3000
    assert max(emulator.state.deleted.values()) == 1
    assert pending(redis_url) == 0
    logs = "".join((tmp_path / n / "log").read_text() for n in ("c2", "c3"))
    assert "cleanup.queue_reclaimed" in logs  # the dead consumer's entries were taken over
    survivors = [json.loads((tmp_path / n / "report.json").read_text()) for n in ("c2", "c3")]
    assert all(r["exit_code"] == 0 and r["outcomes"]["failed"] == 0 for r in survivors)


def test_rejected_and_invalid_entries_go_to_the_dead_letter_stream(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    """rejected tasks and invalid entries (a bad ID; no task_id at all, as an upstream system
    that spelt the field another way writes) land in <stream>:dead with their outcome; all
    acked."""
    ids = seed(emulator, 200, Faults(reject_share=0.2))
    assert enqueue(redis_url, write_ids(tmp_path / "ids.txt", ids)) == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xadd(STREAM, {"task_id": "../instances/x", "project_id": PROJECT})
    client.xadd(STREAM, {"taskId": "abc123", "project_id": PROJECT})
    client.xadd(STREAM, {"task_id": ""})
    args = consumer_args(
        emulator, redis_url, "c1", "--until-empty", "--outcomes", str(tmp_path / "o.jsonl")
    )
    assert main(args) == 1
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    rejected = {r["task_id"] for r in rows if r["outcome"] == "rejected"}
    assert rejected
    assert len(rejected) == emulator.state.by_status[403]
    dead = entries(client, STREAM + ":dead")
    assert {d["task_id"] for d in dead if d["outcome"] == "rejected"} == rejected
    assert all(
        d["error_code"] == "DCS.4403" and d["status"] == "403"
        for d in dead
        if d["outcome"] == "rejected"
    )
    invalid = [d for d in dead if d["outcome"] == "skipped"]
    assert [d["task_id"] for d in invalid] == ["../instances/x", "", ""]
    assert [d["error_code"] for d in invalid] == ["invalid_id", "bad_line", "bad_line"]
    assert re.fullmatch(
        rf"{STREAM}/\d+-\d+: task_id '\.\./instances/x' contains .*", invalid[0]["error_msg"]
    )
    assert invalid[1]["error_msg"] == (
        f"{STREAM}/{invalid[1]['entry_id']}: entry has no task_id field (its fields: 'taskId', "
        "'project_id')"
    )
    assert invalid[2]["error_msg"] == f"{STREAM}/{invalid[2]['entry_id']}: entry's task_id is empty"
    assert pending(redis_url) == 0
    assert emulator.state.remaining() == len(rejected)


def test_a_consumer_s_failed_entries_go_back_on_the_stream_with_redrive(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A consumer's failed entries are dead letters, which no run reads again: its summary
    says so and names redrive, not the file run's --retry-failed. Once the endpoint is mended,
    redrive puts them back on the stream and a drain deletes them all, each entry with the
    message it was written with (a dead letter dropped it, and redrive sent none)."""
    ids = seed(emulator, 10, Faults(error_rate=1.0))
    jsonl = tmp_path / "ids.jsonl"
    lines = [
        {"task_id": t, **({"message": "ticket 7"} if n < 4 else {})} for n, t in enumerate(ids)
    ]
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    assert enqueue(redis_url, jsonl) == 0
    capsys.readouterr()
    assert (
        main(consumer_args(emulator, redis_url, "c1", "--until-empty", "--max-attempts", "1")) == 1
    )
    err = capsys.readouterr().err
    assert "failed: DCS.5000 10" in err
    assert (
        f"again: the 10 failed entries are in {STREAM}:dead; dcs-cleanup redrive, given this "
        f"run's --queue and --stream, puts them back on {STREAM}\n"
    ) in err
    assert "--retry-failed" not in err
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    dead = {
        letter["task_id"]: letter.get("message") for letter in entries(client, STREAM + ":dead")
    }
    assert dead == {t: line.get("message") for t, line in zip(ids, lines, strict=True)}

    emulator.state.faults = Faults()
    assert main(["redrive", "--queue", redis_url]) == 0
    assert capsys.readouterr().err.startswith(
        f"put back 10 of the 10 dead letter(s) in {STREAM}:dead on {STREAM} (failed 10)\n"
        "by reason: failed DCS.5000 10\n"
    )
    assert client.xlen(STREAM + ":dead") == 0
    assert main(consumer_args(emulator, redis_url, "c1", "--until-empty")) == 0
    assert emulator.state.remaining() == 0
    assert emulator.state.messages == {"ticket 7": 4, None: 6}


def test_a_consumer_stopped_by_the_breaker_names_redrive_for_its_failed_entries(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An outage opens the breaker (exit 3): the tasks that failed before it are dead letters,
    the rest stay pending. The summary says what to do for the stop (run again later) and, as
    for a run that ended 1, that redrive puts the failed ones back."""
    ids = seed(emulator, 300, Faults(error_rate=1.0))
    assert enqueue(redis_url, write_ids(tmp_path / "ids.txt", ids)) == 0
    capsys.readouterr()
    breaker = ("--max-attempts", "1", "--breaker-window", "20", "--concurrency", "4")
    assert main(consumer_args(emulator, redis_url, "c1", "--until-empty", *breaker)) == 3
    err = capsys.readouterr().err
    dead = redis.Redis.from_url(redis_url).xlen(STREAM + ":dead")
    assert 0 < dead < 300
    assert f"again: the {dead} failed entries are in {STREAM}:dead; dcs-cleanup redrive" in err
    assert "\nnext: the API is failing (5xx, no answers): run the same command again later" in err
    assert err.rstrip().endswith("exit 3: aborted (circuit_open)")


def test_redrive_puts_back_the_chosen_outcomes_alone(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dead letters of failed, rejected and invalid entries: --dry-run counts the failed ones
    by reason and changes nothing; redrive puts back the failed ones as new entries (task and
    project, and --message) and deletes their dead letters, with --limit N the oldest N first;
    --outcome rejected the rejected ones; an invalid entry is never put back, it would only be
    skipped again."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    dead = STREAM + ":dead"
    letters = [
        ("f1", "failed", "DCS.5000", "500"), ("r1", "rejected", "DCS.4403", "403"),
        ("f2", "failed", "", "502"), ("../x", "skipped", "invalid_id", ""),
        ("f3", "failed", "timeout", ""),
    ]  # fmt: skip
    for task_id, outcome, code, status in letters:
        fields: dict[Any, Any] = {"task_id": task_id, "project_id": PROJECT, "outcome": outcome}
        client.xadd(dead, {**fields, "error_code": code, "status": status, "attempts": "5"})
    base = ["redrive", "--queue", redis_url]

    assert main([*base, "--dry-run"]) == 0
    assert capsys.readouterr().err == (
        f"would put back 3 of the 5 dead letter(s) in {dead} on {STREAM} (failed 3)\n"
        "by reason: failed DCS.5000 1, failed HTTP 502 1, failed timeout 1\n"
    )
    assert client.xlen(dead) == 5
    assert client.xlen(STREAM) == 0

    # --limit: the oldest N alone, a few first to watch them go through.
    assert main([*base, "--message", "cleanup", "--limit", "2"]) == 0
    assert "put back 2 of the 5 dead letter(s)" in capsys.readouterr().err
    assert [e["task_id"] for e in entries(client, STREAM)] == ["f1", "f2"]
    assert main([*base, "--message", "cleanup"]) == 0
    assert entries(client, STREAM) == [
        {"task_id": t, "project_id": PROJECT, "message": "cleanup"} for t in ("f1", "f2", "f3")
    ]
    assert [e["task_id"] for e in entries(client, dead)] == ["r1", "../x"]
    capsys.readouterr()

    assert main([*base, "--outcome", "rejected"]) == 0
    assert "put back 1 of the 2 dead letter(s)" in capsys.readouterr().err
    assert [e["task_id"] for e in entries(client, STREAM)] == ["f1", "f2", "f3", "r1"]
    assert [e["task_id"] for e in entries(client, dead)] == ["../x"]


def test_redrive_limit_counts_across_pages(redis_url: str) -> None:
    """--limit 700 over 1,200 dead letters (pages of 500): the oldest 700 go back, in order."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    dead = STREAM + ":dead"
    ids = unknown_ids(1_200)
    add_failed_dead_letters(client, ids)
    assert main(["redrive", "--queue", redis_url, "--limit", "700"]) == 0
    assert [e["task_id"] for e in entries(client, STREAM)] == ids[:700]
    assert [e["task_id"] for e in entries(client, dead)] == ids[700:]


def test_redrive_ends_though_its_tasks_fail_again_as_it_goes(redis_url: str) -> None:
    """A consumer still failing every task (here a thread that dead-letters each entry as it
    lands on the stream) makes new dead letters as fast as redrive puts old ones back; redrive
    reads the dead letters there were when it began, so it ends, having put each back once."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    dead = STREAM + ":dead"
    ids = unknown_ids(2_000)
    add_failed_dead_letters(client, ids)
    failing = threading.Event()
    failed_again: list[str] = []

    def consumer() -> None:
        worker = redis.Redis.from_url(redis_url, decode_responses=True)
        while not failing.is_set():
            got: Any = worker.xrange(STREAM, count=100)
            for entry_id, fields in got:
                worker.xadd(dead, {**fields, "outcome": "failed"})
                worker.xdel(STREAM, entry_id)
                failed_again.append(fields["task_id"])

    thread = threading.Thread(target=consumer)
    thread.start()
    try:
        ended = subprocess.run(
            [sys.executable, "-m", "worker", "redrive", "--queue", redis_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        failing.set()
        thread.join()
    assert ended.returncode == 0, ended.stderr
    assert "put back 2000 of the 2000 dead letter(s)" in ended.stderr
    assert failed_again  # they did fail again while it ran
    letters = [e["task_id"] for e in entries(client, dead)]
    assert sorted(letters + [e["task_id"] for e in entries(client, STREAM)]) == sorted(ids)


def test_redrive_refused_part_way_leaves_no_task_on_neither_stream(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis full (maxmemory) part-way through 2,000 dead letters (put back with a 1,000
    character --message, so the stream grows by more than their dead letters free): exit 3;
    every task is on the stream or still a dead letter (a dead letter is deleted only once its
    task is back on the stream), and the same command, once there is room, puts back the rest."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    dead = STREAM + ":dead"
    ids = unknown_ids(2_000)
    command = ["redrive", "--queue", redis_url, "--message", "m" * 1000]
    add_failed_dead_letters(client, ids)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 1_000_000)
    try:
        assert main(command) == 3
    finally:
        client.config_set("maxmemory", 0)
    err = capsys.readouterr().err
    assert "run it again for the rest" in err
    assert "command not allowed when used memory > 'maxmemory'" in err
    back = [e["task_id"] for e in entries(client, STREAM)]
    still = [e["task_id"] for e in entries(client, dead)]
    assert 500 < len(back) < 2_000  # past the first page of 500
    assert back + still == ids  # in order, each on exactly one of the two
    assert f"put back {len(back)} of the 2000 dead letter(s) " in err

    assert main(command) == 0
    assert [e["task_id"] for e in entries(client, STREAM)] == ids
    assert client.xlen(dead) == 0


def test_redrive_stopped_by_a_signal_exits_4_and_loses_no_task(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A redrive waiting under --max-backlog, stopped by SIGTERM: exit 4, each task on the
    stream or still a dead letter, and the same command puts back the rest. A Redis it cannot
    reach, or a dead-letter key that is no stream, is exit 2, nothing put back."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    dead = STREAM + ":dead"
    ids = unknown_ids(500)
    add_failed_dead_letters(client, ids)
    command = ["redrive", "--queue", redis_url]
    proc, err = stopped_at_the_backlog(client, command, signal.SIGTERM)
    assert proc.returncode == 4
    assert "Traceback" not in err
    assert "interrupted by SIGTERM; run it again for the rest" in err
    assert "put back 100 of the 500 dead letter(s)" in err
    assert "dcs-cleanup: put back 100 of the 500 dead letter(s) so far\n" in err  # as it waited
    back = [e["task_id"] for e in entries(client, STREAM)]
    assert back + [e["task_id"] for e in entries(client, dead)] == ids
    assert main(command) == 0
    assert [e["task_id"] for e in entries(client, STREAM)] == ids
    assert main(["redrive", "--queue", "redis://127.0.0.1:1/0"]) == 2
    client.set("other:dead", "not a stream")
    capsys.readouterr()
    assert main(["redrive", "--queue", redis_url, "--stream", "other"]) == 2
    assert capsys.readouterr().err.endswith(
        "WRONGTYPE Operation against a key holding the wrong kind of value; nothing was put back\n"
    )


def test_dead_letter_maxlen_keeps_the_newest_dead_letters(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    """--dead-letter-maxlen N: the dead-letter stream keeps the newest N copies, so a consumer
    that runs for months does not fill the instance with them; without it, all are kept."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for n in range(30):
        client.xadd(STREAM, {"task_id": f"bad/{n}", "project_id": PROJECT})
    assert main(consumer_args(emulator, redis_url, "c1", "--until-empty",
                              "--dead-letter-maxlen", "10")) == 0  # fmt: skip
    assert [d["task_id"] for d in entries(client, STREAM + ":dead")] == [
        f"bad/{n}" for n in range(20, 30)
    ]
    for n in range(30, 45):
        client.xadd(STREAM, {"task_id": f"bad/{n}", "project_id": PROJECT})
    assert main(consumer_args(emulator, redis_url, "c1", "--until-empty")) == 0
    assert client.xlen(STREAM + ":dead") == 25
    assert emulator.state.requests == 0


def test_enqueue_writes_the_documented_entry_format(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """enqueue: task_id/project_id/message fields; a bad line is named and not enqueued."""
    path = tmp_path / "ids.jsonl"
    path.write_text(
        '{"task_id": "t1", "project_id": "p2"}\n{"task_id": "a/b"}\n{"task_id": "t3"}\n'
    )
    code = main(
        [
            "enqueue",
            "--queue",
            redis_url,
            "--input",
            str(path),
            "--project-id",
            PROJECT,
            "--message",
            "bye",
        ]
    )
    assert code == 1
    assert f"{path}:2:" in capsys.readouterr().err
    added = entries(redis.Redis.from_url(redis_url, decode_responses=True), STREAM)
    assert added == [
        {"task_id": "t1", "project_id": "p2", "message": "bye"},
        {"task_id": "t3", "project_id": PROJECT, "message": "bye"},
    ]


def test_a_consumer_s_progress_lines_say_whether_it_keeps_up(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A consumer's log said how many tasks it had done, not whether the stream was ahead of
    it. Each progress line has the group's lag (entries not yet delivered) and its pending
    entries (delivered, not acknowledged): here falling as the stream is drained."""
    ids = seed(emulator, 300)
    assert enqueue(redis_url, write_ids(tmp_path / "ids.txt", ids)) == 0
    args = consumer_args(emulator, redis_url, "c1", "--until-empty", "--rate", "150")
    args += ["--burst", "1", "--progress", "log", "--progress-interval", "0.25"]
    capsys.readouterr()
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "{" in line]
    said = [e for e in lines if e["event"] == "cleanup.progress"]
    assert len(said) >= 3
    lags = [e["queue_lag"] for e in said]
    assert all(isinstance(e["queue_pending"], int) for e in said)
    assert lags == sorted(lags, reverse=True)
    assert lags[0] > 0
    assert all(e["queue_lag"] + e["queue_pending"] + e["done"] >= 300 for e in said)


def test_enqueue_of_many_bad_lines_keeps_flat_memory(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """200,000 bad lines: the first 100 are named, the rest counted, and enqueue's memory
    stays flat (it kept every bad line's outcome, 96 MB here, to print 100 of them)."""
    path = tmp_path / "ids.txt"
    path.write_text("t1\n" + "bad/id\n" * 200_000 + "t2\n")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    before = len(entries(client, STREAM))
    tracemalloc.start()
    try:
        assert enqueue(redis_url, path) == 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024
    err = capsys.readouterr().err.splitlines()
    assert sum(line.startswith("dcs-cleanup: skipped ") for line in err) == 100
    assert "dcs-cleanup: ... and 199900 more" in err
    assert err[-1] == f"enqueued 2 task(s) on {STREAM}; 200000 bad line(s) skipped"
    assert len(entries(client, STREAM)) == before + 2


def test_enqueue_refused_part_way_says_where_to_go_on(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis full (maxmemory) part-way through 20,000 IDs: enqueue used to end with a bare
    pipeline error, exit 2 ("nothing was sent") though thousands were added, and no way to go on
    but adding them all again. It now exits 3 naming the first line not added; --from-line
    there adds the rest: every ID once, in order."""
    unique = unknown_ids(20_000)
    path = write_ids(tmp_path / "ids.txt", unique)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 300_000)
    try:
        assert enqueue(redis_url, path) == 3
    finally:
        client.config_set("maxmemory", 0)
    err = capsys.readouterr().err
    stopped = int(err.split("stopped at line ")[1].split()[0])
    assert 1 < stopped < 20_000
    assert f"--from-line {stopped}" in err
    assert f"enqueued {stopped - 1} task(s)" in err
    assert client.xlen(STREAM) == stopped - 1
    assert main([
        "enqueue", "--queue", redis_url, "--input", str(path), "--project-id", PROJECT,
        "--from-line", str(stopped),
    ]) == 0  # fmt: skip
    assert [e["task_id"] for e in entries(client, STREAM)] == unique


def test_enqueue_under_max_backlog_waits_for_consumers(redis_url: str, tmp_path: Path) -> None:
    """--max-backlog 100: enqueue never lets the stream hold more than 100 entries; it waits,
    saying why, while something takes them (here the test, trimming them as consumers do)."""
    path = write_ids(tmp_path / "ids.txt", unknown_ids(500))
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "enqueue", "--queue", redis_url, "--input", str(path),
         "--project-id", PROJECT, "--max-backlog", "100"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    longest = taken = 0
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        length = client.xlen(STREAM)
        longest = max(longest, length)
        if length >= 100:
            time.sleep(0.2)  # long enough for enqueue to notice it is full
            taken += client.xtrim(STREAM, maxlen=0)
        time.sleep(0.01)
    assert proc.wait(timeout=10) == 0
    stream: Any = client.xinfo_stream(STREAM)
    assert int(stream["entries-added"]) == 500
    assert taken + client.xlen(STREAM) == 500
    assert longest == 100
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert f"{STREAM} holds 100 entries (--max-backlog 100); waiting for consumers" in err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_enqueue_stopped_by_a_signal_says_where_to_go_on(
    redis_url: str, tmp_path: Path, sig: signal.Signals
) -> None:
    """An enqueue waiting under --max-backlog, stopped by SIGTERM or Ctrl-C, used to end in a
    traceback that said nothing of what was added. It now exits 4 naming the line to go on
    from, and --from-line there adds the rest: every ID once, in order."""
    unique = unknown_ids(500)
    path = write_ids(tmp_path / "ids.txt", unique)
    base = ["enqueue", "--queue", redis_url, "--input", str(path), "--project-id", PROJECT]
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    proc, err = stopped_at_the_backlog(client, base, sig)
    assert proc.returncode == 4
    assert "Traceback" not in err
    assert f"interrupted by {sig.name}; the tasks before it are on the stream" in err
    assert "go on with --from-line 101" in err
    assert "enqueued 100 task(s)" in err
    # While it waited, a line every --progress-interval said how far it was.
    assert "dcs-cleanup: enqueued 100 task(s) so far, up to line 100\n" in err
    assert main([*base, "--from-line", "101"]) == 0
    assert [e["task_id"] for e in entries(client, STREAM)] == unique


@pytest.mark.slow
def test_three_processes_share_one_rate_limit(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
) -> None:
    """Three processes with --shared-rate-key at 150/s: the emulator measures 150/s within 10%."""
    ids = seed(emulator, 1500)
    for i in range(3):
        folder = tmp_path / f"p{i}"
        folder.mkdir()
        path = write_ids(folder / "ids.txt", ids[i * 500 : (i + 1) * 500])
        children.append(
            spawn(
                emulator,
                folder,
                path,
                "--redis",
                redis_url,
                "--shared-rate-key",
                "dcs:rate",
                "--rate",
                "150",
                "--burst",
                "1",
                "--concurrency",
                "8",
            )
        )
    assert [c.wait(timeout=60) for c in children] == [0, 0, 0]
    arrivals = sorted(emulator.state.arrivals)
    assert len(arrivals) == 1500
    # Steady state: drop the first and last second (process start-up and the tail).
    window = [t for t in arrivals if arrivals[0] + 1 <= t <= arrivals[-1] - 1]
    rate = (len(window) - 1) / (window[-1] - window[0])
    print(f"shared limit 150/s, three processes: emulator measured {rate:.1f}/s")
    assert 135 <= rate <= 165, rate


def test_shards_split_an_input_exactly(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--shard i/4 (and JOB_COMPLETION_INDEX + --shard-count): every ID in exactly one shard."""
    ids = seed(emulator, 1000)
    path = write_ids(tmp_path / "ids.txt", ids)
    per_shard: list[set[str]] = []
    for index in range(4):
        folder = tmp_path / f"s{index}"
        folder.mkdir()
        if index == 3:
            monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
            extra = ("--shard-count", "4")
        else:
            extra = ("--shard", f"{index}/4")
        assert run(emulator, folder, path, *extra) == 0
        per_shard.append({r["task_id"] for r in outcomes(folder) if r["outcome"] == "deleted"})
        assert report(folder)["shard"]["index"] == index
    assert sum(len(s) for s in per_shard) == 1000
    assert set().union(*per_shard) == set(ids)
    assert all(150 < len(s) < 350 for s in per_shard)
    assert max(emulator.state.deleted.values()) == 1


def serving_consumer(
    emulator: EmulatorServer, url: str, folder: Path, children: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], int]:
    """A long-running consumer (no --until-empty) serving /healthz and /metrics; its port."""
    port = free_port()
    args = consumer_args(
        emulator, url, "c1", "--health-host", "127.0.0.1", "--health-port", str(port)
    )
    proc = subprocess.Popen([sys.executable, "-m", "worker", *args], cwd=folder)
    children.append(proc)
    return proc, port


def test_a_consumer_whose_health_port_is_taken_exits_2_before_reading(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two consumers on one host with the default --health-port, or a sidecar on it: the
    second crashed with an ExceptionGroup traceback, exit 1. It is now exit 2 naming the
    port, before it reads an entry: they stay on the stream for the consumer that can."""
    ids = seed(emulator, 30)
    assert enqueue(redis_url, write_ids(tmp_path / "ids.txt", ids)) == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = consumer_args(
            emulator, redis_url, "c1", "--health-host", "127.0.0.1", "--health-port", str(port)
        )
        assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--health-port {port}: cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "Traceback" not in err
    assert emulator.state.requests == 0
    client = redis.Redis.from_url(redis_url)
    assert client.xlen(STREAM) == len(ids)
    assert holders(client) == {}


def test_consumer_serves_health_and_metrics_and_stops_on_sigterm(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
) -> None:
    """Without --until-empty: /healthz and /metrics answer; SIGTERM stops it (exit 4)."""
    ids = seed(emulator, 50)
    assert enqueue(redis_url, write_ids(tmp_path / "ids.txt", ids)) == 0
    proc, port = serving_consumer(emulator, redis_url, tmp_path, children)
    try:
        deadline = time.monotonic() + 30
        while emulator.state.remaining() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert emulator.state.remaining() == 0
        health = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
        )
        assert health["status"] == "ok"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'dcs_cleanup_tasks_total{outcome="deleted"} 50.0' in page
        assert 'dcs_cleanup_responses_total{status="200"} 50.0' in page
        assert "dcs_cleanup_request_seconds_bucket" in page
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 4
    assert pending(redis_url) == 0


def wait_for_deletes(emulator: EmulatorServer, count: int) -> None:
    """Until the emulator has deleted ``count`` tasks (30 s at most)."""
    deadline = time.monotonic() + 30
    while len(emulator.state.deleted) < count:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def spawn_shared_rate(
    emulator: EmulatorServer,
    folder: Path,
    redis_port: int,
    count: int,
    children: list[subprocess.Popen[bytes]],
) -> subprocess.Popen[bytes]:
    """A run of ``count`` tasks at 150/s on a --shared-rate-key kept in the Redis on
    ``redis_port``, once it has deleted 100 of them."""
    ids = seed(emulator, count)
    proc = spawn(
        emulator, folder, write_ids(folder / "ids.txt", ids),
        "--redis", f"redis://127.0.0.1:{redis_port}/0", "--shared-rate-key", "dcs:rate",
        "--rate", "150", "--concurrency", "8",
    )  # fmt: skip
    children.append(proc)
    wait_for_deletes(emulator, 100)
    return proc


def scrape(port: int) -> dict[str, float]:
    """The samples of a consumer's /metrics page, by name (labels left out)."""
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if not sample.labels
    }


@pytest.mark.usefixtures("redis_server")  # skipped, or failed in CI, without redis-server
def test_consumer_metrics_show_the_queue_and_a_redis_that_went_away(
    emulator: EmulatorServer, tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """/metrics reads the stream at each scrape: its length, the group's lag and pending
    entries, the dead letters, and what this consumer acknowledged, dead-lettered and trimmed.
    dcs_cleanup_queue_up goes to 0 when Redis goes away, while /healthz stays ok (a restart
    would not bring Redis back)."""
    redis_port = free_port()
    server = start_redis(tmp_path, redis_port)
    children.append(server)
    url = f"redis://127.0.0.1:{redis_port}/0"
    client = redis.Redis.from_url(url)
    ids = seed(emulator, 40)
    assert enqueue(url, write_ids(tmp_path / "ids.txt", ids)) == 0
    client.xadd(STREAM, {"task_id": "../x", "project_id": PROJECT})  # a dead letter
    proc, port = serving_consumer(emulator, url, tmp_path, children)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                seen = scrape(port)
                if seen.get("dcs_cleanup_queue_acked_total") == 41:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert emulator.state.remaining() == 0
        assert seen["dcs_cleanup_queue_up"] == 1
        assert seen["dcs_cleanup_queue_lag"] == 0
        assert seen["dcs_cleanup_queue_pending"] == 0
        assert seen["dcs_cleanup_queue_length"] + seen["dcs_cleanup_queue_trimmed_total"] == 41
        assert seen["dcs_cleanup_queue_length"] == client.xlen(STREAM)
        assert seen["dcs_cleanup_queue_dead"] == 1
        assert seen["dcs_cleanup_queue_dead_lettered_total"] == 1

        server.terminate()
        server.wait(timeout=10)
        assert scrape(port)["dcs_cleanup_queue_up"] == 0
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert json.loads(health.read())["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 4


@pytest.mark.parametrize("userinfo", ["", "bob:p%40ss@"])
def test_batch_run_pushes_metrics_to_a_pushgateway(
    userinfo: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """--pushgateway URL: at the end the run's metrics are pushed under job dcs-cleanup. A
    ``user:password@`` in the URL is sent as basic auth; the push failed with "Name or
    service not known" (urllib took it for part of the host name) and the metrics were lost.
    The rate limit and the quota the 429s stated are pushed as they ended (the rate was
    pushed as 0, set only when a consumer's /metrics was scraped)."""
    received: list[tuple[str, str, bytes]] = []
    auth: list[str | None] = []
    ready = threading.Event()
    port = free_port()

    async def handler(request: web.Request) -> web.Response:
        received.append((request.method, request.path, await request.read()))
        auth.append(request.headers.get("Authorization"))
        return web.Response(status=200)

    def serve() -> None:
        import asyncio

        async def main_() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handler)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            ready.set()
            await asyncio.sleep(30)

        asyncio.run(main_())

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(5)
    ids = seed(emulator, 20, Faults(quota_rate=50, quota_burst=5))
    code = run(
        emulator,
        tmp_path,
        write_ids(tmp_path / "ids.txt", ids),
        "--pushgateway",
        f"http://{userinfo}127.0.0.1:{port}",
        "--max-attempts",
        "10",
    )
    assert code == 0
    assert [(m, p) for m, p, _ in received] == [("PUT", "/metrics/job/dcs-cleanup")]
    assert auth == [f"Basic {base64.b64encode(b'bob:p@ss').decode()}" if userinfo else None]
    pushed = received[0][2].decode()
    assert 'dcs_cleanup_tasks_total{outcome="deleted"} 20.0' in pushed
    assert "\ndcs_cleanup_quota_stated 50.0\n" in pushed
    [rate] = re.findall(r"\ndcs_cleanup_rate_limit (\S+)\n", pushed)
    assert 0 < float(rate) <= 49.5
    assert Counter(r["outcome"] for r in outcomes(tmp_path)) == {"deleted": 20}


def test_consumer_makes_its_group_again_after_redis_lost_it(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
) -> None:
    """A long-running consumer whose stream and group vanish (a Redis restarted without
    persistence, or flushed) makes the group again: what is enqueued after that is deleted,
    where it used to retry NOGROUP for ever while the stream filled up."""
    ids = seed(emulator, 20)
    first, later = ids[:10], ids[10:]
    assert enqueue(redis_url, write_ids(tmp_path / "first.txt", first)) == 0
    log = tmp_path / "consumer.log"
    args = consumer_args(emulator, redis_url, "c1", "--health-port", "0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", *args],
        cwd=tmp_path,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    children.append(proc)

    def deleted(ids: list[str]) -> bool:
        deadline = time.monotonic() + 30
        while not set(ids) <= set(emulator.state.deleted) and time.monotonic() < deadline:
            time.sleep(0.05)
        return set(ids) <= set(emulator.state.deleted)

    try:
        assert deleted(first)
        redis.Redis.from_url(redis_url).flushall()
        assert enqueue(redis_url, write_ids(tmp_path / "later.txt", later)) == 0
        assert deleted(later)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 4
    events = [json.loads(line)["event"] for line in log.read_text().splitlines() if "{" in line]
    assert "cleanup.queue_group_recreated" in events
    assert pending(redis_url) == 0


def test_a_drained_stream_keeps_only_the_entries_some_group_still_needs(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    """XACK deletes nothing: a stream used to keep every task it ever carried. The consumer now
    trims what every consumer group has read and acknowledged. Another group that has read 100
    entries and acknowledged 50 keeps its pending 50 and the 200 it has not read; once that group
    is gone, the next drain leaves the stream empty."""
    ids = seed(emulator, 300)
    assert enqueue(redis_url, write_ids(tmp_path / "ids.txt", ids)) == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xgroup_create(STREAM, "audit", id="0")
    reply: Any = client.xreadgroup("audit", "a1", {STREAM: ">"}, count=100)
    read_by_audit = [entry_id for entry_id, _ in reply[0][1]]
    client.xack(STREAM, "audit", *read_by_audit[:50])
    args = consumer_args(emulator, redis_url, "c1", "--until-empty")
    assert main([*args, "--report", str(tmp_path / "first.json")]) == 0
    assert emulator.state.remaining() == 0
    left: Any = client.xrange(STREAM)
    assert len(left) == 250
    assert left[0][0] == read_by_audit[50]  # the audit group's oldest pending entry
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["queue"]["trimmed"] == 50

    client.xgroup_destroy(STREAM, "audit")
    more = seed(emulator, 20)
    assert enqueue(redis_url, write_ids(tmp_path / "more.txt", more)) == 0
    assert main([*args, "--report", str(tmp_path / "second.json")]) == 0
    assert client.xlen(STREAM) == 0
    assert json.loads((tmp_path / "second.json").read_text())["queue"]["trimmed"] == 270
    assert pending(redis_url) == 0
    assert client.xinfo_consumers(STREAM, GROUP) == []  # c1 left the group when done


def test_a_group_far_behind_that_holds_the_stream_whole_is_named(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A group made for a reader that never came (``reporting``, 1,200 entries behind) kept
    every entry in the stream, acknowledged or not, and nothing said why the stream never
    shrank. The consumer still trims nothing it needs, and warns once, naming the group, its
    lag and how to drop it. A group a little behind (under 1,000 entries not read or not
    acknowledged) is not named."""
    ids = seed(emulator, 1200)
    assert enqueue(redis_url, write_ids(tmp_path / "ids.txt", ids)) == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xgroup_create(STREAM, "reporting", id="0")
    capsys.readouterr()
    assert main(consumer_args(emulator, redis_url, "c1", "--until-empty")) == 0
    assert emulator.state.remaining() == 0
    assert client.xlen(STREAM) == 1200  # the reporting group has read none of them
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "{" in line]
    held = [e for e in events if e["event"] == "cleanup.queue_trim_held"]
    assert len(held) == 1
    assert (held[0]["level"], held[0]["group"], held[0]["lag"]) == ("warning", "reporting", 1200)
    assert f"XGROUP DESTROY {STREAM} reporting" in held[0]["detail"]

    reply: Any = client.xreadgroup("reporting", "r1", {STREAM: ">"}, count=1000)
    client.xack(STREAM, "reporting", *[entry_id for entry_id, _ in reply[0][1]])  # 200 behind
    more = seed(emulator, 10)
    assert enqueue(redis_url, write_ids(tmp_path / "more.txt", more)) == 0
    assert main(consumer_args(emulator, redis_url, "c1", "--until-empty")) == 0
    assert "cleanup.queue_trim_held" not in capsys.readouterr().out


def test_keep_acked_leaves_the_stream_whole(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    """For readers outside any consumer group (XREAD, XRANGE), --keep-acked trims nothing."""
    ids = seed(emulator, 50)
    assert enqueue(redis_url, write_ids(tmp_path / "ids.txt", ids)) == 0
    args = consumer_args(emulator, redis_url, "c1", "--until-empty", "--keep-acked")
    assert main([*args, "--report", str(tmp_path / "report.json")]) == 0
    assert emulator.state.remaining() == 0
    assert redis.Redis.from_url(redis_url).xlen(STREAM) == 50
    assert report(tmp_path)["queue"]["trimmed"] == 0
    assert pending(redis_url) == 0


def test_a_user_without_xtrim_drains_the_stream_and_is_told_once(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    """A Redis ACL that denies XTRIM costs the trim, not the run: every task is deleted and
    acknowledged, exit 0, one warning says the entries stay; the password is never written.
    Nor does one that denies TYPE (an ACL of +@stream), which the dead-letter key's check
    at start uses."""
    admin = redis.Redis.from_url(redis_url)
    secret = "queue-password-not-in-logs"
    admin.acl_setuser(
        "cleaner", enabled=True, passwords=[f"+{secret}"], keys=["~*"], categories=["+@all"],
        commands=["-xtrim", "-type"],
    )  # fmt: skip
    try:
        url = redis_url.replace("redis://", f"redis://cleaner:{secret}@")
        ids = seed(emulator, 40)
        assert enqueue(url, write_ids(tmp_path / "ids.txt", ids)) == 0
        log = tmp_path / "consumer.log"
        proc = subprocess.run(
            [sys.executable, "-m", "worker", *consumer_args(emulator, url, "c1", "--until-empty")],
            cwd=tmp_path,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0
    finally:
        admin.acl_deluser("cleaner")
    assert emulator.state.remaining() == 0
    assert admin.xlen(STREAM) == 40
    assert pending(redis_url) == 0
    text = log.read_text()
    events = [json.loads(line)["event"] for line in text.splitlines() if line.startswith("{")]
    assert events.count("cleanup.queue_trim_off") == 1
    assert secret not in text


@pytest.mark.anyio
async def test_a_consumer_that_never_drains_trims_as_it_goes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-lived consumer (no --until-empty) trims every TRIM_EVERY seconds while it works:
    by the time it hands out the second batch, the acknowledged first one is gone."""
    monkeypatch.setattr(queue, "TRIM_EVERY", 0.0)
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    source = queue.RedisStreamSource(
        client, STREAM, GROUP, "c1", PROJECT, IdValidator(DEFAULT_ID_PATTERN),
        until_empty=False, claim_idle=30, batch=10,
    )  # fmt: skip
    for n in range(10):
        await client.xadd(STREAM, {"task_id": f"first{n}"})
    lengths: list[int] = []
    with anyio.fail_after(10):
        async for batch in source.batches():
            lengths.append(await client.xlen(STREAM))
            refs = [item for item in batch if isinstance(item, TaskRef)]
            done = [TaskResult(r.task_id, r.project_id, Outcome.DELETED, ack=r.ack) for r in refs]
            await source.acknowledge(done)
            if len(lengths) == 2:
                break
            for n in range(10):
                await client.xadd(STREAM, {"task_id": f"second{n}"})
    await source.aclose()
    assert lengths == [10, 10]  # 20 entries were added; the first 10 are gone
    assert source.trimmed == 10


def test_a_consumer_drains_a_stream_on_a_redis_out_of_memory(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    """Out of memory, Redis refuses every command queued in a MULTI, XACK too: acks with dead
    letters failed for ever, the entries were re-sent every --claim-idle and --until-empty
    never ended. Now they are acknowledged with a plain XACK (which Redis still takes), the
    dead-letter copies that could not be written are named in a warning, and the drained
    stream is trimmed, giving the memory back. A consumer started then finds its group."""
    ids = seed(emulator, 100)
    assert enqueue(redis_url, write_ids(tmp_path / "ids.txt", ids)) == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.xadd(STREAM, {"task_id": "../instances/x", "project_id": PROJECT})
    client.xgroup_create(STREAM, GROUP, id="0")
    client.config_set("maxmemory", 1)  # every command that needs memory is refused
    try:
        log = tmp_path / "consumer.log"
        args = consumer_args(emulator, redis_url, "c1", "--until-empty", "--claim-idle", "1")
        proc = subprocess.run(
            [sys.executable, "-m", "worker", *args],
            cwd=tmp_path,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            timeout=30,
            check=False,
        )
    finally:
        client.config_set("maxmemory", 0)
    assert proc.returncode == 0
    assert emulator.state.remaining() == 0
    assert max(emulator.state.deleted.values()) == 1  # none re-sent
    assert pending(redis_url) == 0
    assert client.xlen(STREAM) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    lost = [line for line in lines if line["event"] == "cleanup.queue_dead_letter_lost"]
    assert [line["task_ids"] for line in lost] == [["../instances/x"]]


def test_a_dead_letter_key_that_is_not_a_stream_is_refused_at_start(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """<stream>:dead holding a string made every dead letter fail (WRONGTYPE) hours into a run,
    logged as a failed ack though the entries were acknowledged: the copies were lost. The
    consumer now refuses to start, naming the key; nothing is read or sent."""
    ids = seed(emulator, 5)
    assert enqueue(redis_url, write_ids(tmp_path / "ids.txt", ids)) == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.set(STREAM + ":dead", "something else")
    assert main(consumer_args(emulator, redis_url, "c1", "--until-empty")) == 2
    said = capsys.readouterr().out
    assert f"the dead-letter key '{STREAM}:dead' holds a string, not a stream" in said
    assert emulator.state.requests == 0
    assert client.xinfo_groups(STREAM)[0]["entries-read"] in (0, None)


def test_a_redis_asking_for_a_password_is_named_as_such(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Redis with requirepass was reported as "not reachable" with Redis's own words about
    HELLO; it now says a password is needed and how to give it, or that the one given was
    refused (without showing it). Nothing is read or sent either way."""
    client = redis.Redis.from_url(redis_url)
    client.config_set("requirepass", "right-one")
    try:
        no_password = consumer_args(emulator, redis_url, "c1", "--until-empty")
        assert main(no_password) == 2
        said = capsys.readouterr().out
        assert "--queue: this Redis needs a password: give it in the URL" in said
        assert "not reachable" not in said
        wrong = redis_url.replace("redis://", "redis://:wrong-one@")
        assert main(consumer_args(emulator, wrong, "c1", "--until-empty")) == 2
        said = capsys.readouterr().out
        assert "--queue: Redis refused the URL's user or password" in said
        assert "wrong-one" not in said
        ids = write_ids(tmp_path / "ids.txt", ["t1"])
        assert enqueue(redis_url, ids) == 2
        assert "this Redis needs a password" in capsys.readouterr().err
    finally:
        redis.Redis.from_url(redis_url, password="right-one").config_set("requirepass", "")
    assert emulator.state.requests == 0


def test_a_user_that_may_not_use_the_dead_letter_key_is_refused_at_start(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ACL user limited to the stream's own key could not write a dead letter: each was
    refused and its entry left pending, so --until-empty never ended. The consumer now says so
    at start, exit 2, naming the key to grant; nothing is read or sent."""
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        "narrow", enabled=True, passwords=["+pw"], keys=[f"~{STREAM}"], categories=["+@all"]
    )
    try:
        url = redis_url.replace("redis://", "redis://narrow:pw@")
        ids = seed(emulator, 3)
        assert enqueue(url, write_ids(tmp_path / "ids.txt", ids)) == 0
        assert main(consumer_args(emulator, url, "c1", "--until-empty")) == 2
    finally:
        admin.acl_deluser("narrow")
    said = capsys.readouterr().out
    assert f"this Redis user may not use the dead-letter key '{STREAM}:dead'" in said
    assert f"ACL ~{STREAM}:dead" in said
    assert emulator.state.requests == 0


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["replaced", "acl"])
async def test_a_dead_letter_refused_mid_run_is_named_and_its_entry_still_acknowledged(
    how: str, redis_url: str
) -> None:
    """The dead-letter key replaced under a running consumer: its XADD is refused inside the
    MULTI but the XACK is not. The consumer counted the entry as not acknowledged and said the
    ack failed; now the ack counts, and the lost copy is named and not counted as written.
    An ACL taking the key away refuses the whole MULTI: the entry stayed pending, reclaimed
    and refused for ever (--until-empty never ended); it is acknowledged alone now."""
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser("narrow", enabled=True, passwords=["+pw"], keys=["~*"], categories=["+@all"])
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    client = redis.asyncio.Redis.from_url(
        redis_url.replace("redis://", "redis://narrow:pw@"), decode_responses=True
    )
    await client.xadd(STREAM, {"task_id": "../x", "project_id": PROJECT})
    await client.xadd(STREAM, {"task_id": "t1", "project_id": PROJECT})
    source = queue.RedisStreamSource(
        client, STREAM, GROUP, "c1", PROJECT, IdValidator(DEFAULT_ID_PATTERN),
        until_empty=True, claim_idle=300,
    )  # fmt: skip
    try:
        with anyio.fail_after(10):
            async for batch in source.batches():
                if how == "replaced":
                    await client.set(STREAM + ":dead", "replaced")
                else:
                    admin.acl_setuser("narrow", reset_keys=True, keys=[f"~{STREAM}"])
                bad = [item for item in batch if isinstance(item, TaskResult)]
                good = [item for item in batch if isinstance(item, TaskRef)]
                assert [r.outcome for r in bad] == [Outcome.SKIPPED]
                done = TaskResult(
                    good[0].task_id, PROJECT, Outcome.DELETED, 204, 1, ack=good[0].ack
                )
                await source.acknowledge([*bad, done])
                break
        counts = source.counts()
        await source.aclose()
    finally:
        configure_logging("info", "json")
        admin.acl_deluser("narrow")
    assert counts["acked"] == 2
    assert counts["dead_lettered"] == 0
    assert pending(redis_url) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    lost = [line for line in lines if line["event"] == "cleanup.queue_dead_letter_lost"]
    assert [line["task_ids"] for line in lost] == [["../x"]]
    assert ("WRONGTYPE" if how == "replaced" else "no permissions") in lost[0]["error"]
    assert not [line for line in lines if line["event"] == "cleanup.queue_ack_failed"]


@pytest.mark.anyio
async def test_consumers_that_died_are_forgotten_but_not_their_entries(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group kept every consumer that ever read (one per pod and process, for ever). A
    consumer silent for FORGET_IDLE with nothing pending is now forgotten, and one that ends
    leaves; one with an entry pending stays, so the entry is not dropped from the group."""
    monkeypatch.setattr(queue, "TRIM_EVERY", 0.0)
    monkeypatch.setattr(queue, "FORGET_IDLE", 0.5)
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    for n in range(3):
        await client.xadd(STREAM, {"task_id": f"t{n}"})
    await client.xgroup_create(STREAM, GROUP, id="0")
    reply: Any = await client.xreadgroup(GROUP, "ghost", {STREAM: ">"}, count=1)
    await client.xack(STREAM, GROUP, reply[0][1][0][0])
    await client.xreadgroup(GROUP, "ghost-holding-one", {STREAM: ">"}, count=1)
    await anyio.sleep(0.6)
    source = queue.RedisStreamSource(
        client, STREAM, GROUP, "c1", PROJECT, IdValidator(DEFAULT_ID_PATTERN),
        until_empty=False, claim_idle=300,
    )  # fmt: skip
    with anyio.fail_after(10):
        async for batch in source.batches():
            refs = [item for item in batch if isinstance(item, TaskRef)]
            assert [r.task_id for r in refs] == ["t2"]
            names: Any = await client.xinfo_consumers(STREAM, GROUP)
            assert {c["name"] for c in names} == {"c1", "ghost-holding-one"}
            done = [TaskResult(r.task_id, r.project_id, Outcome.DELETED, ack=r.ack) for r in refs]
            await source.acknowledge(done)
            break
    await source.aclose()
    left: Any = redis.Redis.from_url(redis_url, decode_responses=True).xinfo_consumers(
        STREAM, GROUP
    )
    assert [(c["name"], c["pending"]) for c in left] == [("ghost-holding-one", 1)]


@pytest.mark.usefixtures("redis_server")  # skipped, or failed in CI, without redis-server
def test_a_redis_blip_pauses_a_shared_rate_run_and_it_goes_on(
    emulator: EmulatorServer, tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """The shared rate limiter's Redis restarting mid-run ended the run with a traceback, exit 1,
    no report. Sending now pauses while Redis is away (one warning, one notice when it is
    back), and the run finishes: every task deleted, exit 0."""
    redis_port = free_port()
    children.append(start_redis(tmp_path, redis_port))
    proc = spawn_shared_rate(emulator, tmp_path, redis_port, 600, children)
    children[0].terminate()
    children[0].wait(timeout=10)
    paused_at = len(emulator.state.deleted)
    time.sleep(1.5)
    assert len(emulator.state.deleted) <= paused_at + 8  # the requests then in flight at most
    children.append(start_redis(tmp_path, redis_port))
    assert proc.wait(timeout=60) == 0
    assert emulator.state.remaining() == 0
    assert report(tmp_path)["outcomes"]["deleted"] == 600
    events = [
        json.loads(line)["event"]
        for line in (tmp_path / "worker.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert events.count("cleanup.shared_rate_unavailable") == 1
    assert events.count("cleanup.shared_rate_restored") == 1


def test_a_shared_rate_redis_out_of_reach_at_start_sends_nothing(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """No Redis at --redis: exit 2 before anything is sent (it was a traceback at the first
    request)."""
    ids = seed(emulator, 10)
    code = run(
        emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids),
        "--redis", f"redis://127.0.0.1:{free_port()}/0", "--shared-rate-key", "dcs:rate",
        "--rate", "50",
    )  # fmt: skip
    assert code == 2
    assert emulator.state.requests == 0


def test_a_shared_rate_refused_for_good_aborts_the_run_with_its_report(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
) -> None:
    """The limiter's Redis user losing its right to run scripts mid-run will not pass by
    waiting: the run aborts (exit 3, stop_reason rate_limit_error) with its report, the
    unsent tasks not_attempted."""
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser(
        "pacer", enabled=True, passwords=["+pacer-pw"], keys=["~*"], categories=["+@all"]
    )
    try:
        ids = seed(emulator, 400)
        url = redis_url.replace("redis://", "redis://pacer:pacer-pw@")
        proc = spawn(
            emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids),
            "--redis", url, "--shared-rate-key", "dcs:rate", "--rate", "100",
            "--concurrency", "4",
        )  # fmt: skip
        children.append(proc)
        wait_for_deletes(emulator, 50)
        admin.acl_setuser("pacer", commands=["-evalsha", "-eval"])
        assert proc.wait(timeout=30) == 3
    finally:
        admin.acl_deluser("pacer")
    rep = report(tmp_path)
    assert rep["stop_reason"] == "rate_limit_error"
    assert "the shared rate limiter" in rep["stop_detail"]
    assert rep["outcomes"]["not_attempted"] > 0
    assert rep["outcomes"]["deleted"] == len(emulator.state.deleted)
    assert sum(rep["outcomes"].values()) == 400
    assert "pacer-pw" not in (tmp_path / "worker.log").read_text()


SLOTS = [(0, 5460), (5461, 10922), (10923, 16383)]  # the three masters' hash slots


def start_cluster(
    folder: Path, children: list[subprocess.Popen[bytes]], count: int, *extra: str
) -> tuple[list[int], list[redis.Redis]]:
    """``count`` redis-server nodes in one Redis Cluster, the first three masters of
    ``SLOTS`` (any more join slotless), its state ok: their ports and clients."""
    ports, buses = [free_port() for _ in range(count)], [free_port() for _ in range(count)]
    for port, bus in zip(ports, buses, strict=True):
        conf = ["--cluster-config-file", str(folder / f"nodes-{port}.conf")]
        cluster = ["--cluster-enabled", "yes", "--cluster-port", str(bus)]  # bus: port + 10000
        children.append(start_redis(folder, port, *cluster, *conf, *extra))
    nodes = [redis.Redis(port=port, decode_responses=True) for port in ports]
    for node, (first, last) in zip(nodes, SLOTS, strict=False):
        node.cluster("ADDSLOTSRANGE", first, last)
    for port, bus in zip(ports[1:], buses[1:], strict=True):
        nodes[0].cluster("MEET", "127.0.0.1", port, bus)
    deadline = time.monotonic() + 20
    while any(node.cluster("INFO")["cluster_state"] != "ok" for node in nodes):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return ports, nodes


def slot_owner(key: str) -> int:
    """Which of the three masters serves ``key``."""
    from redis.crc import key_slot

    return next(i for i, (a, b) in enumerate(SLOTS) if a <= key_slot(key.encode()) <= b)


@pytest.mark.usefixtures("redis_server")  # skipped, or failed in CI, without redis-server
def test_a_redis_cluster_is_read_through_a_hash_tagged_stream(
    emulator: EmulatorServer,
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """DCS sells Redis Cluster instances. A cluster node answers a key it does not serve with
    MOVED, so the queue refused them all. A node whose INFO says ``cluster_enabled`` is now read
    through a cluster client, which follows each key to its node: three nodes here, the URL
    naming one that does not serve the stream. The stream and its ``:dead`` stream must share a
    slot (the dead letter goes in the MULTI of the ack): a name without a hash tag is exit 2
    for enqueue and consumer alike, saying so, with nothing added or sent. With
    ``{cleanup}:tasks`` the consumer deletes every task under a rate shared in the cluster, the
    bad entry is dead-lettered, and the drained stream is trimmed. A user that may not run INFO
    is told that is why its cluster reads as a single node. redrive puts a failed dead letter
    back through the cluster client too."""

    ports, nodes = start_cluster(tmp_path, children, 3)
    for node in nodes:
        node.acl_setuser("noinfo", enabled=True, passwords=["+pw"], keys=["*"],
                         commands=["+@all", "-info"])  # fmt: skip

    def elsewhere(key: str) -> int:
        """The port of a node that does not serve ``key``."""
        return ports[(slot_owner(key) + 1) % 3]

    stream = "{cleanup}:tasks"
    url = f"redis://127.0.0.1:{elsewhere(stream)}/0"
    ids = seed(emulator, 40)
    path = write_ids(tmp_path / "ids.txt", ids)

    untagged = (
        "must share a hash slot; name it with a hash tag, e.g. --stream '{dcs-cleanup}:tasks'"
    )
    assert enqueue(url, path) == 2
    assert untagged in capsys.readouterr().err
    consumer = consumer_args(emulator, url, "c1", "--until-empty")
    assert main([*consumer, "--report", str(tmp_path / "report.json")]) == 2
    assert untagged in report(tmp_path)["stop_detail"]
    assert emulator.state.requests == 0
    assert sum(node.dbsize() for node in nodes) == 0

    added = ["enqueue", "--queue", url, "--input", str(path), "--project-id", PROJECT]
    assert main([*added, "--stream", stream]) == 0
    client = redis.RedisCluster(host="127.0.0.1", port=ports[0], decode_responses=True)
    client.xadd(stream, {"task_id": "bad/one", "project_id": PROJECT})
    rate = ["--shared-rate-key", "{cleanup}:rate", "--rate", "200"]
    assert main([*consumer, "--stream", stream, *rate]) == 0
    assert emulator.state.remaining() == 0
    assert emulator.state.requests == 40
    letters: Any = client.xrange(stream + ":dead")
    assert [(f["task_id"], f["error_code"]) for _, f in letters] == [("bad/one", "invalid_id")]
    assert client.xlen(stream) == 0  # every entry acknowledged by the only group: trimmed
    # redrive too follows the keys to their node: a failed dead letter goes back on the stream.
    client.xadd(
        stream + ":dead", {"task_id": "t-again", "project_id": PROJECT, "outcome": "failed"}
    )
    assert main(["redrive", "--queue", url, "--stream", stream]) == 0
    back: Any = client.xrange(stream)
    assert [f["task_id"] for _, f in back] == ["t-again"]
    assert client.xlen(stream + ":dead") == 1  # the invalid entry stays

    refused_info = f"redis://noinfo:pw@127.0.0.1:{elsewhere(STREAM)}/0"
    assert enqueue(refused_info, path) == 2
    said = capsys.readouterr().err
    assert "this Redis is a Redis Cluster node (MovedError" in said
    assert "reads as a cluster only when it may run INFO at start" in said


def test_a_long_running_consumer_keeps_a_bounded_journal(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
) -> None:
    """A consumer's journal kept a row for every task it ever saw: a consumer running for weeks
    filled its /tmp. With --journal-retention (default an hour) final outcomes older than that
    are forgotten as it goes: here, once the second lot is in, none of the first lot's rows."""
    ids = seed(emulator, 60)
    first, second = ids[:30], ids[30:]
    journal = tmp_path / "journal.sqlite"
    args = consumer_args(
        emulator, redis_url, "c1", "--health-port", "0", "--journal", str(journal),
        "--journal-retention", "1",
    )  # fmt: skip
    log = tmp_path / "consumer.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", *args], cwd=tmp_path, stdout=log.open("wb")
    )
    children.append(proc)
    try:
        assert enqueue(redis_url, write_ids(tmp_path / "first.txt", first)) == 0
        wait_for_deletes(emulator, 30)
        time.sleep(1.5)  # the first lot's outcomes are now older than the retention
        assert enqueue(redis_url, write_ids(tmp_path / "second.txt", second)) == 0
        wait_for_deletes(emulator, 60)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.closing(sqlite3.connect(journal)) as db:
                kept = {task for (task,) in db.execute("SELECT task_id FROM tasks")}
            if not kept & set(first):
                break
            assert time.monotonic() < deadline, f"{len(kept & set(first))} rows of the first lot"
            time.sleep(0.1)
        assert kept <= set(second)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 4
    assert "cleanup.journal_pruned" in log.read_text()


@pytest.mark.usefixtures("redis_server")  # skipped, or failed in CI, without redis-server
def test_a_failover_pauses_a_shared_rate_run_and_it_goes_on(
    emulator: EmulatorServer, tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """The limiter's Redis made a replica mid-run (a failover) answers its script READONLY
    until clients move on. That aborted the run (exit 3); it now pauses, like a lost
    connection, and goes on once the Redis takes writes again: exit 0, every task deleted."""
    ports = [free_port(), free_port()]
    for port in ports:
        children.append(start_redis(tmp_path, port))
    limiter = redis.Redis(port=ports[0])
    proc = spawn_shared_rate(emulator, tmp_path, ports[0], 400, children)
    limiter.replicaof("127.0.0.1", ports[1])
    time.sleep(1.0)
    limiter.replicaof("NO", "ONE")
    assert proc.wait(timeout=60) == 0
    assert emulator.state.remaining() == 0
    events = [
        json.loads(line)["event"]
        for line in (tmp_path / "worker.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert events.count("cleanup.shared_rate_unavailable") == 1


def test_enqueue_takes_the_project_from_the_environment(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """enqueue passed its --project-id flag's None over DCS_CLEANUP_PROJECT_ID, so the variable
    was never read and a plain-text file named no project. The variable is used now."""
    monkeypatch.setenv("DCS_CLEANUP_PROJECT_ID", PROJECT)
    path = write_ids(tmp_path / "ids.txt", ["t1", "t2"])
    assert main(["enqueue", "--queue", redis_url, "--input", str(path)]) == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert entries(client, STREAM) == [
        {"task_id": "t1", "project_id": PROJECT},
        {"task_id": "t2", "project_id": PROJECT},
    ]


def test_enqueue_takes_the_id_pattern_run_takes(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """enqueue's allow-list is run's: DCS_CLEANUP_ID_PATTERN (or the config file) narrows it
    for both, so what enqueue adds a consumer sends. enqueue used the built-in pattern unless
    given --id-pattern, and added IDs every consumer then skipped."""
    monkeypatch.setenv("DCS_CLEANUP_ID_PATTERN", "^t[0-9]$")
    path = write_ids(tmp_path / "ids.txt", ["t1", "abc", "t2"])
    args = ["enqueue", "--queue", redis_url, "--input", str(path), "--project-id", PROJECT]
    assert main(args) == 1  # a bad line skipped
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert [e["task_id"] for e in entries(client, STREAM)] == ["t1", "t2"]


def test_enqueue_reads_the_settings_its_consumers_read(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer and its consumers share a config file or an environment. enqueue read
    --stream and --message from its flags only, so with DCS_CLEANUP_STREAM set for both it
    added every task to dcs-cleanup:tasks while the consumers read another stream; and it
    needed --queue even with queue in the config file. Both come from run's places now."""
    config = tmp_path / "cleanup.toml"
    config.write_text(f'queue = "{redis_url}"\nproject_id = "{PROJECT}"\n', encoding="utf-8")
    monkeypatch.setenv("DCS_CLEANUP_STREAM", "team:tasks")
    monkeypatch.setenv("DCS_CLEANUP_MESSAGE", "nightly purge")
    ids = seed(emulator, 2)
    path = write_ids(tmp_path / "ids.txt", ids)
    assert main(["enqueue", "--config", str(config), "--input", str(path)]) == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.exists(STREAM) == 0
    assert entries(client, "team:tasks") == [
        {"task_id": t, "project_id": PROJECT, "message": "nightly purge"} for t in ids
    ]
    # A consumer with the same config file and environment deletes them.
    consumer = ["run", "--config", str(config), "--endpoint", emulator.url, "--until-empty"]
    assert main([*consumer, "--log-format", "json", "--progress", "off"]) == 0
    assert emulator.state.remaining() == 0


def test_enqueue_without_a_queue_exits_2_saying_where_to_give_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_ids(tmp_path / "ids.txt", ["t1"])
    assert main(["enqueue", "--input", str(path), "--project-id", PROJECT]) == 2
    assert (
        "enqueue needs --queue URL (or DCS_CLEANUP_QUEUE, or queue in --config)"
        in capsys.readouterr().err
    )


def test_enqueue_of_plain_text_without_a_project_exits_2_in_one_line(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Plain text and no --project-id: the input's refusal came out of enqueue's task group
    as an ExceptionGroup traceback, exit 1. It is exit 2 with the one line run gives, and
    nothing is added."""
    path = write_ids(tmp_path / "ids.txt", ["t1", "t2"])
    assert main(["enqueue", "--queue", redis_url, "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"dcs-cleanup: input {path}: line 1: plain-text lines name no project" in err
    assert "Traceback" not in err
    assert redis.Redis.from_url(redis_url).exists(STREAM) == 0


@pytest.mark.parametrize("lines", [["# none today"], ["t1"]], ids=["no IDs", "one ID"])
def test_enqueue_to_a_redis_it_cannot_use_exits_2_whether_or_not_the_input_has_ids(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str]
) -> None:
    """An input without IDs never spoke to Redis: a wrong --queue (nothing listening, a wrong
    password) added nothing and ended 0, until the day the input had IDs. Both are exit 2 now,
    saying why, with or without IDs."""
    path = write_ids(tmp_path / "ids.txt", lines)
    down = f"redis://127.0.0.1:{free_port()}/0"
    assert enqueue(down, path) == 2
    assert f"--queue {down}: Redis is not reachable:" in capsys.readouterr().err
    wrong = redis_url.replace("redis://", "redis://nobody:not-the-password@")
    assert enqueue(wrong, path) == 2
    err = capsys.readouterr().err
    assert "Redis refused the URL's user or password" in err
    assert "not-the-password" not in err
    assert redis.Redis.from_url(redis_url).exists(STREAM) == 0


def test_enqueue_by_a_user_that_may_only_add_entries(redis_url: str, tmp_path: Path) -> None:
    """A producer's ACL user may be allowed XADD and nothing else (no PING, no INFO): its
    enqueue adds the tasks, exit 0, and one of no IDs ends 0 too."""
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser("producer", enabled=True, passwords=["+pw"], keys=["~*"], commands=["+xadd"])
    try:
        url = redis_url.replace("redis://", "redis://producer:pw@")
        assert enqueue(url, write_ids(tmp_path / "none.txt", ["# none today"])) == 0
        assert enqueue(url, write_ids(tmp_path / "ids.txt", ["t1", "t2"])) == 0
    finally:
        admin.acl_deluser("producer")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert [e["task_id"] for e in entries(client, STREAM)] == ["t1", "t2"]


def test_enqueue_from_a_line_past_the_end_exits_2(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--from-line 30`` of a 3-line file (a mistyped 3) added nothing and ended 0, as if the
    file had all been added. Past the line after the last it is exit 2 now; the line after the
    last, which an enqueue stopped by a signal at the end names, still ends 0."""
    path = write_ids(tmp_path / "ids.txt", ["t1", "t2", "t3"])
    base = ["enqueue", "--queue", redis_url, "--input", str(path), "--project-id", PROJECT]
    assert main([*base, "--from-line", "30"]) == 2
    assert f"--from-line 30 is past the last line of {path} that holds a task (3)" in (
        capsys.readouterr().err
    )
    assert redis.Redis.from_url(redis_url).exists(STREAM) == 0
    assert main([*base, "--from-line", "4"]) == 0
    assert main([*base, "--from-line", "3"]) == 0
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert entries(client, STREAM) == [{"task_id": "t3", "project_id": PROJECT}]


def test_acknowledgements_redis_refused_for_a_while_are_made_once_it_takes_them(
    emulator: EmulatorServer,
    tmp_path: Path,
    children: list[subprocess.Popen[bytes]],
) -> None:
    """An XACK that fails (Redis restarting, a cluster failing over to a replica, a permission
    taken away for a while) left its entries held by this consumer for good: it never took
    them back, they stayed pending, and ``--until-empty`` waited for them for ever once every
    task was deleted. Now it acknowledges them again once Redis takes it: here XACK is taken
    from the consumer's user once it is under way, until the first failure is logged, then
    given back; the drain ends 0, nothing pending, and no task was sent twice. A user refused
    XACK from the start is exit 2 before anything is read: it could never acknowledge."""
    port = free_port()
    children.append(start_redis(tmp_path, port))
    admin = redis.Redis(port=port, decode_responses=True)
    admin.acl_setuser("acker", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all"])
    url = f"redis://acker:pw@127.0.0.1:{port}/0"
    ids = seed(emulator, 30)
    assert enqueue(url, write_ids(tmp_path / "ids.txt", ids)) == 0
    admin.acl_setuser("acker", enabled=True, commands=["-xack"])
    # Refused from the start, the consumer does not start: it could never acknowledge.
    report_file = ("--report", str(tmp_path / "report.json"))
    assert main([*consumer_args(emulator, url, "c0", "--until-empty"), *report_file]) == 2
    said = report(tmp_path)["stop_detail"]
    assert said.startswith("--queue: this Redis user may not acknowledge entries (")
    assert said.endswith("grant it XACK (ACL +xack, or +@stream)")
    assert emulator.state.requests == 0

    # Refused once the consumer is under way: given back after the first failure is logged.
    admin.acl_setuser("acker", enabled=True, commands=["+xack"])
    emulator.state.set_faults(Faults(latency_ms=300))  # the first answers come after the ACL
    log = tmp_path / "consumer.log"
    args = consumer_args(emulator, url, "c1", "--until-empty", "--claim-idle", "1")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", *args, "--report", str(tmp_path / "report.json")],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )  # fmt: skip
    children.append(proc)
    deadline = time.monotonic() + 30
    while not emulator.state.requests:  # under way: now take XACK away
        assert time.monotonic() < deadline
        assert proc.poll() is None
        time.sleep(0.005)
    admin.acl_setuser("acker", enabled=True, commands=["-xack"])
    while "cleanup.queue_ack_failed" not in log.read_text():
        assert time.monotonic() < deadline
        assert proc.poll() is None
        time.sleep(0.05)
    admin.acl_setuser("acker", enabled=True, commands=["+xack"])
    assert proc.wait(timeout=60) == 0
    assert emulator.state.remaining() == 0
    assert max(emulator.state.delete_calls.values()) == 1
    assert admin.xpending(STREAM, GROUP)["pending"] == 0
    assert report(tmp_path)["outcomes"]["deleted"] == 30


@pytest.mark.slow
@pytest.mark.usefixtures("redis_server")  # skipped, or failed in CI, without redis-server
def test_a_consumer_rides_out_a_redis_cluster_failover(
    emulator: EmulatorServer, tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """The master serving the stream's slot dies mid-drain and its replica takes over, as a
    DCS Redis Cluster fails over. The acknowledgements sent meanwhile fail; the consumer held
    those entries for good and its ``--until-empty`` drain never ended, every task deleted.
    Now it rides it out: acknowledged again on the new master, every task deleted once, the
    drain ends 0 with nothing pending."""

    ports, nodes = start_cluster(tmp_path, children, 4, "--cluster-node-timeout", "1000")
    stream = "{cleanup}:tasks"
    owner = slot_owner(stream)
    replica = nodes[3]
    deadline = time.monotonic() + 20
    while True:  # the fourth node, once it knows the owner, replicates it
        with contextlib.suppress(redis.ResponseError):
            replica.cluster("REPLICATE", nodes[owner].cluster("MYID"))
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    while (
        any(node.cluster("INFO")["cluster_state"] != "ok" for node in nodes)
        or replica.info("replication").get("master_link_status") != "up"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    url = f"redis://127.0.0.1:{ports[(owner + 1) % 3]}/0"  # a node that stays up
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 600))
    assert main(["enqueue", "--queue", url, "--input", str(path), "--project-id", PROJECT,
                 "--stream", stream]) == 0  # fmt: skip
    emulator.state.set_faults(Faults(latency_ms=20))
    args = consumer_args(emulator, url, "c1", "--until-empty", "--stream", stream)
    consumer = subprocess.Popen(
        [sys.executable, "-m", "worker", *args, "--rate", "100", "--concurrency", "8",
         "--report", str(tmp_path / "report.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    children.append(consumer)
    while emulator.state.requests < 150:
        assert time.monotonic() < deadline + 30
        assert consumer.poll() is None
        time.sleep(0.01)
    children[owner].kill()
    assert consumer.wait(timeout=90) == 0
    assert replica.info("replication")["role"] == "master"
    assert emulator.state.remaining() == 0
    assert max(emulator.state.delete_calls.values()) == 1
    assert replica.xpending(stream, GROUP)["pending"] == 0
    assert report(tmp_path)["outcomes"]["deleted"] == 600
