"""Fixtures for the bucket tests: a GCS emulator and moto on 127.0.0.1 for this package, the
environment that points every client at them, a fresh bucket per test, and fault proxies.

The servers and the environment live as long as this package's tests (scope "package"), so
tests in other folders, before or after, never see them (../shared/ENVIRONMENT.md, "Storage
emulators on 127.0.0.1", gotchas 4-7 and 15, appendices A and C).
"""

from __future__ import annotations

import gc
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import boto3
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud.storage import Client as GcsClient

from tests.storage.servers import HOST, FaultProxy, Server, free_port, start_server

__all__ = ["Bucket", "GcsBucket", "S3Bucket", "beam_s3_flags"]

REGION = "us-east-1"
KEY_ID = SECRET = "testing"
PROJECT = "matteflow-test"
# Authorized-user ADC with a far-future token: nothing looks for credentials on the network.
FAKE_ADC = {
    "type": "authorized_user",
    "client_id": "test",
    "client_secret": "test",
    "refresh_token": "test",
    "token": "fake-token-for-emulator",
    "expiry": "2099-01-01T00:00:00Z",
    "quota_project_id": PROJECT,
}


# google-cloud-storage 3.17.1 (_media/requests/download.py) retries a failed media download
# without closing the streamed response, so every injected failure of a download leaves a
# socket for the garbage collector: a ResourceWarning, an error under this project's settings.
_GCS_RETRY_LEAK = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that read through `gcs_proxy` tolerate the client's leak above (and only it)."""
    for item in items:
        if "gcs_proxy" in getattr(item, "fixturenames", ()):
            item.add_marker(_GCS_RETRY_LEAK)


def beam_s3_flags(endpoint: str) -> list[str]:
    """Beam pipeline flags for s3:// against the S3 server (or proxy) at endpoint."""
    return [
        f"--s3_endpoint_url={endpoint}",
        f"--s3_access_key_id={KEY_ID}",
        f"--s3_secret_access_key={SECRET}",
        f"--s3_region_name={REGION}",
    ]


class Bucket(Protocol):
    """A bucket on one of the local servers, read and written directly (never via a proxy)."""

    scheme: str
    name: str

    def uri(self, key: str = "") -> str:
        """`{scheme}://{name}/{key}`."""
        ...

    def put(self, key: str, data: bytes) -> str:
        """Store data under key; returns its URI."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes stored under key (raises the client's not-found error)."""
        ...

    def keys(self) -> list[str]:
        """Every object key in the bucket, sorted."""
        ...


class GcsBucket:
    """A new bucket on the GCS emulator, through google-cloud-storage."""

    scheme = "gs"

    def __init__(self, client: GcsClient, name: str) -> None:
        self.name = name
        self.bucket = client.create_bucket(name)

    def uri(self, key: str = "") -> str:
        return f"gs://{self.name}/{key}"

    def put(self, key: str, data: bytes) -> str:
        self.bucket.blob(key).upload_from_string(data)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        return bytes(self.bucket.blob(key).download_as_bytes())

    def keys(self) -> list[str]:
        return sorted(blob.name for blob in self.bucket.list_blobs())


class S3Bucket:
    """A new bucket on moto, through boto3 (`client` is the boto3 S3 client)."""

    scheme = "s3"

    def __init__(self, client: Any, name: str) -> None:
        self.name = name
        self.client = client
        client.create_bucket(Bucket=name)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}"

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.name, Key=key)["Body"].read())

    def keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _bucket_name() -> str:
    return f"mf-{uuid.uuid4().hex[:12]}"  # valid for both: 3-63 lowercase letters, digits, '-'


@pytest.fixture(scope="package")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage-servers")


@pytest.fixture(scope="package")
def gcs_server(server_logs: Path) -> Iterator[Server]:
    """gcp-storage-emulator, in memory, on a free port."""
    port = free_port()
    args = ["start", "--host", HOST, "--port", str(port), "--in-memory"]
    server = start_server("gcp-storage-emulator", args, port, server_logs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def s3_server(server_logs: Path) -> Iterator[Server]:
    """moto_server (S3 and the rest of moto's AWS) on a free port."""
    port = free_port()
    server = start_server("moto_server", ["-H", HOST, "-p", str(port)], port, server_logs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package", autouse=True)
def storage_env(gcs_server: Server, server_logs: Path) -> Iterator[None]:
    """Credentials and endpoints for every client in this package, set before any gs:// or
    s3:// access: google-cloud-storage reads STORAGE_EMULATOR_HOST whenever a client is made
    (Beam makes one per operation), and Beam caches its credentials lookup per process."""
    adc = server_logs / "fake_adc.json"
    adc.write_text(json.dumps(FAKE_ADC))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
        mp.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
        mp.setenv("NO_GCE_CHECK", "true")
        mp.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        mp.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        yield


@pytest.fixture
def s3_flags(s3_server: Server) -> list[str]:
    """Beam flags for s3:// against moto (pass them to main() / PipelineOptions)."""
    return beam_s3_flags(s3_server.url)


@pytest.fixture(autouse=True)
def beam_filesystems(s3_flags: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Beam FileSystems calls made by a test itself use moto for s3://, as run() arranges for
    the job; FileSystems' process-wide options go back to what they were after the test."""
    monkeypatch.setattr(FileSystems, "_pipeline_options", PipelineOptions(s3_flags))


@pytest.fixture(scope="package")
def gcs_client(gcs_server: Server) -> GcsClient:
    return GcsClient(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": gcs_server.url},
    )


@pytest.fixture(scope="package")
def s3_client(s3_server: Server) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_server.url,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


@pytest.fixture
def gcs_bucket(gcs_client: GcsClient) -> GcsBucket:
    """A new, empty bucket on the GCS emulator."""
    return GcsBucket(gcs_client, _bucket_name())


@pytest.fixture
def s3_bucket(s3_client: Any) -> S3Bucket:
    """A new, empty bucket on moto."""
    return S3Bucket(s3_client, _bucket_name())


@pytest.fixture(params=["gs", "s3"])
def bucket(request: pytest.FixtureRequest) -> Bucket:
    """A new, empty bucket, once on the GCS emulator and once on moto."""
    name = "gcs_bucket" if request.param == "gs" else "s3_bucket"
    found: Bucket = request.getfixturevalue(name)
    return found


@pytest.fixture
def gcs_proxy(gcs_server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A FaultProxy (tests.storage.servers) in front of the GCS emulator, for one test.

    Routing: STORAGE_EMULATOR_HOST points at `proxy.url` during the test, so Beam gs:// (main(),
    run(), FileSystems, read_bytes; worker processes inherit it) and every google-cloud-storage
    client made in the test go through the proxy. The bucket fixtures' own client talks to the
    emulator directly: uploads for setup and reads for checks never meet a fault.

    Faults: none at first. `proxy.faults = Faults(every=5, status=503)` makes every 5th
    distinct request (method + path + query, in first-seen order) fail `attempts` (default 1)
    times before it is forwarded; `status=0` drops the connection instead;
    `Faults(deny=(("secret.png", 403),))` answers 403 to every request whose path contains the
    text. `proxy.injected` and `proxy.forwarded` count requests; `proxy.reset()` zeroes them.

    Request this fixture by name (as a test's or fixture's parameter, not getfixturevalue):
    that is how the test gets the warning filter for google-cloud-storage's leak above.
    """
    proxy = FaultProxy(gcs_server.url)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    try:
        yield proxy
    finally:
        proxy.stop()
        gc.collect()  # leaked download sockets go now, while this test's warning filter holds


@pytest.fixture
def s3_proxy(s3_server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A FaultProxy (tests.storage.servers) in front of moto, for one test.

    Routing: Beam FileSystems calls made by the test itself go through the proxy; give a job
    `beam_s3_flags(proxy.url)` instead of the `s3_flags` fixture (Beam takes the S3 endpoint
    from pipeline options, not the environment). The bucket fixtures' own client talks to moto
    directly. Faults and counters: as for `gcs_proxy`.
    """
    proxy = FaultProxy(s3_server.url)
    monkeypatch.setattr(FileSystems, "_pipeline_options", PipelineOptions(beam_s3_flags(proxy.url)))
    try:
        yield proxy
    finally:
        proxy.stop()
