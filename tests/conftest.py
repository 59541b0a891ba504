"""Shared fixtures: a real emulator on loopback, credentials, and the CLI run in-process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO, cast

import pytest
import redis

from worker.cli import main
from worker.emulator import EmulatorServer, EmulatorState, Faults
from worker.emulator.app import DEMO_AK, DEMO_SK
from worker.logs import configure_logging

PROJECT = "0" * 31 + "1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fresh emulator with signature checking on; tests seed tasks and set faults."""
    with EmulatorServer(EmulatorState()) as emu:
        yield emu


class _Stdout(io.TextIOBase):
    """Standard output as it is when a line is written (the running test's capture), not as it
    was when logging was set up: that capture is closed once its test ends."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test runs in its own folder (no stray .env) with the demo credentials set, and
    logging as a run starts it (info, JSON lines), not as the test before left it: a test
    that ran ``main`` with ``capsys`` left the logs going to its closed capture."""
    for name in list(__import__("os").environ):
        if name.startswith(("DCS_CLEANUP_", "CLOUD_SDK_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOUD_SDK_AK", DEMO_AK)
    monkeypatch.setenv("CLOUD_SDK_SK", DEMO_SK)
    configure_logging("info", "json", stream=cast("TextIO", _Stdout()))


def seed(emu: EmulatorServer, count: int, faults: Faults | None = None) -> list[str]:
    ids = emu.state.seed_tasks(PROJECT, count, random.Random(count))
    if faults is not None:
        emu.state.set_faults(faults)
    return ids


def unknown_ids(count: int, seed_value: int = 99) -> list[str]:
    rng = random.Random(seed_value)
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


def run_args(emu: EmulatorServer, tmp: Path, input_file: Path | None, *extra: str) -> list[str]:
    """``run`` flags against the emulator, writing report.json and outcomes.jsonl in tmp (no
    ``--input`` when ``input_file`` is None)."""
    return [
        "run",
        *(["--input", str(input_file)] if input_file is not None else []),
        "--endpoint", emu.url,
        "--project-id", PROJECT,
        "--report", str(tmp / "report.json"),
        "--outcomes", str(tmp / "outcomes.jsonl"),
        "--rate", "0",
        "--backoff-base", "0.01",
        "--backoff-cap", "0.05",
        "--log-format", "json",
        "--progress", "off",
        *extra,
    ]  # fmt: skip


def run(emu: EmulatorServer, tmp: Path, input_file: Path, *extra: str) -> int:
    """``dcs-cleanup run`` in this process; returns its exit code."""
    return main(run_args(emu, tmp, input_file, *extra))


def spawn(
    emu: EmulatorServer, tmp: Path, input_file: Path | None, *extra: str, log: str = "worker.log"
) -> subprocess.Popen[bytes]:
    """``python -m worker run`` as a child process (for signals and kill -9)."""
    out = (tmp / log).open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "worker", *run_args(emu, tmp, input_file, *extra)],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tmp,
    )


def outcomes(tmp: Path) -> list[dict[str, Any]]:
    lines = (tmp / "outcomes.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def report(tmp: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp / "report.json").read_text(encoding="utf-8"))
    return data


def week_old_and_recent(
    emu: EmulatorServer, tmp: Path, old: int, recent: int
) -> tuple[Path, list[str], list[str]]:
    """A journal in ``tmp`` of two runs: one that deleted ``old`` tasks eight days ago, one
    that deleted ``recent`` tasks now; the journal and the two lists of task IDs."""
    journal = tmp / "journal.sqlite"
    old_ids, recent_ids = seed(emu, old), seed(emu, recent)
    assert run(emu, tmp, write_ids(tmp / "old.txt", old_ids), "--journal", str(journal)) == 0
    aged = 8 * 86400
    with contextlib.closing(sqlite3.connect(journal)) as db, db:
        db.execute("UPDATE tasks SET updated_at = updated_at - ?", (aged,))
        db.execute(
            "UPDATE runs SET started_at = started_at - ?, finished_at = finished_at - ?",
            (aged, aged),
        )
    assert run(emu, tmp, write_ids(tmp / "recent.txt", recent_ids), "--journal", str(journal)) == 0
    return journal, old_ids, recent_ids


def write_ids(path: Path, ids: list[str]) -> Path:
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(folder: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """A redis-server on loopback (Debian's package), answering when this returns."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
        else:
            return proc


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on loopback for this test session (Debian's redis-server package)."""
    exe = shutil.which("redis-server")
    if exe is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    proc = start_redis(tmp_path_factory.mktemp("redis"), port, "--protected-mode", "yes")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied for this test."""
    redis.Redis.from_url(redis_server).flushall()
    return redis_server
