"""Interactive offline report of a study's results: `python -m study.analyze results/demo`."""
