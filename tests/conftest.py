"""Shared fixtures: a real emulator on loopback, credentials, and the CLI run in-process."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.cli import main
from worker.emulator import EmulatorServer, EmulatorState, Faults
from worker.emulator.app import DEMO_AK, DEMO_SK

PROJECT = "0" * 31 + "1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    """A fresh emulator with signature checking on; tests seed tasks and set faults."""
    with EmulatorServer(EmulatorState()) as emu:
        yield emu


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test runs in its own folder (no stray .env) with the demo credentials set."""
    for name in list(__import__("os").environ):
        if name.startswith(("DCS_CLEANUP_", "CLOUD_SDK_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOUD_SDK_AK", DEMO_AK)
    monkeypatch.setenv("CLOUD_SDK_SK", DEMO_SK)


def seed(emu: EmulatorServer, count: int, faults: Faults | None = None) -> list[str]:
    ids = emu.state.seed_tasks(PROJECT, count, random.Random(count))
    if faults is not None:
        emu.state.set_faults(faults)
    return ids


def unknown_ids(count: int, seed_value: int = 99) -> list[str]:
    rng = random.Random(seed_value)
    return [f"{rng.getrandbits(128):032x}" for _ in range(count)]


def run_args(emu: EmulatorServer, tmp: Path, input_file: Path, *extra: str) -> list[str]:
    """``run`` flags against the emulator, writing report.json and outcomes.jsonl in tmp."""
    return [
        "run",
        "--input", str(input_file),
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
    emu: EmulatorServer, tmp: Path, input_file: Path, *extra: str, log: str = "worker.log"
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


def write_ids(path: Path, ids: list[str]) -> Path:
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")
    return path
