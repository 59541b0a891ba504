"""dcs-task-cleanup: bulk, safe, rate-limited deletion of Huawei Cloud DCS task-center tasks."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
