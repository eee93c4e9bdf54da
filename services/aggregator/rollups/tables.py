"""The per-minute rollup tables: their keys, their additive values, and how deltas reach them.

Every rollup row is keyed by deployment, minute (of the request's start time, UTC), variant and
run id ('' for production traffic, a batch run's id otherwise), plus the table's own dimensions.
Every value is a sum, so a window is the sum of its minutes and a delta is applied with
``value = value + delta``. Deltas are applied sorted by key, table by table in a fixed order,
so two aggregators updating the same rows always lock them in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

_BASE_KEYS = (("deployment", "text"), ("minute", "timestamptz"), ("variant", "text"), ("run_id", "text"))


@dataclass(frozen=True)
class RollupTable:
    name: str
    keys: tuple[tuple[str, str], ...]
    values: tuple[tuple[str, str], ...]

    @property
    def key_columns(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.keys)

    @property
    def value_columns(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.values)

    def upsert_sql(self) -> str:
        columns = (*self.keys, *self.values)
        names = ", ".join(name for name, _ in columns)
        params = ", ".join(f"${i}::{pg_type}[]" for i, (_, pg_type) in enumerate(columns, 1))
        updates = ", ".join(f"{v} = {self.name}.{v} + EXCLUDED.{v}" for v in self.value_columns)
        return (
            f"INSERT INTO {self.name} ({names}) SELECT * FROM unnest({params}) "
            f"ON CONFLICT ({', '.join(self.key_columns)}) DO UPDATE SET {updates}"
        )


def _table(name: str, extra_keys: tuple[tuple[str, str], ...], values: tuple[str, ...], floats=()) -> RollupTable:
    return RollupTable(
        name,
        (*_BASE_KEYS, *extra_keys),
        tuple((v, "float8" if v in floats else "bigint") for v in values),
    )


OPERATIONS = _table(
    "rollup_operations",
    (),
    ("requests", "responses", "ok", "errors", "cancelled", "latency_sum_ms", "ttft_count", "ttft_sum_ms"),
    floats=("latency_sum_ms", "ttft_sum_ms"),
)
OPERATION_ERRORS = _table("rollup_operation_errors", (("error_type", "text"),), ("count",))
HISTOGRAMS = _table(
    "rollup_histograms", (("measure", "text"), ("bucket", "smallint")), ("count",)
)
QUALITY = _table(
    "rollup_quality",
    (("metric", "text"),),
    (
        "evaluations",
        "scored",
        "score_sum",
        "score_sum_squares",
        "pass_count",
        "score_1",
        "score_2",
        "score_3",
        "score_4",
        "score_5",
        "not_applicable",
        "errors",
    ),
)
QUALITY_ERRORS = _table("rollup_quality_errors", (("metric", "text"), ("error_type", "text")), ("count",))
JUDGE_TOKENS = _table(
    "rollup_judge_tokens",
    (("metric", "text"), ("judge_model", "text")),
    ("calls", "prompt_tokens", "completion_tokens", "latency_sum_ms"),
    floats=("latency_sum_ms",),
)
TOKENS = _table(
    "rollup_tokens",
    (("model", "text"),),
    ("requests", "calls", "prompt_tokens", "completion_tokens", "total_tokens"),
)
FEEDBACK = _table("rollup_feedback", (), ("feedback", "rated", "rating_sum", "comments"))

# Fixed application order (see the module docstring).
ROLLUP_TABLES: tuple[RollupTable, ...] = (
    OPERATIONS,
    OPERATION_ERRORS,
    HISTOGRAMS,
    QUALITY,
    QUALITY_ERRORS,
    JUDGE_TOKENS,
    TOKENS,
    FEEDBACK,
)
# Histogram measures (rollup_histograms.measure).
LATENCY = "latency_ms"
TTFT = "ttft_ms"

Deltas = dict[RollupTable, dict[tuple, list[float]]]


async def apply_deltas(conn: asyncpg.Connection, deltas: Mapping[RollupTable, Mapping[tuple, list]]) -> int:
    """Add every delta to its row, creating rows as needed; returns the rows touched."""
    touched = 0
    for table in ROLLUP_TABLES:
        rows = deltas.get(table)
        if not rows:
            continue
        keys = sorted(rows)
        columns: list[list] = [[key[i] for key in keys] for i in range(len(table.keys))]
        columns += [[rows[key][i] for key in keys] for i in range(len(table.values))]
        await conn.execute(table.upsert_sql(), *columns)
        touched += len(keys)
    return touched
