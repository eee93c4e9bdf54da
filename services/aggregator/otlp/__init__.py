"""Requests derived from spans applications send over OTLP (docs/otlp.md)."""
