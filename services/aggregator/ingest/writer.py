"""One micro-batch, one Postgres transaction: raw rows, rollup deltas, offsets, notifications.

Inside the transaction, in this order (fixed, so concurrent aggregators take locks in one order):

1. raw rows, table by table, deduplicated within the batch (first in offset order wins),
   copied into a session-local staging table (staging.py), then moved in natural-key order
   with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, which for tables that feed rollups
   returns the keys of the rows really inserted;
2. rollup deltas computed from the rows RETURNING reported (rows already stored add nothing),
   summed per rollup key and applied in key order;
3. deployment/variant and batch-run ranges, dead letters, and the consumer offsets
   (monotonic: an offset never moves back, even if a zombie replica commits late);
4. ``pg_notify('promptpulse_metrics', ...)`` once per deployment changed; Postgres delivers it
   at COMMIT, so a listener never sees figures that were rolled back;
5. the test-only fault hook, then COMMIT.

A crash anywhere before COMMIT leaves nothing behind, and the records are read again from the
stored offsets.

Lock order. The day-partitioned tables (raw and rollup) are locked in alphabetical order of
their names: the staging tables are created (first batch of a session) in that order, and the
rows go in as evaluations, feedback, inference_requests, inference_responses, the rollup_*
tables, spans. That is the order in which ``promptpulse_ensure_day_partitions()`` (migration
0002) takes its ACCESS EXCLUSIVE locks when it creates a day's partitions, so a batch and a
partition creation (at start-up, ahead of the day, on a late event) cannot deadlock; in the
former order (inference_requests first) they could, and the batch was retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.aggregator.db.pool import DbConnection
from services.aggregator.ingest import staging
from services.aggregator.ingest.decode import Decoded
from services.aggregator.ingest.rows import RAW_TABLES, RawTable
from services.aggregator.rollups.deltas import rollup_deltas, seen_ranges
from services.aggregator.rollups.tables import ROLLUP_TABLES, RollupTable, apply_deltas

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "promptpulse_metrics"
_MAX_RUN_IDS_IN_NOTIFY = 20

_DEAD_LETTERS_SQL = """
INSERT INTO dead_letters (consumer_group, topic, kafka_partition, kafka_offset, kafka_timestamp,
                          key, value, headers, reason, detail)
SELECT $1, t, p, o, ts, k, v, h::jsonb, r, d
FROM unnest($2::text[], $3::int[], $4::bigint[], $5::timestamptz[], $6::bytea[], $7::bytea[],
            $8::text[], $9::text[], $10::text[]) AS u(t, p, o, ts, k, v, h, r, d)
ON CONFLICT (consumer_group, topic, kafka_partition, kafka_offset) DO NOTHING
"""

_OFFSETS_SQL = """
INSERT INTO consumer_offsets (consumer_group, topic, kafka_partition, next_offset, updated_at)
SELECT $1, t, p, o, now() FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(t, p, o)
ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE
SET next_offset = EXCLUDED.next_offset, updated_at = EXCLUDED.updated_at
WHERE consumer_offsets.next_offset < EXCLUDED.next_offset
"""

_VARIANTS_SQL = """
INSERT INTO deployment_variants AS d (deployment, variant, first_minute, last_minute)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
ON CONFLICT (deployment, variant) DO UPDATE
SET first_minute = LEAST(d.first_minute, EXCLUDED.first_minute),
    last_minute = GREATEST(d.last_minute, EXCLUDED.last_minute)
WHERE EXCLUDED.first_minute < d.first_minute OR EXCLUDED.last_minute > d.last_minute
"""

_RUNS_SQL = """
INSERT INTO batch_runs AS r (deployment, run_id, first_minute, last_minute)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
ON CONFLICT (run_id, deployment) DO UPDATE
SET first_minute = LEAST(r.first_minute, EXCLUDED.first_minute),
    last_minute = GREATEST(r.last_minute, EXCLUDED.last_minute)
WHERE EXCLUDED.first_minute < r.first_minute OR EXCLUDED.last_minute > r.last_minute
"""


# Raw tables before and after the rollup_* tables in alphabetical order (see "Lock order").
_ROLLUPS = "rollup_"
_BEFORE_ROLLUPS = tuple(t for t in RAW_TABLES if t.name < _ROLLUPS)
_AFTER_ROLLUPS = tuple(t for t in RAW_TABLES if t.name > _ROLLUPS)
if any(t.feeds_rollups for t in _AFTER_ROLLUPS) or [t.name for t in RAW_TABLES] != sorted(t.name for t in RAW_TABLES):
    raise RuntimeError("raw tables must be alphabetical, and those feeding rollups before rollup_*")
# Every staging table of a session, raw and rollup, in one round trip and in lock order.
_STAGED: list[RawTable | RollupTable] = sorted((*RAW_TABLES, *ROLLUP_TABLES), key=lambda table: table.name)
STAGING_SQL = staging.ensure_sql((t.staging_sql() for t in _STAGED), probe=_STAGED[-1].stage)


@dataclass
class FaultHook:
    """TEST ONLY: hold batch number ``on_batch`` open between its inserts and its COMMIT."""

    pause_seconds: float = 0.0
    on_batch: int = 1
    marker_path: Path | None = None

    async def before_commit(self, batch_number: int, inserted: Mapping[str, int]) -> None:
        if self.pause_seconds <= 0 or batch_number != self.on_batch:
            return
        log.warning("fault hook: holding batch %d before COMMIT for %.1fs", batch_number, self.pause_seconds)
        if self.marker_path is not None:
            tmp = self.marker_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"batch": batch_number, "inserted": dict(inserted)}))
            tmp.replace(self.marker_path)  # atomic: a reader never sees half a file
        await asyncio.sleep(self.pause_seconds)


@dataclass
class BatchOutcome:
    inserted: dict[str, int] = field(default_factory=dict)  # raw table -> rows new to the store
    duplicates: int = 0  # rows already stored (redeliveries) or repeated within the batch
    dead_letters: int = 0
    rollup_rows: int = 0
    deployments: list[str] = field(default_factory=list)


def first_per_key(table: RawTable, rows: list[Any]) -> list[Any]:
    """The batch's rows with one row per natural key (the first, in offset order), sorted by key.

    The rule ``_insert_raw`` applies, stated on decoded rows: the writer itself compares the
    staged form's cheaper keys (or lets Postgres do it, for spans), and inserts in key order."""
    chosen: dict[tuple, Any] = {}
    for row in rows:
        chosen.setdefault(table.key_of(row), row)
    return [chosen[key] for key in sorted(chosen)]


async def _insert_raw(conn: DbConnection, table: RawTable, rows: list[Any]) -> list[Any] | int:
    """The rows really inserted, in batch order (or, for a table that feeds no rollup, how many).

    Keys are compared on the staged form (strings and integers): for a table that feeds
    rollups, the first row per key is kept here and the INSERT returns the keys it inserted;
    for the others, Postgres keeps the first (rows.py: ``insert_sql``)."""
    wire = table.wire(rows)
    if not table.feeds_rollups:
        await conn.copy_records_to_table(table.stage, records=wire, columns=table.staged_columns)
        status = await conn.execute(table.insert_sql())  # "INSERT 0 <rows>"
        return int(status.rsplit(" ", 1)[1])
    first: dict[tuple, int] = {}
    for index, values in enumerate(wire):
        first.setdefault(table.wire_key(values), index)
    staged = wire if len(first) == len(wire) else [wire[index] for index in first.values()]
    await conn.copy_records_to_table(table.stage, records=staged, columns=table.staged_columns)
    new = sorted(first[tuple(record)] for record in await conn.fetch(table.insert_sql()))
    return [rows[index] for index in new]


async def _insert_table(
    conn: DbConnection, table: RawTable, decoded: Decoded, inserted: dict[RawTable, list[Any]],
    outcome: BatchOutcome,
) -> None:
    rows = decoded.rows.get(table)
    if not rows:
        return
    new = await _insert_raw(conn, table, rows)
    count = new if isinstance(new, int) else len(new)
    if not isinstance(new, int):
        inserted[table] = new
    outcome.inserted[table.name] = count
    outcome.duplicates += len(rows) - count


def _notifications(ranges: Mapping[tuple, list]) -> list[str]:
    by_deployment: dict[str, dict[str, Any]] = {}
    for key, (first, last) in ranges.items():
        deployment = key[1]
        entry = by_deployment.setdefault(
            deployment, {"deployment": deployment, "first_minute": first, "last_minute": last, "run_ids": []}
        )
        entry["first_minute"] = min(entry["first_minute"], first)
        entry["last_minute"] = max(entry["last_minute"], last)
        if key[0] == "run" and len(entry["run_ids"]) < _MAX_RUN_IDS_IN_NOTIFY:
            entry["run_ids"].append(key[2])
    payloads = []
    for deployment in sorted(by_deployment):
        entry = by_deployment[deployment]
        entry["first_minute"] = entry["first_minute"].isoformat()
        entry["last_minute"] = entry["last_minute"].isoformat()
        entry["run_ids"].sort()
        payloads.append(json.dumps(entry, separators=(",", ":")))
    return payloads


async def _write_ranges(conn: DbConnection, ranges: Mapping[tuple, list]) -> None:
    for kind, sql in (("variant", _VARIANTS_SQL), ("run", _RUNS_SQL)):
        keys = sorted(k for k in ranges if k[0] == kind)
        if keys:
            await conn.execute(
                sql,
                [k[1] for k in keys],
                [k[2] for k in keys],
                [ranges[k][0] for k in keys],
                [ranges[k][1] for k in keys],
            )


async def write_batch(
    conn: DbConnection,
    decoded: Decoded,
    next_offsets: Mapping[tuple[str, int], int],
    *,
    group: str,
    batch_number: int = 0,
    fault: FaultHook | None = None,
) -> BatchOutcome:
    """Store one decoded batch and its offsets in one transaction (see the module docstring)."""
    outcome = BatchOutcome()
    async with conn.transaction():
        inserted: dict[RawTable, list[Any]] = {}
        if decoded.rows:
            await conn.execute(STAGING_SQL)
        for table in _BEFORE_ROLLUPS:
            await _insert_table(conn, table, decoded, inserted, outcome)
        outcome.rollup_rows = await apply_deltas(conn, rollup_deltas(inserted))
        for table in _AFTER_ROLLUPS:
            await _insert_table(conn, table, decoded, inserted, outcome)
        ranges = seen_ranges(inserted)
        await _write_ranges(conn, ranges)
        letters = sorted(decoded.dead_letters, key=lambda d: (d.topic, d.kafka_partition, d.kafka_offset))
        if letters:
            await conn.execute(_DEAD_LETTERS_SQL, group, *[list(c) for c in zip(*letters, strict=True)])
            outcome.dead_letters = len(letters)
        if next_offsets:
            positions = sorted(next_offsets.items())
            await conn.execute(
                _OFFSETS_SQL,
                group,
                [tp[0] for tp, _ in positions],
                [tp[1] for tp, _ in positions],
                [offset for _, offset in positions],
            )
        payloads = _notifications(ranges)
        if payloads:
            await conn.execute(f"SELECT pg_notify('{NOTIFY_CHANNEL}', p) FROM unnest($1::text[]) AS p", payloads)
            outcome.deployments = [json.loads(p)["deployment"] for p in payloads]
        if fault is not None:
            await fault.before_commit(batch_number, outcome.inserted)
    return outcome
