"""Deterministic stand-ins for a tokenizer: a token is a word or one punctuation mark.

Counts only need to be stable and roughly proportional to a real tokenizer's, so token usage
figures downstream move when texts get longer; they are not meant to match tiktoken.
"""

from __future__ import annotations

import re

# Each piece carries the whitespace before it, so joining the pieces gives the text back exactly;
# the trailing `\s+` alternative catches whitespace at the very end.
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

# OpenAI bills a few tokens of framing per chat message and per reply; mimic the shape.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_REPLY = 3

STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me more
    most my no nor not now of off on once only or other our ours out over own same she should so
    some such than that the their theirs them then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you
    your yours many much please answer question context using use based given tell explain describe""".split()
)


def pieces(text: str) -> list[str]:
    """Split ``text`` into stream deltas whose concatenation is ``text``."""
    return _PIECE.findall(text)


def count_tokens(text: str) -> int:
    """Number of tokens in ``text`` (whitespace-only pieces are free)."""
    return sum(1 for piece in _PIECE.findall(text) if not piece.isspace())


def count_prompt_tokens(message_texts: list[str]) -> int:
    """Prompt tokens of a chat request: each message's tokens plus a little framing."""
    return sum(count_tokens(text) + TOKENS_PER_MESSAGE for text in message_texts) + TOKENS_PER_REPLY


def content_words(text: str) -> list[str]:
    """Lower-cased words that carry meaning (no stopwords, at least three characters), in order."""
    words = (w.lower() for w in _WORD.findall(text))
    return [w for w in words if len(w) >= 3 and w not in STOPWORDS]


def unique_in_order(words: list[str]) -> list[str]:
    return list(dict.fromkeys(words))


def sentences(text: str) -> list[str]:
    """Non-empty sentences (split on ., ! and ? followed by space, and on line breaks)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def truncate(text: str, max_tokens: int) -> tuple[str, bool]:
    """``text`` cut to at most ``max_tokens`` tokens, and whether anything was cut."""
    kept: list[str] = []
    used = 0
    for piece in _PIECE.findall(text):
        if not piece.isspace():
            if used == max_tokens:
                return "".join(kept), True
            used += 1
        kept.append(piece)
    return text, False
