"""The aggregator's query API: figures, requests, traces, monitors, alerts, runs, live SSE.

``setup(app)`` (services/aggregator/api/wiring.py) adds it to the aggregator's application;
docs/aggregator-api.md describes every route. Only the settings section is imported eagerly:
``services/aggregator/settings.py`` may import :class:`ApiSection` from here without pulling
in the routes (which import the settings back).
"""

from __future__ import annotations

from typing import Any

from services.aggregator.api.settings import ApiSection

_LAZY = {
    "setup": "services.aggregator.api.wiring",
    "LISTENER_APPLICATION_NAME": "services.aggregator.api.wiring",
    "API": "services.aggregator.api.state",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["API", "LISTENER_APPLICATION_NAME", "ApiSection", "setup"]
