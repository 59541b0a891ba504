"""The retry decision, backoff, Retry-After parsing and error-body parsing: pure functions."""

from __future__ import annotations

import random
import time
from email.utils import formatdate

import pytest

from worker.answers import parse_error_body, parse_retry_after, stated_quota
from worker.errors import RequestTimeoutError, TransportError
from worker.models import ApiResponse, Outcome
from worker.policy import CircuitBreaker, RateLimiter, RetryBudget, decide, full_jitter_backoff


def answer(
    status: int, retry_after: float | None = None, error_code: str | None = "DCS.4133"
) -> ApiResponse:
    """An answer of DCS's API: its errors carry an error code."""
    code = error_code if status >= 300 else None
    return ApiResponse(status, code, None, None, retry_after, 1.0)


def verdict(ans: ApiResponse | TransportError, attempt: int = 1, max_attempts: int = 5):  # type: ignore[no-untyped-def]
    return decide(
        ans, attempt, max_attempts, base=1.0, cap=8.0, max_retry_after=60.0, rng=random.Random(0)
    )


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, Outcome.DELETED), (204, Outcome.DELETED), (404, Outcome.ABSENT), (400, Outcome.REJECTED),
     (403, Outcome.REJECTED), (409, Outcome.REJECTED), (410, Outcome.REJECTED)],
)  # fmt: skip
def test_final_answers(status: int, outcome: Outcome) -> None:
    """2xx deleted, DCS's 404 absent, other 4xx rejected without retry."""
    assert verdict(answer(status)).outcome is outcome


@pytest.mark.parametrize(("status", "code"), [(404, None), (405, None), (405, "X.1"), (501, None)])
def test_answers_no_dcs_endpoint_gives_stop_the_run(status: int, code: str | None) -> None:
    """A 404 without an error code (a web server's page: every task was ``absent``, a
    success), a 405 or a 501 is what another server answers for every task: the run stops,
    the task ``not_attempted`` so that a later run sends it again."""
    decision = verdict(answer(status, error_code=code))
    assert decision.abort == "not_dcs_api"
    assert decision.outcome is Outcome.NOT_ATTEMPTED


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_answers_retry_then_fail(status: int) -> None:
    """5xx and 429 retry until the last attempt, which ends failed."""
    assert verdict(answer(status), attempt=1).outcome is None
    assert verdict(answer(status), attempt=5).outcome is Outcome.FAILED


def test_network_errors_and_timeouts_retry() -> None:
    """No answer at all is retried with backoff."""
    assert verdict(TransportError("ServerDisconnectedError", "x")).outcome is None
    assert verdict(RequestTimeoutError("timeout", "x"), attempt=5).outcome is Outcome.FAILED


def test_401_aborts() -> None:
    """A refused signature stops the whole run."""
    assert verdict(answer(401)).abort == "credentials_refused"


def test_retry_after_is_honoured_and_capped() -> None:
    """Retry-After sets the wait exactly, up to --max-retry-after."""
    assert verdict(answer(503, retry_after=7.0)).delay == 7.0
    assert verdict(answer(429, retry_after=600.0)).delay == 60.0


def test_throttle_without_retry_after_waits_2_to_5_s() -> None:
    """Huawei's FAQ advice for 429s without Retry-After."""
    delays = [verdict(answer(429)).delay for _ in range(20)]
    assert all(2.0 <= d <= 5.0 for d in delays)


def test_full_jitter_backoff_is_capped() -> None:
    """uniform(0, min(cap, base*2^(n-1)))."""
    rng = random.Random(1)
    assert all(0 <= full_jitter_backoff(1, 0.5, 30, rng) <= 0.5 for _ in range(100))
    assert all(0 <= full_jitter_backoff(20, 0.5, 30, rng) <= 30 for _ in range(100))
    assert max(full_jitter_backoff(20, 0.5, 30, rng) for _ in range(200)) > 20


@pytest.mark.parametrize(
    ("msg", "per_second"),
    [
        (
            "The throttling threshold has been reached: policy user over ratelimit,"
            "limit:12000,time:1 minute",
            200.0,
        ),
        ("policy user over ratelimit,limit:50,time:1 second", 50.0),
        ("policy app over ratelimit, limit: 7200, time: 2 hours", 1.0),
        ("policy user over ratelimit,limit:86400,time:1 day", 1.0),
        ("LIMIT:600,TIME:1 MINUTES", 10.0),
        ("The throttling threshold has been reached.", None),
        ("policy user over ratelimit,limit:0,time:1 minute", None),
        ("limit:100,time:0 minute", None),
        ("limit:100,time:1 fortnight", None),
        (None, None),
    ],
)
def test_a_throttling_answer_s_stated_quota_is_read(
    msg: str | None, per_second: float | None
) -> None:
    """Huawei's gateway says the quota it throttles at in a 429's message; it is read as
    requests a second, whatever the unit, and not made up where the message has none."""
    assert stated_quota(msg) == per_second


def test_retry_after_http_date_and_seconds() -> None:
    """Delta-seconds and HTTP-date forms; garbage is ignored."""
    now = time.time()
    assert parse_retry_after("3") == 3.0
    date = formatdate(now + 10, usegmt=True)
    parsed = parse_retry_after(date, now=now)
    assert parsed is not None
    assert 9 <= parsed <= 11
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("-4") == 0.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"error_code": "DCS.4133", "error_msg": "gone", "error_ext_msg": null}',
            ("DCS.4133", "gone"),
        ),
        (
            b'{"error_code": "APIGW.0308", "error_msg": "throttled", "request_id": "r"}',
            ("APIGW.0308", "throttled"),
        ),
        (b'{"errorCode": "X.1", "errorMsg": "camel"}', ("X.1", "camel")),
        (b'{"code": "Y.2", "message": "plain"}', ("Y.2", "plain")),
        (b'{"error": {"code": "Z.3", "message": "nested"}}', ("Z.3", "nested")),
        (b"", (None, None)),
    ],
)
def test_error_body_shapes(body: bytes, expected: tuple[str | None, str | None]) -> None:
    """Every error body shape of API_FACTS.md."""
    assert parse_error_body(body) == expected


@pytest.mark.parametrize(
    "body",
    [b"<html><h1>502 Bad Gateway</h1></html>", b'{"error_code": "DCS', b"\xff\xfe", b"[1,2]"],
)
def test_unparseable_bodies_never_raise(body: bytes) -> None:
    """HTML, truncated JSON, binary: no code, a short snippet, no exception."""
    code, msg = parse_error_body(body)
    assert code is None
    assert msg is None or len(msg) < 250


def test_an_html_page_is_said_as_its_text() -> None:
    """A web server's error page, in the outcome's error_msg and a stop's detail: its words,
    one space between them, not its markup."""
    page = b"<html>\n<head><title>404 Not Found</title></head>\n<body><h1>Not Found</h1></body>"
    assert parse_error_body(page) == (None, "unparsed body: 404 Not Found Not Found")


def test_rate_limiter_spaces_slots() -> None:
    """GCRA: a burst of `burst` at once, then one slot per 1/rate."""
    now = [0.0]
    limiter = RateLimiter(10.0, 3, clock=lambda: now[0])
    waits = [limiter.reserve() for _ in range(6)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.2, 0.3])
    assert RateLimiter(0, 1).reserve() == 0.0


def test_retry_budget_bounds_retries_without_successes() -> None:
    """With no successes only `capacity` retries are paid; successes refund."""
    budget = RetryBudget(10, refund=1.0)
    err = TransportError("x", "y")
    assert sum(budget.try_spend(err) for _ in range(100)) == 10
    budget.on_success()
    assert budget.try_spend(err)
    assert budget.denied == 90


def test_breaker_opens_on_failure_ratio() -> None:
    """Opens once the window is full and the failure share reaches the threshold."""
    breaker = CircuitBreaker(window=10, threshold=0.8)
    for _ in range(3):
        assert not breaker.record(False)
    for _ in range(7):
        assert not breaker.record(True)
    assert not breaker.opened  # 7 of 10
    assert breaker.record(True)  # the oldest success leaves the window: 8 of 10


def test_paced_throttle_backs_off_briefly_never_instantly() -> None:
    """Under an adaptive rate a 429 waits full jitter on a 0.25 s floor, not 2-5 s, not zero."""
    rng = random.Random(3)
    delays = [
        decide(
            answer(429), 3, 10, base=0.01, cap=0.05, max_retry_after=60, rng=rng, paced=True
        ).delay
        for _ in range(200)
    ]
    assert max(delays) <= 1.0  # 0.25 * 2**2
    assert max(delays) > 0.5
    assert sum(delays) / len(delays) > 0.3
