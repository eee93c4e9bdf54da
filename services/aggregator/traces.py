"""A stored trace read back as a tree of spans.

Spans arrive on their own schedule (each service exports its own), so a trace can be
incomplete: a span whose parent is not stored (yet) is shown as a root with ``orphan: true``
rather than dropped. Children are ordered by start time, then span id, so the tree reads the
same on every call.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import asyncpg

from services.aggregator.db.pool import DbConnection

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_SPANS = 10_000  # a runaway trace must not take the API's memory with it

_SQL = """
SELECT trace_id, span_id, parent_span_id, name, kind, start_time, end_time, duration_ms, status_code,
       status_message, service_name, scope_name, attributes::text AS attributes, events::text AS events,
       resource::text AS resource, request_id, deployment
FROM spans WHERE trace_id = $1
ORDER BY start_time, span_id
LIMIT $2
"""


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _span(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    return {
        "span_id": row["span_id"],
        "parent_span_id": row["parent_span_id"],
        "name": row["name"],
        "kind": row["kind"],
        "service": row["service_name"],
        "scope": row["scope_name"],
        "start_time": _iso(row["start_time"]),
        "end_time": _iso(row["end_time"]),
        "duration_ms": row["duration_ms"],
        "status": {"code": row["status_code"], "message": row["status_message"]},
        "attributes": json.loads(row["attributes"]),
        "events": json.loads(row["events"]),
        "resource": json.loads(row["resource"]),
        "request_id": row["request_id"],
        "deployment": row["deployment"],
        "children": [],
    }


def _in_cycle(span_id: str, parents: dict[str, str | None]) -> bool:
    # Corrupt or hostile parent links must not hide spans or loop forever.
    seen = set()
    current: str | None = span_id
    while current is not None and current in parents:
        if current in seen:
            return current == span_id  # only spans on the loop are cut from their parent
        seen.add(current)
        current = parents[current]
    return False


def build_tree(rows: list[asyncpg.Record] | list[dict]) -> list[dict[str, Any]]:
    """Roots (with nested ``children``) from rows ordered by start time."""
    spans = {row["span_id"]: _span(row) for row in rows}
    parents = {span_id: span["parent_span_id"] for span_id, span in spans.items()}
    roots = []
    for span_id, span in spans.items():
        parent = span["parent_span_id"]
        if parent in spans and not _in_cycle(span_id, parents):
            spans[parent]["children"].append(span)
        else:
            span["orphan"] = parent is not None
            roots.append(span)
    return roots


async def read_trace(conn: DbConnection, trace_id: str) -> dict[str, Any] | None:
    """The trace as ``{trace_id, spans, roots, ...}``, or None when no span of it is stored."""
    rows = await conn.fetch(_SQL, trace_id, MAX_SPANS + 1)
    if not rows:
        return None
    truncated = len(rows) > MAX_SPANS
    rows = rows[:MAX_SPANS]
    start = min(r["start_time"] for r in rows)
    end = max(r["end_time"] for r in rows)
    return {
        "trace_id": trace_id,
        "span_count": len(rows),
        "truncated": truncated,
        "start_time": _iso(start),
        "end_time": _iso(end),
        "duration_ms": (end - start).total_seconds() * 1000,
        "services": sorted({r["service_name"] for r in rows}),
        "request_ids": sorted({r["request_id"] for r in rows if r["request_id"]}),
        "deployments": sorted({r["deployment"] for r in rows if r["deployment"]}),
        "roots": build_tree(rows),
    }
