"""Run settings: command-line flags, ``DCS_CLEANUP_*`` environment, ``.env``, a TOML file.

Precedence (PRODUCT.md): flag > environment > ``.env`` > config file > default. Flags arrive as
init arguments, the highest-priority pydantic-settings source. Credentials come from the names
Huawei's SDK samples use (``CLOUD_SDK_AK``, ``CLOUD_SDK_SK``, ``CLOUD_SDK_SECURITY_TOKEN``) and are
held as ``SecretStr`` so no ``repr``, log line or error message shows them. Reading them, and
the errors of what is read, is ``worker.configuration``.
"""

from __future__ import annotations

import math
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from worker.errors import ConfigError
from worker.signer import Credentials

DEFAULT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ENV_PREFIX = "DCS_CLEANUP_"
SECRET_FIELDS = frozenset({"ak", "sk", "security_token"})
# Settings that hold a URL, which may carry a password (redis://user:password@host:port/db).
URL_FIELDS = ("endpoint", "queue", "redis", "pushgateway")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def any_case(choice: str) -> str:
    """A choice as it is matched: ``INFO`` or ``Json``, as Kubernetes manifests and other
    tools write them, is ``info`` or ``json``. The settings and the flags' own choices (which
    argparse checks first) both take it so."""
    return choice.strip().lower()


def safe_project_id(value: str) -> str:
    """A project ID fit for a request path: the default task-ID pattern, whatever
    ``--id-pattern`` says. ``ValueError`` names the rule."""
    if not re.fullmatch(DEFAULT_ID_PATTERN, value):
        msg = "must match " + DEFAULT_ID_PATTERN
        raise ValueError(msg)
    return value


MAX_CONCURRENCY = 1024  # requests in flight at most, a process or a run
MAX_MESSAGE = 1024  # characters of a DELETE's message: --message's, or an entry's own


class Settings(BaseSettings):
    """Everything ``dcs-cleanup run`` can be told. Field names are the flag names with ``_``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        validate_default=True,
        # "inf" and "nan" parse as floats: refused, so the log and report stay valid JSON.
        allow_inf_nan=False,
        # DCS_CLEANUP_ENDPOINT="" (a manifest's or chart's value left blank) is unset, as if not
        # given: not an endpoint '' that hides --region, nor an ID pattern matching no task.
        env_ignore_empty=True,
    )

    # Where task IDs come from.
    input: str | None = None
    input_format: Literal["auto", "text", "csv", "jsonl"] = "auto"
    queue: str | None = None
    stream: str = Field(default="dcs-cleanup:tasks", min_length=1)
    group: str = Field(default="dcs-cleanup", min_length=1)
    consumer: str | None = Field(default=None, min_length=1)
    until_empty: bool = False
    claim_idle: float = Field(default=30.0, gt=0)
    keep_acked: bool = False
    dead_letter_maxlen: int = Field(default=0, ge=0)
    journal_retention: float | None = Field(default=None, ge=0)
    shard: str | None = None
    shard_count: int | None = Field(default=None, ge=1)
    redis: str | None = None
    shared_rate_key: str | None = None
    refusal_memory: float = Field(default=7 * 86400.0, ge=0, le=30 * 86400)
    refusal_file: Path | None = None
    health_host: str = "0.0.0.0"  # noqa: S104 - Kubernetes probes reach the pod's address
    health_port: int = Field(default=8081, ge=0, le=65535)
    pushgateway: str | None = None
    id_pattern: str = DEFAULT_ID_PATTERN

    # Where they go.
    project_id: str | None = None
    region: str | None = None
    endpoint: str | None = None

    # How fast and how persistently.
    concurrency: int = Field(default=32, ge=1, le=MAX_CONCURRENCY)
    processes: int = Field(default=1, ge=1, le=64)
    rate: float = Field(default=50.0, ge=0, description="requests/second; 0 = unknown")
    burst: int = Field(default=10, ge=1)
    max_attempts: int = Field(default=5, ge=1, le=50)
    timeout: float = Field(default=30.0, gt=0, le=600)
    backoff_base: float = Field(default=0.5, gt=0, le=60)
    backoff_cap: float = Field(default=30.0, gt=0, le=600)
    max_retry_after: float = Field(default=120.0, gt=0)
    adaptive: bool | None = None

    # Stopping, guards and the outage brakes.
    grace: float = Field(default=20.0, ge=0, le=3600)
    deadline: str | None = None
    max_deletes: int | None = Field(default=None, ge=0)
    retry_budget: float = Field(default=200.0, ge=0)
    retry_refund: float = Field(default=1.0, ge=0)
    breaker_window: int = Field(default=200, ge=10)
    breaker_threshold: float = Field(default=0.8, gt=0, le=1)
    forbidden_limit: int = Field(default=20, ge=0)
    retry_failed: bool = False

    # Records and outputs.
    journal: Path | None = None
    report: Path | None = None
    outcomes: Path | None = None
    dry_run: bool = False
    message: str | None = Field(default=None, max_length=MAX_MESSAGE)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    progress: Literal["auto", "bar", "log", "off"] = "auto"
    progress_interval: float = Field(default=10.0, gt=0)

    # Credentials: never shown. Read from CLOUD_SDK_* only (the environment or .env): with the
    # field's name among the aliases, an unrelated AK or SK variable was read as one.
    ak: SecretStr | None = Field(default=None, validation_alias="CLOUD_SDK_AK", repr=False)
    sk: SecretStr | None = Field(default=None, validation_alias="CLOUD_SDK_SK", repr=False)
    security_token: SecretStr | None = Field(
        default=None, validation_alias="CLOUD_SDK_SECURITY_TOKEN", repr=False
    )

    @field_validator("input_format", "log_level", "log_format", "progress", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return any_case(value) if isinstance(value, str) else value

    @field_validator(
        "input", "journal", "report", "outcomes", "refusal_file", "id_pattern", mode="before"
    )
    @classmethod
    def _not_empty(cls, value: object) -> object:
        """Given empty by a flag or the config file: a path '' is the current folder, and a
        pattern '' matches no task ID (every task skipped, exit 0, nothing sent)."""
        if value == "":
            msg = "must not be empty"
            raise ValueError(msg)
        return value

    @field_validator("id_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            msg = f"not a valid regular expression: {exc}"
            raise ValueError(msg) from None
        return value

    @field_validator("deadline")
    @classmethod
    def _deadline_shape(cls, value: str | None) -> str | None:
        if value is None or _duration_seconds(value) is not None:
            return value
        try:
            when = _timestamp(value)
        except ValueError:
            msg = (
                "must be seconds (e.g. 3300), a duration (90s, 45m, 1h30m) or an ISO-8601 "
                "timestamp with a timezone"
            )
            raise ValueError(msg) from None
        if when.tzinfo is None:
            msg = "timestamp needs a timezone (e.g. 2026-11-27T23:00:00Z)"
            raise ValueError(msg) from None
        return value

    def journal_retention_s(self) -> float | None:
        """Seconds a long-running queue consumer's journal keeps final outcomes as it goes
        (default an hour); None: all of them, and always for a batch run, whose journal is what
        a re-run skips by (see ``retention_at_start_s``)."""
        if self.queue is None or self.until_empty:
            return None
        return (3600.0 if self.journal_retention is None else self.journal_retention) or None

    def retention_at_start_s(self) -> float | None:
        """A batch run's ``--journal-retention``: it forgets, once before it reads anything,
        the final outcomes its ``--journal`` holds from more than this many seconds ago (a
        nightly job's journal would otherwise keep every task it ever deleted). None: keeps
        them all, the default; always for a dry run, which changes nothing."""
        if self.journal is None or self.dry_run or self.journal_retention_s() is not None:
            return None
        return self.journal_retention or None

    def deadline_in(self, now: float | None = None) -> float | None:
        """Seconds from ``now`` until ``--deadline`` (None when unset)."""
        if self.deadline is None:
            return None
        seconds = _duration_seconds(self.deadline)
        if seconds is not None:
            return seconds
        return _timestamp(self.deadline).timestamp() - (time.time() if now is None else now)

    def deadline_passed(self, now: float | None = None) -> float | None:
        """Seconds since an ISO-8601 ``--deadline`` passed; None when it is ahead, or unset,
        or a duration (which counts from the start)."""
        if self.deadline is None or _duration_seconds(self.deadline) is not None:
            return None
        left = self.deadline_in(now)
        return -left if left is not None and left <= 0 else None

    @field_validator("ak", "sk", "security_token")
    @classmethod
    def _credential_shape(cls, value: SecretStr | None) -> SecretStr | None:
        """Surrounding whitespace is trimmed: a Kubernetes Secret made from a file keeps the
        file's last newline, which would fail every signature (and Huawei locks an AK after
        repeated failures). Whitespace inside is refused: no credential has any."""
        if value is None:
            return None
        raw = value.get_secret_value().strip()
        if not raw or any(ch.isspace() for ch in raw):
            msg = "must be one word (no spaces or line breaks inside) and not empty"
            raise ValueError(msg)
        return SecretStr(raw)

    @field_validator("shard")
    @classmethod
    def _shard_shape(cls, value: str | None) -> str | None:
        if value is not None:
            match = re.fullmatch(r"(\d+)/(\d+)", value)
            if not match or int(match[2]) < 1 or int(match[1]) >= int(match[2]):
                msg = "must be INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4"
                raise ValueError(msg)
        return value

    @field_validator("queue", "redis")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            msg = "must be a redis://host:port/db (or rediss://) URL"
            raise ValueError(msg)
        if parts.scheme != "unix" and not re.fullmatch(r"/?|/\d+", parts.path):
            # redis-py passes over a database it cannot read as a number and uses 0.
            msg = (
                "the database after host:port must be a number, e.g. redis://host:6379/0 "
                "(a / in the password must be percent-encoded: %2F)"
            )
            raise ValueError(msg)
        return value

    def shard_spec(self, environ: dict[str, str] | None = None) -> tuple[int, int] | None:
        """(index, count) from ``--shard``, else ``JOB_COMPLETION_INDEX`` and ``--shard-count``."""
        if self.shard is not None:
            index, count = self.shard.split("/")
            return int(index), int(count)
        env = os.environ if environ is None else environ
        if self.shard_count is not None and self.shard_count > 1:
            raw = env.get("JOB_COMPLETION_INDEX")
            if raw is None or not raw.isdigit() or int(raw) >= self.shard_count:
                msg = "--shard-count needs JOB_COMPLETION_INDEX (0..count-1) or --shard"
                raise ConfigError(msg)
            return int(raw), self.shard_count
        return None

    @field_validator("project_id")
    @classmethod
    def _project_id_safe(cls, value: str | None) -> str | None:
        return None if value is None else safe_project_id(value)

    @field_validator("region")
    @classmethod
    def _region_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z]{2,}(-[a-z0-9]+)+", value):
            msg = "must look like cn-north-4 or ap-southeast-1"
            raise ValueError(msg)
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint_shape(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            msg = "must be an https:// URL (http:// only for loopback hosts)"
            raise ValueError(msg)
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            msg = "plain http:// is allowed for loopback hosts only; use https://"
            raise ValueError(msg)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            msg = "must be scheme://host[:port] with no path, query or fragment"
            raise ValueError(msg)
        if "@" in parts.netloc:
            msg = "must not carry user:password@ (requests are signed with CLOUD_SDK_AK/SK)"
            raise ValueError(msg)
        return value.rstrip("/")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        del file_secret_settings  # secrets come from the environment (a Kubernetes Secret)
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls),
        )

    def adaptive_on(self) -> bool:
        """Adapt to throttling: by default when the quota is unknown (``--rate 0``)."""
        return self.rate == 0 if self.adaptive is None else self.adaptive

    def refusal_path(self) -> Path | None:
        """The refusal memory's file, where one is used: ``--refusal-file`` for a run with no
        Redis (``--redis``, ``--queue``) and a ``--refusal-memory`` above 0."""
        if not self.refusal_memory or self.redis or self.queue:
            return None
        return self.refusal_file

    def base_url(self) -> str:
        """The API endpoint: ``--endpoint`` if set, else ``https://dcs.{region}.myhuaweicloud.com``."""
        if self.endpoint:
            return self.endpoint
        if self.region:
            return f"https://dcs.{self.region}.myhuaweicloud.com"
        msg = "one of --endpoint or --region is required"
        raise ConfigError(msg)

    def credentials(self) -> Credentials:
        """The AK/SK (and token) to sign with; ``ConfigError`` when the AK or SK is missing."""
        if self.ak is None or self.sk is None:
            msg = (
                "credentials missing: set CLOUD_SDK_AK and CLOUD_SDK_SK "
                "(and CLOUD_SDK_SECURITY_TOKEN for temporary credentials)"
            )
            raise ConfigError(msg)
        token = self.security_token.get_secret_value() if self.security_token else None
        return Credentials(self.ak.get_secret_value(), self.sk.get_secret_value(), token)

    def public_view(self) -> dict[str, Any]:
        """The settings for the report and logs: every field but the credentials, and URLs
        without their passwords."""
        data = self.model_dump(mode="json", exclude=set(SECRET_FIELDS))
        for name in URL_FIELDS:
            if data[name] is not None:
                data[name] = redact_url(data[name])
        data["credentials"] = {
            "ak": "set" if self.ak else "unset",
            "sk": "set" if self.sk else "unset",
            "security_token": "set" if self.security_token else "unset",
        }
        return data


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def _duration_seconds(text: str) -> float | None:
    """``3300``, ``90s``, ``45m`` or ``1h30m`` in seconds; None if ``text`` is none of these (or
    negative, or not finite)."""
    try:
        seconds = float(text)
    except ValueError:
        match = _DURATION.fullmatch(text.strip())
        if match is None or not any(match.groups()):
            return None
        hours, minutes, secs = (float(part or 0) for part in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _timestamp(text: str) -> datetime:
    """An ISO-8601 ``--deadline`` (``Z`` for UTC too); ``ValueError`` if it is not one."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def redact_url(url: str) -> str:
    """``url`` with the password of a ``user:password@`` part shown as ``***``, for logs, the
    report and error messages. Everything between ``://`` and the last ``@`` counts as that
    part, so a password with a raw ``@`` or ``/`` in it is hidden whole."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if not (sep and at and colon):
        return url
    return f"{scheme}://{user}:***@{host}"


def is_loopback(host: str) -> bool:
    return host in _LOOPBACK_HOSTS or host.startswith("127.")


# Read from the environment besides one variable a setting: the files of --config and
# --env-file (flags that are not settings).
CONFIG_VARIABLE = ENV_PREFIX + "CONFIG"
ENV_FILE_VARIABLE = ENV_PREFIX + "ENV_FILE"
FILE_VARIABLES = frozenset({CONFIG_VARIABLE, ENV_FILE_VARIABLE})
