"""A DCS task-center emulator for local trials, the demo and the tests (loopback only)."""

from __future__ import annotations

from worker.emulator.app import EmulatorState, Faults, make_app
from worker.emulator.server import EmulatorServer

__all__ = ["EmulatorServer", "EmulatorState", "Faults", "make_app"]
