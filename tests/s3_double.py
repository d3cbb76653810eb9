"""An S3 server for the tests: moto's (``pip install "moto[server]"``, in requirements-test.txt) on a free local port,
one bucket holding a folder's files. pyarrow reaches it through the URI's query (``s3_uri``) and the fake
credentials of ``CREDENTIALS``, which a test puts in the environment (a local Ray's workers inherit it)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

BUCKET = "gpen-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
needs_moto = pytest.mark.skipif(importlib.util.find_spec("moto") is None,
                                reason='moto is not installed (pip install "moto[server]"; CI installs it from '
                                       'requirements-test.txt)')


def s3_uri(endpoint: str, key: str) -> str:
    """``s3://BUCKET/key`` served by the moto server at ``endpoint`` (``host:port``)."""
    return f"s3://{BUCKET}/{key}?endpoint_override={endpoint}&scheme=http"


@contextlib.contextmanager
def s3_server(folder: Path, prefix: str) -> Iterator[tuple[str, object]]:
    """A moto S3 server with ``BUCKET`` holding every file under ``folder`` as ``prefix/<relative path>``; yields
    ``(endpoint, boto3 client)``. Needs ``CREDENTIALS`` in the environment."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    client = None
    try:
        host, port = server.get_host_and_port()
        endpoint = f"{host}:{port}"
        client = boto3.client("s3", endpoint_url=f"http://{endpoint}")
        client.create_bucket(Bucket=BUCKET)
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                client.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(folder).as_posix()}",
                                  Body=path.read_bytes())
        yield endpoint, client
    finally:
        # moto keeps its buckets in the process, not in the server: empty them so the next server starts bare
        if client is not None:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
                for item in page.get("Contents", []):
                    client.delete_object(Bucket=BUCKET, Key=item["Key"])
            client.delete_bucket(Bucket=BUCKET)
        server.stop()
