"""Event contracts of PromptPulse and their Kafka codec.

The schema lives in proto/promptpulse/v1/; shared.events.messages re-exports the generated
classes, shared.events.codec turns them into Kafka values and headers and back, and
shared.events.builders makes fresh events. This module imports nothing, so
`python -m shared.events.generate` works even when the generated code is missing or stale.
"""
