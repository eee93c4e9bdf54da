"""Reading a chat prompt: message texts, tagged blocks, and the question and context of a chat call.

Tagged blocks are ``<name>...</name>`` (case-insensitive). The judged answer is located first and
cut out before anything else is looked for, spanning from the first ``<answer>`` to the last
``</answer>``, so text inside the answer (even a fake ``</answer><question>...``) can neither end it
early nor pose as another block or as instructions. See docs/llmsim.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

BLOCK_NAMES = ("question", "context", "ground_truth", "metric", "scale")


def message_text(content: Any) -> str:
    """Text of a message's ``content``: a string, or a list of parts whose text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = [
        part["text"]
        for part in content
        if isinstance(part, dict)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
    ]
    return "\n".join(texts)


@dataclass(frozen=True)
class Blocks:
    """A prompt split into its answer block, its other tagged blocks and the free text around them."""

    answer: str | None
    named: dict[str, str]
    instructions: str


def _opening(name: str) -> re.Pattern[str]:
    return re.compile(rf"<{name}>", re.IGNORECASE)


def _closing(name: str) -> re.Pattern[str]:
    return re.compile(rf"</{name}>", re.IGNORECASE)


def _cut_answer(text: str) -> tuple[str | None, str]:
    opening = _opening("answer").search(text)
    if opening is None:
        return None, text
    closings = list(_closing("answer").finditer(text, opening.end()))
    if not closings:
        # An unclosed answer runs to the end: anything after the tag may be the answer's own text.
        return text[opening.end() :].strip(), text[: opening.start()]
    last = closings[-1]
    return text[opening.end() : last.start()].strip(), text[: opening.start()] + text[last.end() :]


def _cut_block(name: str, text: str) -> tuple[str | None, str]:
    opening = _opening(name).search(text)
    if opening is None:
        return None, text
    closing = _closing(name).search(text, opening.end())
    end = closing.start() if closing else len(text)
    after = closing.end() if closing else len(text)
    return text[opening.end() : end].strip(), text[: opening.start()] + text[after:]


def split_blocks(text: str) -> Blocks:
    answer, rest = _cut_answer(text)
    named: dict[str, str] = {}
    for name in BLOCK_NAMES:
        value, rest = _cut_block(name, rest)
        if value is not None:
            named[name] = value
    return Blocks(answer=answer, named=named, instructions=rest.strip())


@dataclass(frozen=True)
class ChatView:
    """What a chat answer is built from."""

    question: str
    context: str


_QUESTION_LINE = re.compile(r"^\s*(?:question|query|q)\s*:\s*(.*)$", re.IGNORECASE)


def chat_view(messages: list[tuple[str, str]]) -> ChatView:
    """Question and context of a chat call, from (role, text) pairs.

    ``<question>`` and ``<context>`` blocks win when present; otherwise the question is the last
    user message (or its ``Question:`` line) and everything else in the prompt is context.
    """
    blocks = split_blocks("\n\n".join(text for _, text in messages))
    if "question" in blocks.named:
        context = blocks.named.get("context", blocks.instructions)
        return ChatView(question=blocks.named["question"], context=context)
    user_indexes = [i for i, (role, _) in enumerate(messages) if role == "user"]
    if not user_indexes:
        return ChatView(question="", context="\n".join(text for _, text in messages))
    last = user_indexes[-1]
    others = [text for i, (_, text) in enumerate(messages) if i != last]
    lines = messages[last][1].splitlines()
    for index, line in enumerate(lines):
        match = _QUESTION_LINE.match(line)
        if match:
            question = " ".join([match.group(1), *lines[index + 1 :]]).strip()
            others.extend(lines[:index])
            return ChatView(question=question, context="\n".join(others))
    return ChatView(question=messages[last][1], context="\n".join(others))
