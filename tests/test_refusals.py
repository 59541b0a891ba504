"""Refused credentials remembered in Redis: a restarted run (a consumer's pod, a Job's retry)
does not send them again. Against the emulator and a real redis-server."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import PROJECT, free_port, report, run, run_args, seed, spawn, write_ids
from worker.cli import main
from worker.emulator import EmulatorServer, Faults
from worker.emulator.app import DEMO_AK, DEMO_SK
from worker.refusals import ACCEPTED_PREFIX, KEY_PREFIX, TURN_PREFIX, fingerprint
from worker.signer import Credentials

STREAM = "dcs-cleanup:tasks"
WRONG_SK = "not-the-right-secret-0000000000000000000"


def events(capsys: pytest.CaptureFixture[str], name: str) -> list[dict[str, Any]]:
    """The log lines of event ``name`` (a run logs on standard output, ``list`` on error)."""
    said = capsys.readouterr()
    lines = (said.out + said.err).splitlines()
    found = [json.loads(line) for line in lines if line.startswith("{")]
    return [e for e in found if e["event"] == name]


def consume(emu: EmulatorServer, redis_url: str, tmp: Path, *extra: str) -> int:
    """A --until-empty consumer of the queue (a pod of the consumer Deployment, say), which
    takes over the entries an earlier one left pending after 0.2 s."""
    args = ("--queue", redis_url, "--until-empty", "--claim-idle", "0.2", *extra)
    return main(run_args(emu, tmp, None, *args))


def test_refused_credentials_are_not_sent_again_by_the_next_run(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A consumer whose SK is wrong stops at its 401 (exit 3). Restarted, as the kubelet does
    a Deployment's pod, it sent one more refused signature each time, and Huawei locks an
    AK/SK after five. Now the restart stops before sending anything (exit 3), naming the run
    that was refused and the key to delete. Other credentials (the Secret set right) go at
    once, and the entries waited for them."""
    ids = seed(emulator, 20)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for task_id in ids:
        client.xadd(STREAM, {"task_id": task_id, "project_id": PROJECT})
    monkeypatch.setenv("CLOUD_SDK_SK", WRONG_SK)
    assert consume(emulator, redis_url, tmp_path) == 3
    assert emulator.state.requests == 1
    [remembered] = events(capsys, "cleanup.credentials_remembered")
    # A week by default: a day is a nightly CronJob's very period.
    assert 6.9 * 86400 < client.pttl(remembered["key"]) / 1000 <= 7 * 86400
    first_run = json.loads((tmp_path / "report.json").read_text())["run_id"]

    for _ in range(3):  # the kubelet's restarts
        (tmp_path / "report.json").unlink()
        assert consume(emulator, redis_url, tmp_path) == 3
        [said] = events(capsys, "cleanup.credentials_refused_before")
        assert said["by_run"] == first_run
        rep = json.loads((tmp_path / "report.json").read_text())  # a report, as for any run
        assert (rep["stop_reason"], rep["requests"], rep["tasks"]) == ("credentials_refused", 0, 0)
        assert rep["stop_detail"].startswith("remembered as refused at ")
        assert f" by run {first_run} " in rep["stop_detail"]
        assert said["refused_for"].startswith("HTTP 401 APIGW.0301")
        assert said["key"] == remembered["key"]
        assert f"redis-cli DEL {said['key']}" in said["detail"]
    assert emulator.state.requests == 1
    assert emulator.state.remaining() == 20

    monkeypatch.setenv("CLOUD_SDK_SK", "another-wrong-secret-00000000000000000000")
    assert consume(emulator, redis_url, tmp_path) == 3  # other credentials: tried, once
    assert emulator.state.requests == 2
    monkeypatch.setenv("CLOUD_SDK_SK", DEMO_SK)
    assert consume(emulator, redis_url, tmp_path) == 0
    assert emulator.state.remaining() == 0


def test_the_marker_names_no_secret_and_lasts_refusal_memory(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file run with --redis (a dry run here: its probe is signed too) leaves the marker for
    --refusal-memory seconds. Neither its key nor its value holds the AK or the SK."""
    monkeypatch.setenv("CLOUD_SDK_SK", WRONG_SK)
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 5))
    memory = ("--redis", redis_url, "--refusal-memory", "120", "--dry-run")
    assert run(emulator, tmp_path, path, *memory) == 3
    assert run(emulator, tmp_path, path, *memory) == 3
    assert emulator.state.requests == 1
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    [key] = client.keys("*")
    assert isinstance(key, str)
    assert key.startswith(KEY_PREFIX)
    value = client.get(key)
    assert isinstance(value, str)
    assert json.loads(value)["detail"].startswith("HTTP 401 APIGW.0301")
    for secret in (DEMO_AK, WRONG_SK, DEMO_AK[:8], WRONG_SK[:8]):
        assert secret not in key
        assert secret not in value
    assert 110 < client.pttl(key) / 1000 <= 120


@pytest.mark.parametrize("case", ["clock", "memory_off"])
def test_what_is_not_remembered(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
) -> None:
    """A refused clock (401 APIGW.0303) is not the credentials: fixed by NTP, the next run
    must go. ``--refusal-memory 0`` remembers nothing. Either way the next run sends again."""
    extra: tuple[str, ...] = ("--redis", redis_url)
    if case == "clock":
        emulator.state.clock_offset_s = 3600.0
    else:
        monkeypatch.setenv("CLOUD_SDK_SK", WRONG_SK)
        extra += ("--refusal-memory", "0")
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 5))
    assert run(emulator, tmp_path, path, *extra) == 3
    assert run(emulator, tmp_path, path, *extra) == 3
    assert emulator.state.requests == 2
    assert redis.Redis.from_url(redis_url).keys("*") == []


def test_a_redis_out_of_reach_only_costs_the_memory(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The memory is a help, not a need: with --redis at a port nothing listens on (and no
    other use of it), a warning says the credentials cannot be remembered and the run goes
    on: every task deleted, exit 0."""
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 5))
    gone = f"redis://127.0.0.1:{free_port()}/0"
    assert run(emulator, tmp_path, path, "--redis", gone) == 0
    assert emulator.state.remaining() == 0
    [warned] = events(capsys, "cleanup.refusal_memory_unavailable")
    assert warned["command"] == "GET"
    assert warned["key"].startswith(KEY_PREFIX)
    assert warned["detail"].endswith("or give --refusal-memory 0")


def test_a_marker_set_by_hand_also_holds_the_run(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A marker whose value is not this program's JSON (edited by hand, say, to note why the
    key is held) still stops the run before it sends, its text given as the reason."""
    monkeypatch.setenv("CLOUD_SDK_SK", WRONG_SK)
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 5))
    assert run(emulator, tmp_path, path, "--redis", redis_url) == 3
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    [key] = client.keys("*")
    client.set(key, "held by ops: key rotation, ticket 123")
    capsys.readouterr()
    assert run(emulator, tmp_path, path, "--redis", redis_url) == 3
    [said] = events(capsys, "cleanup.credentials_refused_before")
    assert said["refused_for"] == "held by ops: key rotation, ticket 123"
    assert said["by_run"] is None
    assert emulator.state.requests == 1


def test_a_redis_user_kept_to_the_stream_only_costs_the_memory(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A consumer's Redis user whose ACL reaches only the stream's keys may not GET or SET the
    marker: a warning says how to grant it or turn the memory off, and the queue is drained
    as before, exit 0."""
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    admin.acl_setuser(
        "streamer", enabled=True, passwords=["+pw"], keys=[f"~{STREAM}*"], categories=["+@all"]
    )
    try:
        for task_id in seed(emulator, 10):
            admin.xadd(STREAM, {"task_id": task_id, "project_id": PROJECT})
        url = redis_url.replace("redis://", "redis://streamer:pw@")
        assert consume(emulator, url, tmp_path) == 0
    finally:
        admin.acl_deluser("streamer")
    assert emulator.state.remaining() == 0
    [warned] = events(capsys, "cleanup.refusal_memory_unavailable")
    assert warned["command"] == "GET"
    assert "no permissions" in warned["error"]
    assert admin.keys(KEY_PREFIX + "*") == []


def test_a_fleet_started_together_sends_one_refused_request(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six runs started at once with a wrong SK and one Redis (the pods of an Indexed Job, each
    with its share of the input; the gateway slow to answer): each sent its first request
    before any marker existed, six refused signatures, past the five at which Huawei locks the
    AK/SK. Now the first request goes one run at a time: one is sent and refused, and the five
    others stop with exit 3, nothing sent, each report naming the run that was refused."""
    ids = seed(emulator, 30, Faults(latency_ms=2000))
    monkeypatch.setenv("CLOUD_SDK_SK", WRONG_SK)
    folders = [tmp_path / f"pod-{i}" for i in range(6)]
    pods = []
    for i, folder in enumerate(folders):
        folder.mkdir()
        path = write_ids(folder / "ids.txt", ids[i * 5 : i * 5 + 5])
        pods.append(spawn(emulator, folder, path, "--redis", redis_url))
    assert [pod.wait(timeout=120) for pod in pods] == [3] * 6
    assert emulator.state.requests == 1
    reports = sorted((report(folder) for folder in folders), key=lambda r: -r["requests"])
    assert [r["requests"] for r in reports] == [1, 0, 0, 0, 0, 0]
    assert {r["stop_reason"] for r in reports} == {"credentials_refused"}
    refused_run = reports[0]["run_id"]
    for held in reports[1:]:
        assert held["stop_detail"].startswith("remembered as refused at ")
        assert f" by run {refused_run} " in held["stop_detail"]
    assert emulator.state.remaining() == 30
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.keys(TURN_PREFIX + "*") == []  # the turn given back


def test_accepted_credentials_wait_for_no_turn(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run whose first request is answered (here 204) leaves the mark of accepted
    credentials for --refusal-memory seconds; a run that finds it sends at once, even while
    the first-request turn is held (by a run that died holding it, say). Without the mark, a
    run waits for that turn, saying whose it is, and takes it when it lapses."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 5))
    flags = ("--redis", redis_url, "--refusal-memory", "300")
    assert run(emulator, tmp_path, path, *flags) == 0
    [accepted] = client.keys(ACCEPTED_PREFIX + "*")
    assert isinstance(accepted, str)
    assert 290 < client.pttl(accepted) / 1000 <= 300
    turn = TURN_PREFIX + accepted.removeprefix(ACCEPTED_PREFIX)
    client.set(turn, "run-that-died", px=60_000)
    capsys.readouterr()
    path = write_ids(tmp_path / "more.txt", seed(emulator, 5))
    assert run(emulator, tmp_path, path, *flags) == 0
    assert emulator.state.remaining() == 0
    assert events(capsys, "cleanup.waiting_for_first_request") == []

    client.delete(accepted)
    client.set(turn, "run-that-died", px=3000)
    path = write_ids(tmp_path / "last.txt", seed(emulator, 5))
    assert run(emulator, tmp_path, path, *flags) == 0
    assert emulator.state.remaining() == 0
    [waited] = events(capsys, "cleanup.waiting_for_first_request")
    assert (waited["by_run"], waited["key"]) == ("run-that-died", turn)
    assert client.exists(accepted)


def test_a_run_waiting_for_its_turn_stops_at_sigterm(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path
) -> None:
    """A pod deleted while its first request waits for another run's turn (held here for a
    minute) stops at SIGTERM within a second, exit 4, nothing sent, its tasks not_attempted."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    turn = TURN_PREFIX + fingerprint(Credentials(DEMO_AK, DEMO_SK))
    client.set(turn, "another-run", px=60_000)
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 5))
    child = spawn(emulator, tmp_path, path, "--redis", redis_url)
    deadline = time.monotonic() + 30
    while "cleanup.waiting_for_first_request" not in (tmp_path / "worker.log").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=5) == 4
    assert emulator.state.requests == 0
    rep = report(tmp_path)
    assert (rep["stop_reason"], rep["requests"]) == ("signal", 0)
    assert rep["outcomes"]["not_attempted"] == 5
    assert client.get(turn) == "another-run"  # not taken, not given back: it was not its own


def test_a_redis_user_with_the_commands_the_readme_lists_keeps_the_memory(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A Redis user granted only what the README lists for the memory (GET, SET, EXISTS, DEL,
    EVALSHA and SCRIPT LOAD on the dcs-cleanup keys) proves, refuses and gives back a turn
    with no warning: a refused SK is sent once over two runs, and the right one is vouched
    for."""
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    commands = ["+get", "+set", "+exists", "+del", "+evalsha", "+script|load"]
    admin.acl_setuser(
        "memory", enabled=True, passwords=["+pw"], keys=["~dcs-cleanup:*"], commands=commands
    )
    url = redis_url.replace("redis://", "redis://memory:pw@")
    try:
        path = write_ids(tmp_path / "ids.txt", seed(emulator, 5))
        assert run(emulator, tmp_path, path, "--redis", url) == 0
        monkeypatch.setenv("CLOUD_SDK_SK", WRONG_SK)
        assert run(emulator, tmp_path, path, "--redis", url) == 3
        assert run(emulator, tmp_path, path, "--redis", url) == 3
    finally:
        admin.acl_deluser("memory")
    assert emulator.state.requests == 6  # five deletes, one refused
    assert events(capsys, "cleanup.refusal_memory_unavailable") == []
    assert len(admin.keys(ACCEPTED_PREFIX + "*")) == 1
    assert len(admin.keys(KEY_PREFIX + "*")) == 1
    assert admin.keys(TURN_PREFIX + "*") == []


def test_a_parent_that_cannot_send_its_get_gives_the_turn_back(
    emulator: EmulatorServer, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``--processes`` parent whose GET cannot go out (a SOCKS proxy in HTTPS_PROXY, refused
    as a setting) ends exit 2 and gives its first-request turn back at once: the other runs
    with these credentials waited until it lapsed, --timeout + 5 s later."""
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 5))
    args = run_args(emulator, tmp_path, path, "--redis", redis_url, "--processes", "2")
    args[args.index("--endpoint") + 1] = "https://127.0.0.1:9"
    assert main(args) == 2
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.keys(TURN_PREFIX + "*") == []
    assert emulator.state.requests == 0


def test_a_nightly_list_and_run_without_redis_send_one_refused_request_in_all(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The shipped CronJob has no Redis: with a wrong SK its list init container sent one
    refused GET a night, and Huawei locks an AK/SK after five. With --refusal-file on the
    volume that keeps the journal, the first night's refusal is remembered there: later
    nights' list and run send nothing (exit 3), naming the run that was refused and the file
    to delete. The file holds a fingerprint, never the AK or the SK; other credentials (the
    Secret set right) go at once."""
    ids = seed(emulator, 10)
    state = tmp_path / "state"
    monkeypatch.setenv("DCS_CLEANUP_REFUSAL_FILE", str(state / "refused-credentials.json"))
    monkeypatch.setenv("CLOUD_SDK_SK", WRONG_SK)
    listed = tmp_path / "ids.txt"
    night = [
        "list", "--endpoint", emulator.url, "--project-id", PROJECT, "--output", str(listed),
        "--log-format", "json",
    ]  # fmt: skip
    run_night = run_args(emulator, tmp_path, listed, "--journal", str(state / "journal.sqlite"))

    assert main(night) == 3  # the first night: the list's GET is refused
    assert emulator.state.requests == 1
    [remembered] = events(capsys, "cleanup.credentials_remembered")
    marker = json.loads((state / "refused-credentials.json").read_text())
    mark = fingerprint(Credentials(DEMO_AK, WRONG_SK))
    assert list(marker) == [mark]
    assert remembered["key"] == f"{state / 'refused-credentials.json'} {mark}"
    assert marker[mark]["detail"].startswith("HTTP 401 APIGW.0301")
    assert 6.9 * 86400 < _seconds_until(marker[mark]["until"]) <= 7 * 86400
    text = (state / "refused-credentials.json").read_text()
    for secret in (DEMO_AK, WRONG_SK, DEMO_AK[:8], WRONG_SK[:8]):
        assert secret not in text

    for _ in range(3):  # the nights after
        assert main(night) == 3
        [said] = events(capsys, "cleanup.credentials_refused_before")
        assert said["by_run"] == marker[mark]["run_id"]
        assert said["by_run"].startswith("list-")
        assert f"delete the file {state / 'refused-credentials.json'}" in said["detail"]
    listed.write_text("".join(f"{i}\n" for i in ids))  # the list of a night before, say
    assert main(run_night) == 3
    rep = report(tmp_path)
    assert (rep["stop_reason"], rep["requests"]) == ("credentials_refused", 0)
    assert emulator.state.requests == 1

    monkeypatch.setenv("CLOUD_SDK_SK", DEMO_SK)  # the Secret set right: goes at once
    assert main(night) == 0
    assert main(run_night) == 0
    assert emulator.state.remaining() == 0


def _seconds_until(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp() - time.time()


@pytest.mark.parametrize("how", ["run", "dry_run", "processes"])
def test_each_first_request_remembers_its_refusal_in_the_file(
    how: str, emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's first DELETE, a dry run's probe and a --processes parent's GET, each refused,
    leave the file's marker, and the same run again sends nothing."""
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 6))
    monkeypatch.setenv("CLOUD_SDK_SK", WRONG_SK)
    extra = {"run": [], "dry_run": ["--dry-run"], "processes": ["--processes", "2"]}[how]
    memory = ["--refusal-file", str(tmp_path / "refused.json"), *extra]
    assert run(emulator, tmp_path, path, *memory) == 3
    assert run(emulator, tmp_path, path, *memory) == 3
    assert emulator.state.requests == 1
    assert report(tmp_path)["stop_detail"].startswith("remembered as refused at ")
    assert list(json.loads((tmp_path / "refused.json").read_text())) == [
        fingerprint(Credentials(DEMO_AK, WRONG_SK))
    ]


def test_a_refusal_file_that_cannot_be_written_is_exit_2_before_anything_is_sent(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 3))
    (tmp_path / "a-folder").mkdir()
    assert run(emulator, tmp_path, path, "--refusal-file", str(tmp_path / "a-folder")) == 2
    folder = tmp_path / "a-folder"
    assert f"--refusal-file {folder}: is a folder; give a file path" in capsys.readouterr().err
    assert emulator.state.requests == 0


def test_a_refusal_file_out_of_date_or_spoilt_sends_as_usual(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A marker whose time has passed is forgotten; a file that is not JSON gives one warning
    and the run goes on as without a memory, never writing over it."""
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 4))
    marker = tmp_path / "refused.json"
    mark = fingerprint(Credentials(DEMO_AK, DEMO_SK))
    marker.write_text(json.dumps({mark: {"until": "2020-01-01T00:00:00Z", "detail": "old"}}))
    assert run(emulator, tmp_path, path, "--refusal-file", str(marker)) == 0
    assert emulator.state.remaining() == 0
    marker.write_text("{not json")
    seed(emulator, 4)
    assert run(emulator, tmp_path, path, "--refusal-file", str(marker), "--log-format", "json") == 0
    [warned] = events(capsys, "cleanup.refusal_memory_unavailable")
    assert warned["command"] == "read"
    assert emulator.state.remaining() == 0
    # Refused, the run does not write over a file it could not read: it is someone's.
    monkeypatch.setenv("CLOUD_SDK_SK", WRONG_SK)
    seed(emulator, 4)
    assert run(emulator, tmp_path, path, "--refusal-file", str(marker), "--log-format", "json") == 3
    assert marker.read_text() == "{not json"
    assert events(capsys, "cleanup.credentials_remembered") == []


def test_a_list_shares_the_redis_memory_with_the_runs(
    emulator: EmulatorServer,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``list`` with DCS_CLEANUP_REDIS set remembers its refusal in that Redis, and a run
    with the same credentials and Redis then sends nothing; so does the next list."""
    ids = seed(emulator, 5)
    monkeypatch.setenv("DCS_CLEANUP_REDIS", redis_url)
    monkeypatch.setenv("CLOUD_SDK_SK", WRONG_SK)
    out = tmp_path / "listed.txt"
    lister = ["list", "--endpoint", emulator.url, "--project-id", PROJECT, "--output", str(out)]
    assert main(lister) == 3
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    marker = client.get(KEY_PREFIX + fingerprint(Credentials(DEMO_AK, WRONG_SK)))
    assert isinstance(marker, str)
    assert json.loads(marker)["run_id"].startswith("list-")
    assert main(lister) == 3
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids)) == 3
    assert emulator.state.requests == 1
    assert report(tmp_path)["stop_detail"].startswith("remembered as refused at ")


@pytest.mark.parametrize("other", ["--journal", "--input", "--report"])
def test_a_refusal_file_on_another_flag_s_file_is_refused(
    other: str,
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One path for the refusal file and another flag's file: on the journal's or the input's
    the memory read no JSON and was off (one warning), and on the report's the marker and the
    report overwrote each other, so the next run sent the refused credentials again. That is
    exit 2 before anything is sent, naming both flags."""
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 3))
    journal = tmp_path / "journal.sqlite"
    same = {"--journal": journal, "--input": path, "--report": tmp_path / "report.json"}[other]
    monkeypatch.setenv("CLOUD_SDK_SK", WRONG_SK)
    args = ["--journal", str(journal), "--refusal-file", str(same)]
    assert run(emulator, tmp_path, path, *args) == 2
    said = capsys.readouterr().err
    assert f"--refusal-file {same} is the file of {other} {same}: give each its own" in said
    assert emulator.state.requests == 0
