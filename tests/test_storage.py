"""`--storage URI`: a bad URI, bucket, credential or endpoint is refused in one line before
anything of the study is written (no Ray, no results folder, nothing in the bucket), against a
real S3-compatible server (moto's, tests/helpers/s3.py) on 127.0.0.1."""

from __future__ import annotations

import pytest

from study.record.storage import Storage, local_copy
from study.sweep import main as sweep_main
from tests.helpers.cli import assert_fails, run_cli, run_here
from tests.helpers.s3 import s3_server


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture
def aws(s3, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3


BAD = {  # case -> (URI, environment changes, words of the one line)
    "unknown bucket": (lambda s3: s3.uri(bucket="missing"), {},
                       ["the bucket missing does not exist", "aws s3 mb s3://missing"]),
    "wrong credentials": (lambda s3: s3.uri(), {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
                          ["the credentials were refused", "AWS_ACCESS_KEY_ID"]),
    "unreachable endpoint": (lambda s3: "s3://studies/runs?endpoint_override=http://127.0.0.1:9",
                             {}, ["cannot be reached", "endpoint_override"]),
    "malformed": (lambda s3: "s3://studies/runs?endpoint=http://x", {},
                  ["Unexpected query parameter", "s3://BUCKET/PREFIX"]),
    "no bucket": (lambda s3: "s3:///runs", {}, ["names no bucket"]),
    "secret in the URI": (lambda s3: f"{s3.uri()}&secret_key=hunter2", {},
                          ["carries credentials", "AWS_SECRET_ACCESS_KEY"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_storage_is_refused_before_anything_is_written(
    case, aws, monkeypatch, tmp_path, synthetic_data, capsys
):
    import ray

    uri, env, words = BAD[case]
    uri = uri(aws)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    results = tmp_path / "results"
    proc = run_here(sweep_main, ["search_spaces/demo.yaml", "--data", synthetic_data,
                                 "--results", results, "--storage", uri], capsys)  # fmt: skip
    assert_fails(proc, "storage s3://", *words)
    assert "hunter2" not in proc.stderr and aws.env["AWS_SECRET_ACCESS_KEY"] not in proc.stderr
    assert not results.exists() and not ray.is_initialized()
    assert [k for k in aws.keys() if not k.endswith("/")] == []  # no object of a study


def test_the_command_names_the_uri_and_the_fix(aws, tmp_path, synthetic_data):
    results = tmp_path / "results"
    proc = run_cli("study.sweep", "search_spaces/demo.yaml", "--data", str(synthetic_data),
                   "--results", str(results), "--storage", aws.uri(bucket="nope"), timeout=120)  # fmt: skip
    assert_fails(proc, f"storage {aws.uri(bucket='nope')}: the bucket nope does not exist")
    assert not results.exists()


def test_a_good_storage_passes_and_keeps_nothing(aws, tmp_path):
    storage = Storage.resolve(aws.uri("ok"), tmp_path)
    storage.check()
    assert storage.study_path("demo") == f"{aws.bucket}/ok/demo" and not storage.local
    assert [k for k in aws.keys() if not k.endswith("/")] == []  # the probe is gone
    local = Storage.resolve(None, tmp_path / "results")
    assert local.local and local.study_path("demo") == str((tmp_path / "results/demo").resolve())


def test_a_checkpoint_folder_in_the_bucket_is_read_from_a_local_copy_once(aws, tmp_path):
    client = aws.client()
    client.put_object(Bucket=aws.bucket, Key="runs/demo/tune/t/checkpoint_000001/checkpoint.pt",
                      Body=b"weights")  # fmt: skip
    storage = Storage.resolve(aws.uri(), tmp_path)
    path = storage.study_path("demo") + "/tune/t/checkpoint_000001"
    local = local_copy(storage.fs, path)
    assert (local / "checkpoint.pt").read_bytes() == b"weights"
    client.delete_object(Bucket=aws.bucket, Key="runs/demo/tune/t/checkpoint_000001/checkpoint.pt")
    assert local_copy(storage.fs, path) == local  # downloaded once per process


def test_the_results_folder_is_mirrored_and_restored_with_its_journal_by_segments(aws, tmp_path):
    from study.record.mirror import mirror_for

    folder = tmp_path / "here" / "demo"
    (folder / "predictions").mkdir(parents=True)
    (folder / "tune" / "t").mkdir(parents=True)
    (folder / "study.json").write_text("{}")
    (folder / "predictions" / "a.parquet").write_bytes(b"rows")
    (folder / "tune" / "t" / "ray.json").write_text("Ray's own: not mirrored")
    (folder / ".driver.lock").write_text("not mirrored")
    journal = folder / "journal.jsonl"
    journal.write_text('{"n": 1}\n{"n": 2}\n{"n": 3')  # a last line cut short: not yet
    mirror = mirror_for(folder, aws.uri("mirror"))
    assert not mirror.holds_study()
    assert mirror.push() > 0 and mirror.holds_study()
    with journal.open("a") as fh:
        fh.write('}\n{"n": 4}\n')
    assert mirror.push_journal() == len('{"n": 3}\n{"n": 4}\n')
    assert mirror.push() == 0  # nothing changed since
    keys = aws.keys("mirror/demo/")
    assert len([k for k in keys if "/journal.d/" in k]) == 2
    assert not [k for k in keys if "/tune/" in k or "driver" in k]

    again = mirror_for(tmp_path / "elsewhere" / "demo", aws.uri("mirror"))
    files, size = again.restore()
    restored = tmp_path / "elsewhere" / "demo"
    assert (restored / "journal.jsonl").read_text() == journal.read_text()
    assert (restored / "predictions" / "a.parquet").read_bytes() == b"rows"
    assert files == 3 and size == journal.stat().st_size + 2 + 4
    assert not (restored / "tune").exists() and not (restored / ".driver.lock").exists()
    with (restored / "journal.jsonl").open("a") as fh:
        fh.write('{"n": 5}\n')
    again.push_journal()  # goes on after the restored segments, never repeats them
    third = mirror_for(tmp_path / "third" / "demo", aws.uri("mirror"))
    third.restore()
    lines = (tmp_path / "third" / "demo" / "journal.jsonl").read_text().splitlines()
    assert lines == [f'{{"n": {n}}}' for n in range(1, 6)]


def test_the_cache_is_published_once_and_fetched_once_per_node_verified(aws, tmp_path):
    import json
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from retina.cache import ImageCache
    from retina.errors import RetinaError
    from study.record.published_cache import fetch, publish

    built = tmp_path / "driver-cache" / "0123456789abcdef-32px-none-v1"
    built.mkdir(parents=True)
    np.save(built / "images.npy", np.arange(3 * 3 * 32 * 32, dtype=np.uint8).reshape(3, 3, 32, 32))
    (built / "meta.json").write_text(json.dumps({"n": 3}))
    storage = Storage.resolve(aws.uri("cachetest"), tmp_path)
    cache = ImageCache(built / "images.npy", {"n": 3})
    sent = publish(storage, cache)
    assert sent > (built / "images.npy").stat().st_size and publish(storage, cache) == 0

    node = tmp_path / "node-cache" / built.name  # a node that has never seen it
    with ThreadPoolExecutor(4) as pool:  # four trials start on the node at once
        got = list(pool.map(lambda _: fetch(storage, node), range(4)))
    assert sorted(got) == [0, 0, 0, sent]  # one download, the others found it in place
    assert (node / "images.npy").read_bytes() == (built / "images.npy").read_bytes()
    assert (node / "meta.json").exists() and not list(node.parent.glob(".*fetching"))
    assert fetch(storage, node) == 0  # a node that has it downloads nothing

    client, key = aws.client(), f"cachetest/caches/{built.name}/images.npy"
    client.put_object(Bucket=aws.bucket, Key=key, Body=b"damaged")
    with pytest.raises(RetinaError, match="is damaged"):
        fetch(storage, tmp_path / "other-node" / built.name)
    assert not (tmp_path / "other-node" / built.name).exists()
    with pytest.raises(RetinaError, match="neither on this node"):
        fetch(storage, tmp_path / "other-node" / "ffffffffffffffff-32px-none-v1")


def test_a_second_machine_resuming_the_study_from_the_bucket_is_refused(aws, tmp_path):
    import json
    import socket
    import time

    from retina.errors import RetinaError
    from study.record.mirror import LEASE_S, StorageLease, mirror_for

    first = mirror_for(tmp_path / "a" / "demo", aws.uri("leases"))
    second = mirror_for(tmp_path / "b" / "demo", aws.uri("leases"))
    running = StorageLease(first, {"host": "node-a", "pid": 11, "since": time.time()})
    running.acquire()
    with pytest.raises(RetinaError, match="another driver \\(host node-a, PID 11, since 2"):
        StorageLease(second, {"host": "node-b", "pid": 22, "since": time.time()}).acquire()
    running.release()  # ended: the next one takes it
    taker = StorageLease(second, {"host": "node-b", "pid": 22, "since": time.time()})
    taker.acquire()
    taker._stop.set()  # killed: its lease is never renewed again
    stale = {"host": "node-b", "pid": 22, "since": 0, "renewed": time.time() - LEASE_S - 1}
    aws.client().put_object(Bucket=aws.bucket, Key="leases/demo/driver.json",
                            Body=json.dumps(stale).encode())  # fmt: skip
    StorageLease(first, {"host": "node-a", "pid": 33, "since": time.time()}).acquire()
    dead = {"host": socket.gethostname(), "pid": 2**22 + 7, "since": 0, "renewed": time.time()}
    aws.client().put_object(Bucket=aws.bucket, Key="leases/demo/driver.json",
                            Body=json.dumps(dead).encode())  # fmt: skip
    StorageLease(second, {"host": "node-b", "pid": 44, "since": time.time()}).acquire()  # gone
