"""Judge mode: recognise an evaluation prompt and score the judged answer deterministically.

The score is a function of the judged text alone (its overlap with the question, context and
ground truth, its fluency, and how much of it is llmsim's own off-topic drift vocabulary), so a
worse answer really scores lower, and the same answer always gets the same score. The judge is
never drifted. The prompt convention is in docs/llmsim.md.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from services.llmsim import tokens
from services.llmsim.answers import OFF_TOPIC_VOCABULARY
from services.llmsim.prompt import split_blocks

METRIC_KEYWORDS = {
    "groundedness": ("groundedness", "grounded"),
    "relevance": ("relevance", "relevant"),
    "coherence": ("coherence", "coherent"),
    "fluency": ("fluency", "fluent"),
    "similarity": ("similarity", "similar"),
}
OVERALL = "overall"
# A long question is not expected to be restated whole; covering this many of its terms is enough.
RELEVANCE_TERMS = 6
UNPARSEABLE_VERDICT = "I would rather not put a number on this answer."

_ASKS_FOR_SCORE = re.compile(r"\bscor(?:e|es|ed|ing)\b|\brat(?:e|ing)\b", re.IGNORECASE)
_DOUBLED_WORD = re.compile(r"\b(\w+)\s+\1\b", re.IGNORECASE)


@dataclass(frozen=True)
class JudgeRequest:
    metric: str
    answer: str
    question: str
    context: str
    ground_truth: str
    # The scale a rubric asks for (`<scale>` block, docs/llmsim.md); "" for 1-5.
    scale: str = ""


@dataclass(frozen=True)
class Verdict:
    score: int
    reason: str
    # The judged quality from 0 to 1 that `score` rounds onto 1-5; placed on a rubric's scale.
    ratio: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"score": self.score, "reason": self.reason})

    def on_scale(self, scale: str) -> str:
        """The verdict on a rubric's scale: ``integer A-B``, ``float 0-1`` or
        ``labels name=number, ...`` (the label whose number is nearest the quality); 1-5 when
        the scale is empty or unreadable."""
        kind, _, spec = scale.strip().partition(" ")
        integer = re.fullmatch(r"\s*(-?\d+)\s*-\s*(-?\d+)\s*", spec)
        if kind == "integer" and integer:
            low, high = int(integer.group(1)), int(integer.group(2))
            return json.dumps({"score": low + math.floor(self.ratio * (high - low) + 0.5), "reason": self.reason})
        if kind == "float":
            return json.dumps({"score": round(self.ratio, 2), "reason": self.reason})
        if kind == "labels":
            labels = []
            for item in spec.split(","):
                name, _, number = item.strip().rpartition("=")
                try:
                    labels.append((name.strip(), float(number)))
                except ValueError:
                    continue
            if labels:
                bottom, top = min(n for _, n in labels), max(n for _, n in labels)
                target = bottom + self.ratio * (top - bottom)
                name = min(labels, key=lambda label: abs(label[1] - target))[0]
                return json.dumps({"label": name, "reason": self.reason})
        return self.to_json()


def _metric_of(named: dict[str, str], instructions: str) -> str:
    explicit = named.get("metric", "").strip().lower()
    if explicit:
        return explicit if explicit in METRIC_KEYWORDS else OVERALL
    lowered = instructions.lower()
    first: tuple[int, str] | None = None
    for metric, keywords in METRIC_KEYWORDS.items():
        for keyword in keywords:
            at = lowered.find(keyword)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, metric)
    return first[1] if first else OVERALL


def read_judge_request(
    prompt_text: str, *, wants_json: bool, forced: bool = False
) -> JudgeRequest | None:
    """The judge request in ``prompt_text``, or None when it is not an evaluation prompt.

    An evaluation prompt has an ``<answer>`` block and asks for a score (the word score or rating
    outside the blocks, or a JSON response format). ``forced`` skips that test.
    """
    blocks = split_blocks(prompt_text)
    if not forced:
        if blocks.answer is None:
            return None
        if not (wants_json or _ASKS_FOR_SCORE.search(blocks.instructions)):
            return None
    return JudgeRequest(
        metric=_metric_of(blocks.named, blocks.instructions),
        answer=blocks.answer or "",
        question=blocks.named.get("question", ""),
        context=blocks.named.get("context", ""),
        ground_truth=blocks.named.get("ground_truth", ""),
        scale=blocks.named.get("scale", ""),
    )


def _scale(ratio: float) -> int:
    return max(1, min(5, 1 + math.floor(4 * ratio + 0.5)))


def _relevance(answer: list[str], question: set[str]) -> tuple[float, str]:
    if not question:
        return 0.5, "there is no question to compare the answer with"
    covered = len(question.intersection(answer))
    wanted = min(len(question), RELEVANCE_TERMS)
    return min(
        1.0, covered / wanted
    ), f"the answer covers {covered} of {len(question)} key terms of the question"


def _groundedness(answer: list[str], context: set[str], question: set[str]) -> tuple[float, str]:
    # Restating the question's own terms ("About refunds: ...") claims nothing the context must
    # support, so they count as supported; a grounding judge penalises unsupported claims only.
    source, name = (context | question, "context or the question") if context else (question, "question")
    supported = sum(1 for word in answer if word in source)
    return supported / len(
        answer
    ), f"{supported} of {len(answer)} answer terms appear in the {name}"


def _similarity(answer: list[str], truth: set[str]) -> tuple[float, str]:
    if not truth:
        return 0.5, "there is no ground truth to compare with"
    common = len(truth.intersection(answer))
    if not common:
        return 0.0, "the answer shares no key terms with the ground truth"
    precision, recall = common / len(set(answer)), common / len(truth)
    return 2 * precision * recall / (
        precision + recall
    ), f"{common} key terms shared with the ground truth"


def _fluency(text: str) -> tuple[float, str]:
    parts = tokens.sentences(text)
    broken = sum(
        1 for s in parts if _DOUBLED_WORD.search(s) or not s[0].isupper() or s[-1] not in ".!?:"
    )
    return 1 - broken / len(parts), f"{broken} of {len(parts)} sentences are broken"


def judge(request: JudgeRequest) -> Verdict:
    """Score ``request.answer`` from 1 to 5 for ``request.metric``, with a short reason."""
    answer = tokens.content_words(request.answer)
    metric = request.metric
    if not answer:
        return Verdict(1, f"{metric}: the answer is empty", 0.0)
    question = set(tokens.content_words(request.question))
    context = set(tokens.content_words(request.context))
    truth = set(tokens.content_words(request.ground_truth))
    known = question | context | truth
    off_topic = sum(1 for w in answer if w in OFF_TOPIC_VOCABULARY and w not in known) / len(answer)
    if metric == "relevance":
        ratio, finding = _relevance(answer, question)
    elif metric == "groundedness":
        ratio, finding = _groundedness(answer, context, question)
    elif metric == "similarity":
        ratio, finding = _similarity(answer, truth or context)
    elif metric == "fluency":
        ratio, finding = _fluency(request.answer)
        off_topic = 0.0  # fluent nonsense is still fluent
    elif metric == "coherence":
        ratio, finding = _fluency(request.answer)
    else:
        relevance, _ = _relevance(answer, question)
        grounded, _ = _groundedness(answer, context, question)
        fluency, _ = _fluency(request.answer)
        ratio = (relevance + grounded + fluency) / 3
        finding = f"relevance {relevance:.2f}, groundedness {grounded:.2f}, fluency {fluency:.2f}"
    ratio *= 1 - off_topic / 2
    reason = f"{metric}: {finding}"
    if off_topic >= 0.2:
        reason += "; much of the answer is off-topic"
    return Verdict(_scale(ratio), reason, ratio)


def render(verdict: Verdict, request: JudgeRequest, *, echo: bool) -> str:
    """The judge's reply text: the JSON verdict, after the judged answer when ``echo`` is on."""
    text = verdict.on_scale(request.scale) if request.scale else verdict.to_json()
    if echo:
        return f"{request.answer}\n\n{text}"
    return text
