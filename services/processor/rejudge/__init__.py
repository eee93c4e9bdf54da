"""Re-judging past traffic, the processor's side (docs/evaluation.md, "Re-judge")."""
