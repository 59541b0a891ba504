"""Settings: precedence flag > env > .env > config file > default, and exit 2 on bad values."""

from __future__ import annotations

import json
import re
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import PROJECT, run, seed, write_ids
from worker.cli import main
from worker.configuration import load_settings
from worker.emulator import EmulatorServer
from worker.emulator.app import DEMO_AK, DEMO_SK
from worker.flag_help import GROUPS
from worker.parser import build_parser
from worker.settings import SECRET_FIELDS, Settings


def test_precedence_flag_env_dotenv_file_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each source wins over the ones below it, field by field."""
    config = tmp_path / "cleanup.toml"
    config.write_text("concurrency = 5\nrate = 7.0\nburst = 3\nmax_attempts = 9\n")
    (tmp_path / ".env").write_text("DCS_CLEANUP_RATE=8\nDCS_CLEANUP_BURST=4\n")
    monkeypatch.setenv("DCS_CLEANUP_BURST", "6")
    settings = load_settings({"max_attempts": "2"}, config)
    assert settings.max_attempts == 2  # flag
    assert settings.burst == 6  # environment over .env and file
    assert settings.rate == 8.0  # .env over file
    assert settings.concurrency == 5  # file over default
    assert settings.timeout == 30.0  # default


def test_choices_are_taken_in_any_case(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--log-level WARNING`` and ``DCS_CLEANUP_LOG_FORMAT=JSON``, as manifests write them,
    were exit 2 ("invalid choice"); they are the lower-case choices now."""
    monkeypatch.setenv("DCS_CLEANUP_LOG_FORMAT", "JSON")
    ids = write_ids(tmp_path / "ids.txt", [*seed(emulator, 3), "bad/id"])
    assert run(emulator, tmp_path, ids, "--log-level", "WARNING", "--input-format", "Text") == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [event["level"] for event in events] == ["warning"]  # the bad line's, no info lines
    assert "bad/id" in events[0]["detail"]
    assert emulator.state.by_status[200] == 3


def test_a_misspelt_environment_name_is_refused_not_ignored(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """DCS_CLEANUP_MAX_DELETE (for ..._MAX_DELETES) was ignored, and the safety guard it meant
    to set with it: every task was deleted. A DCS_CLEANUP_* name that is not a setting, in the
    environment or the .env file, is now exit 2 with the name it is closest to; no value is
    shown (DCS_CLEANUP_SK holds a secret key), and nothing is sent."""
    ids = seed(emulator, 20)
    monkeypatch.setenv("DCS_CLEANUP_MAX_DELETE", "5")
    monkeypatch.setenv("DCS_CLEANUP_SK", "sk-SECRET-value")
    (tmp_path / ".env").write_text("DCS_CLEANUP_RATEE=5\nDCS_CLEANUP_BURST=4\n")
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids)) == 2
    assert emulator.state.requests == 0
    err = capsys.readouterr().err
    assert (
        "DCS_CLEANUP_MAX_DELETE (in the environment): did you mean DCS_CLEANUP_MAX_DELETES?" in err
    )
    assert "DCS_CLEANUP_SK (in the environment): did you mean CLOUD_SDK_SK?" in err
    assert "DCS_CLEANUP_RATEE (in .env): did you mean DCS_CLEANUP_RATE?" in err
    assert "BURST" not in err
    assert "SECRET" not in err
    monkeypatch.delenv("DCS_CLEANUP_MAX_DELETE")
    monkeypatch.delenv("DCS_CLEANUP_SK")
    (tmp_path / ".env").unlink()
    monkeypatch.setenv("DCS_CLEANUP_MAX_DELETES", "5")
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids)) == 3
    assert len(emulator.state.deleted) == 5


def test_config_and_env_file_are_read_from_the_environment_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--config and --env-file, like every flag, also come from DCS_CLEANUP_CONFIG and
    DCS_CLEANUP_ENV_FILE (they were not read); the flag wins."""
    (tmp_path / "a.toml").write_text("concurrency = 5\n")
    (tmp_path / "b.toml").write_text("concurrency = 6\n")
    (tmp_path / "a.env").write_text("DCS_CLEANUP_BURST=7\n")
    monkeypatch.setenv("DCS_CLEANUP_CONFIG", str(tmp_path / "a.toml"))
    monkeypatch.setenv("DCS_CLEANUP_ENV_FILE", str(tmp_path / "a.env"))
    args = build_parser().parse_args(["run"])
    settings = load_settings({}, args.config, args.env_file)
    assert (settings.concurrency, settings.burst) == (5, 7)
    args = build_parser().parse_args(["run", "--config", str(tmp_path / "b.toml")])
    assert load_settings({}, args.config, args.env_file).concurrency == 6


@pytest.mark.parametrize("by", ["flag", "environment"])
def test_an_env_file_named_but_missing_exits_2(
    by: str,
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--env-file`` (or ``DCS_CLEANUP_ENV_FILE``) naming a file that is not there was
    ignored, exit 0, and whatever it was to set with it (a ``--max-deletes`` guard, the
    endpoint, the credentials) silently not set. It is exit 2 naming it; nothing is sent."""
    ids = seed(emulator, 5)
    missing = tmp_path / "prod.env"
    extra = ["--env-file", str(missing)] if by == "flag" else []
    if by == "environment":
        monkeypatch.setenv("DCS_CLEANUP_ENV_FILE", str(missing))
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids), *extra) == 2
    assert f"env file {missing}: cannot read it: no such file" in capsys.readouterr().err
    assert emulator.state.requests == 0


@pytest.mark.parametrize("named", [True, False])
def test_an_env_file_line_that_does_not_parse_exits_2_without_showing_it(
    named: bool,
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``DCS_CLEANUP_MAX_DELETES 3`` (no =) in an env file was skipped with python-dotenv's
    warning and the run went on without the guard: all 5 tasks deleted. It is exit 2 naming
    the file and the lines, for --env-file and for ./.env alike; the lines, which may hold
    secrets, are not shown; nothing is sent."""
    monkeypatch.chdir(tmp_path)
    ids = seed(emulator, 5)
    env = tmp_path / ("prod.env" if named else ".env")
    env.write_text('# guard\nDCS_CLEANUP_MAX_DELETES 3\nCLOUD_SDK_SK="s3cret-value\n')
    extra = ["--env-file", str(env)] if named else []
    assert run(emulator, tmp_path, write_ids(tmp_path / "ids.txt", ids), *extra) == 2
    said = capsys.readouterr()
    shown = env if named else Path(".env")
    assert f"env file {shown}: line 2, 3: not NAME=VALUE" in said.err
    assert "s3cret" not in said.err + said.out
    assert emulator.state.requests == 0


def test_credentials_from_sdk_variable_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLOUD_SDK_AK / CLOUD_SDK_SK / CLOUD_SDK_SECURITY_TOKEN are read and never shown."""
    monkeypatch.setenv("CLOUD_SDK_SECURITY_TOKEN", "tok-SECRET-123")
    settings = load_settings({})
    assert settings.security_token is not None
    assert settings.security_token.get_secret_value() == "tok-SECRET-123"
    assert "tok-SECRET-123" not in repr(settings)
    assert "tok-SECRET-123" not in str(settings.public_view())
    assert settings.public_view()["credentials"]["security_token"] == "set"


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--concurrency", "0"], {}, "concurrency (--concurrency / DCS_CLEANUP_CONCURRENCY)"),
        ([], {"DCS_CLEANUP_MAX_ATTEMPTS": "many"}, "max_attempts"),
        (["--endpoint", "http://example.com"], {}, "loopback hosts only"),
        (["--region", "Not A Region"], {}, "region"),
        (["--id-pattern", "(["], {}, "id_pattern"),
        (["--deadline", "tomorrow"], {}, "deadline"),
        (["--message", "m" * 2000], {}, "(got 'mmmmmmmmmm" + "m" * 50 + "... (2000 characters)' "),
        (["--deadline", "-5"], {}, "deadline"),
        (["--deadline", "nan"], {}, "deadline"),
        (["--deadline", "10x"], {}, "a duration (90s, 45m, 1h30m)"),
        (["--deadline", "2026-11-27T23:00:00"], {}, "timestamp needs a timezone"),
        (["--rate", "-1"], {}, "rate"),
        # Accepted before: the log and report then held Infinity, which is not JSON.
        (["--rate", "inf"], {}, "rate (--rate / DCS_CLEANUP_RATE): Input should be a finite"),
        ([], {"DCS_CLEANUP_RETRY_BUDGET": "inf"}, "retry_budget (--retry-budget / DCS_CLEA"),
        (["--max-retry-after", "Infinity"], {}, "max_retry_after (--max-retry-after"),
        (["--stream", ""], {}, "stream (--stream / DCS_CLEANUP_STREAM)"),
        # Given empty on purpose (a flag, the config file): '' matched no ID, and every task
        # was skipped, exit 0; a path '' was the current folder.
        (["--id-pattern", ""], {}, "id_pattern (--id-pattern / DCS_CLEANUP_ID_PATTERN): Value e"),
        (["--journal", ""], {}, "journal (--journal / DCS_CLEANUP_JOURNAL): Value error, must n"),
        (["--group", ""], {}, "group (--group / DCS_CLEANUP_GROUP)"),
        (
            ["--queue", "redis://:pw-SECRET@127.0.0.1:6379/zero", "--until-empty"],
            {},
            "the database after host:port must be a number",
        ),
        (["--retry-failed", "--journal", "j.sqlite"], {}, "--retry-failed reads its tasks"),
        (["--journal", "ids.txt/j.sqlite"], {}, "--journal ids.txt/j.sqlite: cannot create its"),
        (["--outcomes", "."], {}, "--outcomes .: is a folder"),
        (["--report", "."], {}, "--report .: is a folder"),
        (["--report", "."], {"DCS_CLEANUP_PROCESSES": "2"}, "--report .: is a folder"),
        (
            ["--retry-failed", "--journal", "j.sqlite", "--processes", "2"],
            {},
            "--retry-failed reads its tasks",
        ),
        (["--shard", "4/4"], {}, "must be INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4"),
        (["--shard-count", "4"], {"JOB_COMPLETION_INDEX": "4"}, "--shard-count needs JOB_COMPL"),
        (["--endpoint", "ftp://127.0.0.1"], {}, "must be an https:// URL (http:// only for loo"),
        (["--endpoint", "https://dcs.example.com/v2"], {}, "with no path, query or fragment"),
    ],
)
def test_bad_value_exits_2_naming_it(
    args: list[str],
    env: dict[str, str],
    needle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad flag or environment value: exit 2, a message naming the setting and the rule."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ids = write_ids(tmp_path / "ids.txt", ["a1"])
    code = main(
        ["run", "--input", str(ids), "--project-id", PROJECT, "--region", "cn-north-4", *args]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "SECRET" not in err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        ([], "nothing to read: give --input PATH (or - for stdin), --queue URL, or --retry-f"),
        (["@ids", "--queue", "redis://127.0.0.1:1/0"], "give either --input or --queue, not both"),
        (["@ids", "--until-empty"], "--until-empty goes with --queue"),
        (["--retry-failed"], "--retry-failed needs --journal"),
        (["@ids", "--backoff-base", "2", "--backoff-cap", "1"], "backoff_cap must be at least b"),
        (
            ["@ids", "--shared-rate-key", "k"],
            "--shared-rate-key needs --redis URL (or --queue URL)",
        ),
    ],
)
def test_a_run_asked_for_what_cannot_be_done_exits_2_and_sends_nothing(
    args: list[str],
    said: str,
    emulator: EmulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No source, two sources, a flag without the one it needs, backoff bounds the wrong way
    round: exit 2, saying what is wrong, before a request is sent or a file made."""
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 3))
    argv = [part for arg in args for part in (["--input", str(ids)] if arg == "@ids" else [arg])]
    assert main(["run", "--endpoint", emulator.url, "--project-id", PROJECT, *argv]) == 2
    assert said in capsys.readouterr().err
    assert emulator.state.requests == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.txt"]


def test_a_run_told_neither_endpoint_nor_region_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where to send is not guessed: without --endpoint or --region, exit 2 saying so."""
    ids = write_ids(tmp_path / "ids.txt", ["a1"])
    assert main(["run", "--input", str(ids), "--project-id", PROJECT]) == 2
    assert "one of --endpoint or --region is required" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("place", "said"),
    [
        ("flag", "(got '0' from --burst)"),
        ("environment", "(got '0' from DCS_CLEANUP_BURST in the environment)"),
        (".env", "(got '0' from DCS_CLEANUP_BURST in .env)"),
        ("config", "(got 0 from config file cleanup.toml)"),
        # Empty is unset: the config file's value is the one taken.
        ("config, empty in the environment", "(got 0 from config file cleanup.toml)"),
    ],
)
def test_a_bad_value_is_named_with_the_place_it_came_from(
    place: str,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A value comes from a flag, the environment, .env or the config file; the error named
    the setting, not which of the four to mend (a variable left in a ConfigMap, say). It names
    the place the value was taken from, the first in order of precedence that sets it."""
    monkeypatch.chdir(tmp_path)
    config = "burst = 0\n" if place.startswith("config") else "rate = 5\n"
    (tmp_path / "cleanup.toml").write_text(config)
    if place == "config, empty in the environment":
        monkeypatch.setenv("DCS_CLEANUP_BURST", "")
        (tmp_path / ".env").write_text("DCS_CLEANUP_BURST=\n")
    if place == "environment":
        monkeypatch.setenv("DCS_CLEANUP_BURST", "0")
    if place == ".env":
        (tmp_path / ".env").write_text("DCS_CLEANUP_BURST=0\n")
    ids = write_ids(tmp_path / "ids.txt", ["a1"])
    args = ["run", "--input", str(ids), "--project-id", PROJECT, "--config", "cleanup.toml"]
    assert main([*args, *(["--burst", "0"] if place == "flag" else [])]) == 2
    err = capsys.readouterr().err
    assert (
        f"burst (--burst / DCS_CLEANUP_BURST): Input should be greater than or equal to 1 {said}"
        in err
    )


def test_an_empty_environment_variable_counts_as_unset(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A manifest's or chart's value left blank (``DCS_CLEANUP_QUEUE=""``), in the environment
    or ``.env``, is as if it were not there. Before, an empty queue, region or deadline was
    exit 2 with nothing wrong given, a journal '' was the current folder, and an empty ID
    pattern matched no task: every task skipped, exit 0, nothing deleted."""
    for name in ("QUEUE", "REGION", "ID_PATTERN", "JOURNAL", "DEADLINE", "CONFIG", "ENV_FILE"):
        monkeypatch.setenv(f"DCS_CLEANUP_{name}", "")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DCS_CLEANUP_REPORT=\nDCS_CLEANUP_MESSAGE=\n")
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 20))
    assert run(emulator, tmp_path, ids) == 0, capsys.readouterr()
    assert emulator.state.remaining() == 0
    # Blank in the environment, the config file's value is the one used.
    config = tmp_path / "cleanup.toml"
    config.write_text(f'endpoint = "{emulator.url}"\nrate = 7.0\n')
    monkeypatch.setenv("DCS_CLEANUP_ENDPOINT", "")
    monkeypatch.setenv("DCS_CLEANUP_RATE", "")
    settings = load_settings({}, config)
    assert (settings.base_url(), settings.rate) == (emulator.url, 7.0)


def test_enqueue_to_an_empty_stream_name_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``enqueue --stream ""`` added every task to the key "" (exit 0), where no consumer
    reads; ``run --stream ""`` read that key. Both are refused now."""
    ids = write_ids(tmp_path / "ids.txt", ["a1"])
    with pytest.raises(SystemExit) as ended:
        main(["enqueue", "--queue", "redis://127.0.0.1:1/0", "--input", str(ids), "--stream", ""])
    assert ended.value.code == 2
    assert "argument --stream: may not be empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        (
            "enqueue",
            "[--config PATH] [--env-file PATH] [--queue URL] --input PATH [--stream NAME] "
            "[--project-id ID] [--message TEXT] "
            "[--id-pattern REGEX] [--from-line N] [--max-backlog N] "
            "[--progress-interval SECONDS]",
        ),
        (
            "redrive",
            "[--config PATH] [--env-file PATH] [--queue URL] [--stream NAME] "
            "[--outcome OUTCOME] [--message TEXT] [--limit N] [--max-backlog N] "
            "[--progress-interval SECONDS] [--dry-run]",
        ),
        ("report", "--journal PATH [--report PATH] [--outcomes PATH]"),
        (
            "demo",
            "[--tasks N] [--unknown N] [--concurrency N] [--rate R] [--out PATH] "
            "[--log-format {auto,json,console}]",
        ),
        (
            "emulator",
            "[--host ADDRESS] [--port PORT] [--project-id ID] [--tasks N] [--ids-out PATH] "
            "[--no-verify] [--error-rate SHARE] [--fail-first N] [--fail-first-share SHARE] "
            "[--html-502-rate SHARE] [--reset-rate SHARE] [--quota-rate R] [--quota-burst N] "
            "[--quota-unstated] [--retry-after SECONDS] [--latency-ms MS] [--seed N]",
        ),
    ],
)
def test_each_commands_help_names_the_kind_of_each_value(
    command: str, usage: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``enqueue --help`` showed ``--queue QUEUE --input INPUT``, ``--from-line FROM_LINE``
    (argparse's default, the flag's own name) where ``run --help`` says URL, PATH, N; so did
    ``demo`` (``--tasks TASKS``) and ``emulator`` (``--ids-out IDS_OUT``)."""
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps at hyphens: dcs-|cleanup:tasks
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"usage: dcs-cleanup {command} [-h] {usage} " in text
    if command == "enqueue":
        assert "the Redis stream to add to (default: dcs-cleanup:tasks)" in text


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--concurency", "4"], "--concurency: did you mean --concurrency?"),
        (["--reprot", "r.json"], "--reprot: did you mean --report?"),
        (["--rate-limit=5"], "--rate-limit: did you mean --rate?"),
        (
            ["--max", "5"],
            "--max: did you mean --max-attempts or --max-deletes or --max-retry-after?",
        ),
        # Whole names only: argparse took --dry for --dry-run, which a flag added later would
        # make ambiguous (an error) or point elsewhere.
        (["--dry"], "--dry: did you mean --dry-run?"),
        # The flags it begins, not the one it is spelt most like (--rate).
        (
            ["--re", "5"],
            "--re: did you mean one of --redis, --refusal-file, --refusal-memory, --region, "
            "--report, --retry-budget, --retry-failed, --retry-refund?",
        ),
        (["--retry"], "--retry: did you mean --retry-budget or --retry-failed or --retry-refund?"),
    ],
)
def test_a_flag_run_does_not_know_is_named_with_the_closest_one(
    given: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ended:
        main(["run", "--input", str(tmp_path / "ids.txt"), *given])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "usage: dcs-cleanup run " in err  # the command's usage, not the program's
    assert f"dcs-cleanup run: error: unrecognized arguments: {' '.join(given)}\n{said}\n" in err


def test_a_flag_like_no_other_is_named_alone(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["emulator", "--zzzzzz"])
    assert capsys.readouterr().err.endswith(
        "dcs-cleanup emulator: error: unrecognized arguments: --zzzzzz\n"
    )


def test_enqueue_with_a_broken_id_pattern_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``enqueue --id-pattern '(['`` ended in re.error's traceback (exit 1); ``run`` with the
    same pattern gives one line naming the flag. enqueue gives that line now, exit 2."""
    ids = write_ids(tmp_path / "ids.txt", ["a1"])
    args = ["--input", str(ids), "--project-id", PROJECT, "--id-pattern", "(["]
    assert main(["enqueue", "--queue", "redis://127.0.0.1:1/0", *args]) == 2
    err = capsys.readouterr().err
    assert "id_pattern (--id-pattern / DCS_CLEANUP_ID_PATTERN): Value error, not a valid " in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["run", "enqueue"])
def test_input_given_twice_exits_2_naming_both(
    command: str, emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--input a --input b`` read b alone, and a summary of b's tasks passed for both files'.
    It is an argument error now, before anything is read or sent."""
    first = write_ids(tmp_path / "a.txt", ["a1"])
    second = write_ids(tmp_path / "b.txt", ["b1"])
    where = (
        ["--endpoint", emulator.url, "--project-id", PROJECT]
        if command == "run"
        else ["--queue", "redis://127.0.0.1:1/0"]
    )
    with pytest.raises(SystemExit) as ended:
        main([command, *where, "--input", str(first), "--input", str(second)])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --input: given twice ({first} and {second})" in err
    assert emulator.state.requests == 0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3300", 3300.0), ("2.5", 2.5), ("90s", 90.0), ("45m", 2700.0), ("1h30m", 5400.0),
     ("1h", 3600.0), ("1.5h", 5400.0), ("2m30s", 150.0), ("2026-11-28T01:00:00Z", 3600.0)],
)  # fmt: skip
def test_deadline_takes_seconds_durations_and_timestamps(value: str, seconds: float) -> None:
    """--deadline as seconds, as the durations people write (45m, 1h30m), or as a moment."""
    now = datetime(2026, 11, 28, tzinfo=UTC).timestamp()
    assert load_settings({"deadline": value}).deadline_in(now) == seconds


def test_bad_config_file_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt key in the TOML file is named with the setting it was likely meant to be, as
    a misspelt variable is: a flag's spelling, a typo, settings put in a table."""
    config = tmp_path / "c.toml"
    config.write_text(
        'concurrenccy = 4\nmax-attempts = 3\n"--rate" = 5\nzzz = 1\n[run]\nburst = 2\n'
    )
    assert main(["run", "--config", str(config), "--input", "x"]) == 2
    err = capsys.readouterr().err
    assert f"config file {config}: unknown setting(s), which would be ignored:" in err
    assert "  concurrenccy: did you mean concurrency?" in err
    assert "  max-attempts: did you mean max_attempts?" in err
    assert "  --rate: did you mean rate?" in err
    assert "  run: a [run] table; settings are keys at the top of the file" in err
    assert re.search(r"^  zzz$", err, re.MULTILINE)


def test_credentials_in_the_config_file_exit_2_unechoed(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README says credentials come from the environment only, but ``sk = "..."`` in the
    TOML file was read and used: a file that is committed, shared or mounted from a
    ConfigMap held the secret key. It is exit 2 naming the keys and the variables to use,
    the values not shown, nothing sent."""
    ids = seed(emulator, 3)
    config = tmp_path / "c.toml"
    config.write_text('concurrency = 4\nak = "AK-in-toml"\nsk = "sk-SECRET-in-toml"\n')
    path = write_ids(tmp_path / "ids.txt", ids)
    assert run(emulator, tmp_path, path, "--config", str(config)) == 2
    err = capsys.readouterr().err
    assert (
        "credentials are read from the environment only: ak (CLOUD_SDK_AK), sk (CLOUD_SDK_SK)"
        in err
    )
    assert "SECRET" not in err
    assert emulator.state.requests == 0


def test_missing_credentials_exit_2_and_send_nothing(
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No CLOUD_SDK_SK: exit 2 before any request."""
    monkeypatch.delenv("CLOUD_SDK_SK")
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 3))
    code = main(["run", "--input", str(ids), "--project-id", PROJECT, "--endpoint", emulator.url])
    assert code == 2
    assert "CLOUD_SDK_SK" in capsys.readouterr().err
    assert emulator.state.requests == 0


@pytest.mark.parametrize("name", ["SK", "sk"])
def test_a_variable_named_sk_is_no_credential(
    name: str,
    emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Credentials come from CLOUD_SDK_*: an ``SK`` (or ``sk``) variable set for something
    else was read as the secret key too, and requests were signed with it. Without
    CLOUD_SDK_SK the run is exit 2, credentials missing, whatever ``SK`` holds."""
    monkeypatch.setenv(name, DEMO_SK)
    monkeypatch.delenv("CLOUD_SDK_SK")
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 3))
    code = main(["run", "--input", str(ids), "--project-id", PROJECT, "--endpoint", emulator.url])
    assert code == 2
    assert "credentials missing: set CLOUD_SDK_AK and CLOUD_SDK_SK" in capsys.readouterr().err
    assert emulator.state.requests == 0


def test_secret_value_not_echoed_in_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even a credential that fails validation is not printed."""
    monkeypatch.setenv("CLOUD_SDK_SK", "s" * 10)
    monkeypatch.setenv("DCS_CLEANUP_TIMEOUT", "-5")
    assert main(["run", "--input", "x", "--region", "cn-north-4"]) == 2
    assert "s" * 10 not in capsys.readouterr().err


def test_run_help_says_what_every_flag_does(capsys: pytest.CaptureFixture[str]) -> None:
    """``run --help`` lists every setting as a flag with a sentence, not just its own name."""
    with pytest.raises(SystemExit) as ended:
        main(["run", "--help"])
    assert ended.value.code == 0
    text = " ".join(capsys.readouterr().out.split()).split(" options: ", 1)[1]
    for name in Settings.model_fields:
        if name in SECRET_FIELDS:
            continue
        flag = "--" + name.replace("_", "-")
        found = re.search(
            rf"{re.escape(flag)}(?: [A-Z_/]+| {{[^}}]*}}|, --no-[a-z-]+) (.+?)(?: \(default: |$)",
            text,
        )
        assert found is not None, flag
        words = found.group(1).split(" --")[0].strip()
        assert words, flag
        assert words != name.replace("_", " "), (flag, words)


def test_run_help_shows_its_flags_in_sections(capsys: pytest.CaptureFixture[str]) -> None:
    """``run --help`` listed some 50 flags in one block (the queue's before --project-id) under
    a usage line of 35. The usage now names the three ways to give tasks, and each setting sits
    in one section (what to delete, where, how fast, ...) with a placeholder for its value."""
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    usage, _, rest = text.partition("\n\n")
    assert "(--input PATH | --queue URL | --retry-failed --journal PATH)" in usage
    assert len(usage.splitlines()) == 2
    sections = dict(re.findall(r"(?m)^(\S[^\n]*):\n((?:  [^\n]*\n?)+)", rest))
    assert list(sections) == ["options", *(title for title, _ in GROUPS)]
    assert re.findall(r"(?m)^  (--[a-z-]+)", sections["options"]) == ["--config", "--env-file"]
    shown = [re.findall(r"(?m)^  (--[a-z-]+)", sections[title]) for title, _ in GROUPS]
    flags = [["--" + n.replace("_", "-") for n in names] for _, names in GROUPS]
    assert shown == flags
    assert sorted(n for _, names in GROUPS for n in names) == sorted(
        n for n in Settings.model_fields if n not in SECRET_FIELDS
    )
    assert "  --input PATH " in sections["what to delete"]
    assert "  --timeout SECONDS " in sections["how fast"]


def test_credentials_ending_in_a_newline_still_sign(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kubernetes Secret made from files gives CLOUD_SDK_AK/SK with the file's newline: the
    value is trimmed, so every request is signed right (the emulator checks) and deleted."""
    monkeypatch.setenv("CLOUD_SDK_AK", DEMO_AK + "\n")
    monkeypatch.setenv("CLOUD_SDK_SK", "  " + DEMO_SK + "\r\n")
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 5))
    assert run(emulator, tmp_path, ids) == 0
    assert emulator.state.remaining() == 0


def test_credential_with_inner_whitespace_exits_2_unechoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two words pasted into CLOUD_SDK_SK: exit 2 naming the variable, not its value."""
    monkeypatch.setenv("CLOUD_SDK_SK", "first-half-of-it second-half-of-it")
    ids = write_ids(tmp_path / "ids.txt", ["a1"])
    assert (
        main(["run", "--input", str(ids), "--project-id", PROJECT, "--region", "cn-north-4"]) == 2
    )
    err = capsys.readouterr().err
    assert "CLOUD_SDK_SK: " in err
    assert "half-of-it" not in err


# PRODUCT.md fixes these flags of ``run`` ("names fixed"): flag, a value, and the setting it sets.
PRODUCT_RUN_FLAGS = [
    ("--input", "ids.txt", "input", "ids.txt"),
    ("--queue", "redis://127.0.0.1:6379/0", "queue", "redis://127.0.0.1:6379/0"),
    ("--until-empty", None, "until_empty", True),
    ("--project-id", PROJECT, "project_id", PROJECT),
    ("--region", "cn-north-4", "region", "cn-north-4"),
    ("--endpoint", "http://127.0.0.1:9", "endpoint", "http://127.0.0.1:9"),
    ("--concurrency", "7", "concurrency", 7),
    ("--rate", "3.5", "rate", 3.5),
    ("--burst", "4", "burst", 4),
    ("--max-attempts", "6", "max_attempts", 6),
    ("--timeout", "12", "timeout", 12.0),
    ("--journal", "j.sqlite", "journal", Path("j.sqlite")),
    ("--report", "r.json", "report", Path("r.json")),
    ("--outcomes", "o.jsonl", "outcomes", Path("o.jsonl")),
    ("--dry-run", None, "dry_run", True),
    ("--message", "cleanup by SRE", "message", "cleanup by SRE"),
    ("--log-level", "warning", "log_level", "warning"),
    ("--log-format", "json", "log_format", "json"),
]


@pytest.mark.parametrize(("flag", "value", "field", "expected"), PRODUCT_RUN_FLAGS)
def test_every_flag_product_md_fixes_is_a_flag_and_an_environment_variable(
    flag: str, value: str | None, field: str, expected: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each ``run`` flag PRODUCT.md names keeps its name, and reads from the environment as
    ``DCS_CLEANUP_<FLAG_NAME>``: renaming a setting renames both, and users' scripts, CronJobs
    and config files name them."""
    args = build_parser().parse_args(["run", flag, *([value] if value is not None else [])])
    flags = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    assert getattr(load_settings(flags), field) == expected
    variable = "DCS_CLEANUP_" + flag.removeprefix("--").replace("-", "_").upper()
    monkeypatch.setenv(variable, value if value is not None else "true")
    assert getattr(load_settings({}), field) == expected


def test_region_names_the_endpoint_and_endpoint_overrides_it() -> None:
    """PRODUCT.md: ``--region NAME`` is ``https://dcs.{region}.myhuaweicloud.com``, and
    ``--endpoint`` overrides the region."""
    assert (
        load_settings({"region": "ap-southeast-3"}).base_url()
        == "https://dcs.ap-southeast-3.myhuaweicloud.com"
    )
    both = load_settings({"region": "ap-southeast-3", "endpoint": "http://127.0.0.1:9"})
    assert both.base_url() == "http://127.0.0.1:9"


def test_a_region_whose_host_does_not_resolve_exits_2_before_anything_is_sent(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt ``--region`` names a host that does not exist. Every lookup failed and was
    retried like a network blip: 200 of them until the circuit breaker opened (exit 3), 20
    tasks ``failed``. The resolver's "no such name" is now exit 2 naming the host, before any
    task is read, for ``run`` and ``list`` alike; a host name that resolves (``localhost``)
    runs as before."""
    host = "dcs.xx-nosuch-9.myhuaweicloud.com"
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror as exc:
        if exc.errno != socket.EAI_NONAME:
            pytest.skip(f"this machine's resolver gives {exc.strerror!r}, not 'no such name'")
    else:
        pytest.skip(f"{host} resolves on this machine")
    ids = write_ids(tmp_path / "ids.txt", seed(emulator, 20))
    region = ["--project-id", PROJECT, "--region", "xx-nosuch-9"]
    out = tmp_path / "outcomes.jsonl"
    assert main(["run", "--input", str(ids), *region, "--outcomes", str(out)]) == 2
    said = capsys.readouterr().err
    assert f"the host {host} does not resolve" in said
    assert "is --region or --endpoint right?" in said
    assert not out.exists() or out.read_text() == ""
    assert main(["list", *region, "--output", str(tmp_path / "listed.txt")]) == 2
    assert f"the host {host} does not resolve" in capsys.readouterr().err
    assert not (tmp_path / "listed.txt").exists()

    by_name = emulator.url.replace("127.0.0.1", "localhost")
    assert run(emulator, tmp_path, ids, "--endpoint", by_name) == 0
    assert emulator.state.remaining() == 0


def test_the_commands_product_md_names_are_there(capsys: pytest.CaptureFixture[str]) -> None:
    """``dcs-cleanup --help`` lists run, demo, emulator and enqueue (PRODUCT.md's commands)."""
    with pytest.raises(SystemExit) as ended:
        main(["--help"])
    assert ended.value.code == 0
    listed = capsys.readouterr().out
    for command in ("run", "demo", "emulator", "enqueue"):
        assert re.search(rf"^\s+{command}\s", listed, re.MULTILINE), command


def test_the_example_config_file_loads_with_every_key_uncommented(tmp_path: Path) -> None:
    """``config/cleanup.example.toml`` is what operators copy: as it is, and with each
    commented ``# key = value`` line taken in, it loads as settings (a renamed setting or a
    value of the wrong kind there fails), and its keys are run's flags."""
    example = Path(__file__).resolve().parents[1] / "config" / "cleanup.example.toml"
    text = example.read_text(encoding="utf-8")
    assert load_settings({}, example).region == "cn-north-4"
    whole = tmp_path / "whole.toml"
    whole.write_text(re.sub(r"(?m)^# ([a-z_]+ = )", r"\1", text), encoding="utf-8")
    keys = re.findall(r"(?m)^([a-z_]+) = ", whole.read_text(encoding="utf-8"))
    assert len(keys) > 30
    assert set(keys) <= set(Settings.model_fields) - SECRET_FIELDS
    settings = load_settings({}, whole)
    assert (settings.queue, settings.refusal_memory) == ("redis://dcs-cleanup-redis:6379/0", 604800)


def test_list_help_says_what_its_shared_flags_mean_for_a_list(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``list --help`` said run's words: --project-id "a CSV/JSONL project_id column overrides
    it" and --max-attempts "attempts per task", though a list reads no CSV and sends pages."""
    with pytest.raises(SystemExit):
        main(["list", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--project-id ID the project whose tasks are listed" in text
    assert "--max-attempts N attempts per page request, the first included (default: 5)" in text
    assert "CSV" not in text
    assert "per task" not in text
