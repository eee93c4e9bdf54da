"""How far two judges agree: a judge against its new version (re-judging) or against people."""
