"""The flow a deployment serves, whichever of prompt flow's formats its ``flow`` names.

- a folder with ``flow.dag.yaml``: a DAG flow (loader.py); its variants are node variants;
- a ``.prompty`` file: one LLM call (prompty/deployment.py); each deployment variant may name
  another ``.prompty`` file (``variants[].flow``) and give ``init`` overrides of its model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.deployments import Deployment
from shared.deployments.prompty_files import is_prompty
from shared.flow.loader import load_flow
from shared.flow.model import Flow


def load_deployment_flow(deployment: Deployment, connections: Mapping[str, Any] | None = None) -> Flow:
    """The deployment's flow, validated against ``connections``; raises FlowError."""
    if deployment.flow is None:
        raise ValueError(f"deployment {deployment.name!r} has no flow (a proxy deployment)")
    if is_prompty(deployment.flow):
        from shared.flow.prompty import load_prompty_flow

        variants = {v.id: (deployment.flow_of(v) or deployment.flow, deployment.prompty_overrides(v))
                    for v in deployment.variants}
        return load_prompty_flow(variants, connections=connections)
    return load_flow(deployment.flow, connections=connections)
