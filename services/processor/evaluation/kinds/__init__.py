"""Evaluator kinds: each a factory ``(EvaluatorConfig, BuildContext) -> Evaluator``.

``builtin`` is built by setup.py (it groups the built-in metrics for combined calls); every
other kind registers its factory in :data:`KINDS` under the ``kind`` name the deployment file
uses. A kind missing here gives its evaluators CONFIGURATION errors, never a crash.
"""

from __future__ import annotations

from collections.abc import Callable

from services.processor.evaluation.context import BuildContext
from services.processor.evaluation.kinds.code import build_code_evaluator
from services.processor.evaluation.kinds.flex import build_flex_evaluator
from services.processor.evaluation.kinds.flow import build_flow_evaluator
from services.processor.evaluation.kinds.prompty import build_prompty_evaluator
from services.processor.evaluation.kinds.rubric import build_rubric_evaluator
from services.processor.evaluation.protocol import Evaluator
from shared.deployments import EvaluatorConfig

KindFactory = Callable[[EvaluatorConfig, BuildContext], Evaluator]

KINDS: dict[str, KindFactory] = {
    "rubric": build_rubric_evaluator,
    "code": build_code_evaluator,
    "flow": build_flow_evaluator,
    "flex": build_flex_evaluator,
    "prompty": build_prompty_evaluator,
}

__all__ = ["KINDS", "KindFactory"]
