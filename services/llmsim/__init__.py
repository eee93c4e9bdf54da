"""llmsim: an OpenAI-compatible LLM simulator (chat completions, streaming, usage, latency model,
fault injection, a deterministic judge and a quality-drift knob) for demos, tests and load tests.

It simulates; it never stands in silently for a real model. See docs/llmsim.md.
"""
