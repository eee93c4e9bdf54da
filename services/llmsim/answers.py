"""Simulated chat answers: built from the prompt's own words, and degraded on purpose by drift.

A good answer restates the question's key terms and quotes the context sentences that share
words with the question, so a judge (llmsim's or a real one) finds it relevant and grounded.
A numbered fact ("[2] Shipping takes ...") is quoted with its number as a citation at the end,
and material a prompt appends to the question under a label line ("Facts:") counts as context.
Drift swaps words for off-topic ones from a fixed vocabulary and, at high levels, breaks the
sentences' fluency; the off-topic vocabulary doubles as the marker llmsim's judge recognises.
"""

from __future__ import annotations

import re
import zlib

from services.llmsim import tokens
from services.llmsim.prompt import ChatView

LEAD_TERMS = 6
_WORD = re.compile(r"[A-Za-z0-9]+")

# Words no sensible answer about a business topic would use: drift swaps them in, and llmsim's
# judge counts them (unless the question or context uses them too) as a sign of drift.
OFF_TOPIC_WORDS = (
    "penguin",
    "carrot",
    "volcano",
    "harbour",
    "origami",
    "marathon",
    "lighthouse",
    "bakery",
    "saxophone",
    "glacier",
    "pelican",
    "trombone",
    "meadow",
    "pumpkin",
    "lantern",
    "walrus",
    "tangerine",
    "accordion",
    "canyon",
    "hedgehog",
    "paprika",
    "kayak",
    "zeppelin",
    "cactus",
)
OFF_TOPIC_VOCABULARY = frozenset(OFF_TOPIC_WORDS)

_TEMPLATES = (
    "{a} is the key point here.",
    "Looking at {a}, it connects directly to {b}.",
    "In practice {a} and {b} go together.",
    "A careful look at {a} shows how it shapes {b}.",
)


def _join_terms(terms: list[str]) -> str:
    if len(terms) == 1:
        return terms[0]
    return ", ".join(terms[:-1]) + " and " + terms[-1]


def _as_sentence(text: str) -> str:
    text = text.strip()
    if text and text[-1] not in ".!?":
        text += "."
    return text[:1].upper() + text[1:]


def _templated(terms: list[str]) -> list[str]:
    if not terms:
        return ["There is no question to answer yet."]
    out = []
    for index, template in enumerate(_TEMPLATES):
        a = terms[index % len(terms)]
        b = terms[(index + 1) % len(terms)]
        out.append(_as_sentence(template.format(a=a, b=b)))
    return out


_CLAUSE_BREAK = re.compile(r":\s+")
# "[2] Shipping takes ..." as a numbered context lists its facts; the marker moves to the end.
_LEADING_CITATION = re.compile(r"^\s*(\[\d{1,3}\])\s*(.+)$", re.DOTALL)
# A line like "Facts:" or "Context:" alone: what follows it in a user message is material, not
# question ("{{question}}\n\nFacts:\n{{context}}" prompts).
_MATERIAL_LABEL = re.compile(
    r"^\s*#*\s*(?:facts|context|sources|documents|passages|references|background|information)"
    r"\s*:\s*$",
    re.IGNORECASE,
)


def _separate_material(view: ChatView) -> ChatView:
    """The question without the material a prompt appended to it under a label line."""
    lines = view.question.splitlines()
    for index, line in enumerate(lines):
        if index and _MATERIAL_LABEL.match(line):
            question = "\n".join(lines[:index]).strip()
            if question:
                material = "\n".join(lines[index + 1 :])
                return ChatView(question=question, context=f"{material}\n{view.context}".strip())
    return view


def _cited(sentence: str) -> str:
    """A quoted fact with its list number as a citation at the end: "Shipping ... days [1]."."""
    match = _LEADING_CITATION.match(sentence)
    if not match:
        return _as_sentence(sentence)
    marker, text = match.groups()
    text = text.strip().rstrip(".!?")
    return _as_sentence(f"{text} {marker}")


def _relevant_context(context: str, question_terms: set[str]) -> list[str]:
    ranked = []
    # Split at colons too, so "Context: Refunds are ..." quotes the sentence without its label.
    clauses = [c for s in tokens.sentences(context) for c in _CLAUSE_BREAK.split(s) if c.strip()]
    for position, sentence in enumerate(clauses):
        overlap = len(question_terms.intersection(tokens.content_words(sentence)))
        if overlap:
            ranked.append((-overlap, position, sentence))
    ranked.sort()
    return [_cited(sentence) for _, _, sentence in ranked]


def compose_answer(view: ChatView, target_tokens: int) -> str:
    """A deterministic answer of about ``target_tokens`` tokens (never more) built from the prompt."""
    view = _separate_material(view)
    terms = tokens.unique_in_order(tokens.content_words(view.question))
    body = _relevant_context(view.context, set(terms)) or _templated(terms)
    lead = f"About {_join_terms(terms[:LEAD_TERMS])}: " if terms else ""
    chosen = lead + body[0]
    used = tokens.count_tokens(chosen)
    for sentence in body[1:]:
        cost = tokens.count_tokens(sentence)
        if used + cost > target_tokens:
            break
        chosen += " " + sentence
        used += cost
    text, _ = tokens.truncate(chosen, target_tokens)
    return text


def _fraction(key: str, salt: str, index: int) -> float:
    """A stable pseudo-random number in [0, 1) for one position of one answer."""
    return zlib.crc32(f"{key}\x00{salt}\x00{index}".encode()) / 2**32


def _disfluent(sentence: str) -> str:
    # Doubled words and a missing full stop are what fluency judges catch first.
    words = sentence.rstrip(".!?").split()
    if len(words) > 2:
        words.insert(2, words[1])
    return " ".join(words).lower()


def degrade(answer: str, level: float, key: str) -> str:
    """``answer`` made worse in proportion to ``level`` (0..1); same inputs, same output.

    Each meaningful word is swapped for an off-topic one with probability ``level``, so relevance
    and groundedness fall gradually; from level 0.5 on, sentences also lose their fluency (with
    probability ``2 * level - 1``), because real drift wanders off-topic before grammar breaks.
    ``key`` (usually the question) makes the choice differ between questions, repeatably.
    """
    if level <= 0:
        return answer
    position = 0

    def swap(match: re.Match[str]) -> str:
        nonlocal position
        word = match.group(0)
        position += 1
        if len(word) < 3 or word.lower() in tokens.STOPWORDS:
            return word
        if _fraction(key, "word", position) >= level:
            return word
        pick = OFF_TOPIC_WORDS[zlib.crc32(f"{key}{position}".encode()) % len(OFF_TOPIC_WORDS)]
        return pick.capitalize() if word[0].isupper() else pick

    swapped = _WORD.sub(swap, answer)
    broken_share = max(0.0, 2 * level - 1)
    if broken_share == 0:
        return swapped
    parts = tokens.sentences(swapped) or [swapped]
    return " ".join(
        _disfluent(s) if _fraction(key, "sentence", i) < broken_share else s
        for i, s in enumerate(parts)
    )
