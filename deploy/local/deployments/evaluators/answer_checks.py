"""Code evaluators of the demo deployment (docs/evaluation.md, "Code")."""

# Answers shorter than this say too little to be useful; longer ones bury the answer.
MIN_WORDS = 5
MAX_WORDS = 80


def answer_length(answer: str | None) -> dict:
    """1.0 for an answer of MIN_WORDS to MAX_WORDS words, falling off linearly outside."""
    words = len((answer or "").split())
    if words < MIN_WORDS:
        score = words / MIN_WORDS
    elif words > MAX_WORDS:
        score = max(0.0, 1 - (words - MAX_WORDS) / MAX_WORDS)
    else:
        score = 1.0
    label = "too short" if words < MIN_WORDS else "too long" if words > MAX_WORDS else "ok"
    return {"score": round(score, 3), "label": label, "reason": f"{words} words"}
