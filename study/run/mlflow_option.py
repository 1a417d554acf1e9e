"""`--mlflow [URI]`: log every trial to MLflow through Ray Tune's own MLflowLoggerCallback.

    python -m study.sweep search_spaces/demo.yaml --mlflow              # ./mlruns, a file store
    python -m study.sweep search_spaces/demo.yaml --mlflow sqlite:///mlflow.db
    python -m study.sweep search_spaces/demo.yaml --mlflow http://mlflow.lab:5000

One MLflow run per trial in the experiment named after the study: the trial's config as params,
every reported metric per epoch (step = the epoch), tags `study` and `trial_name`. MLflow is an
optional extra (`pip install -e '.[mlflow]'`); `require_mlflow` checks it before Ray starts.
"""

from __future__ import annotations

import os
from pathlib import Path

from retina.errors import RetinaError

DEFAULT_URI = "./mlruns"
INSTALL = "pip install -e '.[mlflow]' (or pip install mlflow-skinny)"
# MLflow 3 refuses a file store unless this is set; a local folder is what --mlflow asks for.
FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"


def require_mlflow() -> None:
    """Fail in a second, before Ray starts, with how to install it."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise RetinaError(f"--mlflow needs MLflow, which is not installed; {INSTALL}") from None


def tracking_uri(value: str) -> str:
    """A URI as given (`sqlite:`, `http:`, `file:` ...), or a folder path as an absolute file URI."""
    if "://" in value or value.startswith("file:"):
        return value
    return Path(value).expanduser().resolve().as_uri()


def mlflow_callback(uri: str, study_name: str):
    """Ray Tune's MLflowLoggerCallback for the study (one run per trial, metrics per epoch)."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    if uri.startswith("file:"):
        os.environ.setdefault(FILE_STORE_ENV, "true")
    return MLflowLoggerCallback(
        tracking_uri=uri, experiment_name=study_name, tags={"study": study_name}
    )
