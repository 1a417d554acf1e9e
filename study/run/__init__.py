"""Run a study: preflight, the Ray Tune driver, the trainable and its driver-side callback."""
