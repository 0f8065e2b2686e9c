"""The little of the Registry HTTP API v2 that ``search`` reads: ``/v2/_catalog`` and
``/v2/REPO/tags/list``, paginated through ``Link`` headers, with Basic or Bearer auth.

A registry mirror (distribution's proxy mode) serves both for what it holds. Credentials
come from the ``auth.json`` the user already has (:func:`cman.config.credentials`); they
go in a header, never on a command line or in a message. Only the simple flows: Basic,
and a Bearer token fetched from the challenge's realm (anonymously when no credentials).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin

from .._sys.urlget import Answer, FetchError, get

PAGE = 1000
MAX_PAGES = 50
"""Bounds a listing (50 000 names): a registry that keeps answering "next" is cut off."""
_CHALLENGE_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*"([^"]*)"')
_LINK_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class RegistryError(Exception):
    """This registry could not be listed; the message says why, for one stderr line."""


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge | None:
    """``WWW-Authenticate: Bearer realm="...",service="...",scope="..."`` (or Basic)."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    return Challenge(scheme.lower(), {k.lower(): v for k, v in _CHALLENGE_PARAM.findall(rest)})


def next_link(header: str | None, base: str) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header, resolved against ``base``."""
    if not header:
        return None
    m = _LINK_NEXT.search(header)
    return urljoin(base, m.group(1)) if m else None


class Client:
    """One registry at ``base`` (``http(s)://HOST[:PORT]``)."""

    def __init__(self, base: str, credentials: str | None = None, *, timeout: float = 10.0,
                 fetch: Callable[..., Answer] = get) -> None:
        self.base = base.rstrip("/")
        self.credentials = credentials
        """base64 ``user:password`` from auth.json, or None."""
        self.timeout = timeout
        self._fetch = fetch
        self._auth: str | None = None

    def catalog(self) -> list[str]:
        return [str(r) for r in self._paged(f"/v2/_catalog?n={PAGE}", "repositories")]

    def tags(self, repository: str) -> list[str]:
        return sorted(str(t) for t in self._paged(f"/v2/{repository}/tags/list?n={PAGE}", "tags"))

    def _paged(self, path: str, key: str) -> list[Any]:
        out: list[Any] = []
        url: str | None = self.base + path
        for _ in range(MAX_PAGES):
            if url is None:
                break
            answer = self._get(url)
            data = _json(answer, path.partition('?')[0])
            items = data.get(key) if isinstance(data, dict) else None
            if items is not None and not isinstance(items, list):
                raise RegistryError(f"not a registry answer from {path.partition('?')[0]} ('{key}' is not a list)")
            out.extend(items or [])
            url = next_link(answer.headers.get("Link") or answer.headers.get("link"), url)
        return out

    def _get(self, url: str) -> Answer:
        path = url.removeprefix(self.base).partition("?")[0]
        try:
            answer = self._send(url)
            if answer.status == 401:
                self._authenticate(answer)
                answer = self._send(url)
        except FetchError as err:
            raise RegistryError(str(err)) from None
        if answer.status == 401:
            raise RegistryError(f"not authorised to list {path}" + ("" if self.credentials else
                                " (no credentials for it in the auth file)"))
        if answer.status == 404 and path == "/v2/_catalog":
            raise RegistryError("it does not list its repositories (no /v2/_catalog)")
        if answer.status != 200:
            raise RegistryError(f"HTTP {answer.status} on {path}")
        return answer

    def _send(self, url: str) -> Answer:
        headers = {"Accept": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
        return self._fetch(url, headers=headers, timeout=self.timeout)

    def _authenticate(self, answer: Answer) -> None:
        header = answer.headers.get("WWW-Authenticate") or answer.headers.get("www-authenticate") or ""
        challenge = parse_challenge(header)
        if challenge is None:
            return
        if challenge.scheme == "basic" and self.credentials:
            self._auth = f"Basic {self.credentials}"
        elif challenge.scheme == "bearer" and challenge.params.get("realm"):
            self._auth = f"Bearer {self._token(challenge)}"

    def _token(self, challenge: Challenge) -> str:
        query = {k: v for k, v in challenge.params.items() if k in ("service", "scope")}
        realm = challenge.params["realm"]
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {"Authorization": f"Basic {self.credentials}"} if self.credentials else {}
        answer = self._fetch(url, headers=headers, timeout=self.timeout)
        if answer.status != 200:
            raise RegistryError(f"the token service answered HTTP {answer.status}")
        data = _json(answer, "the token service")
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError("the token service gave no token")
        return token


def _json(answer: Answer, what: str) -> Any:
    try:
        return json.loads(answer.body)
    except ValueError:
        raise RegistryError(f"not a JSON answer from {what}") from None
