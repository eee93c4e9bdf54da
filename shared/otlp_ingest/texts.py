"""Which span attributes and events hold conversation text, and on which side of the call.

Texts are kept only for requests that are judged (the sampled-only rule of docs/privacy.md).
For spans received over OTLP the gateway cannot know the request a span belongs to (its root
may come in a later export), so the decision is taken per trace, and the request ids derived
later are chosen to fall on the same side of the sample (shared.otlp_ingest.ids).

A deployment's named-field redaction names fields of its requests (``question``, ``context``,
a proxy's ``request``, a flow's own input names; ``answer``, ``choices``, a flow's outputs). A
span does not hold them apart (the question and the context are parts of one list of messages),
so any field named on a side redacts every text of that side: :data:`INPUT` (what the model was
sent) or :data:`OUTPUT` (what it answered).
"""

from __future__ import annotations

from typing import Literal

Side = Literal["input", "output"]
INPUT: Side = "input"
OUTPUT: Side = "output"

_ATTRIBUTE_SIDES: dict[str, Side] = {
    "gen_ai.input.messages": INPUT,
    "gen_ai.system_instructions": INPUT,
    "gen_ai.tool.call.result": INPUT,  # a tool's answer is sent to the model
    "input.value": INPUT,
    "gen_ai.output.messages": OUTPUT,
    "gen_ai.tool.call.arguments": OUTPUT,  # what the model asked the tool
    "output.value": OUTPUT,
}  # gen_ai.tool.definitions: the application's own tool schemas, no conversation
# Flattened messages: gen_ai.prompt.0.content, llm.input_messages.1.message.content, ...
_PREFIX_SIDES: tuple[tuple[str, Side], ...] = (
    ("gen_ai.prompt.", INPUT),
    ("llm.input_messages.", INPUT),
    ("gen_ai.completion.", OUTPUT),
    ("llm.output_messages.", OUTPUT),
)
_TEXT_PREFIXES = tuple(prefix for prefix, _ in _PREFIX_SIDES)
EVENT_SIDES: dict[str, Side] = {
    "gen_ai.system.message": INPUT,
    "gen_ai.user.message": INPUT,
    "gen_ai.assistant.message": INPUT,  # an earlier turn, sent back to the model
    "gen_ai.tool.message": INPUT,
    "gen_ai.content.prompt": INPUT,
    "gen_ai.choice": OUTPUT,
    "gen_ai.content.completion": OUTPUT,
}


def text_side(key: str) -> Side | None:
    """The side whose text the attribute ``key`` holds, None for anything else."""
    side = _ATTRIBUTE_SIDES.get(key)
    if side is not None or not key.startswith(_TEXT_PREFIXES):
        return side
    if not key.endswith(("content", "arguments", ".text")):
        return None  # roles, indexes and token counts are not texts; contents and tool arguments are
    return next(side for prefix, side in _PREFIX_SIDES if key.startswith(prefix))
