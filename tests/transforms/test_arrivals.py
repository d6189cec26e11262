"""ReadArrivals' plain parts: the watched glob's root, and what a bucket notification names."""

from __future__ import annotations

import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage

from matteflow.transforms.arrivals import StreamingSettings, glob_root, notification_uri


@pytest.mark.parametrize(
    ("pattern", "root"),
    [
        ("gs://b/incoming/**/*.jpg", "gs://b/incoming/"),
        ("gs://b/incoming/**.jpg", "gs://b/incoming/"),
        ("photos/shop-?/*.png", "photos/"),
        ("/data/[ab]*.png", "/data/"),
        ("*.png", ""),
    ],
)
def test_glob_root_is_the_folder_before_the_first_wildcard(pattern: str, root: str) -> None:
    assert glob_root(pattern) == root


def _message(**attributes: str) -> PubsubMessage:
    """A notification as Cloud Storage sends it (JSON_API_V1: the object's resource as data)."""
    return PubsubMessage(data=b'{"kind": "storage#object"}', attributes=attributes)


def test_notification_names_finished_uploads_only() -> None:
    finalize = {"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "in/x y.jpg"}
    assert notification_uri(_message(**finalize)) == "gs://b/in/x y.jpg"
    assert notification_uri(_message(**{**finalize, "eventType": "OBJECT_DELETE"})) is None
    archived = {**finalize, "eventType": "OBJECT_ARCHIVE"}
    assert notification_uri(_message(**archived)) is None
    assert notification_uri(_message(eventType="OBJECT_FINALIZE", bucketId="b")) is None
    assert notification_uri(PubsubMessage(data=b"", attributes=None)) is None


@pytest.mark.parametrize("field", ["poll_interval_s", "window_s"])
def test_intervals_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        StreamingSettings(**{field: 0})
