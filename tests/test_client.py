"""The client's time bound, against the real emulator: a request that gets no answer ends at
``--timeout`` (plus at most one watchdog tick), and a stop is never mistaken for a timeout."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import anyio
import pytest

from tests.conftest import PROJECT, outcomes, run, seed, write_ids
from worker.client import DcsClient
from worker.emulator import EmulatorServer, Faults
from worker.emulator.app import DEMO_AK, DEMO_SK
from worker.errors import RequestTimeoutError
from worker.signer import Credentials, Signer


def test_an_unanswered_request_ends_at_the_timeout(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    ids = seed(emulator, 4, Faults(latency_ms=2000))
    path = write_ids(tmp_path / "ids.txt", ids)
    assert run(emulator, tmp_path, path, "--timeout", "0.5", "--max-attempts", "1") == 1
    rows = outcomes(tmp_path)
    assert [r["outcome"] for r in rows] == ["failed"] * 4
    assert all(r["error_code"] == "timeout" for r in rows)
    # timeout 0.5 s, watchdog tick 0.05 s; the rest is slack for a loaded CI machine. The run's
    # first request goes alone: the other three wait for it to time out, then time out too.
    first, *rest = sorted(r["elapsed_ms"] for r in rows)
    assert 500 <= first < 1000, first
    assert all(1000 <= ms < 1500 for ms in rest), rest


async def expire_when_sent(dcs: DcsClient, then_stop: anyio.CancelScope | None = None) -> None:
    """Once a request is in flight, put it past its deadline and run the watchdog; then (if
    given) cancel ``then_stop`` in the same step, before the request's task runs again."""
    await anyio.wait_all_tasks_blocked()  # the request is waiting for its answer
    assert len(dcs._inflight) == 1
    for deadline in dcs._inflight.values():
        deadline.at = 0.0
    dcs._check_deadlines()
    if then_stop is not None:
        then_stop.cancel()


@pytest.mark.anyio
async def test_a_timeout_never_swallows_a_stop(emulator: EmulatorServer) -> None:
    """A deadline and a stop in the same step: the request may end as a timeout (it did run
    out of time) but the stop still lands at the task's next wait, so the task ends as the stop
    says; and no stray cancellation is left on the task. A timeout alone is a timeout."""
    seed(emulator, 1, Faults(latency_ms=2000))
    signer = Signer(Credentials(ak=DEMO_AK, sk=DEMO_SK))
    async with DcsClient(emulator.url, signer, concurrency=2, timeout=60) as dcs:
        with anyio.CancelScope() as stop:
            async with anyio.create_task_group() as tg:
                tg.start_soon(expire_when_sent, dcs, stop)
                with contextlib.suppress(RequestTimeoutError):
                    await dcs.delete_task(PROJECT, "t1")
                await anyio.sleep(2)
                pytest.fail("the stop was lost")
        assert stop.cancelled_caught

        with anyio.CancelScope() as quiet:
            async with anyio.create_task_group() as tg:
                tg.start_soon(expire_when_sent, dcs)
                with pytest.raises(RequestTimeoutError):
                    await dcs.delete_task(PROJECT, "t2")
        assert not quiet.cancelled_caught
        assert not dcs._inflight
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0
