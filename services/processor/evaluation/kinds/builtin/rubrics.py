"""The judge rubrics: what each metric means and what each score from 1 to 5 stands for.

Written for PromptPulse after studying the rubrics azure-ai-evaluation uses for the same five
metrics (a 1-5 integer scale with an anchor per score), so scores read the same way to people
coming from prompt flow's monitoring. Changing the wording of a rubric changes what its scores
mean: bump its version (shared.deployments.base.BUILTIN_PROMPT_VERSIONS, the built-in
evaluator's version), since every stored score records the version it was produced under.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.deployments.base import BUILTIN_PROMPT_VERSIONS


@dataclass(frozen=True)
class Rubric:
    metric: str
    version: str
    title: str
    definition: str
    # What the judge looks at, in the order it should look (a short checklist, not a script).
    checks: tuple[str, ...]
    # anchors[score - 1] = (label, description) for scores 1..5.
    anchors: tuple[tuple[str, str], ...]

    def label(self, score: int) -> str:
        return self.anchors[score - 1][0]


GROUNDEDNESS = Rubric(
    metric="groundedness",
    version=BUILTIN_PROMPT_VERSIONS["groundedness"],
    title="Groundedness",
    definition=(
        "How far every claim of the answer is supported by the context it was given. The context "
        "is the only source of truth: a claim that is true in the world but absent from the "
        "context is unsupported, and so is a conclusion the context does not state."
    ),
    checks=(
        "List the factual claims the answer makes.",
        "For each claim, find the part of the context that states it; inferences, "
        "generalisations and added detail count as unsupported.",
        "Weigh how central the unsupported or contradicted claims are to the answer.",
    ),
    anchors=(
        ("ungrounded", "The answer has nothing to do with the context, or contradicts it on the point asked."),
        ("mostly unsupported", "The answer tries to respond, but its main claims are missing from the context or misstate it."),
        ("partly supported", "Some main claims are supported and others are not; a reader could not trust it without checking."),
        ("supported, minor gaps", "Every main claim is in the context; a minor detail is unsupported or slightly imprecise."),
        ("fully supported", "Every claim is stated by the context, and nothing is added beyond it."),
    ),
)

RELEVANCE = Rubric(
    metric="relevance",
    version=BUILTIN_PROMPT_VERSIONS["relevance"],
    title="Relevance",
    definition=(
        "How well the answer addresses what the question actually asks: whether it responds to "
        "the question at all, covers its essential parts, and stays on it."
    ),
    checks=(
        "Work out what the question asks for, including every part of a multi-part question.",
        "Check which of those parts the answer addresses with specific information.",
        "Note vague filler, refusals without reason, and off-topic material.",
    ),
    anchors=(
        ("off-topic", "The answer does not address the question at all."),
        ("related but unhelpful", "The answer touches the topic but gives no specific, usable information (vague words, a non-answer, an error message)."),
        ("partial", "The answer addresses the question but leaves out essential parts of what was asked."),
        ("sufficient", "The answer addresses every essential part of the question; only minor points are missing."),
        ("complete", "The answer addresses the question fully and precisely, with context that helps the asker use it."),
    ),
)

COHERENCE = Rubric(
    metric="coherence",
    version=BUILTIN_PROMPT_VERSIONS["coherence"],
    title="Coherence",
    definition=(
        "How logically the answer is organised as a response to the question: whether its ideas "
        "follow from one another in a sensible order with clear connections, so a reader can "
        "follow the train of thought."
    ),
    checks=(
        "Read the answer as a reply to the question and follow its line of reasoning.",
        "Look for jumps, contradictions, ideas out of order and sentences that do not connect.",
    ),
    anchors=(
        ("incoherent", "Disconnected words or phrases; no line of thought can be followed."),
        ("fragmented", "Some relevant pieces, but without structure; the reader must guess how they relate."),
        ("partly coherent", "The main idea comes through, but the order or the links between ideas are unclear in places."),
        ("coherent", "Ideas are in a logical order with clear links; easy to follow."),
        ("highly coherent", "Tightly organised and seamless; every sentence builds on the previous one."),
    ),
)

FLUENCY = Rubric(
    metric="fluency",
    version=BUILTIN_PROMPT_VERSIONS["fluency"],
    title="Fluency",
    definition=(
        "The quality of the answer's language on its own: grammar, word choice, sentence "
        "construction and readability. Whether the content is correct or relevant does not count."
    ),
    checks=(
        "Look for grammatical errors, broken or run-on sentences, and repeated or misused words.",
        "Judge how easily the text reads as a whole.",
    ),
    anchors=(
        ("barely readable", "Pervasive errors and fragments; the text is hard to understand."),
        ("basic", "Simple ideas come across, but errors and awkward phrasing are frequent."),
        ("competent", "Clear, with occasional errors; sentences are correct but plain."),
        ("proficient", "Well written with good control and varied sentences; rare minor slips."),
        ("polished", "Flawless, precise and natural to read."),
    ),
)

SIMILARITY = Rubric(
    metric="similarity",
    version=BUILTIN_PROMPT_VERSIONS["similarity"],
    title="Similarity",
    definition=(
        "How closely the answer matches the reference answer (the ground truth) in meaning, as an "
        "answer to the question. Wording may differ freely; facts, conclusions and completeness "
        "must match."
    ),
    checks=(
        "List the facts and conclusions of the ground truth that matter for the question.",
        "Check which of them the answer states, and whether it states anything that contradicts them.",
    ),
    anchors=(
        ("different", "The answer shares nothing of substance with the ground truth, or contradicts it."),
        ("mostly different", "A few points match, but the answer misses or contradicts most of the ground truth."),
        ("partly equivalent", "About half of what matters matches; important points are missing or different."),
        ("mostly equivalent", "The substance matches, with a minor omission or difference."),
        ("equivalent", "The answer says the same as the ground truth in substance."),
    ),
)

RUBRICS: dict[str, Rubric] = {
    rubric.metric: rubric for rubric in (GROUNDEDNESS, RELEVANCE, COHERENCE, FLUENCY, SIMILARITY)
}
