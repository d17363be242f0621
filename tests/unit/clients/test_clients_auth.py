"""Auth strategies: the headers they send, token caching and refresh, and secrets kept out of sight."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from client_fakes import Call, FakeClock, FakeTransport, json_response, stripe_list_handler

from erp_sync.clients import ApiKeyHeader, AuthenticationError, BearerSecretKey, OAuth2ClientCredentials
from erp_sync.clients.transport import HttpResponse
from erp_sync.streams.spec import StreamSpec

TOKEN_URL = "https://auth.example.test/oauth/token"
SPEC = StreamSpec(
    name="customers", source_system="test", path="/v1/customers", model="M", mapping="m", target_tables=("t",)
)
END = datetime(2027, 1, 1, tzinfo=UTC)


def test_bearer_secret_key_sends_authorization_and_hides_the_key() -> None:
    auth = BearerSecretKey("sk_test_hush")
    assert auth.headers(lambda *a: None) == {"Authorization": "Bearer sk_test_hush"}  # type: ignore[arg-type,return-value]
    assert "hush" not in repr(auth)
    assert auth.on_unauthorized() is False


def test_api_key_header_uses_the_named_header_and_hides_the_key() -> None:
    auth = ApiKeyHeader("X-Api-Key", "k-hush")
    assert auth.headers(lambda *a: None) == {"X-Api-Key": "k-hush"}  # type: ignore[arg-type,return-value]
    assert "hush" not in repr(auth)


def test_empty_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        BearerSecretKey("")
    with pytest.raises(ValueError):
        ApiKeyHeader("X-Api-Key", "")
    with pytest.raises(ValueError):
        OAuth2ClientCredentials(TOKEN_URL, "id", "")


class TokenServer:
    """Hands out tok-1, tok-2, ...; data requests succeed only with the newest token (unless
    `reject_all`), and answer 401 for tokens the test has marked expired."""

    def __init__(self, expires_in: int = 60) -> None:
        self.expires_in = expires_in
        self.issued = 0
        self.expired: set[str] = set()
        self.reject_all = False
        self.token_forms: list[dict[str, str] | None] = []
        self.data = stripe_list_handler([{"id": "cus_1"}, {"id": "cus_2"}])

    def __call__(self, call: Call) -> HttpResponse:
        if call.url == TOKEN_URL:
            self.token_forms.append(call.data)
            self.issued += 1
            return json_response(
                {"access_token": f"tok-{self.issued}", "token_type": "bearer", "expires_in": self.expires_in}
            )
        token = call.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.reject_all or token in self.expired or not token.startswith("tok-"):
            return json_response({"error": {"message": "Invalid token"}}, status=401)
        return self.data(call)


def oauth(clock: FakeClock, **kwargs: Any) -> OAuth2ClientCredentials:
    return OAuth2ClientCredentials(TOKEN_URL, "client-1", "s3cret-hush", scope="read", clock=clock, **kwargs)


def read(client: Any) -> list[Any]:
    return list(client.iter_pages(SPEC, mode="full", window_start=None, window_end=END))


def test_oauth_token_is_fetched_once_and_cached(make_client: Any, clock: FakeClock) -> None:
    server = TokenServer()
    transport = FakeTransport(server)
    client = make_client(transport, auth=oauth(clock))
    read(client)
    read(client)
    assert server.issued == 1
    assert server.token_forms[0] == {
        "grant_type": "client_credentials",
        "scope": "read",
        "client_id": "client-1",
        "client_secret": "s3cret-hush",
    }
    assert [c.headers["Authorization"] for c in transport.calls if c.url != TOKEN_URL] == ["Bearer tok-1"] * 2


def test_oauth_token_is_renewed_shortly_before_it_expires(make_client: Any, clock: FakeClock) -> None:
    server = TokenServer(expires_in=5)
    client = make_client(FakeTransport(server), auth=oauth(clock))
    read(client)
    clock.advance(3.9)  # still valid: 5 s life minus a 1 s margin (a fifth of its life)
    read(client)
    assert server.issued == 1
    clock.advance(0.2)
    read(client)
    assert server.issued == 2


def test_oauth_401_refreshes_once_then_succeeds(make_client: Any, clock: FakeClock) -> None:
    server = TokenServer()
    client = make_client(FakeTransport(server), auth=oauth(clock))
    read(client)
    server.expired.add("tok-1")  # revoked server-side before its expiry
    pages = read(client)
    assert [r["id"] for p in pages for r in p.records] == ["cus_1", "cus_2"]
    assert server.issued == 2
    assert client.stats.retries == 0


def test_oauth_second_401_is_a_clear_error(make_client: Any, clock: FakeClock) -> None:
    server = TokenServer()
    server.reject_all = True
    client = make_client(FakeTransport(server), auth=oauth(clock))
    with pytest.raises(
        AuthenticationError, match=r"GET https://api.example.test/v1/customers: HTTP 401: Invalid token"
    ):
        read(client)
    assert server.issued == 2  # the original token and exactly one refresh


def test_oauth_token_endpoint_refusal_names_the_token_url(make_client: Any, clock: FakeClock) -> None:
    def refuse(call: Call) -> HttpResponse:
        return json_response(
            {"error": "invalid_client", "error_description": "bad client secret"}, status=401
        )

    client = make_client(FakeTransport(refuse), auth=oauth(clock))
    with pytest.raises(AuthenticationError, match="oauth/token: HTTP 401: bad client secret"):
        read(client)


def test_oauth_basic_client_auth_keeps_the_secret_out_of_the_form(make_client: Any, clock: FakeClock) -> None:
    server = TokenServer()
    transport = FakeTransport(server)
    read(make_client(transport, auth=oauth(clock, client_auth="basic")))
    token_call = next(c for c in transport.calls if c.url == TOKEN_URL)
    assert token_call.headers["Authorization"].startswith("Basic ")
    assert token_call.data == {"grant_type": "client_credentials", "scope": "read"}


def test_secrets_never_reach_reprs_or_logs(
    make_client: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = TokenServer()
    server.expired.add("tok-1")
    client = make_client(FakeTransport(server), auth=oauth(clock))
    read(client)
    text = caplog.text + repr(client) + repr(client.auth)
    assert "s3cret-hush" not in text
    assert "tok-" not in text


def test_each_request_gets_its_own_single_refresh(make_client: Any, clock: FakeClock) -> None:
    """The refresh-once rule is per request: a later request may refresh again after a 401."""
    server = TokenServer()
    client = make_client(FakeTransport(server), auth=oauth(clock))
    read(client)
    server.expired.add("tok-1")
    read(client)
    server.expired.add("tok-2")
    read(client)
    assert server.issued == 3
