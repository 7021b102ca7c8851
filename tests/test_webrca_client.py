"""The WebRCA HTTP edge against the fake SSO and WebRCA, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from doraforwarder.testing.fake_webrca import FakeWebRCA
from doraforwarder.webrca.client import (
    AccessDenied,
    IncidentsClient,
    OfflineTokenMissing,
    TokenRejected,
    TokenSource,
    TransientError,
)

GOOD = "offline-token-good"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeWebRCA]:
    with FakeWebRCA((GOOD,)) as server:
        for n in range(3):
            server.add_incident(f"ITN-2025-0000{n}")
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def client_for(fake: FakeWebRCA, http: httpx.AsyncClient, offline: str | None = GOOD,
               clock: Clock | None = None, client_id: str = "cloud-services") -> IncidentsClient:
    tokens = TokenSource(http, fake.token_url, client_id,
                         SecretStr(offline) if offline is not None else None,
                         clock=clock or Clock())
    return IncidentsClient(http, fake.api_url, tokens)


async def test_access_token_is_cached_until_a_minute_before_expiry(
    fake: FakeWebRCA, http: httpx.AsyncClient
) -> None:
    clock = Clock()
    client = client_for(fake, http, clock=clock)
    for _ in range(3):
        page = await client.fetch_page(1, 100)
        assert len(page.items) == 3 and page.total == 3
    assert fake.token_exchanges == 1
    clock.now += 900 - 61
    await client.fetch_page(1, 100)
    assert fake.token_exchanges == 1
    clock.now += 2  # now within the last minute of the token's life
    await client.fetch_page(1, 100)
    assert fake.token_exchanges == 2
    assert client.tokens.exchanges == 2


async def test_short_lived_tokens_are_still_reused(fake: FakeWebRCA,
                                                   http: httpx.AsyncClient) -> None:
    fake.expires_in = 60
    clock = Clock()
    client = client_for(fake, http, clock=clock)
    await client.fetch_page(1, 100)
    clock.now += 29
    await client.fetch_page(1, 100)
    assert fake.token_exchanges == 1


async def test_401_gets_a_new_token_and_one_retry(fake: FakeWebRCA,
                                                  http: httpx.AsyncClient) -> None:
    client = client_for(fake, http)
    await client.fetch_page(1, 100)
    fake.expire_all_tokens()
    page = await client.fetch_page(1, 100)
    assert len(page.items) == 3
    assert fake.token_exchanges == 2
    assert [r["status"] for r in fake.incident_requests] == [200, 401, 200]


async def test_401_with_a_fresh_token_is_not_retried_forever(fake: FakeWebRCA,
                                                             http: httpx.AsyncClient) -> None:
    fake.expires_in = 0  # every access token is dead on arrival
    client = client_for(fake, http)
    with pytest.raises(AccessDenied, match="401"):
        await client.fetch_page(1, 100)
    assert [r["status"] for r in fake.incident_requests] == [401, 401]


@pytest.mark.parametrize(("offline", "client_id", "error", "message"), [
    ("offline-token-revoked", "cloud-services", TokenRejected,
     r"offline token rejected \(invalid_grant\)"),
    (GOOD, "someone-else", TokenRejected, r"SSO refused the token exchange \(unauthorized_client\)"),
    (None, "cloud-services", OfflineTokenMissing, "OFFLINE_TOKEN is not set"),
    ("", "cloud-services", OfflineTokenMissing, "OFFLINE_TOKEN is not set"),
])
async def test_token_configuration_errors(
    fake: FakeWebRCA, http: httpx.AsyncClient, offline: str | None, client_id: str,
    error: type[Exception], message: str,
) -> None:
    client = client_for(fake, http, offline=offline, client_id=client_id)
    with pytest.raises(error, match=message) as caught:
        await client.fetch_page(1, 100)
    assert offline is None or offline == "" or offline not in str(caught.value)
    assert fake.incident_requests == []


async def test_transient_answers(fake: FakeWebRCA, http: httpx.AsyncClient) -> None:
    client = client_for(fake, http)
    fake.fail_token_requests(1, 502)
    with pytest.raises(TransientError, match="502"):
        await client.fetch_page(1, 100)
    fake.fail_requests(1, 503)
    with pytest.raises(TransientError, match="503 on page 1"):
        await client.fetch_page(1, 100)
    fake.fail_requests(1, 429, retry_after=7)
    with pytest.raises(TransientError) as caught:
        await client.fetch_page(1, 100)
    assert caught.value.retry_after == 7
    assert len((await client.fetch_page(1, 100)).items) == 3


async def test_refused_connection_is_transient(fake: FakeWebRCA,
                                               http: httpx.AsyncClient) -> None:
    client = client_for(fake, http)
    fake.server.stop()
    with pytest.raises(TransientError, match="unreachable"):
        await client.fetch_page(1, 100)
    fake.server.start()
    assert len((await client.fetch_page(1, 100)).items) == 3


async def test_wrong_api_url_is_a_configuration_error(fake: FakeWebRCA,
                                                      http: httpx.AsyncClient) -> None:
    tokens = TokenSource(http, fake.token_url, "cloud-services", SecretStr(GOOD))
    client = IncidentsClient(http, fake.server.url + "/api/web-rca/v2/incidents", tokens)
    with pytest.raises(AccessDenied, match=r"404 on page 1: check webrca\.api_url"):
        await client.fetch_page(1, 100)


async def test_malformed_page_is_reported_not_raised(fake: FakeWebRCA,
                                                     http: httpx.AsyncClient) -> None:
    fake.malform_page(1, "invalid_json")
    page = await client_for(fake, http).fetch_page(1, 100)
    assert page.problem == "invalid_json"
