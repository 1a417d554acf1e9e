"""Define a study: the typed schema over YAML search spaces, and its Ray Tune translation."""
