"""How a batch's rows travel to Postgres: binary COPY into session-local staging tables, then
one ``INSERT ... SELECT`` per real table.

Two choices here are about CPU per event, measured with callgrind on a fixed batch
(docs/aggregator.md, "Performance"):

- Time columns travel as microseconds since the Unix epoch (``bigint``) and the
  ``INSERT ... SELECT`` turns them back into ``timestamptz``. asyncpg's timestamptz encoder
  compares every value with its naive +-infinity sentinels, which for an aware datetime means
  two ``utcoffset`` calls through the generic method machinery: that cost more than all the
  other columns of a row together. The conversion back is exact (two integer factors, each far
  below 2**53, where one float8 factor would round after the year 2255).
- Rows travel as plain lists. asyncpg reads every value by index, and on a NamedTuple (a
  tuple subclass) that indexing goes through a Python-level ``__getitem__``.

A staging table has the real table's column types, except the time columns, and no
constraints (``CREATE TABLE ... AS ... WITH NO DATA``): a NULL where the real table refuses one
fails at the INSERT, inside the same transaction, as it would have at the COPY. ``ON COMMIT
DELETE ROWS`` empties it at every commit; a rollback takes the copy back too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from services.aggregator.ingest.values import EPOCH

MICROSECOND = timedelta(microseconds=1)
# The staged column that numbers a batch's rows (0, 1, ...), in offset order.
ORDINAL = "ord"


def micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch (Postgres keeps microseconds, so nothing is lost)."""
    return (moment - EPOCH) // MICROSECOND


def timestamptz(column: str) -> str:
    """SQL giving back the timestamptz a staged microseconds column stands for."""
    return (
        f"(timestamptz 'epoch' + ({column} / 1000000) * interval '1 second'"
        f" + ({column} % 1000000) * interval '1 microsecond')"
    )


def micros_sql(column: str) -> str:
    """SQL giving a timestamptz column as microseconds since the Unix epoch (exact: numeric)."""
    return f"(extract(epoch FROM {column}) * 1000000)::bigint"


def create_sql(stage: str, table: str, columns: Sequence[str], times: Sequence[str], *, numbered: bool) -> str:
    """The statement creating ``stage`` for ``table``'s ``columns`` (times as bigint)."""
    select = [f"NULL::bigint AS {c}" if c in times else c for c in columns]
    if numbered:
        select.append(f"NULL::integer AS {ORDINAL}")
    return f"CREATE TEMP TABLE {stage} ON COMMIT DELETE ROWS AS SELECT {', '.join(select)} FROM {table} WITH NO DATA;"


def ensure_sql(creates: Iterable[str], probe: str) -> str:
    """One round trip that creates a session's staging tables unless ``probe`` exists."""
    return f"DO $$ BEGIN IF to_regclass('pg_temp.{probe}') IS NULL THEN {' '.join(creates)} END IF; END $$"


def select_list(columns: Sequence[str], times: Sequence[str], prefix: str = "") -> str:
    """The staged columns as the real table's values."""
    return ", ".join(timestamptz(prefix + c) if c in times else prefix + c for c in columns)


def wire_rows(rows: Iterable[Sequence], time_positions: Sequence[int], *, numbered: bool) -> list[list]:
    """Rows as the COPY sends them: lists, datetimes as microseconds, numbered if asked."""
    out = []
    for index, row in enumerate(rows):
        values = list(row)
        for position in time_positions:
            moment = values[position]
            if moment is not None:
                values[position] = (moment - EPOCH) // MICROSECOND
        if numbered:
            values.append(index)
        out.append(values)
    return out
