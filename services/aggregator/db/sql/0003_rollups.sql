-- Per-minute rollups, fed only by raw rows the ingest really inserted (see 0002).
--
-- Key of every rollup: deployment, minute (UTC minute of the request's start time, so late
-- events land in the minute they belong to), variant, run_id ('' for production; a batch
-- run's figures stay under its own run id), then the table's own dimensions. Every value is
-- a sum: any window is the sum of its minutes. Partitioned by day like the raw tables, so
-- retention drops raw rows and the minutes they fed together.

CREATE TABLE rollup_operations (
    deployment     text        NOT NULL,
    minute         timestamptz NOT NULL,
    variant        text        NOT NULL,
    run_id         text        NOT NULL,
    requests       bigint      NOT NULL DEFAULT 0,  -- request events
    responses      bigint      NOT NULL DEFAULT 0,  -- response events (any status)
    ok             bigint      NOT NULL DEFAULT 0,
    errors         bigint      NOT NULL DEFAULT 0,  -- status error
    cancelled      bigint      NOT NULL DEFAULT 0,
    latency_sum_ms float8      NOT NULL DEFAULT 0,  -- over all responses
    ttft_count     bigint      NOT NULL DEFAULT 0,  -- responses with a time to first token
    ttft_sum_ms    float8      NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment, minute, variant, run_id)
) PARTITION BY RANGE (minute);

CREATE TABLE rollup_operation_errors (
    deployment text        NOT NULL,
    minute     timestamptz NOT NULL,
    variant    text        NOT NULL,
    run_id     text        NOT NULL,
    error_type text        NOT NULL,
    count      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment, minute, variant, run_id, error_type)
) PARTITION BY RANGE (minute);

-- Mergeable log-bucket histograms (services/aggregator/rollups/histogram.py): bucket i holds
-- values in (g^(i-1), g^i] ms, g = 1.01/0.99, reported as 2*g^i/(g+1): 1% relative error.
CREATE TABLE rollup_histograms (
    deployment text        NOT NULL,
    minute     timestamptz NOT NULL,
    variant    text        NOT NULL,
    run_id     text        NOT NULL,
    measure    text        NOT NULL,  -- latency_ms | ttft_ms
    bucket     smallint    NOT NULL,
    count      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment, minute, variant, run_id, measure, bucket)
) PARTITION BY RANGE (minute);

CREATE TABLE rollup_quality (
    deployment        text        NOT NULL,
    minute            timestamptz NOT NULL,
    variant           text        NOT NULL,
    run_id            text        NOT NULL,
    metric            text        NOT NULL,
    evaluations       bigint      NOT NULL DEFAULT 0,  -- scored + not_applicable + errors
    scored            bigint      NOT NULL DEFAULT 0,
    score_sum         bigint      NOT NULL DEFAULT 0,
    score_sum_squares bigint      NOT NULL DEFAULT 0,
    pass_count        bigint      NOT NULL DEFAULT 0,  -- score >= 3 (the default threshold)
    score_1           bigint      NOT NULL DEFAULT 0,
    score_2           bigint      NOT NULL DEFAULT 0,
    score_3           bigint      NOT NULL DEFAULT 0,
    score_4           bigint      NOT NULL DEFAULT 0,
    score_5           bigint      NOT NULL DEFAULT 0,
    not_applicable    bigint      NOT NULL DEFAULT 0,
    errors            bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment, minute, variant, run_id, metric)
) PARTITION BY RANGE (minute);

CREATE TABLE rollup_quality_errors (
    deployment text        NOT NULL,
    minute     timestamptz NOT NULL,
    variant    text        NOT NULL,
    run_id     text        NOT NULL,
    metric     text        NOT NULL,
    error_type text        NOT NULL,
    count      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment, minute, variant, run_id, metric, error_type)
) PARTITION BY RANGE (minute);

CREATE TABLE rollup_judge_tokens (
    deployment        text        NOT NULL,
    minute            timestamptz NOT NULL,
    variant           text        NOT NULL,
    run_id            text        NOT NULL,
    metric            text        NOT NULL,
    judge_model       text        NOT NULL,
    calls             bigint      NOT NULL DEFAULT 0,
    prompt_tokens     bigint      NOT NULL DEFAULT 0,
    completion_tokens bigint      NOT NULL DEFAULT 0,
    latency_sum_ms    float8      NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment, minute, variant, run_id, metric, judge_model)
) PARTITION BY RANGE (minute);

CREATE TABLE rollup_tokens (
    deployment        text        NOT NULL,
    minute            timestamptz NOT NULL,
    variant           text        NOT NULL,
    run_id            text        NOT NULL,
    model             text        NOT NULL,
    requests          bigint      NOT NULL DEFAULT 0,  -- responses that called this model
    calls             bigint      NOT NULL DEFAULT 0,  -- LLM calls to this model
    prompt_tokens     bigint      NOT NULL DEFAULT 0,
    completion_tokens bigint      NOT NULL DEFAULT 0,
    total_tokens      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment, minute, variant, run_id, model)
) PARTITION BY RANGE (minute);

CREATE TABLE rollup_feedback (
    deployment text        NOT NULL,
    minute     timestamptz NOT NULL,
    variant    text        NOT NULL,
    run_id     text        NOT NULL,
    feedback   bigint      NOT NULL DEFAULT 0,
    rated      bigint      NOT NULL DEFAULT 0,  -- feedback with a rating
    rating_sum bigint      NOT NULL DEFAULT 0,
    comments   bigint      NOT NULL DEFAULT 0,  -- feedback with a non-empty comment
    PRIMARY KEY (deployment, minute, variant, run_id)
) PARTITION BY RANGE (minute);

INSERT INTO day_partitioned_tables (table_name) VALUES
    ('rollup_operations'), ('rollup_operation_errors'), ('rollup_histograms'), ('rollup_quality'),
    ('rollup_quality_errors'), ('rollup_judge_tokens'), ('rollup_tokens'), ('rollup_feedback');

-- Deployments and variants seen, with the minutes they span (for GET /v1/deployments).
CREATE TABLE deployment_variants (
    deployment   text        NOT NULL,
    variant      text        NOT NULL,
    first_minute timestamptz NOT NULL,
    last_minute  timestamptz NOT NULL,
    PRIMARY KEY (deployment, variant)
);

-- Batch runs seen, with the minutes they span, so a run's rollups are read by key range.
CREATE TABLE batch_runs (
    run_id       text        NOT NULL,
    deployment   text        NOT NULL,
    first_minute timestamptz NOT NULL,
    last_minute  timestamptz NOT NULL,
    PRIMARY KEY (run_id, deployment)
);

-- Optional prices (from PROMPTPULSE_AGGREGATOR__PRICES at start-up), per 1,000 tokens.
CREATE TABLE model_prices (
    model             text    PRIMARY KEY,
    prompt_per_1k     numeric NOT NULL,
    completion_per_1k numeric NOT NULL,
    currency          text    NOT NULL DEFAULT 'USD',
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Token rollups with their cost (NULL for a model without a price).
CREATE VIEW rollup_token_costs AS
SELECT t.*,
       p.currency,
       t.prompt_tokens / 1000.0 * p.prompt_per_1k
         + t.completion_tokens / 1000.0 * p.completion_per_1k AS cost
FROM rollup_tokens t
LEFT JOIN model_prices p USING (model);
