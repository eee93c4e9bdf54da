"""Evaluators: the judge rubrics and prompts, the per-request evaluation plan, and the verdict parser."""
