"""Which span attributes and events hold conversation text, to drop them from unsampled traces.

Texts are kept only for requests that are judged (the sampled-only rule of docs/privacy.md).
For spans received over OTLP the gateway cannot know the request a span belongs to (its root
may come in a later export), so the decision is taken per trace, and the request ids derived
later are chosen to fall on the same side of the sample (shared.otlp_ingest.ids).
"""

from __future__ import annotations

TEXT_ATTRIBUTES = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.tool.definitions",
        "input.value",
        "output.value",
    }
)
# Flattened messages: gen_ai.prompt.0.content, llm.input_messages.1.message.content, ...
TEXT_PREFIXES = (
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "llm.input_messages.",
    "llm.output_messages.",
)
TEXT_EVENTS = frozenset(
    {
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
        "gen_ai.choice",
        "gen_ai.content.prompt",
        "gen_ai.content.completion",
    }
)


def is_text_attribute(key: str) -> bool:
    if key in TEXT_ATTRIBUTES:
        return True
    if key.startswith(TEXT_PREFIXES):
        # roles, indexes and token counts are not texts; contents and tool arguments are
        return key.endswith(("content", "arguments", ".text"))
    return False
