"""Job callbacks: a JSON body POSTed to the job's callback URL, signed with
MATTEFLOW_WEBHOOK_SECRET (`X-Matteflow-Signature: sha256=<hex HMAC-SHA256 of the body>`) and
retried with exponential backoff until the receiver answers 2xx."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit

from matteflow.transforms.sources import public_address

__all__ = ["SECRET_ENV", "check_callback", "deliver", "signature"]

SECRET_ENV = "MATTEFLOW_WEBHOOK_SECRET"
_LOG = logging.getLogger(__name__)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a new address to post to (it could point anywhere)."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def signature(body: bytes, secret: str) -> str:
    """The X-Matteflow-Signature value of body: "sha256=" and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_callback(url: str, allow_private: bool) -> None:
    """Raise ValueError unless url is http(s) to a public address (or any, if allow_private)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"callback_url {url!r}: expected an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        public_address(url, parts.hostname, port, allow_private)
    except Exception as err:
        raise ValueError(f"callback_url: {err}") from None


def deliver(
    url: str,
    body: bytes,
    secret: str,
    *,
    attempts: int = 6,
    first_delay_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """POST body to url with its signature; retry a failed delivery (no answer, 429, 5xx)
    after 1, 2, 4... seconds. Returns whether the receiver took it (2xx)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "matteflow-webhook",
        "X-Matteflow-Signature": signature(body, secret),
    }
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=10) as response:
                if 200 <= response.status < 300:
                    return True
                status = response.status
        except urllib.error.HTTPError as err:
            status = err.code
            if status < 500 and status != 429:  # the receiver refuses it: retrying won't help
                _LOG.warning("webhook %s refused: HTTP %d", url, status)
                return False
        except OSError as err:
            status = 0
            _LOG.warning("webhook %s: %s", url, err)
        if attempt + 1 < attempts:
            delay = first_delay_s * 2**attempt
            _LOG.warning("webhook %s: HTTP %s; retrying in %.0fs", url, status or "-", delay)
            sleep(delay)
    return False
