"""Stage 4, quality: heuristic taggers (datatrove's filters), fastText language ID, a
fastText quality classifier, and include/exclude rules with global top-X% thresholds."""
