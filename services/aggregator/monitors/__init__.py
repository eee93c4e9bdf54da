"""Monitors: violation windows evaluated from the rollups, and alerts on their state changes.

Wire into the aggregator's app with ``app.cleanup_ctx.append(cleanup_ctx)`` after the database
context; the settings section is :class:`MonitorsSection`. See docs/aggregator-api.md. Only the
section is imported eagerly, so ``services/aggregator/settings.py`` may import it from here.
"""

from __future__ import annotations

from typing import Any

from services.aggregator.monitors.settings import MonitorsSection

_LAZY = frozenset({"MONITORS", "MonitorService", "cleanup_ctx", "monitors_section"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from services.aggregator.monitors import service

        return getattr(service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MONITORS", "MonitorService", "MonitorsSection", "cleanup_ctx", "monitors_section"]
