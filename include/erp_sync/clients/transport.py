"""The one place the client touches the network, behind a small protocol so unit tests can inject a
scripted transport. `RequestsTransport` is the real one: a `requests.Session`, explicit timeouts and
TLS verification that cannot be switched off."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import requests
from requests.structures import CaseInsensitiveDict

from erp_sync.clients.errors import FatalApiError, TransientNetworkError

Params = Sequence[tuple[str, str]]
Timeout = tuple[float, float]


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


class Transport(Protocol):
    def send(
        self,
        method: str,
        url: str,
        *,
        params: Params,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None,
        timeout: Timeout,
    ) -> HttpResponse:
        """Send one request; raise `TransientNetworkError` when no response came back."""
        ...


class RequestsTransport:
    """HTTP over a pooled `requests.Session`; `verify` is the CA bundle path or True, never False."""

    def __init__(self, *, ca_bundle: str | None = None, session: requests.Session | None = None) -> None:
        self._verify: str | bool = ca_bundle or True
        self._session = session or requests.Session()
        self._session.trust_env = False  # no proxy/netrc surprises; the connection says where to go

    def send(
        self,
        method: str,
        url: str,
        *,
        params: Params,
        headers: Mapping[str, str],
        data: Mapping[str, str] | None,
        timeout: Timeout,
    ) -> HttpResponse:
        try:
            response = self._session.request(
                method,
                url,
                params=list(params),
                headers=dict(headers),
                data=dict(data) if data is not None else None,
                timeout=timeout,
                verify=self._verify,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            # A certificate we cannot verify is a configuration problem: never retried, never ignored.
            raise FatalApiError(_strip_query(url), None, f"TLS verification failed: {exc}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise TransientNetworkError(f"{method} {_strip_query(url)}: {type(exc).__name__}") from exc
        except requests.exceptions.ChunkedEncodingError as exc:
            raise TransientNetworkError(f"{method} {_strip_query(url)}: truncated response") from exc
        return HttpResponse(
            status=response.status_code,
            body=response.content,
            url=response.url,
            headers=CaseInsensitiveDict(response.headers),
        )

    def close(self) -> None:
        self._session.close()


def _strip_query(url: str) -> str:
    return url.split("?", 1)[0]
