"""Stage 5, ProX: per-document programs written by a heuristic or a language model, parsed
by a real parser and run by a small interpreter (never executed as code)."""
