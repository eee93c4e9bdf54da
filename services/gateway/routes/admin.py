"""``GET /admin/deployments``: every deployment's load status and, for operators only, its problems.

Callers of a deployment that does not load get 503 ``deployment_unavailable`` and nothing more;
the problems name files, paths and fields, so they are shown here, behind the gateway's admin
key (``PROMPTPULSE_GATEWAY__ADMIN_KEY``, sent as ``Authorization: Bearer <key>``), and in the
log. The key is compared in constant time (``shared.apikeys.secret_matches``); without a key set
the route answers 503, so it is never open by accident.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.appkeys import DEPLOYMENTS, SETTINGS
from services.gateway.auth import AUTHORIZATION
from services.gateway.registry import Registry
from services.gateway.routes.errors import ApiError, json_response
from shared.apikeys import bearer_token, secret_matches


def require_admin(request: web.Request) -> None:
    admin = request.app[SETTINGS].gateway.admin_key
    if admin is None:
        raise ApiError(503, "admin_disabled", "the gateway's admin routes are off (set PROMPTPULSE_GATEWAY__ADMIN_KEY)")
    if not secret_matches(bearer_token(request.headers.get(AUTHORIZATION)), admin):
        raise ApiError(401, "unauthorized", "admin routes need Authorization: Bearer <the gateway's admin key>",
                       headers={"WWW-Authenticate": 'Bearer realm="promptpulse-admin"'})


def deployments_listing(registry: Registry) -> dict[str, Any]:
    """Each deployment, serving or not, with its status and problems (the admin route's body)."""
    rows: list[dict[str, Any]] = []
    for name in sorted(set(registry.serving) | set(registry.failures)):
        runtime = registry.runtime(name)
        failure = registry.failures.get(name)
        row: dict[str, Any] = {"name": name, "status": registry.status(name)}
        if runtime is not None:
            source = runtime.deployment.source
            row["file"] = str(source) if source is not None else None
            row["serving_generation"] = runtime.generation
            row["serving_since"] = runtime.loaded_at.isoformat()
        if failure is not None:
            row["file"] = str(failure.file) if failure.file is not None else row.get("file")
            row["problems"] = list(failure.problems)
            row["failing_since"] = failure.since.isoformat()
        rows.append(row)
    return {
        "generation": registry.generation,
        "loaded_at": registry.loaded_at.isoformat(),
        "deployments": rows,
        "folder_problems": list(registry.folder_problems),
        "problems": registry.problems,  # every problem of every file, together
    }


async def admin_deployments(request: web.Request) -> web.Response:
    require_admin(request)
    deployments = request.app[DEPLOYMENTS]
    body = deployments_listing(deployments.current)
    body["reloads"] = {"ok": deployments.reloads_ok, "failed": deployments.reloads_failed}
    return json_response(body)
