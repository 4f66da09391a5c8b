"""Duplicate removal: exact (content hash) and near-duplicate (MinHash LSH) stages."""
