"""Benchmark decontamination: word n-gram overlap (13-grams by default, as GPT-3 and
datatrove) between documents and the evaluation sets a pipeline names.

Flow (tasks.decontam.core): :func:`load_indexes` (before any work: validates every evaluation set, builds or reuses
its n-gram index in storage), then :func:`decontaminate` per shard (plain function over an
Arrow table). See docs/hygiene.md.
"""
