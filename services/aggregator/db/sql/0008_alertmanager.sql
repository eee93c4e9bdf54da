-- The outbox of Prometheus Alertmanager sends (docs/alerting.md). Alertmanager wants the current
-- state of every alert, re-sent while it fires, rather than a queue of changes; so the evaluator
-- keeps one row per monitor here, written in the same transaction as the alert it mirrors, and
-- the sender (one replica at a time, under its own advisory lock) records per Alertmanager what
-- it last delivered. Nothing is lost across restarts: a row is due until its send is recorded.

CREATE TABLE alertmanager_alerts (
    monitor_id  text        PRIMARY KEY,
    deployment  text        NOT NULL,
    state       text        NOT NULL CHECK (state IN ('firing', 'resolved')),
    version     bigint      NOT NULL,  -- bumped at every state change; a send records the one it carried
    alert_event_id text     NOT NULL,  -- the alerts row (event_id) of the latest change
    labels      jsonb       NOT NULL,  -- fixed while the alert fires, so Alertmanager sees one alert
    annotations jsonb       NOT NULL,
    starts_at   timestamptz NOT NULL,  -- end of the window that fired
    ends_at     timestamptz,           -- end of the window that resolved it; NULL while firing
    window_start timestamptz NOT NULL, -- the dashboard link's range: the violated window, and
    window_end  timestamptz NOT NULL,  -- once resolved, on to the window that resolved it
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Per monitor and Alertmanager (target: a hash of its URL, so no credential in a URL lands here).
CREATE TABLE alertmanager_sends (
    monitor_id      text        NOT NULL REFERENCES alertmanager_alerts (monitor_id) ON DELETE CASCADE,
    target          text        NOT NULL,
    version         bigint      NOT NULL DEFAULT 0,  -- the version last delivered (0: none yet)
    sends           bigint      NOT NULL DEFAULT 0,  -- deliveries, re-sends included
    last_sent_at    timestamptz,
    attempts        integer     NOT NULL DEFAULT 0,  -- consecutive failures since the last delivery
    next_attempt_at timestamptz,                     -- after a failure: not before then
    last_error      text,
    gave_up         boolean     NOT NULL DEFAULT false,  -- a resolution not delivered after the maximum attempts
    PRIMARY KEY (monitor_id, target)
);
