"""Which URLs a webhook may be sent to: http(s), and no private address unless allowed.

Checked when the endpoint is created and again before every delivery, since a name can
resolve elsewhere later (DNS rebinding).
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from tunesmith.settings import settings


class RefusedURL(ValueError):
    """A URL the service will not send to; the message says why."""


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, resolve: bool = True) -> None:
    """Raise RefusedURL unless `url` is an http(s) URL the operator's settings allow."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise RefusedURL("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - parses the netloc: a bad IPv6 literal raises here
    except ValueError as exc:
        raise RefusedURL(f"is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise RefusedURL("must be an http:// or https:// URL")
    if not parts.hostname:
        raise RefusedURL("has no host")
    if parts.username or parts.password:
        raise RefusedURL("must not carry credentials; the signature authenticates the sender")
    try:
        port = parts.port
    except ValueError as exc:
        raise RefusedURL(f"has a bad port: {exc}") from None
    if settings.webhook_allow_private_urls or not resolve:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
        raise RefusedURL(f"host '{parts.hostname}' does not resolve ({exc})") from None
    for info in infos:
        address = str(info[4][0])
        if not _public(address):
            raise RefusedURL(f"host '{parts.hostname}' resolves to {address}, a private or "
                             "local address (the operator allows these with "
                             "TUNESMITH_WEBHOOK_ALLOW_PRIVATE_URLS=true)")
