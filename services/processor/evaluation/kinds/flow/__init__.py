"""``kind: flow``: prompt flow evaluation flows run per judged request (evaluator.py); their
inputs bound from the request (binding.py), their outputs read as scores (outputs.py)."""

from services.processor.evaluation.kinds.flow.evaluator import (
    AGGREGATION_REASON,
    KIND,
    FlowEvaluator,
    build_flow_evaluator,
)

__all__ = ["AGGREGATION_REASON", "KIND", "FlowEvaluator", "build_flow_evaluator"]
