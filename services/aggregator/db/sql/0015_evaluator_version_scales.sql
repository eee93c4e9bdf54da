-- Each evaluator version's own scale and pass rule (issue 13, part 2; docs/aggregator.md).
--
-- A version is a hash of its evaluator's content, the scale and pass rule included, so a changed
-- scale is a new version. An aggregator records the scale of every version its deployment files
-- describe when it loads them (the first record of a version stays: same content, same scale),
-- and every reader of outcomes and rollups (metrics, compare, re-judge comparison, agreement,
-- monitors, Prometheus, dashboard) reads a version's figures on that version's scale, not on the
-- file's current one. A version with no row (stored before this migration, or judged by a
-- deployment file no aggregator has loaded) is read with the current scale, as before.
CREATE TABLE evaluator_version_scales (
    deployment        text        NOT NULL,
    metric            text        NOT NULL,
    evaluator_version text        NOT NULL,
    -- {"type": "integer"|"float"|"labels", "min": n, "max": n, "labels": [[name, number], ...]}
    -- (labels as pairs: a jsonb object would not keep the file's order)
    scale             jsonb       NOT NULL,
    -- {"at_least": t} or {"labels": [name, ...]}; for a built-in metric the query's pass score rules
    pass_rule         jsonb       NOT NULL,
    builtin           boolean     NOT NULL,
    first_seen        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment, metric, evaluator_version)
);
