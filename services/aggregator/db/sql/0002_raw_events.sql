-- Raw facts, written once each by the aggregator's ingest (INSERT ... ON CONFLICT DO NOTHING).
--
-- Every table is range-partitioned by day (UTC) on the request's start time (spans: their own
-- start time, since a span carries no request), and every unique key includes that column, so
-- deduplication works inside one partition and retention is a partition drop.
-- Partitions are named <table>_pYYYYMMDD and made by promptpulse_ensure_day_partitions().
-- docs/aggregator.md describes every table.

-- The day-partitioned tables (raw and rollup): partitions are created and dropped for all of
-- them together, so raw rows and the rollup minutes they fed expire in the same transaction.
CREATE TABLE day_partitioned_tables (
    table_name text PRIMARY KEY
);

CREATE FUNCTION promptpulse_ensure_day_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    parent  text;
    day     date;
    child   text;
    created integer := 0;
BEGIN
    -- Two creators racing on CREATE TABLE IF NOT EXISTS can still collide in the catalog.
    PERFORM pg_advisory_xact_lock(hashtext('promptpulse_day_partitions'));
    FOR parent IN SELECT table_name FROM day_partitioned_tables ORDER BY table_name LOOP
        day := first_day;
        WHILE day <= last_day LOOP
            child := parent || '_p' || to_char(day, 'YYYYMMDD');
            IF to_regclass(quote_ident(child)) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    child, parent,
                    day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
                created := created + 1;
            END IF;
            day := day + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;

-- Drops every day partition of every registered table for days before cutoff; returns their names.
CREATE FUNCTION promptpulse_drop_day_partitions_before(cutoff date)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    child text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('promptpulse_day_partitions'));
    FOR child IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname IN (SELECT table_name FROM day_partitioned_tables)
          AND c.relname ~ '_p[0-9]{8}$'
          AND to_date(right(c.relname, 8), 'YYYYMMDD') < cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', child);
        RETURN NEXT child;
    END LOOP;
END $$;

-- One row per request accepted by the gateway (event kind "request").
CREATE TABLE inference_requests (
    request_start_time timestamptz NOT NULL,
    request_id         text        NOT NULL,
    event_id           text        NOT NULL,
    event_time         timestamptz NOT NULL,
    deployment         text        NOT NULL,
    variant            text        NOT NULL,   -- '' when the deployment has a single variant
    run_id             text        NOT NULL,   -- '' for production traffic
    trace_id           text,                   -- 32 hex, from the event's traceparent
    client_request_id  text        NOT NULL,
    streaming          boolean     NOT NULL,
    sampled            boolean     NOT NULL,   -- shared.sampling.is_sampled at the deployment's rate
    inputs             jsonb,                  -- kept only when sampled or run_id <> ''
    ingested_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, request_start_time)
) PARTITION BY RANGE (request_start_time);
CREATE INDEX inference_requests_kept ON inference_requests (deployment, request_start_time)
    WHERE sampled OR run_id <> '';

-- One row per finished, failed or cancelled request (event kind "response").
CREATE TABLE inference_responses (
    request_start_time     timestamptz NOT NULL,
    request_id             text        NOT NULL,
    event_id               text        NOT NULL,
    event_time             timestamptz NOT NULL,
    deployment             text        NOT NULL,
    variant                text        NOT NULL,
    run_id                 text        NOT NULL,
    trace_id               text,
    status                 text        NOT NULL,  -- ok | error | cancelled | unspecified
    error_type             text,                  -- set when status = 'error' ('unknown' if none given)
    error_message          text,
    latency_ms             float8      NOT NULL,
    time_to_first_token_ms float8,                -- streamed answers only
    prompt_tokens          bigint      NOT NULL,  -- sums over usage
    completion_tokens      bigint      NOT NULL,
    total_tokens           bigint      NOT NULL,
    usage                  jsonb       NOT NULL,  -- [{node, model, prompt_tokens, completion_tokens, total_tokens}]
    sampled                boolean     NOT NULL,
    outputs                jsonb,                 -- kept only when sampled or run_id <> ''
    ingested_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, request_start_time)
) PARTITION BY RANGE (request_start_time);

-- One row per (request, metric) judge verdict.
CREATE TABLE evaluations (
    request_start_time      timestamptz NOT NULL,
    request_id              text        NOT NULL,
    metric                  text        NOT NULL,
    event_id                text        NOT NULL,
    event_time              timestamptz NOT NULL,
    deployment              text        NOT NULL,
    variant                 text        NOT NULL,
    run_id                  text        NOT NULL,
    trace_id                text,
    outcome                 text        NOT NULL,  -- scored | not_applicable | error
    score                   smallint,              -- 1..5 when scored
    reason                  text,                  -- judge's reason, or why not applicable
    error_type              text,                  -- timeout, rate_limited, unparseable, ... when error
    error_message           text,
    judge_model             text,                  -- NULL when no judge was called
    judge_prompt_version    text,
    judge_prompt_tokens     bigint,
    judge_completion_tokens bigint,
    judge_latency_ms        float8,
    ingested_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, metric, request_start_time)
) PARTITION BY RANGE (request_start_time);

-- End-user feedback; several per request are allowed, so the key is the event id.
CREATE TABLE feedback (
    request_start_time timestamptz NOT NULL,
    event_id           text        NOT NULL,
    request_id         text        NOT NULL,
    event_time         timestamptz NOT NULL,
    deployment         text        NOT NULL,
    variant            text        NOT NULL,
    run_id             text        NOT NULL,
    trace_id           text,
    rating             integer,
    comment            text        NOT NULL,
    -- Where request_start_time came from: the event, the request id (a UUIDv7 embeds its
    -- creation time), or, failing both, the feedback's own event time.
    start_time_source  text        NOT NULL,
    ingested_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, request_start_time)
) PARTITION BY RANGE (request_start_time);
CREATE INDEX feedback_request ON feedback (request_id);

-- OpenTelemetry spans from the spans topic; a trace reads back as a tree through parent_span_id.
CREATE TABLE spans (
    start_time     timestamptz NOT NULL,
    trace_id       text        NOT NULL,  -- 32 hex
    span_id        text        NOT NULL,  -- 16 hex
    parent_span_id text,                  -- NULL for a root span
    name           text        NOT NULL,
    kind           text        NOT NULL,  -- internal | server | client | producer | consumer | unspecified
    end_time       timestamptz NOT NULL,
    duration_ms    float8      NOT NULL,
    status_code    text        NOT NULL,  -- unset | ok | error
    status_message text        NOT NULL,
    service_name   text        NOT NULL,
    scope_name     text        NOT NULL,
    attributes     jsonb       NOT NULL,
    events         jsonb       NOT NULL,  -- [{name, time, attributes}]
    resource       jsonb       NOT NULL,
    request_id     text,                  -- from the promptpulse.request_id attribute, if any
    deployment     text,                  -- from the promptpulse.deployment attribute, if any
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (trace_id, span_id, start_time)
) PARTITION BY RANGE (start_time);
CREATE INDEX spans_request ON spans (request_id) WHERE request_id IS NOT NULL;

INSERT INTO day_partitioned_tables (table_name) VALUES
    ('inference_requests'), ('inference_responses'), ('evaluations'), ('feedback'), ('spans');

-- Records the aggregator could not store, with why. Written in the batch's transaction and
-- keyed by position, so a redelivered poison record is recorded once.
CREATE TABLE dead_letters (
    id               bigserial   PRIMARY KEY,
    consumer_group   text        NOT NULL,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    kafka_timestamp  timestamptz,
    key              bytea,
    value            bytea,
    headers          jsonb       NOT NULL,  -- [{name, value}] (value as text, NULL if absent)
    reason           text        NOT NULL,  -- short and stable, e.g. malformed-body, invalid-value
    detail           text        NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer_group, topic, kafka_partition, kafka_offset)
);
CREATE INDEX dead_letters_time ON dead_letters (dead_lettered_at);
