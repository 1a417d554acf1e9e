"""An S3-compatible server on 127.0.0.1 for the storage tests: moto's, started and stopped by
the test, with credentials checked (IAM on), a bucket and a user allowed to use it.

    with s3_server() as s3:     # s3.endpoint, s3.bucket, s3.env (AWS_* of the allowed user)
        uri = s3.uri("runs")   # s3://BUCKET/runs?endpoint_override=http://127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass

REGION = "us-east-1"
_SERVING: list[int] = []  # ports of the servers serving a test now, in this process
POLICY = {"Version": "2012-10-17",
          "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}  # fmt: skip


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str
    env: dict[str, str]  # AWS_* of the allowed user

    def uri(self, prefix: str = "runs", bucket: str | None = None) -> str:
        return f"s3://{bucket or self.bucket}/{prefix}?endpoint_override={self.endpoint}"

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip

    def keys(self, prefix: str = "") -> list[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(bucket: str = "studies"):
    import boto3
    from moto import settings
    from moto.server import ThreadedMotoServer

    port = free_port()
    # Moto keeps one in-memory account for every server of a process: each its own names.
    bucket, user = f"{bucket}-{port}", f"study-{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    root = {"aws_access_key_id": "root", "aws_secret_access_key": "root"}
    # Moto's auth switch is one global for every server in this process: open while a
    # server is set up (without credentials), checked while any server serves a test.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, **root)
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(POLICY))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **root).create_bucket(
            Bucket=bucket
        )
        env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": REGION}  # fmt: skip
        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request is checked
        _SERVING.append(port)
        try:
            yield S3(endpoint, bucket, env)
        finally:
            _SERVING.remove(port)
    finally:
        if not _SERVING:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")  # moto's default
        else:
            settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        server.stop()
