"""ReadArrivals' plain parts: the watched glob's root, and what a bucket notification names."""

from __future__ import annotations

import pytest

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


def test_notification_names_finished_uploads_only() -> None:
    finalize = {"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "in/x y.jpg"}
    assert notification_uri(finalize) == "gs://b/in/x y.jpg"
    assert notification_uri({**finalize, "eventType": "OBJECT_DELETE"}) is None
    assert notification_uri({**finalize, "eventType": "OBJECT_METADATA_UPDATE"}) is None
    assert notification_uri({"eventType": "OBJECT_FINALIZE", "bucketId": "b"}) is None


@pytest.mark.parametrize("field", ["poll_interval_s", "window_s"])
def test_intervals_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        StreamingSettings(**{field: 0})
