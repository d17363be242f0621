"""Auth strategies: each turns credentials into request headers. Secrets stay out of reprs and logs.

OAuth2 client credentials fetch their token through a `TokenFetcher` the client provides (so token
requests get the same timeouts, TLS settings and retry policy as data requests).
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal, Protocol

import orjson

from erp_sync.clients.errors import AuthenticationError
from erp_sync.clients.transport import HttpResponse

# POSTs a form to a URL (with optional extra headers) and returns the response; provided by the client.
TokenFetcher = Callable[[str, Mapping[str, str], Mapping[str, str]], HttpResponse]


class AuthStrategy(Protocol):
    def headers(self, fetch: TokenFetcher) -> dict[str, str]:
        """Headers that authenticate one request."""
        ...

    def on_unauthorized(self) -> bool:
        """Called after a 401. True when a retry with fresh credentials may succeed."""
        ...

    def on_success(self) -> None:
        """Called after an authenticated request succeeded."""
        ...


class BearerSecretKey:
    """Stripe-style secret key sent as `Authorization: Bearer sk_...`."""

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ValueError("BearerSecretKey needs a non-empty secret key")
        self._secret_key = secret_key

    def headers(self, fetch: TokenFetcher) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._secret_key}"}

    def on_unauthorized(self) -> bool:
        return False  # a static key does not get better by asking again

    def on_success(self) -> None:
        return None

    def __repr__(self) -> str:
        return "BearerSecretKey(secret_key=***)"


class ApiKeyHeader:
    """An API key in a named header (e.g. `X-Api-Key`)."""

    def __init__(self, header: str, key: str) -> None:
        if not header or not key:
            raise ValueError("ApiKeyHeader needs a header name and a non-empty key")
        self.header = header
        self._key = key

    def headers(self, fetch: TokenFetcher) -> dict[str, str]:
        return {self.header: self._key}

    def on_unauthorized(self) -> bool:
        return False

    def on_success(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"ApiKeyHeader(header={self.header!r}, key=***)"


class OAuth2ClientCredentials:
    """OAuth2 client-credentials grant (RFC 6749 §4.4).

    The token is cached until `refresh_margin_s` before it expires (at most a fifth of its life, so
    short-lived tokens are still reused). A 401 drops the cached token so the next attempt fetches a
    new one; a second 401 in a row means the credentials themselves are refused.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        client_auth: Literal["basic", "body"] = "body",
        refresh_margin_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not token_url or not client_id or not client_secret:
            raise ValueError("OAuth2ClientCredentials needs token_url, client_id and client_secret")
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self.client_auth = client_auth
        self.refresh_margin_s = refresh_margin_s
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()  # child lists are fetched from a few threads
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        return (
            f"OAuth2ClientCredentials(token_url={self.token_url!r}, client_id={self.client_id!r}, "
            f"client_secret=***, scope={self.scope!r})"
        )

    def headers(self, fetch: TokenFetcher) -> dict[str, str]:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._fetch_token(fetch)
            if self._token is None:
                raise AuthenticationError(self.token_url, None, "the token endpoint returned no access token")
            return {"Authorization": f"Bearer {self._token}"}

    def on_unauthorized(self) -> bool:
        """Drop the cached token so the retry fetches a new one. The client allows this once per
        request: a second 401 for the same request means the credentials are refused."""
        with self._lock:
            self._token = None
        return True

    def on_success(self) -> None:
        return None

    def _fetch_token(self, fetch: TokenFetcher) -> None:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        headers: dict[str, str] = {"Accept": "application/json"}
        if self.client_auth == "basic":
            raw = f"{self.client_id}:{self._client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        else:
            form["client_id"] = self.client_id
            form["client_secret"] = self._client_secret
        response = fetch(self.token_url, form, headers)
        token, expires_in = _parse_token_response(self.token_url, response)
        margin = min(self.refresh_margin_s, expires_in / 5)
        self._token = token
        self._expires_at = self._clock() + expires_in - margin
        self.tokens_fetched += 1


def _parse_token_response(token_url: str, response: HttpResponse) -> tuple[str, float]:
    if response.status in (400, 401, 403):
        raise AuthenticationError(token_url, response.status, _error_text(response))
    try:
        payload = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        raise AuthenticationError(token_url, response.status, "token response is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("access_token"), str):
        raise AuthenticationError(token_url, response.status, "token response has no access_token")
    expires_in = payload.get("expires_in", 3600)
    if not isinstance(expires_in, int | float) or expires_in <= 0:
        expires_in = 3600
    return payload["access_token"], float(expires_in)


def _error_text(response: HttpResponse) -> str:
    try:
        payload = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return response.body[:200].decode("utf-8", "replace")
    if isinstance(payload, dict):
        for key in ("error_description", "error"):
            if isinstance(payload.get(key), str):
                return str(payload[key])
    return response.body[:200].decode("utf-8", "replace")
