-- Monitors, their evaluated windows, and the alerts they raised (docs/aggregator-api.md).
--
-- The monitors in force live here: those from the deployment files' `monitors` sections
-- (source 'file', re-synced from the files at start-up) and those set through the API
-- (source 'api'). Once a deployment's monitors were set through the API, the deployment is in
-- monitor_overrides and its file section no longer applies: API changes win over the file.

CREATE TABLE monitors (
    monitor_id text        PRIMARY KEY,  -- unique across deployments: alerts are keyed by it
    deployment text        NOT NULL,
    source     text        NOT NULL CHECK (source IN ('file', 'api')),
    position   integer     NOT NULL,     -- order within the deployment
    -- The monitor as the deployment schema's Monitor model (window and cadence in seconds).
    -- An inline notification.webhook_url is stored here: prefer webhook_url_env.
    definition jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX monitors_deployment ON monitors (deployment, position);

CREATE TABLE monitor_overrides (
    deployment text        PRIMARY KEY,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The alert state machine of each monitor: ok -> firing -> resolved (-> firing ...).
CREATE TABLE monitor_states (
    monitor_id        text        PRIMARY KEY,
    state             text        NOT NULL CHECK (state IN ('ok', 'firing', 'resolved')),
    evaluated_through timestamptz,           -- end of the newest evaluated window
    changed_at        timestamptz,           -- end of the window that changed the state
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- One row per evaluated window, violated or not: violation count and violation rate
-- (violated / evaluated) over any range are counts of these rows.
CREATE TABLE monitor_windows (
    monitor_id     text        NOT NULL,
    window_end     timestamptz NOT NULL,
    window_start   timestamptz NOT NULL,
    deployment     text        NOT NULL,
    variant        text        NOT NULL,  -- '' when the monitor watches the whole deployment
    statistic      text        NOT NULL,
    metric         text        NOT NULL,  -- '' for operational statistics
    value          float8,                -- NULL when the window held nothing to compute it from
    sample_count   bigint      NOT NULL,  -- scores (quality) or responses (operations)
    ci_low         float8,
    ci_high        float8,
    threshold      float8      NOT NULL,
    min_samples    integer     NOT NULL,
    enough_samples boolean     NOT NULL,
    violated       boolean     NOT NULL,
    note           text        NOT NULL DEFAULT '',
    evaluated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (monitor_id, window_end)  -- each window is evaluated once, whoever evaluates it
);
CREATE INDEX monitor_windows_deployment ON monitor_windows (deployment, window_end);
CREATE INDEX monitor_windows_end ON monitor_windows (window_end);

CREATE VIEW violations AS SELECT * FROM monitor_windows WHERE violated;

-- Alert state changes, and the outbox they are published from: a row is written in the same
-- transaction as the window that caused it, then published to the alerts topic (published_at)
-- and, when the monitor has one, POSTed to its webhook.
CREATE TABLE alerts (
    id                      bigserial   PRIMARY KEY,   -- publication order
    event_id                text        NOT NULL UNIQUE,
    monitor_id              text        NOT NULL,
    deployment              text        NOT NULL,
    variant                 text        NOT NULL,
    statistic               text        NOT NULL,
    metric                  text        NOT NULL,
    state                   text        NOT NULL CHECK (state IN ('firing', 'resolved')),
    window_start            timestamptz NOT NULL,
    window_end              timestamptz NOT NULL,
    value                   float8,
    threshold               float8      NOT NULL,
    sample_count            bigint      NOT NULL,
    ci_low                  float8,
    ci_high                 float8,
    message                 text        NOT NULL,
    payload                 text        NOT NULL,  -- the Alert in protobuf canonical JSON, as published
    created_at              timestamptz NOT NULL DEFAULT now(),
    published_at            timestamptz,           -- when the alerts topic acknowledged it
    -- Where to POST it ({webhook_url} or {webhook_url_env}); never returned by the API.
    webhook                 jsonb,
    webhook_state           text        NOT NULL CHECK (webhook_state IN ('none', 'pending', 'delivered', 'failed')),
    webhook_attempts        integer     NOT NULL DEFAULT 0,
    webhook_next_attempt_at timestamptz,
    webhook_last_error      text,
    UNIQUE (monitor_id, window_end, state)
);
CREATE INDEX alerts_unpublished ON alerts (id) WHERE published_at IS NULL;
CREATE INDEX alerts_webhook_due ON alerts (webhook_next_attempt_at) WHERE webhook_state = 'pending';
CREATE INDEX alerts_deployment ON alerts (deployment, id);
CREATE INDEX alerts_monitor ON alerts (monitor_id, id);
