"""The llmsim aiohttp application: an OpenAI-compatible LLM simulator for demos, tests and load tests.

It is a tool, never a production dependency: nothing in PromptPulse falls back to it silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.llmsim import control
from services.llmsim.completions import chat_completions
from services.llmsim.keys import SECTION, STATE
from services.llmsim.responses import responses
from services.llmsim.settings import LlmsimSection, LlmsimSettings
from services.llmsim.state import SimulatorState
from services.llmsim.text_api import completions, embeddings
from shared.logs import quiet_malformed_requests

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
# A fixed creation time keeps /v1/models answers identical across restarts.
_MODELS_CREATED = 1_700_000_000


def _model_entry(model_id: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": _MODELS_CREATED, "owned_by": "llmsim"}


async def list_models(request: web.Request) -> web.Response:
    models = request.app[SECTION].models
    return web.json_response({"object": "list", "data": [_model_entry(m) for m in models]})


async def get_model(request: web.Request) -> web.Response:
    # Any model name is served (and echoed back), so any name "exists".
    return web.json_response(_model_entry(request.match_info["model"]))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": "llmsim", "simulator": True})


async def _simulator_state(app: web.Application) -> AsyncIterator[None]:
    # Built at start-up rather than in create_app so the drift schedule's clock starts when
    # the server does.
    state = SimulatorState.from_section(app[SECTION])
    app[STATE] = state
    yield
    state.stopping.set()


async def _stop_waiting_handlers(app: web.Application) -> None:
    # on_shutdown runs before aiohttp waits for in-flight handlers: release hangs and streams now.
    if STATE in app:
        app[STATE].stopping.set()


def create_app(section: LlmsimSection) -> web.Application:
    quiet_malformed_requests()  # one rate-limited line per garbled request, not a traceback
    # OpenAI takes bodies of many megabytes (images as data URLs); aiohttp's default is 1 MiB.
    app = web.Application(middlewares=[control.control_guard], client_max_size=MAX_BODY_BYTES)
    app[SECTION] = section
    app.cleanup_ctx.append(_simulator_state)
    app.on_shutdown.append(_stop_waiting_handlers)
    for prefix in ("/v1", "/openai/v1", "/openai/deployments/{deployment}"):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
        app.router.add_post(f"{prefix}/completions", completions)
        app.router.add_post(f"{prefix}/embeddings", embeddings)
    # The Responses API has no deployment path: Azure names the deployment in the body's model.
    for path in ("/v1/responses", "/openai/v1/responses", "/openai/responses"):
        app.router.add_post(path, responses)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/openai/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_get("/healthz", healthz)
    control.add_routes(app)
    return app


async def run(settings: LlmsimSettings, *, ready: asyncio.Future[str] | None = None) -> None:
    """Serve until cancelled; ``ready`` receives the base URL once the port is bound."""
    section = settings.llmsim
    runner = web.AppRunner(create_app(section))
    await runner.setup()
    try:
        site = web.TCPSite(runner, section.host, section.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        base_url = f"http://{host}:{port}/v1"
        log.info("llmsim (an LLM simulator, not a real model) serving %s", base_url)
        if ready is not None:
            ready.set_result(base_url)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_forever(settings: LlmsimSettings) -> None:
    """Serve in the foreground until SIGINT or SIGTERM (what ``promptpulse llmsim`` calls)."""
    section = settings.llmsim
    log.info(
        "llmsim (an LLM simulator, not a real model) serving http://%s:%d/v1",
        section.host,
        section.port,
    )
    web.run_app(create_app(section), host=section.host, port=section.port, print=None)
