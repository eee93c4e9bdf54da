"""``POST /v1/traces``: spans from any application, over OTLP/HTTP, into PromptPulse traces."""
