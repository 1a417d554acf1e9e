"""A real sweep with `--storage s3://...` against an S3-compatible server on 127.0.0.1
(moto's, tests/helpers/s3.py): Ray's trial folders, checkpoints and experiment state go to the
bucket, the conclusion reads and deletes checkpoints there, and no file the study wrote, here
or in the bucket, holds the secret key.

One shared sweep (module fixture) for every assert: 2 trials, 2 epochs, export on.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest

from tests.helpers.cli import run_cli
from tests.helpers.processes import sweep_args
from tests.helpers.s3 import s3_server

pytestmark = pytest.mark.slow

SWEEP = ["--set", "num_samples=2", "--set", "space.epochs=2", "--set", "max_concurrent=2",
         "--set", "export=true"]  # fmt: skip


@pytest.fixture(scope="module")
def s3_study(tmp_path_factory, synthetic_data):
    """(results/<study>, the server, the sweep's output) of one sweep stored in the bucket."""
    root = tmp_path_factory.mktemp("s3-sweep")
    home = root / "home"  # Ray writes its token to $HOME/.ray: never the real one
    home.mkdir()
    with s3_server() as s3:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_AUTH"))}
        env |= s3.env | {"HOME": str(home)}
        args = sweep_args(synthetic_data, root / "results", "stored", "--storage", s3.uri())
        proc = run_cli(*args, *SWEEP, env=env, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        yield root / "results" / "stored", s3, proc.stdout + proc.stderr


def test_ray_writes_into_the_bucket_and_the_study_concludes(s3_study):
    folder, s3, output = s3_study
    keys = s3.keys("runs/stored/")
    assert any(k.startswith("runs/stored/tune/experiment_state-") for k in keys)
    assert any("/checkpoint_" in k for k in keys)  # the checkpoints are in the bucket...
    assert not list(folder.glob("tune*/*/checkpoint_*"))  # ...and not on the driver's disk
    trials = pd.read_parquet(folder / "trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "TERMINATED").all()
    assert trials["test_acc"].notna().sum() == 1  # the held-out test read its checkpoint there
    assert (folder / "best" / "model.pt").exists() and (folder / "best" / "card.md").exists()
    # The clean-up deleted the loser's checkpoints in the bucket, as on disk.
    assert "(kept 1 of 2 trials)" in output
    kept = {k.split("/")[3] for k in keys if "/checkpoint_" in k}
    assert len(kept) == 1
    # The driver's own files are mirrored beside Ray's, the journal by segments.
    for name in ("study.json", "trials.parquet", "epochs.parquet", "summary.json",
                 "best/model.pt", "best/card.md"):  # fmt: skip
        assert f"runs/stored/{name}" in keys, name
    assert any(k.startswith("runs/stored/journal.d/") for k in keys)
    assert "storage: results mirrored to" in output


def test_no_file_of_the_study_holds_the_secret(s3_study):
    folder, s3, output = s3_study
    secret = s3.env["AWS_SECRET_ACCESS_KEY"].encode()
    assert secret not in output.encode()
    local = [p for p in folder.rglob("*") if p.is_file()]
    assert local and not [p for p in local if secret in p.read_bytes()]
    client = s3.client()
    stored = s3.keys()
    assert stored
    leaked = [
        k for k in stored if secret in client.get_object(Bucket=s3.bucket, Key=k)["Body"].read()
    ]
    assert not leaked
    assert s3.uri() in (folder / "study.json").read_text()  # the URI is recorded, without it


def test_a_study_whose_driver_and_results_folder_are_lost_resumes_from_the_bucket(
    tmp_path, synthetic_data, monkeypatch
):
    """SIGKILL the driver mid-search, delete results/<study>/ (the machine is gone), then
    `--resume --storage s3://...` restores it from the bucket and finishes: every (trial,
    epoch) exactly once, none journaled before the kill lost."""
    import shutil
    import signal

    from study.record.mirror import mirror_for
    from tests.helpers.processes import journal_epochs, running_sweep

    home = tmp_path / "home"
    home.mkdir()
    with s3_server() as s3:
        for key, value in s3.env.items():
            monkeypatch.setenv(key, value)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        env["HOME"] = str(home)
        results, folder = tmp_path / "results", tmp_path / "results" / "lost"
        args = sweep_args(synthetic_data, results, "lost", "--storage", s3.uri(),
                          "--set", "num_samples=2", "--set", "space.epochs=3",
                          "--set", "max_concurrent=1")  # fmt: skip
        with running_sweep(args, tmp_path / "killed.log", env=env) as sweep:
            sweep.wait_for(lambda: len(journal_epochs(folder)) >= 2, 600, "two epochs journaled")
            sweep.kill()
        assert sweep.driver.returncode == -signal.SIGKILL
        stored = tmp_path / "as-stored" / "lost"  # what the bucket held when the driver died
        mirror_for(stored, s3.uri()).restore()
        journaled = journal_epochs(stored)
        assert len(journaled) >= 2
        shutil.rmtree(results)  # the driver's machine is lost, with its disk

        proc = run_cli(*args, "--resume", env=env, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert f"restored {folder} from {s3.uri()}" in proc.stdout
    epochs = pd.read_parquet(folder / "epochs.parquet")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()  # every epoch exactly once
    trials = pd.read_parquet(folder / "trials.parquet").set_index("trial_id")
    assert len(trials) == 2 and (trials["status"] == "TERMINATED").all(), trials
    assert (trials["epochs_run"] == 3).all() and len(epochs) == 6  # none missing
    final = set(zip(epochs["trial_id"], epochs["epoch"].astype(int), strict=True))
    assert set(journaled) <= final  # nothing the bucket held was lost
