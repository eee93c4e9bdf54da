"""Graph helpers over node names: cycle finding and a stable topological order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def find_cycle(
    order: Sequence[str], edges: Mapping[str, list[tuple[str, str]]]
) -> tuple[list[str], str] | None:
    """A dependency cycle as (path a -> ... -> a, the field that closes it), or None.

    ``edges[node]`` lists (dependency, field of ``node`` that references it).
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> tuple[list[str], str] | None:
        state[node] = 1
        stack.append(node)
        for dependency, field in edges.get(node, []):
            if state.get(dependency) == 1:
                start = stack.index(dependency)
                return [*stack[start:], dependency], field
            if dependency in edges and state.get(dependency) is None:
                found = visit(dependency)
                if found is not None:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in order:
        if state.get(node) is None:
            found = visit(node)
            if found is not None:
                return found
    return None


def topological_order(order: Sequence[str], dependencies: Mapping[str, set[str]]) -> list[str]:
    """Nodes after their dependencies; ties keep the file's order. Assumes no cycle."""
    position = {name: index for index, name in enumerate(order)}
    remaining = {name: set(dependencies.get(name, ())) & set(order) for name in order}
    result: list[str] = []
    while remaining:
        ready = sorted((n for n, deps in remaining.items() if not deps), key=position.__getitem__)
        if not ready:
            raise ValueError(f"cycle among {sorted(remaining)}")
        for name in ready:
            del remaining[name]
            result.append(name)
        for deps in remaining.values():
            deps.difference_update(ready)
    return result
