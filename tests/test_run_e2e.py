"""The whole run against the emulator (a real aiohttp server) with signatures checked."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import re
import sqlite3
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    PROJECT,
    outcomes,
    report,
    run,
    run_args,
    seed,
    unknown_ids,
    week_old_and_recent,
    write_ids,
)
from worker.cli import main
from worker.emulator import EmulatorServer, Faults
from worker.emulator.app import DEMO_AK, DEMO_SK
from worker.signer import Credentials, Signer


def test_existing_and_unknown_ids_end_deleted_and_absent(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """2,000 existing + 200 unknown IDs, shuffled, concurrency 32: 2,000 deleted, 200 absent."""
    existing = seed(emulator, 2000)
    missing = unknown_ids(200)
    ids = existing + missing
    random.Random(1).shuffle(ids)
    code = run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids), "--concurrency", "32")
    assert code == 0
    rows = outcomes(tmp_path)
    by_outcome = Counter(row["outcome"] for row in rows)
    assert by_outcome == {"deleted": 2000, "absent": 200}
    assert {r["task_id"] for r in rows if r["outcome"] == "deleted"} == set(existing)
    assert {r["task_id"] for r in rows if r["outcome"] == "absent"} == set(missing)
    state = emulator.state
    assert state.remaining() == 0
    assert set(state.deleted) == set(existing)
    assert max(state.deleted.values()) == 1
    assert state.by_status[401] == 0
    rep = report(tmp_path)
    assert rep["outcomes"]["deleted"] == 2000
    assert rep["outcomes"]["absent"] == 200
    assert rep["http_status"] == {"200": 2000, "404": 200}
    assert rep["exit_code"] == 0


def test_the_message_reaches_the_api_as_the_delete_body(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """The server receives ``{"message": ...}``: --message for every task, a JSON Lines line's
    own message over it; without either, a DELETE with no body (as the SDK sends)."""
    ids = seed(emulator, 6)
    lines = [{"task_id": t} for t in ids[:3]] + [{"task_id": ids[3], "message": "ticket 42"}]
    jsonl = tmp_path / "ids.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    assert run(emulator, tmp_path, jsonl, "--message", "cleanup by SRE, naïve ok") == 0
    assert emulator.state.messages == {"cleanup by SRE, naïve ok": 3, "ticket 42": 1}
    emulator.state.messages.clear()
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids[4:])) == 0
    assert emulator.state.messages == {None: 2}
    assert emulator.state.remaining() == 0


def test_every_outcome_line_has_the_contract_fields(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Each outcome line carries task_id, project_id, outcome, status, attempts, error fields,
    request_id and elapsed_ms; a 404 keeps the service's error code and request id. Each also
    names its run, so the lines of runs appended to one file can be told apart."""
    ids = seed(emulator, 5) + unknown_ids(1)
    path = write_ids(tmp_path / "ids.txt", ids)
    assert run(emulator, tmp_path, path) == 0
    first_run = report(tmp_path)["run_id"]
    rows = {row["task_id"]: row for row in outcomes(tmp_path)}
    required = {
        "task_id", "project_id", "outcome", "status", "attempts",
        "error_code", "error_msg", "request_id", "elapsed_ms", "run_id",
    }  # fmt: skip
    for row in rows.values():
        assert required <= row.keys()
        assert row["project_id"] == PROJECT
        assert row["request_id"]
        assert row["run_id"] == first_run
    assert run(emulator, tmp_path, path) == 0
    second_run = report(tmp_path)["run_id"]
    assert second_run != first_run
    assert [row["run_id"] for row in outcomes(tmp_path)] == [first_run] * 6 + [second_run] * 6
    absent = rows[ids[-1]]
    assert absent["outcome"] == "absent"
    assert absent["status"] == 404
    assert absent["error_code"] == "DCS.4133"


def test_transient_faults_are_retried_to_success(emulator: EmulatorServer, tmp_path: Path) -> None:
    """30% of tasks fail twice with 500, 3% HTML 502s, 2% resets: --max-attempts 6 deletes all."""
    ids = seed(
        emulator,
        1000,
        Faults(fail_first=2, fail_first_share=0.30, html_502_rate=0.03, reset_rate=0.02, seed=5),
    )
    code = run(
        emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids),
        "--max-attempts", "6", "--concurrency", "32",
    )  # fmt: skip
    assert code == 0
    assert Counter(row["outcome"] for row in outcomes(tmp_path)) == {"deleted": 1000}
    state = emulator.state
    assert state.remaining() == 0
    assert state.by_status[500] >= 2 * 250  # the faults really happened
    assert state.by_status[502] > 0
    rep = report(tmp_path)
    assert rep["retries"] > 600
    assert rep["http_status"]["network"] == state.resets > 0


def test_hostile_ids_are_skipped_and_never_sent(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Path tricks, escapes, query/fragment, whitespace, overlong, backslash, NUL: skipped with
    their line; no request for them; the valid IDs in the same file are deleted."""
    good = seed(emulator, 3)
    hostile = [
        "../instances/x", "a/b", "%2e%2e%2f", "x y", "..", "abc?x=1", "abc#f",
        "a" * 80, "ta%2Fsk", "back\\slash", "nul\x00byte",
    ]  # fmt: skip
    lines = [good[0], *hostile[:6], good[1], *hostile[6:], good[2]]
    path = tmp_path / "ids.txt"
    path.write_bytes(("\n".join(lines) + "\n").encode())
    assert run(emulator, tmp_path, path) == 0
    rows = outcomes(tmp_path)
    skipped = {r["line"]: r for r in rows if r["outcome"] == "skipped"}
    hostile_lines = [i + 1 for i, line in enumerate(lines) if line in hostile]
    assert sorted(skipped) == hostile_lines
    for line, row in skipped.items():
        assert row["error_code"] == "invalid_id"
        assert row["error_msg"].startswith(f"{path}:{line}: ")
        assert row["attempts"] == 0
    assert {r["task_id"] for r in rows if r["outcome"] == "deleted"} == set(good)
    paths = set(emulator.state.paths)
    assert paths == {f"/v2/{PROJECT}/tasks/{task_id}" for task_id in good}
    assert emulator.state.requests == 3
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    warned = [e for e in events if e["event"] == "cleanup.input_line_skipped"]
    assert [e["line"] for e in warned] == hostile_lines
    assert all(e["level"] == "warning" and e["source"] == str(path) for e in warned)


def test_progress_lines_say_how_many_tasks_are_left_and_when_the_run_will_end(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log reader (a CronJob's) got the tasks done and the rate, and had to work out the rest
    by hand. With a file input each progress line also has the input's tasks (comments and
    blank lines not counted; a bad ID is a task, skipped), how far along the run is, and the
    seconds left at the last interval's rate."""
    ids = seed(emulator, 300)
    path = tmp_path / "ids.txt"
    path.write_text(
        "# tonight's tasks\n\n" + "\n".join(ids[:150]) + "\na/b\n" + "\n".join(ids[150:])
    )
    args = run_args(emulator, tmp_path, path, "--rate", "150", "--burst", "1")
    args[args.index("--progress") + 1] = "log"
    assert main([*args, "--progress-interval", "0.25"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    lines = [e for e in events if e["event"] == "cleanup.progress"]
    assert len(lines) >= 3
    counted = [e for e in lines if "total" in e]
    assert counted  # the count, in a thread, is done within a quarter of a second
    for e in counted:
        assert e["total"] == 301
        assert e["percent"] == round(100 * e["done"] / 301, 1)
        if 0 < e["done"] < 301 and e["rate_per_s"] > 0:
            assert abs(e["eta_s"] - (301 - e["done"]) / e["rate_per_s"]) <= 0.51
    assert any(0 < e["done"] < 301 and e["eta_s"] >= 1 for e in counted)


def test_a_console_progress_line_names_outcomes_by_their_words(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The console's progress line (a terminal's log without a bar, or `dcs-cleanup demo`
    piped) showed its counts as ``{<Outcome.DELETED: 'deleted'>: 2428, ...}``."""
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 200))
    args = run_args(emulator, tmp_path, path, "--rate", "150", "--burst", "1")
    args[args.index("--progress") + 1] = "log"
    args[args.index("--log-format") + 1] = "console"
    assert main([*args, "--progress-interval", "0.25"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "cleanup.progress" in line]
    assert lines
    assert all(re.search(r"outcomes=\{'deleted': \d+\}", line) for line in lines)
    assert not any("<Outcome." in line for line in lines)


def test_one_shard_s_progress_lines_give_no_total_of_the_whole_file(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--shard 0/2 sends about half of the file: the file's count is not its total, so its
    progress lines keep to what is done and the rate, with no percent or end to mislead."""
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 400))
    args = run_args(emulator, tmp_path, path, "--rate", "150", "--burst", "1", "--shard", "0/2")
    args[args.index("--progress") + 1] = "log"
    assert main([*args, "--progress-interval", "0.25"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    lines = [e for e in events if e["event"] == "cleanup.progress"]
    assert len(lines) >= 3
    assert not any("total" in e or "percent" in e or "eta_s" in e for e in lines)
    assert 100 < report(tmp_path)["outcomes"]["deleted"] < 300


def test_an_input_with_no_task_to_send_says_so(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty file (a list step that wrote nothing) or one whose every line is bad input
    (the wrong file) ended 0 like a finished job, with nothing but the skipped lines' own
    warnings. It still ends 0, as the contract says, and warns once that the input held no
    task. A re-run whose tasks an earlier run finished, and a plain run, do not warn."""

    def warned() -> list[dict[str, Any]]:
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return [e for e in events if e["event"] == "cleanup.input_held_no_tasks"]

    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing today\n\n", encoding="utf-8")
    assert run(emulator, tmp_path, empty) == 0
    [event] = warned()
    assert event["input"] == str(empty)
    assert event["level"] == "warning"
    assert "holds no task lines" in event["detail"]

    wrong = tmp_path / "hosts.txt"
    wrong.write_text("127.0.0.1 localhost\n::1 ip6-localhost\n", encoding="utf-8")
    assert run(emulator, tmp_path, wrong) == 0
    [event] = warned()
    assert event["detail"] == "all 2 of its lines were skipped as bad input: the wrong file?"

    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 3))
    journal = str(tmp_path / "j.sqlite")
    assert run(emulator, tmp_path, ids, "--journal", journal) == 0
    assert warned() == []
    assert run(emulator, tmp_path, ids, "--journal", journal) == 0  # already_done, each
    assert warned() == []
    assert emulator.state.requests == 3


def test_a_run_whose_every_task_was_absent_warns_that_none_existed(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """IDs listed in one region (or project) and deleted in another get 404 each: ``absent``,
    a success, so the run ends 0 having deleted nothing, exactly like a finished job. It ends
    0 still, and warns once that no task existed, naming the endpoint and project. A run that
    deleted anything does not warn."""

    def warned() -> list[dict[str, Any]]:
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return [e for e in events if e["event"] == "cleanup.no_task_existed"]

    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 40))
    other = "0" * 31 + "2"
    assert run(emulator, tmp_path, ids, "--project-id", other) == 0
    [event] = warned()
    assert event["level"] == "warning"
    assert event["absent"] == 40
    assert event["project_id"] == other
    assert event["endpoint"] == emulator.url
    assert event["detail"] == (
        "all 40 tasks sent were absent (404) and none was deleted: gone already, or the IDs "
        f"are from another region or project than {emulator.url}"
    )
    assert emulator.state.remaining() == 40

    assert run(emulator, tmp_path, ids) == 0
    assert warned() == []
    assert report(tmp_path)["outcomes"]["deleted"] == 40


def test_queue_settings_given_to_a_file_run_are_named_as_ignored(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--stream other`` beside ``--input`` (or ``DCS_CLEANUP_GROUP`` in the environment) was
    ignored without a word. The run still goes on, as a config file may serve both kinds of
    run, and warns once, naming the flags; a run given none of them does not warn. So is
    --journal-retention without a --journal."""

    def warned() -> list[dict[str, Any]]:
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return [e for e in events if e["event"] == "cleanup.settings_ignored"]

    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 10))
    monkeypatch.setenv("DCS_CLEANUP_GROUP", "cleaners")
    assert run(emulator, tmp_path, ids, "--stream", "other", "--claim-idle", "5") == 0
    [event] = warned()
    assert event["level"] == "warning"
    assert event["settings"] == ["--stream", "--group", "--claim-idle"]
    assert event["detail"] == "they apply to --queue runs only; this run reads no queue"
    assert emulator.state.remaining() == 0

    monkeypatch.delenv("DCS_CLEANUP_GROUP")
    assert run(emulator, tmp_path, write_ids(tmp_path / "more.txt", seed(emulator, 5))) == 0
    assert warned() == []
    assert emulator.state.remaining() == 0

    # --journal-retention applies to a batch run's --journal too, not to a temporary one.
    journal = str(tmp_path / "journal.sqlite")
    ids = write_ids(tmp_path / "last.txt", seed(emulator, 5))
    assert run(emulator, tmp_path, ids, "--journal-retention", "60") == 0
    [event] = warned()
    assert event["settings"] == ["--journal-retention"]
    assert event["detail"] == (
        "it applies to a --journal, or to a long-running --queue consumer's; "
        "this run's journal is temporary"
    )
    assert run(emulator, tmp_path, ids, "--journal-retention", "60", "--journal", journal) == 0
    assert warned() == []


def test_wrong_secret_key_stops_at_once(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refused signature (401): exit 3, and one request sent. The first wave went out
    together, up to --burst or --concurrency (here 32) refused signatures, where Huawei locks
    an AK/SK after five; now the run's first request goes alone and the rest wait for its
    answer. With the right key, the same command deletes them all."""
    monkeypatch.setenv("CLOUD_SDK_SK", "not-the-right-secret")
    ids = seed(emulator, 500)
    path = write_ids(tmp_path / "ids.txt", ids)
    wide = ("--concurrency", "32", "--rate", "1000", "--burst", "100")
    code = run(emulator, tmp_path, path, *wide)
    assert code == 3
    assert emulator.state.requests == 1
    assert emulator.state.remaining() == 500
    rep = report(tmp_path)
    assert rep["stop_reason"] == "credentials_refused"
    assert rep["outcomes"]["not_attempted"] == 500
    assert rep["outcomes"]["deleted"] == 0
    # The gateway's words, and what to look at: the keys, or an expired temporary token.
    assert rep["stop_detail"] == (
        "HTTP 401 APIGW.0301: Incorrect IAM authentication information: verify aksk signature"
        " fail; credentials refused: check CLOUD_SDK_AK and CLOUD_SDK_SK, and for temporary"
        " credentials CLOUD_SDK_SECURITY_TOKEN and its expiry"
    )
    # No task reached the API: the throughput is not the 500 not_attempted over 0.03 s.
    assert rep["throughput_per_s"] == 0
    summary = capsys.readouterr().err
    assert " · 0.0 tasks/s · " in summary
    assert "\nnext: set CLOUD_SDK_AK/CLOUD_SDK_SK (and CLOUD_SDK_SECURITY_TOKEN for" in summary
    # Sending again is for after the key is mended: the summary does not offer it.
    assert "again:" not in summary
    monkeypatch.setenv("CLOUD_SDK_SK", DEMO_SK)
    assert run(emulator, tmp_path, path, *wide) == 0
    assert emulator.state.remaining() == 0


def test_a_clock_far_off_stops_at_once_and_says_by_how_much(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gateway's clock an hour ahead of this machine's: it refuses the signature's time
    (401 APIGW.0303). The run stops at once as for any 401 (exit 3), but with its own stop
    reason, ``clock_skew``, not ``credentials_refused``, so nobody rotates a good AK/SK; the
    detail says how far off the clock is, from the answer's Date. ``list`` and the dry run's
    probe say the same. Once the clocks agree the same command deletes every task."""
    emulator.state.clock_offset_s = 3600.0
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 50))
    assert run(emulator, tmp_path, ids, "--concurrency", "4") == 3
    assert emulator.state.requests == 1  # the run's first request goes alone
    first = report(tmp_path)
    assert first["stop_reason"] == "clock_skew"
    assert first["outcomes"]["not_attempted"] == 50
    detail = first["stop_detail"]
    assert detail.startswith("HTTP 401 APIGW.0303: ")
    assert "this machine's clock is 60 minutes behind the gateway's (Date: " in detail
    assert "set it right (NTP) and run again" in detail
    capsys.readouterr()

    listed = tmp_path / "listed.txt"
    listing = ["list", "--endpoint", emulator.url, "--project-id", PROJECT]
    assert main([*listing, "--output", str(listed), "--log-format", "json"]) == 3
    said = capsys.readouterr().err
    assert "60 minutes behind the gateway's" in said
    assert "credentials refused" not in said
    assert run(emulator, tmp_path, ids, "--dry-run") == 3
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [probe] = [e for e in events if e["event"] == "cleanup.clock_skew"]
    assert "60 minutes behind the gateway's" in probe["error_msg"]

    emulator.state.clock_offset_s = 0.0
    assert run(emulator, tmp_path, ids) == 0
    assert emulator.state.remaining() == 0


def stops_run_probe_and_list(
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ids: Path,
    journal: tuple[str, ...],
    reason: str,
) -> dict[str, Any]:
    """Whatever the task, the emulator's answer stops the run at the first (exit 3 with
    ``reason``, every task ``not_attempted``, no more requests than ``--concurrency 4``), the
    dry run's probe (an error event named by the reason, with the run's detail) and ``list``
    (exit 3, saying the same); the run's report."""
    assert run(emulator, tmp_path, ids, *journal) == 3
    assert emulator.state.requests == 1  # the run's first request goes alone
    first = report(tmp_path)
    assert first["stop_reason"] == reason
    assert first["outcomes"]["not_attempted"] == first["tasks"]
    capsys.readouterr()
    assert run(emulator, tmp_path, ids, "--dry-run") == 3
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [probe] = [e for e in events if e["event"] == f"cleanup.{reason}"]
    assert probe["level"] == "error"
    assert probe["detail"] == first["stop_detail"]
    listing = ["list", "--endpoint", emulator.url, "--project-id", PROJECT, "--log-format", "json"]
    assert main([*listing, "--output", str(tmp_path / "listed.txt")]) == 3
    assert first["stop_detail"].partition("; ")[2] in capsys.readouterr().err
    return first


def test_an_endpoint_without_the_api_stops_at_once_instead_of_calling_every_task_absent(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Huawei's gateway answers 404 APIGW.0101 for an API it does not have at that address
    (another service's endpoint, a region without the task center), whatever the task. Every
    task ended ``absent``, a success: exit 0 with nothing deleted. Now the first such answer
    stops the run (exit 3, ``api_not_found``, every task ``not_attempted``, the detail asking
    whether the endpoint is DCS's), as it stops ``list`` and the dry run's probe. A task's own
    404 stays ``absent``. With the API there, the same journal deletes them all."""
    emulator.state.set_faults(Faults(api_published=False))
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 60))
    journal = ("--journal", str(tmp_path / "j.sqlite"), "--concurrency", "4")
    first = stops_run_probe_and_list(emulator, tmp_path, capsys, ids, journal, "api_not_found")
    assert first["outcomes"]["absent"] == 0
    assert first["stop_detail"] == (
        "HTTP 404 APIGW.0101: The API does not exist or has not been published in the "
        "environment; the gateway has no such API at this endpoint: is it DCS's "
        "(https://dcs.REGION.myhuaweicloud.com)?"
    )

    emulator.state.set_faults(Faults())
    # The gateway's answer to a path it has no API for, whatever the faults.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{emulator.url}/v3/{PROJECT}/tasks", timeout=10)
    assert refused.value.code == 404
    assert json.loads(refused.value.read())["error_code"] == "APIGW.0101"
    gone = write_ids(tmp_path / "gone.txt", unknown_ids(5))
    assert run(emulator, tmp_path, gone) == 0
    assert report(tmp_path)["outcomes"]["absent"] == 5
    assert run(emulator, tmp_path, ids, *journal) == 0
    assert report(tmp_path)["outcomes"]["deleted"] == 60
    assert emulator.state.remaining() == 0


@pytest.mark.parametrize(
    ("status", "said"),
    [
        (404, "HTTP 404: unparsed body: 404 Not Found 404 Not Found"),
        (405, "HTTP 405: unparsed body: 405 Method Not Allowed 405 Method Not Allowed"),
        (200, "HTTP 200 HTML_PAGE: unparsed body: 200 OK 200 OK"),
    ],
)
def test_an_endpoint_that_is_another_web_server_stops_at_once(
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
    said: str,
) -> None:
    """``--endpoint`` at another web server (a wrong port, a website, a login portal) that
    answers every DELETE with its own HTML page. Its 404 carries no error code, as DCS's own
    404 does: each task ended ``absent``, a success, so the run ended 0 having deleted nothing,
    and its journal skipped them all on every later run as ``already_done``. Its 405 made each
    ``rejected``, all of them sent; its 200 page (DCS answers a DELETE with nothing) made each
    ``deleted``. Now the first such answer stops the run (exit 3, ``not_dcs_api``, every task
    ``not_attempted``), and the dry run's probe and ``list`` stop the same way. Pointed at DCS
    again, the same journal deletes them all."""
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 60))
    emulator.state.set_faults(Faults(web_server_status=status))
    journal = ("--journal", str(tmp_path / "j.sqlite"), "--concurrency", "4")
    first = stops_run_probe_and_list(emulator, tmp_path, capsys, ids, journal, "not_dcs_api")
    assert first["outcomes"]["deleted"] == first["outcomes"]["absent"] == 0
    assert first["outcomes"]["rejected"] == 0
    assert first["stop_detail"] == (
        f"{said}; the endpoint does not answer as DCS's API does: is it DCS's "
        "(https://dcs.REGION.myhuaweicloud.com)?"
    )

    emulator.state.set_faults(Faults())
    assert run(emulator, tmp_path, ids, *journal) == 0
    assert report(tmp_path)["outcomes"]["deleted"] == 60
    assert emulator.state.remaining() == 0


def test_rejected_tasks_exit_1_and_do_not_stop_the_rest(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """403s are rejected after one attempt (never retried), the others deleted; exit 1."""
    ids = seed(emulator, 400, Faults(reject_share=0.1))
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids)) == 1
    rows = outcomes(tmp_path)
    rejected = [r for r in rows if r["outcome"] == "rejected"]
    assert len(rejected) == emulator.state.by_status[403] > 0
    assert all(r["attempts"] == 1 and r["error_code"] == "DCS.4403" for r in rejected)
    assert len(rejected) + sum(r["outcome"] == "deleted" for r in rows) == 400
    assert report(tmp_path)["outcomes"]["rejected"] == len(rejected)


def test_a_row_of_403s_aborts_instead_of_sending_every_task(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """An account without the permission: every answer 403. After --forbidden-limit (20) in a
    row the run stops (exit 3, stop_reason forbidden) rather than send all 500; the rest are
    not_attempted, and a journal re-run can pick them up. --forbidden-limit 0 sends them all."""
    ids = seed(emulator, 500, Faults(reject_share=1.0))
    path = write_ids(tmp_path / "ids.txt", ids)
    assert run(emulator, tmp_path, path, "--concurrency", "8") == 3
    rep = report(tmp_path)
    assert rep["stop_reason"] == "forbidden"
    assert "answers in a row were HTTP 403 DCS.4403" in rep["stop_detail"]
    assert "dcs:task:delete" in rep["stop_detail"]
    assert 20 <= emulator.state.deletes_received <= 20 + 8
    assert rep["outcomes"]["rejected"] == emulator.state.deletes_received
    assert rep["outcomes"]["not_attempted"] == 500 - emulator.state.deletes_received

    assert run(emulator, tmp_path, path, "--forbidden-limit", "0") == 1
    assert report(tmp_path)["outcomes"]["rejected"] == 500


def test_the_report_and_summary_say_why_tasks_failed_or_were_rejected(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run ending "failed 104" left the operator to read the outcomes file for why. The
    report has failed_reasons and rejected_reasons (the last answer's error code, else its
    HTTP status), most common first, the summary their first five, and a report rendered
    again from the journal the same."""
    faults = Faults(reject_share=0.1, error_rate=0.2, html_502_rate=0.1, reset_rate=0.05, seed=3)
    ids = seed(emulator, 400, faults)
    journal = tmp_path / "journal.sqlite"
    path = write_ids(tmp_path / "ids.txt", ids)
    args = ["--max-attempts", "1", "--journal", str(journal)]
    assert run(emulator, tmp_path, path, *args) == 1
    rows = outcomes(tmp_path)

    def why(outcome: str) -> dict[str, int]:
        reasons = Counter(
            r["error_code"] or f"HTTP {r['status']}" for r in rows if r["outcome"] == outcome
        )
        return dict(reasons.most_common())

    rep = report(tmp_path)
    assert rep["failed_reasons"] == why("failed")
    assert len(rep["failed_reasons"]) >= 3  # a 500, a proxy's 502 page, a reset connection
    assert list(rep["failed_reasons"].values()) == sorted(rep["failed_reasons"].values())[::-1]
    assert rep["rejected_reasons"] == {"DCS.4403": rep["outcomes"]["rejected"]}
    err = capsys.readouterr().err
    top = ", ".join(f"{k} {v}" for k, v in list(rep["failed_reasons"].items())[:5])
    assert f"\nfailed: {top}" in err
    assert f"\nrejected: DCS.4403 {rep['outcomes']['rejected']}\n" in err
    hint = (
        "again: the same run command skips the tasks that ended deleted or absent; "
        f"--retry-failed --journal {journal} sends the {rep['outcomes']['failed']} failed and "
        "not_attempted alone\nexit 1:"
    )
    assert hint in err

    again = tmp_path / "again.json"
    assert main(["report", "--journal", str(journal), "--report", str(again)]) == 0
    said = hint.replace("the same run command", "the run command, given again,")
    assert said in capsys.readouterr().err
    rendered = json.loads(again.read_text())
    assert rendered["failed_reasons"] == rep["failed_reasons"]
    assert rendered["rejected_reasons"] == rep["rejected_reasons"]


def test_exhausted_attempts_end_failed_with_exit_1(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every answer 500 with --max-attempts 2: each task failed after exactly 2 attempts. The
    summary says that, without a journal, a re-run sends them all again."""
    ids = seed(emulator, 20, Faults(error_rate=1.0))
    path = write_ids(tmp_path / "ids.txt", ids)
    assert run(emulator, tmp_path, path, "--max-attempts", "2") == 1
    rows = outcomes(tmp_path)
    assert all(r["outcome"] == "failed" and r["attempts"] == 2 for r in rows)
    assert all(r["status"] == 500 and r["error_code"] == "DCS.5000" for r in rows)
    assert emulator.state.deletes_received == 40
    assert (
        "again: the same run command sends every task again (the deleted ones come back "
        "absent); with --journal PATH it would skip them\nexit 1:"
    ) in capsys.readouterr().err


def test_dry_run_sends_no_delete(emulator: EmulatorServer, tmp_path: Path) -> None:
    """--dry-run checks credentials and endpoint with one signed GET and sends no DELETE."""
    ids = seed(emulator, 50)
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids), "--dry-run") == 0
    assert emulator.state.deletes_received == 0
    assert emulator.state.requests == 1
    rep = report(tmp_path)
    assert rep["requests"] == 1  # the report counts what the server received
    assert rep["throughput_per_s"] == 0  # no task reached the API
    assert Counter(r["outcome"] for r in outcomes(tmp_path)) == {"would_delete": 50}


def test_a_dry_run_its_probe_stops_writes_its_report(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dry run whose signed GET is refused ended exit 3 with the error line only, no report
    and its journal's run never finished, unlike any other run stopped before its first
    DELETE. Now it writes the report (the refusal, the GET counted, no task) and the run's
    end in the journal."""
    monkeypatch.setenv("CLOUD_SDK_SK", "not-the-right-secret-0000000000000000000")
    path = write_ids(tmp_path / "ids.txt", seed(emulator, 5))
    journal = tmp_path / "journal.sqlite"
    assert run(emulator, tmp_path, path, "--dry-run", "--journal", str(journal)) == 3
    rep = report(tmp_path)
    assert (rep["exit_code"], rep["stop_reason"], rep["requests"]) == (3, "credentials_refused", 1)
    assert rep["stop_detail"].startswith("HTTP 401 APIGW.0301")
    with contextlib.closing(sqlite3.connect(journal)) as db:
        assert db.execute("SELECT exit_code FROM runs").fetchall() == [(3,)]


def test_a_dry_run_of_an_unreadable_input_exits_2(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A dry run of a file saved as UTF-16 is an input error, exit 2, as the same run without
    --dry-run is: its probe GET is not a task sent. (When the report began to count the probe,
    the dry run ended exit 3, "aborted".)"""
    path = tmp_path / "ids.txt"
    path.write_bytes("abc1\nabc2\n".encode("utf-16"))
    assert run(emulator, tmp_path, path, "--dry-run") == 2
    rep = report(tmp_path)
    assert (rep["exit_code"], rep["stop_reason"], rep["requests"]) == (2, "input_error", 1)
    assert emulator.state.deletes_received == 0
    assert run(emulator, tmp_path, path) == 2
    assert emulator.state.requests == 1


def test_rerun_with_journal_sends_nothing_for_finished_tasks(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A second run with the same journal skips what the first deleted: zero new requests."""
    ids = seed(emulator, 300)
    path = write_ids(tmp_path / "ids.txt", ids)
    journal = str(tmp_path / "journal.sqlite")
    assert run(emulator, tmp_path, path, "--journal", journal) == 0
    before = emulator.state.requests
    assert run(emulator, tmp_path, path, "--journal", journal) == 0
    assert emulator.state.requests == before
    assert report(tmp_path)["skipped_reasons"] == {"already_done": 300}


def test_journal_retention_forgets_what_runs_long_ago_ended(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A nightly job's journal kept every task it ever deleted, on its volume, for ever. With
    --journal-retention S a run first forgets the outcomes, and the runs, that ended more than
    S seconds ago: their tasks, given again, are sent again (404: absent), while those of the
    last S seconds are still skipped. Without the flag, and in a dry run, nothing is
    forgotten."""
    journal, old, recent = week_old_and_recent(emulator, tmp_path, 20, 10)
    both = write_ids(tmp_path / "both.txt", old + recent)
    assert run(emulator, tmp_path, both, "--journal", str(journal)) == 0
    assert report(tmp_path)["skipped_reasons"] == {"already_done": 30}
    week = ("--journal", str(journal), "--journal-retention", "604800")
    assert run(emulator, tmp_path, both, *week, "--dry-run") == 0
    with contextlib.closing(sqlite3.connect(journal)) as db:
        assert db.execute("SELECT count(*) FROM tasks").fetchone() == (30,)
    capsys.readouterr()

    sent = emulator.state.deletes_received
    assert run(emulator, tmp_path, both, *week) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    pruned = [e for e in events if e["event"] == "cleanup.journal_pruned"]
    assert [(e["rows"], e["older_than_s"]) for e in pruned] == [(20, 604800.0)]
    assert emulator.state.deletes_received == sent + 20
    rep = report(tmp_path)
    assert (rep["outcomes"]["absent"], rep["skipped_reasons"]) == (20, {"already_done": 10})
    assert main(["report", "--journal", str(journal), "--report", str(tmp_path / "all.json")]) == 0
    summed = json.loads((tmp_path / "all.json").read_text(encoding="utf-8"))
    assert summed["runs"] == 4  # the run eight days ago is forgotten with its tasks
    assert {k: n for k, n in summed["outcomes"].items() if n} == {"absent": 20, "deleted": 10}


@pytest.mark.parametrize(
    ("content", "extra", "needle"),
    [
        ("name,x\nabc1,1\n", ["--project-id", PROJECT], "CSV header has no task_id (or id)"),
        ("# tasks\n\nabc1\nabc2\n", [], "line 3: plain-text lines name no project"),
    ],
)
def test_unusable_input_exits_2_and_sends_nothing(
    content: str,
    extra: list[str],
    needle: str,
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A CSV without a task_id (or id) column, or plain text with no --project-id (no line could
    ever be sent): exit 2 naming the input and line, not a traceback, and not exit 0 with every
    line skipped; the report says why."""
    seed(emulator, 3)
    path = tmp_path / ("ids.csv" if content.startswith("name,") else "ids.txt")
    path.write_text(content, encoding="utf-8")
    from worker.cli import main

    code = main(
        ["run", "--input", str(path), "--endpoint", emulator.url, "--report",
         str(tmp_path / "report.json"), "--log-format", "json", "--progress", "off", *extra]
    )  # fmt: skip
    assert code == 2
    assert emulator.state.requests == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    failed = [e for e in events if e["event"] == "cleanup.input_failed"]
    assert len(failed) == 1
    assert failed[0]["level"] == "error"
    assert f"input {path}: " in failed[0]["error"]
    assert needle in failed[0]["error"]
    rep = report(tmp_path)
    assert (rep["exit_code"], rep["stop_reason"], rep["input_fully_read"]) == (
        2,
        "input_error",
        False,
    )


def _list_response(emu: EmulatorServer) -> dict[str, Any]:
    """The emulator's ListCenterTask answer (signed GET), as an operator would save it."""
    signer = Signer(Credentials(DEMO_AK, DEMO_SK))
    host = emu.url.removeprefix("http://")
    path, query = f"/v2/{PROJECT}/tasks", "limit=1000&offset=0"
    headers = signer.sign_json("GET", host, path, query, PROJECT)
    with urllib.request.urlopen(
        urllib.request.Request(f"{emu.url}{path}?{query}", headers=headers)
    ) as resp:
        body: dict[str, Any] = json.load(resp)
    return body


def test_a_saved_list_response_is_refused_and_its_tasks_one_a_line_are_deleted(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator saves ListCenterTask's answer and hands it to the run. As one JSON document
    (pretty-printed or not) every line would be skipped and the run end 0 with nothing sent:
    it is exit 2 naming line 1 and the jq command. The tasks one a line, as that command
    gives them (``id``, no ``task_id``), are all deleted."""
    ids = seed(emulator, 40)
    listed = _list_response(emulator)
    assert sorted(t["id"] for t in listed["tasks"]) == sorted(ids)
    before = emulator.state.requests
    for indent in (2, None):
        doc = tmp_path / "list.json"
        doc.write_text(json.dumps(listed, indent=indent), encoding="utf-8")
        assert run(emulator, tmp_path, doc) == 2
        errors = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        failed = [e["error"] for e in errors if e["event"] == "cleanup.input_failed"]
        assert failed == [
            f"input {doc}: line 1: one JSON document, not JSON Lines (an object with a task_id "
            f"a line); for a ListCenterTask response, its tasks one a line: jq -c '.tasks[]' {doc}"
        ]
    assert emulator.state.requests == before
    assert emulator.state.remaining() == 40
    lines = tmp_path / "tasks.jsonl"
    lines.write_text("".join(json.dumps(t) + "\n" for t in listed["tasks"]), encoding="utf-8")
    assert run(emulator, tmp_path, lines) == 0
    assert emulator.state.remaining() == 0
    assert sorted(emulator.state.deleted) == sorted(ids)
    assert report(tmp_path)["outcomes"]["deleted"] == 40


@pytest.mark.parametrize("kind", ["a text file", "another database", "a tasks table not ours"])
def test_a_file_that_is_not_a_journal_is_refused_and_left_as_it_was(
    kind: str, emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--journal names the wrong file: a copy of the IDs, another application's SQLite
    database, or one with a tasks table of its own. That was exit 3 for the first; the others
    had the journal's tables (and WAL mode) added to them: the run went on inside the other
    database, or failed at its first claim on the foreign tasks table. Now each is exit 2
    naming the file, nothing is sent, and its bytes are unchanged."""
    ids = seed(emulator, 5)
    path = write_ids(tmp_path / "ids.txt", ids)
    journal = tmp_path / "ids-copy.txt"
    journal.write_bytes(path.read_bytes())
    if kind != "a text file":
        journal = tmp_path / "app.sqlite"
        with contextlib.closing(sqlite3.connect(journal)) as db:
            if kind == "another database":
                db.execute("CREATE TABLE users (name TEXT)")
            else:
                db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT)")
            db.commit()
    before = journal.read_bytes()
    assert run(emulator, tmp_path, path, "--journal", str(journal)) == 2
    assert emulator.state.requests == 0
    assert journal.read_bytes() == before
    error = capsys.readouterr().err
    assert f"dcs-cleanup: journal {journal}: " in error
    assert ("cannot open it" if kind == "a text file" else "not a dcs-cleanup journal") in error


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("--report", "ids.txt"), None),  # the input itself
        (("--journal", "ids.txt"), None),
        (("--report", "out.json"), ("--outcomes", "out.json")),
        (("--outcomes", "j.sqlite"), ("--journal", "j.sqlite")),
        (("--report", "j.sqlite-wal"), ("--journal", "j.sqlite")),
        (("--outcomes", "link.jsonl"), ("--report", "ids.txt")),  # a hard link to the input
    ],
)
def test_outputs_that_share_a_file_are_refused_before_anything_is_written(
    first: tuple[str, str],
    second: tuple[str, str] | None,
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A typo that gave two outputs, or an output and the input, one file: ``--report ids.txt``
    replaced the input with the report at the end; ``--report`` and ``--outcomes`` on one path
    lost every outcome line; ``--outcomes`` on the journal appended JSON to the database. Each
    is exit 2 naming both, with nothing sent and the input as it was."""
    ids = seed(emulator, 5)
    path = write_ids(tmp_path / "ids.txt", ids)
    before = path.read_bytes()
    (tmp_path / "link.jsonl").hardlink_to(path)
    args = run_args(emulator, tmp_path, path)
    for flag, name in (first, *([second] if second else [])):
        args += [flag, str(tmp_path / name)]
    assert main(args) == 2
    assert emulator.state.requests == 0
    assert path.read_bytes() == before
    assert (
        f"dcs-cleanup: {first[0]} {tmp_path / first[1]} is the file of " in capsys.readouterr().err
    )


def test_a_report_to_a_pipe_is_written_into_it_not_over_it(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """``--report`` naming a FIFO (as ``/dev/stdout`` names a pipe or terminal): the report is
    written into it. The atomic write renamed a temporary file over the path, replacing the
    FIFO itself (as root, ``--report /dev/null`` replaced the machine's /dev/null)."""
    ids = seed(emulator, 5)
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    got: list[str] = []

    def read() -> None:
        with fifo.open(encoding="utf-8") as pipe:
            got.append(pipe.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    args = run_args(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids))
    assert main([*args, "--report", str(fifo)]) == 0
    reader.join(timeout=10)
    assert got, "nothing was written into the FIFO"
    assert json.loads(got[0])["outcomes"]["deleted"] == 5
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_input_that_breaks_midway_keeps_every_line_read_before(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A gzip input cut short: every ID on a whole line before the cut still runs to its
    outcome (deleted); nothing after it is sent; exit 3 (input_error), with the report, whose
    error names the line the cut fell in."""
    ids = seed(emulator, 1500)
    packed = gzip.compress(("\n".join(ids) + "\n").encode())
    cut = packed[: len(packed) * 2 // 3]
    path = tmp_path / "ids.txt.gz"
    path.write_bytes(cut)
    readable = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut).decode()
    before = readable.split("\n")[:-1]  # whole lines only: the last one is cut
    assert 500 < len(before) < 1500
    assert run(emulator, tmp_path, path, "--journal", str(tmp_path / "j.sqlite")) == 3
    rows = outcomes(tmp_path)
    assert sorted(r["task_id"] for r in rows) == sorted(before)
    assert {r["outcome"] for r in rows} == {"deleted"}
    assert set(emulator.state.deleted) == set(before)
    rep = report(tmp_path)
    assert (rep["stop_reason"], rep["input_fully_read"]) == ("input_error", False)
    assert rep["stop_detail"].startswith(f"input {path}: line {len(before) + 1}: read failed")
    assert rep["outcomes"]["deleted"] == len(before)


@pytest.mark.parametrize(("tasks", "unknown"), [(300, 20), (1, 0)])
def test_demo_deletes_every_seeded_task_and_exits_0(
    tasks: int, unknown: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``dcs-cleanup demo``, the README's first command, through faults (500s, a proxy's
    HTML 502s, a quota's 429s): every seeded task deleted, the unknown IDs absent, the two
    hostile lines and the duplicate skipped, exit 0. The smallest demo (one task) was an
    IndexError traceback."""
    args = ["demo", "--tasks", str(tasks), "--unknown", str(unknown), "--out", str(tmp_path)]
    assert main([*args, "--log-format", "json"]) == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    done = rep["outcomes"]
    assert done["deleted"] == tasks
    assert done["absent"] == unknown
    assert done["skipped"] == 3
    assert f"demo: emulator deleted {tasks} of {tasks}; 0 left." in capsys.readouterr().err


def test_demo_with_an_out_folder_that_cannot_be_made_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out`` naming a file, or a folder that cannot be made, was a traceback."""
    a_file = tmp_path / "a-file"
    a_file.write_text("kept\n", encoding="utf-8")
    assert main(["demo", "--tasks", "1", "--out", str(a_file)]) == 2
    err = capsys.readouterr().err
    assert f"--out {a_file}: cannot write the demo's files there: File exists" in err
    assert "Traceback" not in err
    assert a_file.read_text(encoding="utf-8") == "kept\n"


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_console_that_cannot_write_a_character_does_not_kill_the_run(
    encoding: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Standard output in an encoding without some character (PYTHONIOENCODING=ascii, a
    latin-1 locale): the log line of a skipped ID ``tä`` or ``t字`` raised UnicodeEncodeError
    and the run died, exit 1, the other tasks not sent. The character is escaped now."""
    ids = seed(emulator, 5)
    path = write_ids(tmp_path / "ids.txt", ["t\u00e4", "t\u5b57", *ids])
    args = run_args(emulator, tmp_path, path, "--log-format", "console")
    done = subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env={**os.environ, "PYTHONIOENCODING": encoding},
        capture_output=True,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert b"UnicodeEncodeError" not in done.stdout + done.stderr
    assert b"t\\u5b57" in done.stdout  # the skipped line, escaped
    assert emulator.state.remaining() == 0
    assert report(tmp_path)["outcomes"]["skipped"] == 2


@pytest.mark.parametrize("closed", [">&-", ">&- 2>&-", "<&-", "<&- >&- 2>&-"])
def test_a_run_with_its_standard_streams_closed_still_runs_and_reports(
    closed: str, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Started with standard output (or both outputs) closed, as some daemons and ``>&-``
    start it, the run's first log line was an AttributeError on None: exit 1, nothing sent,
    no report. The lines now go to /dev/null and the run does its work. The outcomes file,
    opened after, does not take descriptor 1: it holds outcome lines only. With standard
    input closed, the run did its work and then uvloop aborted the process as it closed the
    socket that had taken descriptor 0 (exit 134); it ends 0 now."""
    ids = seed(emulator, 200)
    path = write_ids(tmp_path / "ids.txt", ids)
    args = run_args(emulator, tmp_path, path, "--log-format", "console")
    wrapped = ["bash", "-c", f'exec "$@" {closed}', "-", sys.executable, "-m", "worker", *args]
    assert subprocess.run(wrapped, cwd=tmp_path, check=False, timeout=60).returncode == 0
    assert report(tmp_path)["outcomes"]["deleted"] == len(ids)
    assert sorted(row["task_id"] for row in outcomes(tmp_path)) == sorted(ids)
    assert emulator.state.remaining() == 0
