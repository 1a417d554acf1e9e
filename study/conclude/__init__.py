"""Conclude a study: what happens after the search (held-out test of the best trials)."""
