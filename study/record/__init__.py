"""Record a study: the results folder (Parquet tables, study.json)."""
