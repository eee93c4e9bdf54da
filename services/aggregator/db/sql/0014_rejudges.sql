-- Re-judges of past traffic (issue 13, part 3; docs/evaluation.md). One row per re-judge asked
-- for through POST /v1/deployments/{d}/rejudges. The command is published to the processor
-- from this row (published_at: acknowledged by the broker; a row without it is published
-- again by the API's outbox loop); the processor's progress records update the figures.
CREATE TABLE rejudges (
    id                text        PRIMARY KEY,
    deployment        text        NOT NULL,
    evaluator         text        NOT NULL,
    evaluator_version text        NOT NULL,
    window_start      timestamptz NOT NULL,
    window_end        timestamptz NOT NULL,
    sample            integer,                      -- NULL: every request of the window
    requested_at      timestamptz NOT NULL DEFAULT now(),
    status            text        NOT NULL DEFAULT 'requested',  -- requested | running | done | failed
    published_at      timestamptz,
    total             integer,                      -- requests chosen, once the processor has read the window
    judged            integer     NOT NULL DEFAULT 0,
    published         integer     NOT NULL DEFAULT 0,  -- evaluation events published by the processor
    message           text,
    progress_at       timestamptz,
    CHECK (window_start < window_end)
);
CREATE INDEX rejudges_by_deployment ON rejudges (deployment, requested_at DESC);
