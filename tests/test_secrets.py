"""Credentials never appear in logs (any level), outcomes, report, journal, errors or reprs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.conftest import PROJECT, run_args, seed, spawn, unknown_ids, write_ids
from worker.cli import main
from worker.configuration import load_settings
from worker.emulator import EmulatorServer, Faults

AK = "AKSCAN7Q2W9E4R1T6Y3U"
SK = "SKSCAN-n0t-for-y0ur-eyes-8f3a9c2e71b4d605"
TOKEN = "TOKSCAN-temporary-session-token-5e2d1c"
SECRETS = (AK, SK, TOKEN)


def scan(folder: Path) -> list[str]:
    """Every file under folder (logs, outcomes, report, journal and its WAL) that holds a secret."""
    leaks = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaks += [f"{path.name}: {s[:6]}..." for s in SECRETS if s.encode() in data]
    return leaks


@pytest.mark.slow
def test_no_secret_in_any_output_under_every_fault(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debug logging, 500s, HTML 502s, resets, 429s with Retry-After, timeouts, a 401, a dry run,
    bad input and a config error: no output of any of them contains AK, SK or token."""
    monkeypatch.setenv("CLOUD_SDK_AK", AK)
    monkeypatch.setenv("CLOUD_SDK_SK", SK)
    monkeypatch.setenv("CLOUD_SDK_SECURITY_TOKEN", TOKEN)
    emulator.state.credentials = {AK: SK}
    ids = seed(
        emulator,
        300,
        Faults(
            error_rate=0.1, html_502_rate=0.05, reset_rate=0.05, fail_first=1,
            fail_first_share=0.2, quota_rate=400, quota_burst=20, retry_after=0.1, seed=3,
        ),
    )  # fmt: skip
    lines = [*ids, *unknown_ids(20), "../etc/passwd", "dup", "dup"]
    path = write_ids(tmp_path / "ids.txt", lines)
    journal = tmp_path / "journal.sqlite"
    debug = ("--log-level", "debug", "--journal", str(journal), "--max-attempts", "10")

    child = spawn(emulator, tmp_path, path, *debug, "--rate", "480", log="faults.log")
    assert child.wait(timeout=120) == 0
    assert emulator.state.remaining() == 0
    assert emulator.state.resets > 0
    assert emulator.state.by_status[429] > 0

    emulator.state.set_faults(Faults(drip_seconds=5))
    more = write_ids(tmp_path / "more.txt", unknown_ids(3, 5))
    child = spawn(
        emulator,
        tmp_path,
        more,
        *debug,
        "--timeout",
        "0.5",
        "--max-attempts",
        "2",
        log="timeouts.log",
    )
    assert child.wait(timeout=60) == 1

    emulator.state.set_faults(Faults())
    child = spawn(emulator, tmp_path, more, *debug, "--dry-run", log="dry.log")
    assert child.wait(timeout=60) == 0

    emulator.state.credentials = {AK: "a-different-secret"}
    child = spawn(emulator, tmp_path, more, "--log-level", "debug", log="refused.log")
    assert child.wait(timeout=60) == 3

    monkeypatch.setenv("DCS_CLEANUP_CONCURRENCY", "-1")
    child = spawn(emulator, tmp_path, more, log="config.log")
    assert child.wait(timeout=60) == 2

    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    assert '"event": "cleanup.retry_scheduled"' in logs["faults.log"]
    assert (
        "cleanup.credentials_refused" in logs["refused.log"]
        or "cleanup.aborted" in logs["refused.log"]
    )
    assert "concurrency" in logs["config.log"]
    assert scan(tmp_path) == []


def test_reprs_and_errors_hide_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings repr, the public view and validation errors never carry credential values."""
    monkeypatch.setenv("CLOUD_SDK_AK", AK)
    monkeypatch.setenv("CLOUD_SDK_SK", SK)
    monkeypatch.setenv("CLOUD_SDK_SECURITY_TOKEN", TOKEN)
    settings = load_settings({"project_id": PROJECT})
    texts = [
        repr(settings),
        str(settings),
        str(settings.public_view()),
        repr(settings.model_dump()),
    ]
    for text in texts:
        assert all(secret not in text for secret in SECRETS), text


def test_no_secret_in_stdout_and_stderr_of_in_process_run(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The summary table and logs printed by an in-process debug run hold no credentials."""
    monkeypatch.setenv("CLOUD_SDK_AK", AK)
    monkeypatch.setenv("CLOUD_SDK_SK", SK)
    emulator.state.credentials = {AK: SK}
    ids = seed(emulator, 10, Faults(error_rate=0.3, seed=1))
    path = write_ids(tmp_path / "ids.txt", ids)
    code = main(
        ["run", "--input", str(path), "--endpoint", emulator.url, "--project-id", PROJECT,
         "--log-level", "debug", "--log-format", "json", "--backoff-base", "0.01", "--rate", "0"]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "cleanup.task_done" in captured.out
    for secret in SECRETS:
        assert secret not in captured.out
        assert secret not in captured.err


REDIS_PASSWORD = "rds-pass-w0rd-9b1f7e03c5"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://default:tok3n@cache:6380/1", "rediss://default:***@cache:6380/1"),
        ("redis://cleanup:raw@at@h:1/0", "redis://cleanup:***@h:1/0"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("redis://user@cache:6379/0", "redis://user@cache:6379/0"),
        ("https://push.example:9091", "https://push.example:9091"),
    ],
)
def test_url_passwords_are_masked_where_urls_are_shown(url: str, shown: str) -> None:
    """A queue, Redis or Pushgateway URL keeps its user and host in the report but not its
    password, even one with a raw @ in it."""
    settings = load_settings(
        {"project_id": PROJECT, "queue": url if url.startswith("redis") else None,
         "redis": url if url.startswith("redis") else None, "pushgateway": url}
    )  # fmt: skip
    view = settings.public_view()
    assert view["pushgateway"] == shown
    if url.startswith("redis"):
        assert view["queue"] == view["redis"] == shown


@pytest.mark.parametrize(
    ("flag", "value", "why"),
    [
        ("--endpoint", "https://ak:s3cr3t-pw@dcs.example.com", "must not carry user:password@"),
        ("--queue", "http://:s3cr3t-pw@cache:6379/0", "must be a redis://"),
        # Read as host 'and' and database 'slash@h:1/0' (redis-py would use database 0 there).
        ("--queue", "redis://cleanup:s3cr3t-pw/and@h:1/0", "percent-encoded"),
    ],
)
def test_configuration_errors_do_not_echo_url_passwords(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, why: str
) -> None:
    """An endpoint with user:password@ is refused (aiohttp would refuse it beside the signed
    Authorization header on every request); neither error repeats the password."""
    path = write_ids(tmp_path / "ids.txt", ["abc"])
    code = main(["run", "--input", str(path), "--project-id", PROJECT, flag, value])
    err = capsys.readouterr().err
    assert code == 2
    assert why in err
    assert ":***@" in err
    assert "s3cr3t-pw" not in err


def test_redis_password_stays_out_of_every_output(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A queue consumer that logs in to Redis with a password (an ACL user, as a managed Redis
    hands out): it deletes the queued tasks, and the password is in no log line, outcome,
    report or journal file; the report names the queue with the password masked."""
    admin = redis.Redis.from_url(redis_url)
    # Keys and commands only: channel rules need Redis 6.2, and streams use none.
    admin.acl_setuser(
        "cleanup", enabled=True, passwords=[f"+{REDIS_PASSWORD}"], keys=["*"], commands=["+@all"]
    )
    try:
        host_port = redis_url.split("//", 1)[1]
        url = f"redis://cleanup:{REDIS_PASSWORD}@{host_port}"
        ids = seed(emulator, 20)
        path = write_ids(tmp_path / "ids.txt", ids)
        assert main(["enqueue", "--queue", url, "--input", str(path), "--project-id", PROJECT]) == 0
        journal = tmp_path / "journal.sqlite"
        args = run_args(emulator, tmp_path, None, "--queue", url, "--until-empty",
                        "--journal", str(journal), "--log-level", "debug")  # fmt: skip
        assert main(args) == 0
        captured = capsys.readouterr()
    finally:
        admin.acl_deluser("cleanup")
    assert emulator.state.remaining() == 0
    assert json.loads((tmp_path / "report.json").read_text())["settings"]["queue"] == (
        f"redis://cleanup:***@{host_port}"
    )
    assert "cleanup.run_started" in captured.out
    for text in (captured.out, captured.err):
        assert REDIS_PASSWORD not in text
    leaks = [
        path.name
        for path in tmp_path.rglob("*")
        if path.is_file() and REDIS_PASSWORD.encode() in path.read_bytes()
    ]
    assert leaks == []
