-- Silences of a monitor's direct destinations (docs/alerting.md, "Silencing direct destinations").
--
-- While a silence of a monitor is in force (created_at <= now() < ends_at and not ended early),
-- a FIRING transition of that monitor is still written to alerts, published to the alerts topic
-- (Alert.silenced = true) and sent to Alertmanager, but not to direct destinations (Slack, Teams,
-- PagerDuty, webhooks: their alert_deliveries rows close as 'silenced'). A RESOLVED transition
-- goes where its FIRING went (alerts.silenced of the monitor's last firing row), so a receiver
-- never gets half of a pair.
CREATE TABLE monitor_silences (
    id         bigserial   PRIMARY KEY,
    deployment text        NOT NULL,
    monitor_id text        NOT NULL,
    -- Who, as the caller states it: the aggregator's admin key is one shared secret that names
    -- nobody (the CLI sends --by, default the login name, as amtool does with --author).
    created_by text        NOT NULL,
    reason     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    ends_at    timestamptz NOT NULL,  -- as set; an early end keeps it and fills ended_at
    ended_at   timestamptz,
    ended_by   text,
    CHECK (ends_at > created_at)
);
CREATE INDEX monitor_silences_monitor ON monitor_silences (monitor_id, ends_at);
CREATE INDEX monitor_silences_deployment ON monitor_silences (deployment, id);

-- Whether the transition was silenced: the same as its published Alert.silenced.
ALTER TABLE alerts ADD COLUMN silenced boolean NOT NULL DEFAULT false;
