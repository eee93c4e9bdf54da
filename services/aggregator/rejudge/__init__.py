"""Re-judging past traffic, the aggregator's side: the command outbox, the processor's progress,
and old version against new on the same requests (docs/evaluation.md, "Re-judge")."""
