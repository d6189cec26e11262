"""run.json's audit block: who ran what, where, with which versions and weights; no secrets."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from PIL import Image

from matteflow.pipelines.audit import REDACTED, redact_command
from matteflow.pipelines.remove_background import main
from tests.images import encode


def test_secret_flags_and_url_credentials_are_removed() -> None:
    argv = [
        "--s3_secret_access_key=hunter2",
        "--s3_session_token",
        "tok-123",
        "--manifest",
        "https://bob:pw@shop.example/m.csv?X-Goog-Signature=abc",
        "--set",
        "outputs.kms_key=projects/p/locations/l/keyRings/r/cryptoKeys/k",
        "--api_key=k-1",
    ]
    assert redact_command(argv) == [
        f"--s3_secret_access_key={REDACTED}",
        "--s3_session_token",
        REDACTED,
        "--manifest",
        "https://shop.example/m.csv",
        "--set",
        "outputs.kms_key=projects/p/locations/l/keyRings/r/cryptoKeys/k",  # a key's name
        f"--api_key={REDACTED}",
    ]


def test_run_json_has_an_audit_block(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(encode(Image.new("RGB", (8, 8)), "PNG"))
    (tmp_path / "m.csv").write_text("uri\na.png\n")
    out = tmp_path / "out"
    argv = ["--manifest", str(tmp_path / "m.csv"), "--output", str(out), "--model", "tiny-isnet"]
    assert main([*argv, "--s3_secret_access_key=hunter2"]) == 0
    text = (out / "run.json").read_text()
    assert "hunter2" not in text
    audit = json.loads(text)["audit"]
    assert (audit["host"], audit["pid"]) == (socket.gethostname(), os.getpid())
    assert audit["user"]
    assert audit["command"] == ["matteflow", "run", *argv, f"--s3_secret_access_key={REDACTED}"]
    assert audit["versions"]["matteflow"] and audit["versions"]["torch"].startswith("2.13.0")
    assert "model_sha256" in audit
