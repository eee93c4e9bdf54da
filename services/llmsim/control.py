"""The control API (``/control/*``): change faults, drift, judge echo and latency while running.

Tests of other services use it to make the judge fail for a while or a variant degrade, without
restarting llmsim. Every call answers with the whole state, as ``GET /control/state`` does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.llmsim.drift import ALL_VARIANTS
from services.llmsim.errors import openai_error
from services.llmsim.faults import Fault, Target
from services.llmsim.keys import SECTION, STATE
from services.llmsim.settings import LatencyModel
from shared.apikeys import bearer_token, secret_matches

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FaultCommand(BaseModel):
    """Either queue ``count`` faults of one kind, or replace the fault rates."""

    model_config = ConfigDict(extra="forbid")

    fault: Fault | None = None
    count: int = Field(1, ge=1, le=1_000_000)
    target: Target = Target.ANY
    rates: dict[Fault, float] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> FaultCommand:
        if (self.fault is None) == (self.rates is None):
            raise ValueError("give either fault (with count and target) or rates")
        if self.rates is not None:
            if any(not 0 <= r <= 1 for r in self.rates.values()):
                raise ValueError("every rate must be between 0 and 1")
            if sum(self.rates.values()) > 1:
                raise ValueError("rates add up to more than 1")
        return self


class DriftCommand(BaseModel):
    """Set one variant's drift level (``*``: every variant); level null returns it to the schedule."""

    model_config = ConfigDict(extra="forbid")

    variant: str = Field(ALL_VARIANTS, min_length=1, max_length=200)
    level: float | None = Field(..., ge=0, le=1)


class JudgeCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    echo: bool


class LatencyCommand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttft_ms: float | None = None
    tokens_per_second: float | None = None
    jitter: float | None = None


class InvalidCommand(Exception):
    pass


async def _command(request: web.Request, model: type[M]) -> M:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidCommand("the request body is not valid JSON") from None
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidCommand(problems) from None


def _state_response(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].snapshot())


async def get_state(request: web.Request) -> web.Response:
    return _state_response(request)


async def post_faults(request: web.Request) -> web.Response:
    command = await _command(request, FaultCommand)
    faults = request.app[STATE].faults
    if command.fault is not None:
        faults.enqueue(command.fault, command.count, command.target)
    else:
        rates = command.rates or {}
        faults.rate_override = {fault: rates.get(fault, 0.0) for fault in Fault}
    return _state_response(request)


async def delete_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return _state_response(request)


async def post_drift(request: web.Request) -> web.Response:
    command = await _command(request, DriftCommand)
    request.app[STATE].drift.set_level(command.variant, command.level)
    return _state_response(request)


async def delete_drift(request: web.Request) -> web.Response:
    request.app[STATE].drift.clear()
    return _state_response(request)


async def post_judge(request: web.Request) -> web.Response:
    command = await _command(request, JudgeCommand)
    request.app[STATE].judge_echo = command.echo
    return _state_response(request)


async def post_latency(request: web.Request) -> web.Response:
    command = await _command(request, LatencyCommand)
    state = request.app[STATE]
    update = command.model_dump(exclude_none=True)
    try:
        state.latency = LatencyModel.model_validate({**state.latency.model_dump(), **update})
    except ValidationError as exc:
        raise InvalidCommand(
            "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        ) from None
    return _state_response(request)


async def post_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return _state_response(request)


@web.middleware
async def control_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer-token check for /control/* when a token is configured; typed 400 for bad commands."""
    if not request.path.startswith("/control/"):
        return await handler(request)
    token = request.app[SECTION].control_token
    if token is not None:
        if not secret_matches(bearer_token(request.headers.get("Authorization")), token):
            return openai_error(
                401,
                "the control API needs 'Authorization: Bearer <control_token>'",
                error_type="authentication_error",
            )
    try:
        return await handler(request)
    except InvalidCommand as exc:
        return openai_error(400, str(exc))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/control/state", get_state)
    app.router.add_post("/control/faults", post_faults)
    app.router.add_delete("/control/faults", delete_faults)
    app.router.add_post("/control/drift", post_drift)
    app.router.add_delete("/control/drift", delete_drift)
    app.router.add_post("/control/judge", post_judge)
    app.router.add_post("/control/latency", post_latency)
    app.router.add_post("/control/reset", post_reset)
