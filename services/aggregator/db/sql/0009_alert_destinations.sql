-- Direct alert destinations (docs/alerting.md): Slack, Teams, PagerDuty, the signed webhook and
-- the deprecated per-monitor webhook, through one outbox and one delivery log.
--
-- alert_deliveries is the outbox: one row per alert transition and destination, written by the
-- evaluator in the transaction of the transition, claimed by any replica (FOR UPDATE SKIP
-- LOCKED), retried with back-off. `target` is the destination as configured: the NAMES of the
-- environment variables holding its URL, routing key or secret, read when sending; never their
-- values (the one exception, the deprecated inline notification.webhook_url, is in the file and
-- the monitors table already).
CREATE TABLE alert_deliveries (
    id              bigserial   PRIMARY KEY,
    alert_id        bigint      NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    destination     text        NOT NULL,
    kind            text        NOT NULL,
    target          jsonb       NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'silenced')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (alert_id, destination)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE state = 'pending';

-- Every attempt, and every test notification (monitor_id NULL): what was tried, what came back.
CREATE TABLE delivery_log (
    id             bigserial   PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    deployment     text        NOT NULL,
    destination    text        NOT NULL,
    kind           text        NOT NULL,
    monitor_id     text,                 -- NULL for a test notification
    alert_event_id text        NOT NULL, -- the alert (or the test's made-up alert)
    alert_state    text        NOT NULL, -- firing | resolved
    attempt        integer     NOT NULL, -- 1, 2, ... per alert and destination
    outcome        text        NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'failed', 'silenced')),
    http_status    integer,              -- NULL when no answer came (network error, timeout, not sent)
    error          text                  -- never a URL, key or secret
);
CREATE INDEX delivery_log_deployment ON delivery_log (deployment, id);
CREATE INDEX delivery_log_at ON delivery_log (at);

-- Webhook deliveries queued or done before this migration move to the outbox (the alerts
-- table's webhook columns are no longer written or read).
INSERT INTO alert_deliveries (alert_id, destination, kind, target, state, attempts, next_attempt_at, last_error)
SELECT id, 'notification.webhook', 'legacy_webhook',
       webhook || '{"kind": "legacy_webhook", "name": "notification.webhook"}'::jsonb,
       webhook_state, webhook_attempts, webhook_next_attempt_at, webhook_last_error
FROM alerts WHERE webhook IS NOT NULL AND webhook_state <> 'none';
