from promptflow.core import log_metric, tool


@tool
def average_rating(ratings: list[float]) -> dict:
    """Runs once over a batch run's lines: their mean groundedness, logged as a run metric."""
    mean = round(sum(ratings) / len(ratings), 2) if ratings else 0.0
    log_metric(key="groundedness", value=mean)
    return {"groundedness": mean, "count": len(ratings)}
