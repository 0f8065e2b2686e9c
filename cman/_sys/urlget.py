"""HTTP(S) GETs with the standard library, for the few answers cman reads itself (``search``).

Why not ``requests``: its import costs more than the whole command. Loopback is reached
without a proxy (an ``http_proxy`` meant for the outside would otherwise swallow
127.0.0.1); other hosts follow the environment's proxies as every client does. TLS is
verified, against the system's CAs or a pinned certificate (``cadata``).
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from urllib.parse import urlsplit

MAX_BODY = 32 * 1024 * 1024
"""A bigger answer is not an index or a listing: refused rather than read into memory."""


class FetchError(Exception):
    """The request did not get an answer (refused, timed out, TLS, too big); the message says why."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def get(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 10.0,
        cadata: str | None = None) -> Answer:
    """GET ``url``; an HTTP error status is an :class:`Answer` too (the caller decides), no
    answer at all is :class:`FetchError`. Redirects are followed by urllib."""
    parts = urlsplit(url)
    handlers: list[urllib.request.BaseHandler] = []
    if is_loopback(parts.hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))
    if parts.scheme == "https":
        context = ssl.create_default_context(cadata=cadata) if cadata else ssl.create_default_context()
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with opener.open(request, timeout=timeout) as resp:
            return Answer(resp.status, dict(resp.headers.items()), _read(resp))
    except urllib.error.HTTPError as err:
        with err:
            return Answer(err.code, dict(err.headers.items()) if err.headers else {}, _read(err))
    except urllib.error.URLError as err:
        reason = err.reason
        text = getattr(reason, "strerror", None) or str(reason)
        if isinstance(reason, ssl.SSLError):
            text = f"TLS: {getattr(reason, 'verify_message', None) or reason.reason or reason}"
        raise FetchError(str(text)) from None
    except TimeoutError:
        raise FetchError(f"no answer within {timeout:g} s") from None
    except (OSError, ValueError) as err:  # a reset connection, a malformed answer
        raise FetchError(getattr(err, "strerror", None) or str(err) or type(err).__name__) from None


def _read(resp: object) -> bytes:
    read = getattr(resp, "read", None)
    if read is None:
        return b""
    data: bytes = read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise FetchError(f"the answer is larger than {MAX_BODY // (1024 * 1024)} MB")
    return data
