"""The values of the command line's own flags (``demo``, ``emulator``, ``enqueue``, ``list``):
each turns a flag's text into its value, or refuses it with ``argparse.ArgumentTypeError``
naming the rule, so argparse says which flag broke it (exit 2). ``run``'s flags are checked by
the settings model instead.
"""

from __future__ import annotations

import argparse
import math

from worker.settings import MAX_CONCURRENCY, safe_project_id


def positive_int(text: str) -> int:
    return _at_least(text, 1)


def concurrency(text: str) -> int:
    """Requests in flight: 1 to ``MAX_CONCURRENCY``, as ``run`` takes them."""
    return _at_least(text, 1, most=MAX_CONCURRENCY)


def page_size(text: str) -> int:
    """ListCenterTask's ``limit``: the API takes 1 to 1000 (API_FACTS.md)."""
    return _at_least(text, 1, most=1000, why=", as the API takes")


def non_empty(text: str) -> str:
    """A name that may not be empty (a Redis key)."""
    if not text:
        raise argparse.ArgumentTypeError("may not be empty")
    return text


def count(text: str) -> int:
    """A number of things: 0 or more."""
    return _at_least(text, 0)


def rate(text: str) -> float:
    """Requests per second (or seconds, milliseconds): a finite number, 0 or more."""
    return _finite(text, 0)


def project_id(text: str) -> str:
    """A project ID as ``run`` takes one (an emulator's project that no run could name would
    answer every request 404)."""
    try:
        return safe_project_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: {text!r}") from None


def share(text: str) -> float:
    """A share of requests or tasks: 0 to 1 (``2`` or ``nan`` would pass for "always" or
    "never" without a word)."""
    return _finite(text, 0, most=1)


def port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    return _at_least(text, 0, most=65535)


MAX_DAYS = 36_500


def days(text: str) -> float:
    """An age in days, 0 to 100 years. A negative one would reach into the future and take in
    every task, the newest too."""
    return _finite(text, 0, most=MAX_DAYS, unit=" days")


def _finite(text: str, least: int, *, most: int | None = None, unit: str = "") -> float:
    """A finite number from ``least`` (to ``most``, in ``unit``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    if most is None and value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more: {text}")
    if most is not None and not least <= value <= most:
        raise argparse.ArgumentTypeError(f"must be from {least} to {most}{unit}: {text}")
    return value


def _at_least(text: str, least: int, *, most: int | None = None, why: str = "") -> int:
    """A whole number from ``least`` (to ``most``; ``why`` follows the rule it breaks)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more: {value}")
    if most is not None and value > most:
        raise argparse.ArgumentTypeError(f"must be {most} or less{why}: {value}")
    return value
