"""Evaluation: everything between a joined request and its Evaluation events.

- ``pipeline.py``: the judge workers (queue, back-pressure, publishing, offsets);
- ``protocol.py``: what an evaluator is (:class:`Evaluator`) and returns (outcomes);
- ``setup.py``: each deployment's evaluators, built from its evaluation section;
- ``kinds/``: one module or package per evaluator kind (builtin, rubric, code, ...);
- ``judge/``: the LLM judge client, circuit breaker, token budget, verdict parser, and
  ``calls.py``, through which every judge call passes (concurrency cap, span, counters);
- ``outcomes.py``: outcomes to Evaluation events.
"""
