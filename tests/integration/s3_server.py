"""An S3-compatible server on loopback for the DVC remote tests: moto's, in a thread of the test process.

:func:`start` serves on 127.0.0.1 at a free port, makes a bucket and an IAM user allowed to use it,
then turns on moto's request signing checks, so that DVC must sign with that user's key: a wrong key
gets S3's refusal, as it would from a real server. moto's state is per process: one server at a time.
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from dataclasses import dataclass

BUCKET = "fdpose-dvc"
POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
REGION = "us-east-1"


@dataclass
class S3Server:
    url: str  # http://127.0.0.1:PORT
    access_key_id: str
    secret_access_key: str
    server: object

    def env(self, secret: str | None = None) -> dict[str, str]:
        """The environment a DVC command reads the credentials from (and nothing else: no ~/.aws)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key if secret is None else secret,
                "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": "/nonexistent/aws-config",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
                # botocore retries a failed connection a few times, with backoff: bounded here
                "AWS_MAX_ATTEMPTS": "2", "AWS_RETRY_MODE": "standard"}

    def stop(self) -> None:
        self.server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _moto_api(url: str, action: str, body: bytes = b"") -> None:
    """Call moto's own API (``/moto-api/reset``, ``/moto-api/reset-auth``)."""
    request = urllib.request.Request(f"{url}/moto-api/{action}", data=body, method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def start() -> S3Server:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        # moto keeps its state and its auth switch per process: start from a clean, open server
        _moto_api(url, "reset-auth", b"inf")
        _moto_api(url, "reset")
        setup = {"endpoint_url": url, "region_name": REGION, "aws_access_key_id": "setup",
                 "aws_secret_access_key": "setup"}
        boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="fdpose-team")
        iam.put_user_policy(UserName="fdpose-team", PolicyName="dvc-remote", PolicyDocument=POLICY)
        key = iam.create_access_key(UserName="fdpose-team")["AccessKey"]
        _moto_api(url, "reset-auth", b"0")  # from now on a request must be signed by a known key
    except BaseException:
        server.stop()
        raise
    return S3Server(url, key["AccessKeyId"], key["SecretAccessKey"], server)
