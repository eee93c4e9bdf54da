"""Calling judge LLMs: retries with backoff, a circuit breaker per connection, outcome types."""
