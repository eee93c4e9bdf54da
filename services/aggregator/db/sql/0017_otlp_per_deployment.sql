-- A trace exported with the keys of two deployments (each stored span carries its key's
-- deployment) is assembled once per (trace, deployment): each deployment's calls are counted
-- under it, as a trace of one deployment's is. Rows already here have one deployment per trace,
-- so they keep their meaning under the wider key.

ALTER TABLE otlp_pending DROP CONSTRAINT otlp_pending_pkey, ADD PRIMARY KEY (trace_id, deployment);
ALTER TABLE otlp_assembled DROP CONSTRAINT otlp_assembled_pkey, ADD PRIMARY KEY (trace_id, deployment);
