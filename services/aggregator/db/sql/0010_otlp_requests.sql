-- Requests derived from spans received over OTLP (services/aggregator/otlp/assembler.py).
--
-- otlp_pending: traces with OTLP spans whose requests are not all decided yet; the assembler
-- adds a trace when new spans of it are stored and removes it once the trace is settled.
-- otlp_requests: one row per derived request, keyed by its root span, written in the same
-- transaction as the request's events in the outbox: a request is derived exactly once, however
-- often its spans are sent or the assembler restarts.
-- otlp_outbox: the derived events until Kafka has them (sent in id order, then marked).

CREATE TABLE otlp_pending (
    trace_id      text        PRIMARY KEY,
    deployment    text        NOT NULL,
    last_ingested timestamptz NOT NULL,
    first_seen    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE otlp_requests (
    trace_id     text        NOT NULL,
    root_span_id text        NOT NULL,
    request_id   text        NOT NULL,
    deployment   text        NOT NULL,
    span_ids     text[]      NOT NULL,
    derived_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (trace_id, root_span_id)
);

CREATE TABLE otlp_outbox (
    id           bigserial   PRIMARY KEY,
    key          bytea       NOT NULL,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL,  -- [[name, base64 value], ...]
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX otlp_outbox_unpublished ON otlp_outbox (id) WHERE published_at IS NULL;

-- Finding newly stored OTLP spans without scanning every span: the gateway stamps them with
-- promptpulse.ingest (services/gateway/otlp/restamp.py).
CREATE INDEX spans_otlp_ingested ON spans (ingested_at) WHERE attributes ? 'promptpulse.ingest';
