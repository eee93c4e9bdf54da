-- Traces the OTLP assembler has decided every root of (services/aggregator/otlp/assembler.py),
-- with how many spans received over OTLP it read. Each pass looks back 30 s for stored spans
-- (a slow ingest transaction commits spans older than the last pass); a trace found there goes
-- back to otlp_pending only when it now has more spans than were read, so it is assembled once,
-- not once a pass for 30 s. Rows leave once the lookback no longer reaches the spans they read.

CREATE TABLE otlp_assembled (
    trace_id     text        PRIMARY KEY,
    deployment   text        NOT NULL,
    received     integer     NOT NULL,  -- spans received over OTLP for the deployment, as read
    assembled_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX otlp_assembled_at ON otlp_assembled (assembled_at);
