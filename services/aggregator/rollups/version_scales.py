"""Each evaluator version's own scale and pass rule, recorded when first seen (migration 0015).

A version is the hash of its evaluator's content, scale and pass rule included, so one version
has one scale for ever. The deployment files an aggregator loads describe the current version of
each evaluator; ``record_versions`` stores the scale of each (the first record wins, so replicas
and restarts agree), and the readers take a version's scale from ``read_versions`` before
falling back to the current file (scales.ScaleBook). Without this, an evaluator whose scale
changed from 1-5 to 0-10 would have its 1-5 history read as 0-10: a histogram with the wrong
bins and a pass rate under the wrong rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from services.aggregator.db.pool import DbConnection
from services.aggregator.rollups.scales import MetricScale, loaded_versions

_RECORD_SQL = """
INSERT INTO evaluator_version_scales (deployment, metric, evaluator_version, scale, pass_rule, builtin)
SELECT d, m, v, s::jsonb, p::jsonb, b
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[]) AS u(d, m, v, s, p, b)
ON CONFLICT (deployment, metric, evaluator_version) DO NOTHING
"""

_READ_EVERY_SQL = """
SELECT deployment, metric, evaluator_version, scale::text AS scale, pass_rule::text AS pass_rule, builtin
FROM evaluator_version_scales
"""
# Its own statement, not "$1 IS NULL OR deployment = $1": a prepared statement's generic plan
# could not use the primary key's deployment prefix for that (every metrics query reads this).
_READ_SQL = _READ_EVERY_SQL + "WHERE deployment = $1\n"


async def record_versions(conn: DbConnection, deployments: Mapping[str, Any]) -> int:
    """Record the scale of each loaded version not recorded yet; returns how many were new."""
    rows = loaded_versions(deployments)
    if not rows:
        return 0
    records = [scale.record() for *_, scale in rows]
    status = await conn.execute(
        _RECORD_SQL,
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
        [json.dumps(s) for s, _ in records], [json.dumps(p) for _, p in records], [r[3].builtin for r in rows],
    )
    return int(status.rsplit(" ", 1)[-1])


def _scale(row: Any) -> MetricScale:
    return MetricScale.from_record(json.loads(row["scale"]), json.loads(row["pass_rule"]), row["builtin"])


async def read_versions(conn: DbConnection, deployment: str) -> dict[tuple[str, str], MetricScale]:
    """(metric, version) -> that version's recorded scale and pass rule, for one deployment."""
    return {(row["metric"], row["evaluator_version"]): _scale(row) for row in await conn.fetch(_READ_SQL, deployment)}


async def read_every_version(conn: DbConnection) -> dict[tuple[str, str, str], MetricScale]:
    """(deployment, metric, version) -> its recorded scale, for every deployment."""
    return {(row["deployment"], row["metric"], row["evaluator_version"]): _scale(row)
            for row in await conn.fetch(_READ_EVERY_SQL)}
