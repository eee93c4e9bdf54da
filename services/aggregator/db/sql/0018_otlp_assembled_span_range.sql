-- The start times of the spans the OTLP assembler read for an assembled (trace, deployment):
-- its check for spans stored since (services/aggregator/otlp/assembler.py, _NEW_TRACES) counts
-- the trace's spans in this range widened by the recent spans' own, so PostgreSQL probes the
-- day partitions of spans that range covers, not every one (spans is partitioned by start_time).
-- NULL in rows written before this migration: their count is not bounded.

ALTER TABLE otlp_assembled ADD COLUMN first_start timestamptz, ADD COLUMN last_start timestamptz;
