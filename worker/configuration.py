"""Where settings come from, and what is wrong with them, in words: ``load_settings`` reads
flags, the environment, a ``.env`` file and a TOML config file (pydantic-settings does the
reading and the precedence); what it adds is refusing what would be ignored without a word (an
unknown ``DCS_CLEANUP_*`` name, a line python-dotenv cannot parse, an unknown key or a secret in
the config file) and an error naming each bad field by its flag and its variable, and which of
the four places its value came from, never showing a secret.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from worker.errors import ConfigError
from worker.settings import ENV_PREFIX, FILE_VARIABLES, SECRET_FIELDS, Settings, redact_url


def load_settings(
    flags: dict[str, Any],
    config_file: Path | None = None,
    env_file: Path | None = None,
) -> Settings:
    """Build settings from explicit flags plus the environment, ``.env`` and a TOML file.

    Raises ``ConfigError`` naming each bad field, its flag and environment names and the rule;
    the value is echoed only for fields that are not secret.
    """
    if env_file is not None and not env_file.is_file():
        # Named on purpose, so a typo must not drop what it holds (credentials, a guard).
        why = "is a folder" if env_file.is_dir() else "no such file"
        raise ConfigError(f"env file {env_file}: cannot read it: {why}")
    check_environment(env_file)
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        _check_config_file(config_file)

        class _FromFile(Settings):
            model_config = SettingsConfigDict(toml_file=config_file)

        settings_cls = _FromFile
    try:
        if env_file is not None:
            return settings_cls(_env_file=env_file, **flags)  # type: ignore[call-arg]
        return settings_cls(**flags)
    except ValidationError as exc:
        origin = functools.partial(_origin, flags=flags, env_file=env_file, config=config_file)
        raise ConfigError(describe_validation_error(exc, origin)) from None


def _origin(
    field: str, *, flags: dict[str, Any], env_file: Path | None, config: Path | None
) -> str:
    """Where a setting's value came from: the first of flag > environment > ``.env`` > config
    file that sets it. With four places, a bad value's place is what an operator must find (a
    variable left in a ConfigMap, a key in a shared file)."""
    if field in flags:
        return "--" + field.replace("_", "-")
    name = ENV_PREFIX + field.upper()
    # An empty value is no value (env_ignore_empty), in the environment and in .env alike.
    if any(key.upper() == name and value for key, value in os.environ.items()):
        return f"{name} in the environment"
    path = env_file or Path(".env")
    if path.is_file() and any(
        key.upper() == name and value for key, value in _env_file_values(path).items()
    ):
        return f"{name} in {path}"
    return f"config file {config}" if config is not None else "its default"


def check_environment(env_file: Path | None) -> None:
    """Every ``DCS_CLEANUP_*`` name in the environment and the ``.env`` file must be one this
    program reads: a misspelt one (``DCS_CLEANUP_MAX_DELETE``) was ignored, and the guard it
    meant to set with it. Only names are shown, never values."""
    settings = {ENV_PREFIX + name.upper() for name in Settings.model_fields} - {
        ENV_PREFIX + name.upper() for name in SECRET_FIELDS
    }
    found = [(name, "the environment", settings | FILE_VARIABLES) for name in os.environ]
    path = env_file or Path(".env")
    if path.is_file():
        found += [(name, str(path), settings) for name in _env_file_values(path)]
    lines = []
    for name, where, known in found:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known:
            continue
        credential = upper.removeprefix(ENV_PREFIX).lower()  # DCS_CLEANUP_SK: CLOUD_SDK_SK
        guess = (
            _environment_name(credential) if credential in SECRET_FIELDS else _closest(upper, known)
        )
        lines.append(f"  {name} (in {where})" + (f": did you mean {guess}?" if guess else ""))
    if lines:
        raise ConfigError("\n".join(["unknown setting(s), which would be ignored:", *lines]))


def _env_file_values(path: Path) -> dict[str, str | None]:
    """What a dotenv file sets, by name. A line python-dotenv cannot parse (``NAME VALUE``, an
    unclosed quote) is an error naming the file and line: it was skipped with a warning and
    the run went on without what it set (a guard, credentials). Lines are not shown: they
    may hold secrets."""
    from dotenv.parser import parse_stream

    try:
        with path.open(encoding="utf-8") as stream:
            bindings = list(parse_stream(stream))
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"env file {path}: cannot read it: {why}") from None
    bad = [str(b.original.line) for b in bindings if b.error]
    if bad:
        msg = (
            f"env file {path}: line {', '.join(bad)}: not NAME=VALUE (python-dotenv cannot "
            "parse it), so what it sets would be ignored"
        )
        raise ConfigError(msg)
    return {b.key: b.value for b in bindings if b.key is not None}


def _check_config_file(path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"config file {path}: cannot read it: {exc.strerror}"
        raise ConfigError(msg) from None
    except tomllib.TOMLDecodeError as exc:
        msg = f"config file {path}: not valid TOML: {exc}"
        raise ConfigError(msg) from None
    secrets = sorted(key for key in data if key in SECRET_FIELDS)
    if secrets:
        # A config file is shared, committed, mounted from a ConfigMap: no place for a secret.
        names = ", ".join(f"{key} ({_environment_name(key)})" for key in secrets)
        msg = f"config file {path}: credentials are read from the environment only: {names}"
        raise ConfigError(msg)
    known = set(Settings.model_fields)
    unknown = sorted(key for key in data if key not in known)
    if unknown:
        lines = [f"  {key}{_config_hint(key, data[key], known)}" for key in unknown]
        head = f"config file {path}: unknown setting(s), which would be ignored:"
        raise ConfigError("\n".join([head, *lines]))


def _config_hint(key: str, value: object, known: set[str]) -> str:
    """What an unknown config file key was likely meant to be: a setting written as its flag
    (``max-attempts``, ``--rate``) or misspelt, or settings put in a ``[table]``."""
    if isinstance(value, dict):
        return f": a [{key}] table; settings are keys at the top of the file"
    name = key.lstrip("-").replace("-", "_").lower()
    guess = name if name in known else _closest(name, known)
    return f": did you mean {guess}?" if guess else ""


def _closest(name: str, known: set[str]) -> str | None:
    """The known name most like ``name``, if any is close (difflib's ratio of 0.6 or more)."""
    import difflib  # 12 ms of start-up, for an error only

    return next(iter(difflib.get_close_matches(name, sorted(known), n=1)), None)


def _environment_name(field: str) -> str:
    """The variable a credential is read from (its alias): secrets are set
    from the environment only, so that is the name an error should give."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    return alias if isinstance(alias, str) else field


def describe_validation_error(
    exc: ValidationError, origin: Callable[[str], str] | None = None
) -> str:
    """Each bad setting: its flag and variable, the rule, and the value given (unless secret),
    with where it came from (``origin``) when told."""
    lines = ["invalid configuration:"]
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        flag = "--" + field.replace("_", "-")
        env = ENV_PREFIX + field.upper()
        where = f"{field} ({flag} / {env})"
        if field in SECRET_FIELDS or field.startswith("CLOUD_SDK"):
            lines.append(f"  {_environment_name(field)}: {err['msg']}")
        else:
            shown = err.get("input")
            if isinstance(shown, str):
                shown = redact_url(shown)
                if len(shown) > 80:  # a --message of 2,000 characters is not read back whole
                    shown = f"{shown[:60]}... ({len(shown)} characters)"
            source = f" from {origin(field)}" if origin is not None and err["loc"] else ""
            lines.append(f"  {where}: {err['msg']} (got {shown!r}{source})")
    return "\n".join(lines)
