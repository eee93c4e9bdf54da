"""The latency model at run time: jittered delays, and the per-request ``x-llmsim-latency`` header."""

from __future__ import annotations

import random

from pydantic import ValidationError

from services.llmsim.settings import LatencyModel

LATENCY_HEADER = "x-llmsim-latency"
_ALIASES = {
    "ttft": "ttft_ms",
    "ttft_ms": "ttft_ms",
    "tps": "tokens_per_second",
    "tokens_per_second": "tokens_per_second",
    "jitter": "jitter",
}


class LatencyHeaderError(ValueError):
    """The x-llmsim-latency header cannot be read."""


def with_header(model: LatencyModel, header: str | None) -> LatencyModel:
    """``model`` with the fields named in ``header`` (``ttft_ms=0,tokens_per_second=500,jitter=0``)."""
    if not header or not header.strip():
        return model
    update: dict[str, str] = {}
    for item in header.split(","):
        name, sep, value = item.partition("=")
        field = _ALIASES.get(name.strip().lower())
        if not sep or field is None:
            raise LatencyHeaderError(
                f"{LATENCY_HEADER}: {item.strip()!r} is not one of ttft_ms=, tokens_per_second=, jitter="
            )
        update[field] = value.strip()
    try:
        return LatencyModel.model_validate({**model.model_dump(), **update})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise LatencyHeaderError(f"{LATENCY_HEADER}: {problems}") from None


def _jittered(seconds: float, model: LatencyModel, rng: random.Random) -> float:
    if model.jitter == 0 or seconds == 0:
        return seconds
    return seconds * rng.uniform(1 - model.jitter, 1 + model.jitter)


def first_token_delay(model: LatencyModel, rng: random.Random) -> float:
    return _jittered(model.ttft_ms / 1000, model, rng)


def token_delay(model: LatencyModel, rng: random.Random) -> float:
    return _jittered(1 / model.tokens_per_second, model, rng)
