"""Which variant answers a request: drawn by weight, or forced by the client where allowed.

A client forces one with ``x-promptpulse-variant`` or, on ``POST /score``, with
``azureml-model-deployment`` too (the header that names one deployment behind an Azure ML
endpoint names one variant behind a PromptPulse deployment). Either header holds a variant's
id (``variant_1``) or a node variant as prompt flow names it (``${answer.variant_1}``): the
deployment variant whose run is prompt flow's run of that node variant, with every other varied
node on its default. Same rule for both: 403 unless the deployment has ``allow_forced_variant``,
400 naming the value for a variant it does not have.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from aiohttp import web

from services.gateway.registry import DeploymentRuntime
from services.gateway.routes.common import single_header
from services.gateway.routes.errors import ApiError
from services.gateway.runtime import Runtime
from shared.deployments import Variant


def forced_headers(request: web.Request, names: Sequence[str]) -> list[tuple[str, str]]:
    """(header, value) of each variant header sent; 400 for one sent twice (which would count?)."""
    sent: list[tuple[str, str]] = []
    for name in names:
        value = single_header(request, name)
        if value is not None:
            sent.append((name, value.strip()))
    return sent


def choose_variant(request: web.Request, runtime: Runtime, headers: Sequence[str]) -> Variant:
    """The variant forced by ``headers`` (checked as the module says), else one drawn by weight."""
    forced = forced_headers(request, headers)
    if not forced:
        return runtime.pick_variant(random.random())
    if not runtime.deployment.allow_forced_variant:
        raise ApiError(403, "variant_not_selectable",
                       f"deployment {runtime.name!r} does not let clients choose the variant", field=forced[0][0])
    chosen: dict[str, Variant] = {}
    for header, value in forced:
        variant = runtime.variants.get(value) or _by_node_variant(runtime, value)
        if variant is None:
            known = ", ".join(runtime.variants)
            raise ApiError(400, "unknown_variant", f"{value[:100]!r} is not a variant of {runtime.name!r} ({known})",
                           field=header)
        chosen[header] = variant
    if len({variant.id for variant in chosen.values()}) > 1:
        shown = " and ".join(f"{header}: {value[:100]!r}" for header, value in forced)
        raise ApiError(400, "invalid_header", f"{shown} name different variants; send one", field=forced[-1][0])
    return next(iter(chosen.values()))


def node_variant_names(runtime: DeploymentRuntime) -> dict[str, Variant]:
    """``${node.variant_id}`` -> the deployment variant that runs that node variant with every
    other varied node on its default (the first listed, if several do); names none runs are absent."""
    groups = runtime.flow.variants
    defaults = {name: group.default_variant_id for name, group in groups.items()}
    runs = [(v, dict(runtime.executor.plan(v.id, v.nodes).node_variants)) for v in runtime.variants.values()]
    names: dict[str, Variant] = {}
    for node, group in groups.items():
        for node_variant in group.variants:
            wanted = defaults | {node: node_variant}
            variant = next((v for v, run in runs if run == wanted), None)
            if variant is not None:
                names[f"${{{node}.{node_variant}}}"] = variant
    return names


def _by_node_variant(runtime: Runtime, value: str) -> Variant | None:
    if not value.startswith("${") or not isinstance(runtime, DeploymentRuntime):
        return None
    return node_variant_names(runtime).get(value)
