"""What an HTTP answer says, read without trusting it: the error code and message in any body
shape the gateway and DCS use (API_FACTS.md), how long ``Retry-After`` asks to wait, the quota a
throttling answer states, and how far this machine's clock is from the gateway's when a request
date is refused. Pure functions over bytes and headers; the client (``worker.client``) calls
them on every answer it explains, the brakes (``worker.brakes``) ``stated_quota`` on a 429's.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from worker.models import CLOCK_LIMIT_S

_TAGS = re.compile(r"(?:<[^>]*>|\s)+")  # a run of tags and white space: one space
# Huawei's gateway states the quota it throttles at in a 429's message: "The throttling
# threshold has been reached: policy user over ratelimit,limit:12000,time:1 minute".
_STATED_QUOTA = re.compile(
    r"limit:\s*(\d+)\s*,\s*time:\s*(\d*)\s*(second|minute|hour|day)s?\b", re.IGNORECASE
)
_UNIT_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def clock_note(headers: Mapping[str, str]) -> str:
    """How far this machine's clock is from the gateway's, by the answer's ``Date``, and what to
    do: a refused request date is a clock to set, not credentials to change."""
    date = headers.get("Date", "")
    try:
        gateway = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return "the gateway refused the request's date: is this machine's clock right (NTP)?"
    off = time.time() - gateway
    if abs(off) < CLOCK_LIMIT_S - 60:  # not the clocks: the X-Sdk-Date itself, then
        return f"the gateway refused the request's date, though its clock ({date}) is near ours"
    side = "ahead of" if off > 0 else "behind"
    return (
        f"this machine's clock is {round(abs(off) / 60):,} minutes {side} the gateway's "
        f"(Date: {date}): set it right (NTP) and run again"
    )


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """(error_code, error_msg) from any body shape API_FACTS.md lists; never raises.

    JSON with ``error_code``/``error_msg``, ``errorCode``/``errorMsg``, ``code``/``message`` or a
    nested ``error`` object; anything else (HTML, text, empty, truncated) gives a short snippet.
    """
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return None, None
    if text.startswith("{"):
        try:
            obj: Any = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            inner = obj.get("error")
            if isinstance(inner, dict):
                obj = {**obj, **inner}
            code = _first(obj, "error_code", "errorCode", "code")
            msg = _first(obj, "error_msg", "errorMsg", "message")
            if code is not None or msg is not None:
                return code, msg
    snippet = _TAGS.sub(" ", text).strip()[:200]
    return None, f"unparsed body: {snippet}" if snippet else None


def _first(obj: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = obj.get(key)
        if value is not None and value != "":
            return str(value)[:500]
    return None


def stated_quota(msg: str | None) -> float | None:
    """Requests a second that a throttling answer's message says the account may send
    (``limit:12000,time:1 minute``: 200.0), or None where it says none."""
    found = _STATED_QUOTA.search(msg) if msg else None
    if found is None:
        return None
    limit, count = int(found[1]), int(found[2] or 1)
    if limit <= 0 or count <= 0:
        return None
    return limit / (count * _UNIT_S[found[3].lower()])


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)
