"""Which variant of each node a run uses, and the concrete node graph that results.

A deployment variant named like a node variant (``variant_1``) selects that variant of every
node that has one, and the default variant of the others; a deployment may instead pin a variant
per node (the nodes it leaves out run their default; ``nodes: {}`` pins every node to its default
under any id). ``default`` (or no variant) means every node's ``default_variant_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.flow.errors import FlowError
from shared.flow.graph import topological_order
from shared.flow.model import Flow, Node

DEFAULT_VARIANT = "default"


@dataclass(frozen=True)
class Plan:
    """The concrete nodes of one variant selection, in an order that respects dependencies."""

    nodes: Mapping[str, Node]
    order: tuple[str, ...]
    dependencies: Mapping[str, frozenset[str]]
    node_variants: Mapping[str, str]


def select_variants(
    flow: Flow, variant: str | None = None, node_variants: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Node -> variant id for every node that has variants; raises FlowError for unknown ids.

    ``node_variants`` given (even empty): those nodes run the named variants and every other
    node its default, whatever the deployment variant's id. Not given: ``variant`` names the
    node variant to run wherever a node has one.
    """
    if node_variants is not None:
        for node, variant_id in node_variants.items():
            group = flow.variants.get(node)
            if group is None:
                raise FlowError.single(flow.name, node, "variant", "the node has no node_variants")
            if variant_id not in group.variants:
                known = ", ".join(group.variants)
                raise FlowError.single(flow.name, node, "variant", f"{variant_id!r} is not one of {known}")
        return {name: node_variants.get(name, group.default_variant_id) for name, group in flow.variants.items()}
    if variant not in (None, DEFAULT_VARIANT) and variant not in flow.variant_ids():
        known = ", ".join(sorted(flow.variant_ids())) or "none"
        raise FlowError.single(flow.name, None, "variant", f"no node has a variant {variant!r} (variant ids: {known})")
    return {name: variant if variant is not None and variant in group.variants else group.default_variant_id
            for name, group in flow.variants.items()}


def build_plan(flow: Flow, chosen: Mapping[str, str]) -> Plan:
    """The per-request nodes: aggregation nodes run over a batch, never per request (the loader
    made sure no per-request node or output reads one)."""
    nodes: dict[str, Node] = {}
    skipped = set(flow.aggregation_nodes)
    for name in flow.node_order:
        if name not in skipped:
            nodes[name] = flow.nodes[name] if name in flow.nodes else flow.variants[name].variants[chosen[name]]
    dependencies = {name: frozenset(node.node_dependencies()) for name, node in nodes.items()}
    order = topological_order([n for n in flow.node_order if n in nodes], {k: set(v) for k, v in dependencies.items()})
    return Plan(nodes=nodes, order=tuple(order), dependencies=dependencies, node_variants=dict(chosen))
