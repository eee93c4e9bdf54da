"""The per-minute rollup tables: their keys, their additive values, and how deltas reach them.

Every rollup row is keyed by deployment, minute (of the request's start time, UTC), variant and
run id ('' for production traffic, a batch run's id otherwise), plus the table's own dimensions.
Every value is a sum, so a window is the sum of its minutes and a delta is applied with
``value = value + delta``. Deltas are applied sorted by key (in SQL), table by table in a fixed
order, so two aggregators updating the same rows always lock them in the same order and cannot
deadlock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.aggregator.db.pool import DbConnection
from services.aggregator.ingest import staging

_BASE_KEYS = (("deployment", "text"), ("minute", "timestamptz"), ("variant", "text"), ("run_id", "text"))


# eq=False: hashed and compared by identity. Each table is one module-level constant, and it
# keys a dict once per row, where a generated field-by-field __hash__ costs more than the row.
@dataclass(frozen=True, eq=False)
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

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.key_columns, *self.value_columns)

    @property
    def stage(self) -> str:
        """The session's temporary table a batch's deltas are copied into first."""
        return f"stage_{self.name}"

    def staging_sql(self) -> str:
        return staging.create_sql(self.stage, self.name, self.columns, _TIMES, numbered=False)

    def upsert_sql(self) -> str:
        """Add the staged deltas to their rows, creating rows as needed, in key order."""
        updates = ", ".join(f"{v} = {self.name}.{v} + EXCLUDED.{v}" for v in self.value_columns)
        keys = ", ".join(self.key_columns)
        return (
            f"INSERT INTO {self.name} ({', '.join(self.columns)}) "
            f"SELECT {staging.select_list(self.columns, _TIMES)} FROM {self.stage} ORDER BY {keys} "
            f"ON CONFLICT ({keys}) DO UPDATE SET {updates}"
        )


def _table(name: str, extra_keys: tuple[tuple[str, str], ...], values: tuple[str, ...], floats: tuple[str, ...] = ()) -> RollupTable:
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
# Per evaluator version, on the evaluator's own scale (migration 0011).
EVALUATOR_QUALITY = _table(
    "rollup_evaluator_quality",
    (("metric", "text"), ("evaluator_version", "text")),
    ("evaluations", "scored", "value_sum", "value_sum_squares", "not_applicable", "errors"),
    floats=("value_sum", "value_sum_squares"),
)
EVALUATOR_VALUES = _table(
    "rollup_evaluator_values",
    (("metric", "text"), ("evaluator_version", "text"), ("value_milli", "bigint"), ("label", "text")),
    ("count",),
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

# Fixed application order (see the module docstring).
# Alphabetical: the order in which day-partition creation locks them (ingest/writer.py).
ROLLUP_TABLES: tuple[RollupTable, ...] = (
    EVALUATOR_QUALITY,
    EVALUATOR_VALUES,
    HISTOGRAMS,
    JUDGE_TOKENS,
    OPERATION_ERRORS,
    OPERATIONS,
    QUALITY,
    QUALITY_ERRORS,
    TOKENS,
)
# Histogram measures (rollup_histograms.measure).
LATENCY = "latency_ms"
TTFT = "ttft_ms"

Deltas = dict[RollupTable, dict[tuple, list[float]]]

if [t.name for t in ROLLUP_TABLES] != sorted(t.name for t in ROLLUP_TABLES):
    raise RuntimeError("rollup tables must be in alphabetical order (the lock order)")


_TIMES = ("minute",)  # staged as microseconds (ingest/staging.py)
# The staging tables, created once per Postgres session.
STAGING_SQL = staging.ensure_sql((t.staging_sql() for t in ROLLUP_TABLES), probe=TOKENS.stage)


async def apply_deltas(conn: DbConnection, deltas: Mapping[RollupTable, Mapping[tuple, list]]) -> int:
    """Add every delta to its row, creating rows as needed; returns the rows touched.

    Each table's deltas are binary-COPYed into its staging table (ingest/staging.py), then
    added by its ``upsert_sql``: one array parameter per column, as before, cost asyncpg a shape
    check of every element, several times the encoding itself."""
    tables = [table for table in ROLLUP_TABLES if deltas.get(table)]
    if not tables:
        return 0
    await conn.execute(STAGING_SQL)
    for table in tables:
        # key[1] is the minute (_BASE_KEYS), sent as microseconds.
        records = [[key[0], staging.micros(key[1]), *key[2:], *sums] for key, sums in deltas[table].items()]
        await conn.copy_records_to_table(table.stage, records=records, columns=table.columns)
    # All the upserts in one round trip (a query without parameters may hold several
    # statements; Postgres runs them in order, so the table order holds).
    await conn.execute("; ".join(table.upsert_sql() for table in tables))
    return sum(len(deltas[table]) for table in tables)
