"""Who ran what: the `audit` block of run.json and the holder record of an output lock.

The command line is kept with its secrets removed: values of flags whose name says secret,
token, password, credential, key or session (`--s3_secret_access_key=...`) become `***`, and
every URL loses its credentials and query string (`failures.redact`).
"""

from __future__ import annotations

import getpass
import os
import platform
import re
import socket
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from matteflow.transforms.failures import redact

__all__ = ["REDACTED", "audit_record", "identity", "redact_command", "versions"]

REDACTED = "***"
# Flag names whose value is a secret. `kms_key` names a key, it is not one, and stays.
_SECRET_FLAG = re.compile(
    r"^--?[\w.-]*(secret|token|password|passwd|credential|access_key|session|api_key|signature)",
    re.IGNORECASE,
)
_PACKAGES = ("matteflow", "apache-beam", "torch", "numpy", "pillow", "pyarrow")


def redact_command(argv: list[str]) -> list[str]:
    """argv with the values of secret-looking flags (`--x_token=v` and `--x_token v`) replaced
    by `***` and every URL's credentials and query string removed."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if _SECRET_FLAG.match(name):
            if eq:
                out.append(f"{name}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(redact(arg))
    return out


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers), no USER variable
        return f"uid {os.getuid()}"


def identity() -> dict[str, Any]:
    """This process: user, host, pid."""
    return {"user": _user(), "host": socket.gethostname(), "pid": os.getpid()}


def versions() -> dict[str, str]:
    """Python's and the main packages' versions."""
    found = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def audit_record(argv: list[str], model_sha256: str | None) -> dict[str, Any]:
    """run.json's `audit` block: who ran it where, the command (`matteflow run` and its
    arguments `argv`, secrets removed), the versions, and the sha256 of the model weights."""
    return {
        **identity(),
        "command": ["matteflow", "run", *redact_command(argv)],
        "versions": versions(),
        "model_sha256": model_sha256,
    }
