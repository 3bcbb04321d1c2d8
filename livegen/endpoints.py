"""Network addresses: ZeroMQ endpoints and the control page's HOST:PORT, well formed, and
whether they stay on this machine (pure; no ZeroMQ)."""
from __future__ import annotations

import ipaddress
from urllib.parse import urlparse

from livegen.errors import ConfigError


def check_endpoint(endpoint: str, what: str) -> None:
    """A ZeroMQ address livegen can bind or connect: tcp://HOST:PORT or ipc://PATH."""
    url = urlparse(endpoint)
    try:
        ok = (url.scheme == "tcp" and bool(url.hostname) and url.port is not None) or \
            (url.scheme == "ipc" and len(endpoint) > len("ipc://"))
    except ValueError:        # a port that is not a number, or out of range
        ok = False
    if not ok:
        raise ConfigError(f"{what} {endpoint!r}: not a ZeroMQ address; use tcp://HOST:PORT "
                          "(e.g. tcp://127.0.0.1:5555) or ipc:///a/path")


def loopback(endpoint: str) -> bool:
    host = urlparse(endpoint).hostname or ""
    if endpoint.startswith(("ipc://", "inproc://")) or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(address: str) -> tuple[str, int]:
    """--web HOST:PORT -> (host, port)."""
    host, _, port = address.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 < number < 65536:
        raise ConfigError(f"web {address!r}: HOST:PORT, e.g. 127.0.0.1:8080 (0.0.0.0:8080 for the stage "
                          "network, with a token)")
    return host.strip("[]"), number
