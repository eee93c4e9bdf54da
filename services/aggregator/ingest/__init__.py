"""Exactly-once ingestion of inference, evaluation, feedback and span events into Postgres."""
