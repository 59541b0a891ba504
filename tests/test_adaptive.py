"""Adaptive rate: throttling cuts the shared rate, growth probes back, the ceiling holds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import outcomes, report, run, seed, write_ids
from worker.adaptive import CUBIC_BETA, QUOTA_MARGIN, AdaptiveRate
from worker.emulator import EmulatorServer, Faults
from worker.policy import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def drive(control: AdaptiveRate, clock: Clock, rate: float, seconds: float) -> None:
    """Send at `rate` for `seconds`, every answer a success."""
    steps = int(rate * seconds)
    for _ in range(steps):
        clock.now += 1 / rate
        sent = control.on_sent()
        control.on_answer(throttled=False, sent_at=sent)


def test_throttle_cuts_to_beta_of_the_measured_rate() -> None:
    """The first 429 sets the rate to 0.7 x what was being sent."""
    clock = Clock()
    limiter = RateLimiter(0, 10, clock=clock)
    control = AdaptiveRate(limiter, ceiling=0, clock=clock)
    drive(control, clock, 200, 5)
    assert limiter.rate == 0  # no throttle yet: unlimited
    control.on_answer(throttled=True, sent_at=control.on_sent())
    assert limiter.rate == pytest.approx(200 * CUBIC_BETA, rel=0.05)
    assert control.decreases == 1


def test_throttles_of_requests_sent_before_the_cut_are_ignored() -> None:
    """A burst of 429s for requests already in flight causes one decrease, not many."""
    clock = Clock()
    limiter = RateLimiter(0, 10, clock=clock)
    control = AdaptiveRate(limiter, ceiling=0, clock=clock)
    drive(control, clock, 200, 5)
    in_flight = [control.on_sent() for _ in range(30)]
    clock.now += 0.01
    for sent in in_flight:
        control.on_answer(throttled=True, sent_at=sent)
    assert control.decreases == 1
    clock.now += 0.5
    control.on_answer(throttled=True, sent_at=control.on_sent())
    assert control.decreases == 1  # sent before the cut could show
    clock.now += 1.0
    control.on_answer(throttled=True, sent_at=control.on_sent())
    assert control.decreases == 2


def test_the_first_cut_measures_the_send_rate_from_the_first_request() -> None:
    """A throttle before the first full measurement cuts from the rate being sent, not from
    one diluted by the seconds the run spent setting up before its first request."""
    clock = Clock()
    limiter = RateLimiter(0, 10, clock=clock)
    control = AdaptiveRate(limiter, ceiling=0, clock=clock)
    clock.now += 5.0  # journal, input, the first request alone
    drive(control, clock, 400, 0.1)  # 40 requests in 0.1 s: no full 0.5 s measurement yet
    control.on_answer(throttled=True, sent_at=control.on_sent())
    assert limiter.rate == pytest.approx(400 * CUBIC_BETA, rel=0.1)


def test_rate_probes_back_up_and_respects_the_ceiling() -> None:
    """After a cut the rate grows back past the old maximum, never above --rate."""
    clock = Clock()
    limiter = RateLimiter(300, 10, clock=clock)
    control = AdaptiveRate(limiter, ceiling=300, clock=clock)
    drive(control, clock, 200, 3)
    control.on_answer(throttled=True, sent_at=control.on_sent())
    low = limiter.rate
    drive(control, clock, low, 2)
    mid = limiter.rate
    assert low < mid < 200
    for _ in range(20):
        drive(control, clock, limiter.rate, 1)
    assert limiter.rate == 300


def test_a_stated_quota_sets_the_rate_just_under_it_and_holds_it_there() -> None:
    """A 429 that states the account's quota while the run sends far above it: the rate goes
    straight to just under the quota (not to 0.7 of what got through, probing past it later),
    and stays there. Throttled there still (another client spends the same quota), it cuts as
    before, and grows back no higher than the quota."""
    clock = Clock()
    limiter = RateLimiter(0, 10, clock=clock)
    control = AdaptiveRate(limiter, ceiling=0, clock=clock)
    drive(control, clock, 1000, 2)
    control.on_answer(throttled=True, sent_at=control.on_sent(), quota=200.0)
    held = 200.0 * QUOTA_MARGIN
    assert limiter.rate == pytest.approx(held)
    for _ in range(30):
        drive(control, clock, limiter.rate, 1)
    assert limiter.rate == pytest.approx(held)
    control.on_answer(throttled=True, sent_at=control.on_sent(), quota=200.0)
    assert limiter.rate == pytest.approx(held * CUBIC_BETA, rel=0.05)
    assert control.decreases == 2
    for _ in range(30):
        drive(control, clock, limiter.rate, 1)
    assert limiter.rate == pytest.approx(held)


def test_a_process_holds_its_share_of_a_stated_quota_and_under_its_ceiling() -> None:
    """One of two processes holds half the stated quota; a --rate ceiling lower than that
    stays the ceiling."""
    clock = Clock()
    limiter = RateLimiter(0, 10, clock=clock)
    half = AdaptiveRate(limiter, ceiling=0, clock=clock, share=0.5)
    drive(half, clock, 500, 1)
    half.on_answer(throttled=True, sent_at=half.on_sent(), quota=200.0)
    assert limiter.rate == pytest.approx(100 * QUOTA_MARGIN)
    capped = RateLimiter(60, 10, clock=clock)
    low = AdaptiveRate(capped, ceiling=60, clock=clock)
    drive(low, clock, 60, 1)
    low.on_answer(throttled=True, sent_at=low.on_sent(), quota=200.0)
    assert capped.rate == pytest.approx(60 * CUBIC_BETA, rel=0.05)  # at its ceiling: a cut
    for _ in range(30):
        drive(low, clock, capped.rate, 1)
    assert capped.rate == 60


def test_of_several_limits_stated_the_lowest_holds() -> None:
    """429s that state two limits (the API's 300/s, then the user's 200/s, then the API's
    again): the rate holds under the lower one, which is the one that binds."""
    clock = Clock()
    limiter = RateLimiter(0, 10, clock=clock)
    control = AdaptiveRate(limiter, ceiling=0, clock=clock)
    drive(control, clock, 1000, 2)
    for quota in (300.0, 200.0, 300.0):
        clock.now += 1.5
        control.on_answer(throttled=True, sent_at=control.on_sent(), quota=quota)
    for _ in range(30):
        drive(control, clock, limiter.rate, 1)
    assert limiter.rate == pytest.approx(200 * QUOTA_MARGIN)


def test_retry_after_pauses_everyone() -> None:
    """Limiter.pause holds every slot, even with no rate set."""
    clock = Clock()
    limiter = RateLimiter(0, 1, clock=clock)
    limiter.pause(2.0)
    assert limiter.reserve() == pytest.approx(2.0)
    clock.now += 2.5
    assert limiter.reserve() == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("unstated", [False, True])
def test_unknown_quota_is_found(
    emulator: EmulatorServer, tmp_path: Path, unstated: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """--rate 0 against a 150/s quota: the run slows down to just under it where its 429s state
    it (and the summary says what to give next time), and finds it by cutting and probing
    where they do not; few 429s; all deleted."""
    ids = seed(emulator, 900, Faults(quota_rate=150, quota_burst=15, quota_unstated=unstated))
    path = write_ids(tmp_path / "ids.txt", ids)
    assert (
        run(emulator, tmp_path, path, "--rate", "0", "--concurrency", "32", "--max-attempts", "10")
        == 0
    )
    assert Counter(r["outcome"] for r in outcomes(tmp_path)) == {"deleted": 900}
    rep = report(tmp_path)
    assert rep["rate"]["adaptive"] is True
    assert rep["rate"]["decreases"] >= 1
    said = capsys.readouterr().err
    if unstated:
        assert rep["rate"]["quota_stated"] is None
        assert 40 < rep["rate"]["final"] < 400
        assert "\nquota:" not in said
    else:  # said as Huawei's gateway says it: the run holds just under it
        assert rep["rate"]["quota_stated"] == 150.0
        assert rep["rate"]["final"] <= round(150 * QUOTA_MARGIN, 2)  # never above it
        assert (
            "\nquota: the gateway's 429s state 150 requests/s for this account; "
            "--rate 148.5 --adaptive starts the next run just under it\n"
        ) in said
    assert rep["throttled"] / rep["requests"] < 0.1


def test_a_fixed_rate_run_says_the_quota_its_429s_state(
    emulator: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--rate 300 (fixed) against a 150/s quota: the excess is throttled and retried at the
    fixed rate, and the report and summary say the quota the 429s state, so the next run is
    given a rate under it."""
    ids = seed(emulator, 300, Faults(quota_rate=150, quota_burst=15))
    path = write_ids(tmp_path / "ids.txt", ids)
    assert run(emulator, tmp_path, path, "--rate", "300", "--max-attempts", "10") == 0
    rep = report(tmp_path)
    assert rep["rate"] == {"final": 300.0, "adaptive": False, "quota_stated": 150.0}
    assert rep["throttled"] > 0
    assert (
        "\nquota: the gateway's 429s state 150 requests/s for this account; "
        "--rate 148.5 --adaptive starts the next run just under it\n"
    ) in capsys.readouterr().err
