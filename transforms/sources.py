"""Which sources a run may read: URI patterns, checked as manifest rows become tasks, and for
http(s) sources the addresses their host resolves to, checked when they are fetched.

By default local paths, gs:// and s3:// are allowed and http(s) is not. A manifest names its
own sources, so without these checks it could make workers read their own files, other
buckets, or internal services (cloud metadata on 169.254.169.254, say).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from matteflow.transforms.failures import BadRow, NotFound, PermanentError

__all__ = ["DEFAULT_POLICY", "LOCAL", "SourcePolicy", "check_source", "public_address"]

LOCAL = "local"  # the pattern that allows every path without a scheme


@dataclass(frozen=True)
class SourcePolicy:
    """The sources a run may read (images, ground truth, per-row background images)."""

    # Patterns on the whole URI, shell-style: `*` spans "/" (gs://photos/* is the bucket);
    # "local" allows any local path, a pattern without a scheme (/data/photos/*) some of them.
    allow: tuple[str, ...] = (LOCAL, "gs://*", "s3://*")
    # http(s) hosts may resolve to loopback, link-local, private or reserved addresses
    allow_private: bool = False


DEFAULT_POLICY = SourcePolicy()


def _refusal(uri: str, why: str) -> BadRow:
    return BadRow(
        f"{uri}: {why}; allowed sources are set by --allow_source", code="source_not_allowed"
    )


def check_source(uri: str, policy: SourcePolicy) -> None:
    """Raise BadRow (manifest/source_not_allowed) unless uri matches an allowed pattern.

    Local paths are matched after resolving "..", "." and symbolic links; URIs with a scheme
    may not hold "." or ".." segments, backslashes or user info (user:password@host).
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        if LOCAL in policy.allow:
            return
        path = os.path.realpath(uri)
        if any("://" not in p and fnmatch.fnmatchcase(path, p) for p in policy.allow):
            return
        raise _refusal(uri, f"local path {path} is not an allowed source")
    segments = rest.split("?", 1)[0].split("/")
    if "\\" in uri or "." in segments or ".." in segments:
        raise _refusal(uri, "a URI with '.' or '..' segments or backslashes is never a source")
    if scheme in ("http", "https") and "@" in urlsplit(uri).netloc:
        raise _refusal(uri, "a URI with user info is never a source")
    if not any("://" in p and fnmatch.fnmatchcase(uri, p) for p in policy.allow):
        raise _refusal(uri, "not an allowed source")


# IPv6 prefixes whose last 32 bits are an IPv4 address the packet reaches (RFC 6052 NAT64,
# well-known and local-use; RFC 6145 IPv4-translated; RFC 4291 IPv4-compatible).
_EMBEDDING_PREFIXES = tuple(
    ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96", "::/96")
)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped, compatible, translated, NAT64,
    6to4 and both ends of Teredo."""
    found = [a for a in (address.ipv4_mapped, address.sixtofour) if a is not None]
    if address.teredo is not None:
        found += address.teredo
    if any(address in prefix for prefix in _EMBEDDING_PREFIXES):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Global unicast, and so is every IPv4 address it embeds (::127.0.0.1, 64:ff9b::7f00:1,
    2002:7f00:1:: and ::ffff:127.0.0.1 all reach 127.0.0.1; issue 17)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if address.ipv4_mapped is not None:  # ::ffff:8.8.8.8 is 8.8.8.8
            return _public(address.ipv4_mapped)
        if not all(_public(a) for a in embedded):
            return False
    return address.is_global and not address.is_multicast


def public_address(uri: str, host: str, port: int, allow_private: bool) -> str:
    """The address to connect to for host: every address it resolves to must be public
    (global unicast) unless allow_private. Raises PermanentError fetch/private_address, or
    NotFound when host does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise NotFound(f"{uri}: host {host} does not resolve") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    private = [a for a in addresses if not _public(a)]
    if private and not allow_private:
        error = PermanentError(
            f"{uri}: {host} resolves to {private[0]}, not a public address"
            " (--allow_private_sources allows it)",
            code="private_address",
        )
        error.stage = "fetch"
        raise error
    return str(addresses[0])
