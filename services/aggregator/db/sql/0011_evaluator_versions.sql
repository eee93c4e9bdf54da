-- Evaluators with their own scales and versions (issue 13, part 2; docs/aggregator.md).
--
-- 1. An evaluation outcome is keyed by (request, metric, evaluator version): two versions of one
--    evaluator judging the same request are two outcomes. Rows stored before this migration get
--    the key the decoder gives their events now (evaluator = metric, version = the judge's
--    prompt version, '' without a judge call, value = score), so a redelivered old event still
--    meets its stored row and is not counted twice.
-- 2. Rollups that follow each evaluator's scale: float sums per (metric, version), and a value
--    histogram from which a pass rate under any pass rule is read at query time.
-- 3. Re-judged outcomes (Evaluation.rejudge_id set) are stored apart and feed no rollup and no
--    monitor window.

ALTER TABLE evaluations
    ADD COLUMN evaluator         text   NOT NULL DEFAULT '',  -- the evaluator's name (= metric for built-ins)
    ADD COLUMN evaluator_version text   NOT NULL DEFAULT '',  -- '' when the event recorded none
    ADD COLUMN value             float8,                      -- on the evaluator's scale, when scored
    ADD COLUMN label             text   NOT NULL DEFAULT '';  -- for label scales, '' otherwise

UPDATE evaluations
SET evaluator = metric, evaluator_version = coalesce(judge_prompt_version, ''), value = score;

ALTER TABLE evaluations DROP CONSTRAINT evaluations_pkey;
ALTER TABLE evaluations ADD PRIMARY KEY (request_id, metric, evaluator_version, request_start_time);

-- Per (metric, evaluator version). value_* are float sums on the evaluator's own scale (the
-- built-in metrics: 1-5), so averages and their intervals come out on that scale.
CREATE TABLE rollup_evaluator_quality (
    deployment          text        NOT NULL,
    minute              timestamptz NOT NULL,
    variant             text        NOT NULL,
    run_id              text        NOT NULL,
    metric              text        NOT NULL,
    evaluator_version   text        NOT NULL,
    evaluations         bigint      NOT NULL DEFAULT 0,  -- scored + not_applicable + errors
    scored              bigint      NOT NULL DEFAULT 0,
    value_sum           float8      NOT NULL DEFAULT 0,
    value_sum_squares   float8      NOT NULL DEFAULT 0,
    not_applicable      bigint      NOT NULL DEFAULT 0,
    errors              bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment, minute, variant, run_id, metric, evaluator_version)
) PARTITION BY RANGE (minute);

-- How many scores had each value. value_milli = floor(value * 1000): an integer scale's values
-- and a label's number are kept exactly, a 0-1 float falls in a bucket of width 0.001. A pass
-- rule "at least t" is the sum over value_milli >= ceil(t * 1000), exact for any t with at most
-- three decimals; a labels rule is the sum over its labels. So pass or fail stays a query-time
-- decision, as it was with score_1..score_5.
CREATE TABLE rollup_evaluator_values (
    deployment        text        NOT NULL,
    minute            timestamptz NOT NULL,
    variant           text        NOT NULL,
    run_id            text        NOT NULL,
    metric            text        NOT NULL,
    evaluator_version text        NOT NULL,
    value_milli       bigint      NOT NULL,
    label             text        NOT NULL,  -- '' unless the evaluator answers with labels
    count             bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (deployment, minute, variant, run_id, metric, evaluator_version, value_milli, label)
) PARTITION BY RANGE (minute);

-- Outcomes of re-judging past traffic: one per (request, metric, evaluator version), the first
-- stored wins, whichever re-judge produced it. Never rolled up.
CREATE TABLE rejudge_evaluations (
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
    score                   smallint,              -- the 1-5 score older readers know
    reason                  text,
    error_type              text,
    error_message           text,
    judge_model             text,
    judge_prompt_version    text,
    judge_prompt_tokens     bigint,
    judge_completion_tokens bigint,
    judge_latency_ms        float8,
    evaluator               text        NOT NULL,
    evaluator_version       text        NOT NULL,
    value                   float8,
    label                   text        NOT NULL,
    rejudge_id              text        NOT NULL,
    ingested_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, metric, evaluator_version, request_start_time)
) PARTITION BY RANGE (request_start_time);
CREATE INDEX rejudge_evaluations_rejudge ON rejudge_evaluations (rejudge_id);

INSERT INTO day_partitioned_tables (table_name) VALUES
    ('rollup_evaluator_quality'), ('rollup_evaluator_values'), ('rejudge_evaluations');

-- The new tables get a partition for every day the others have one, so stored days stay
-- writable and the backfill below has somewhere to go.
SELECT promptpulse_ensure_day_partitions(day, day) FROM promptpulse_day_partitions_before('9999-12-31') AS day;

-- History: the new rollups of the rows already stored. Upgrade across this migration with the
-- aggregators stopped: a replica of the previous version would go on storing outcomes under
-- version '' with no evaluator rollup.
INSERT INTO rollup_evaluator_quality
SELECT deployment, date_trunc('minute', request_start_time), variant, run_id, metric, evaluator_version,
       count(*), count(*) FILTER (WHERE outcome = 'scored'), coalesce(sum(value), 0),
       coalesce(sum(value * value), 0), count(*) FILTER (WHERE outcome = 'not_applicable'),
       count(*) FILTER (WHERE outcome = 'error')
FROM evaluations GROUP BY 1, 2, 3, 4, 5, 6;

INSERT INTO rollup_evaluator_values
SELECT deployment, date_trunc('minute', request_start_time), variant, run_id, metric, evaluator_version,
       floor(value * 1000 + 1e-6)::bigint, label, count(*)
FROM evaluations WHERE outcome = 'scored' AND value IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;

-- Which evaluator version a quality monitor's window was measured on ('' for other statistics).
ALTER TABLE monitor_windows ADD COLUMN evaluator_version text NOT NULL DEFAULT '';
