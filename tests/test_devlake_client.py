"""Answer classification, Retry-After, the HTTP client and the fake's contract checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from doraforwarder.backoff import parse_retry_after
from doraforwarder.devlake.client import (
    Answer,
    DevLakeClient,
    classify,
    connection_just_created,
)
from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.fake_devlake_bodies import parse_devlake_date
from tests.devlake_support import TOKEN, deployment_entry, deployment_payload, issue_payload

CLASSIFY = [
    (Answer(200), "ack", "sent"),
    (Answer(204), "ack", "sent"),
    (Answer(None, failure="network"), "retry", "network"),
    (Answer(None, failure="timeout"), "retry", "timeout"),
    (Answer(408), "retry", "timeout"),
    (Answer(428), "retry", "migrating"),
    (Answer(429), "retry", "rate_limited"),
    (Answer(500), "retry", "server_error"),
    (Answer(503), "retry", "server_error"),
    (Answer(401), "auth", "auth"),
    (Answer(403), "auth", "auth"),
    (Answer(400), "dead", "rejected"),
    (Answer(422), "dead", "rejected"),
    (Answer(404), "dead", "not_found"),
    (Answer(413), "dead", "too_large"),  # a proxy's body limit (config-ui's nginx: 20m)
    (Answer(500, body='{"code":0,"success":false,"message":"Error 1390 (HY000): Prepared '
                      'statement contains too many placeholders (500)\\nWraps: (2) Error 1390 '
                      '(HY000): Prepared statement contains too many placeholders"}'),
     "dead", "too_many_commits"),  # v1.0.3 and main 420e494b, past 2114 commit rows
    (Answer(405), "dead", "client_error"),
    (Answer(302), "retry", "unexpected_status"),
]


V103_NOT_FOUND = ('{"code":0,"success":false,"message":"record not found (404)\\nWraps: (2) '
                  'record not found\\nError types: (1) *hintdetail.withDetail (2) '
                  '*errors.errorString","causes":null,"data":null}')
"""DevLake v1.0.3's answer to the project route's call that creates the connection."""


@pytest.mark.parametrize(("answer", "again"), [
    (Answer(404, body=V103_NOT_FOUND), True),
    (Answer(404, body='{"success":false,"message":"could not find project [P] in DB (404)'
                      '\\nWraps: (2) record not found (404)"}'), False),
    (Answer(404, body="404 page not found"), False),  # no project route (before 1.0.3)
    (Answer(400, body='{"message":"record not found"}'), False),
    (Answer(400, body='{"message":"the connection name already exists (400)"}'), True),
    (Answer(400, body='{"message":"input json error"}'), False),
])
def test_connection_just_created(answer: Answer, again: bool) -> None:
    assert connection_just_created(answer) is again


@pytest.mark.parametrize(("answer", "action", "reason"), CLASSIFY)
def test_classify(answer: Answer, action: str, reason: str) -> None:
    verdict = classify(answer)
    assert (verdict.action, verdict.reason) == (action, reason)


NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), ("", None), ("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None),
     ("Wed, 01 May 2024 12:00:30 GMT", 30.0), ("Wed, 01 May 2024 11:00:00 GMT", 0.0)],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    ("text", "ok"),
    [("2020-01-01T12:00:00+00:00", True), ("2020-01-01T12:00:00+0000", True),
     ("2020-01-01T12:00:00.123+00:00", True), ("2020-01-01 12:00:00", True),
     ("2020-01-01T12:00:00Z", True), ("2020-01-01", True), ("yesterday", False),
     ("2020-01-01T12:00:00.123456+00:00", False)],
)
def test_fake_parses_dates_like_devlake(text: str, ok: bool) -> None:
    assert (parse_devlake_date(text) is not None) == ok


@pytest.fixture
def devlake():
    with FakeDevLake(token=TOKEN, connections={1: "global", 6: "team"},
                     projects=["P"]) as fake:
        yield fake


async def post(url: str, body: Any, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as http:
        return await http.post(url, json=body, headers=headers)


ROUTES = [
    "/api/rest/plugins/webhook/connections/1/deployments",
    "/api/plugins/webhook/connections/1/deployments",
    "/api/rest/plugins/webhook/connections/by-name/team/deployments",
    "/api/plugins/webhook/connections/by-name/team/deployments",
    "/api/rest/plugins/webhook/projects/P/deployments",
    "/rest/plugins/webhook/projects/P/deployments",
]


@pytest.mark.parametrize("path", ROUTES)
async def test_fake_serves_every_deployment_route(devlake: FakeDevLake, path: str) -> None:
    answer = await post(devlake.url + path, deployment_payload("d1"))
    if "/projects/" in path:  # the call that creates P_deployments answers 404 (v1.0.3)
        assert answer.status_code == 404
        answer = await post(devlake.url + path, deployment_payload("d1"))
    assert answer.status_code == 200
    assert len(devlake.accepted("deployment")) == 1


async def test_fake_upserts_and_closes(devlake: FakeDevLake) -> None:
    base = devlake.url + "/api/rest/plugins/webhook/connections/1"
    assert (await post(f"{base}/issue/K-1/close", None)).status_code == 404
    assert (await post(f"{base}/issues", issue_payload("K-1"))).status_code == 200
    assert (await post(f"{base}/issues", issue_payload("K-1", "DONE"))).status_code == 200
    assert (await post(f"{base}/issue/K-1/close", None)).status_code == 200
    issue = devlake.issue(1, "K-1")
    assert issue is not None and issue["status"] == "DONE" and issue["closed"]
    assert len(devlake.accepted("issue")) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [(deployment_payload("d") | {"deploymentCommits": []}, "deployment_commits is empty"),
     (deployment_payload("d") | {"environment": "PROD"}, "environment"),
     (deployment_payload("d") | {"startedDate": "nope"}, "startedDate"),
     ({k: v for k, v in deployment_payload("d").items() if k != "id"}, "id is required")],
)
async def test_fake_refuses_what_devlake_refuses(devlake: FakeDevLake, body: Any,
                                                 message: str) -> None:
    answer = await post(devlake.url + ROUTES[0], body)
    assert answer.status_code == 400
    found = answer.json()  # a decode error's body is a bare JSON string
    assert message in (found if isinstance(found, str) else found["message"])


@pytest.mark.parametrize(("token", "status"), [(None, 401), ("wrong", 403), (TOKEN, 200)])
async def test_fake_checks_the_token(devlake: FakeDevLake, token: str | None,
                                     status: int) -> None:
    assert (await post(devlake.url + ROUTES[0], deployment_payload("d"), token)).status_code \
        == status


async def test_fake_unknown_connection_and_project_are_404(devlake: FakeDevLake) -> None:
    assert (await post(devlake.url + "/api/rest/plugins/webhook/connections/9/deployments",
                       deployment_payload("d"))).status_code == 404
    assert (await post(devlake.url + "/api/rest/plugins/webhook/projects/Q/deployments",
                       deployment_payload("d"))).status_code == 404


async def test_client_sends_the_bearer_token_and_reports_failures(devlake: FakeDevLake) -> None:
    client = DevLakeClient(SecretStr(TOKEN), timeout_seconds=0.2)
    entry = deployment_entry("d1")
    url = devlake.url + ROUTES[0]
    try:
        assert (await client.deliver(entry, url, entry.payload)).status == 200
        connection = await client.get(devlake.url + "/api/rest/plugins/webhook/connections/6")
        assert connection.status == 200 and '"team"' in connection.body
        devlake.rate_limit_next(1, retry_after=12)
        limited = await client.deliver(entry, url, entry.payload)
        assert (limited.status, limited.retry_after) == (429, 12.0)
        devlake.slow(1.0)
        timed_out = await client.deliver(entry, url, entry.payload)
        assert timed_out.status is None and timed_out.failure == "timeout"
        devlake.slow(0)
        devlake.stop()
        refused = await client.deliver(entry, url, entry.payload)
        assert refused.status is None and refused.failure == "network"
        assert TOKEN not in (refused.error or "")
    finally:
        await client.aclose()
    assert devlake.posts()[0].authorization == f"Bearer {TOKEN}"


async def test_client_reports_a_dropped_connection_and_recovers(devlake: FakeDevLake) -> None:
    client = DevLakeClient(SecretStr(TOKEN), timeout_seconds=2, pool_size=2)
    entry = deployment_entry("d1")
    url = devlake.url + ROUTES[0]
    try:
        assert (await client.deliver(entry, url, entry.payload)).status == 200  # keep-alive
        devlake.drop_next(1)
        dropped = await client.deliver(entry, url, entry.payload)
        assert dropped.status is None and dropped.failure == "network"
        assert (await client.deliver(entry, url, entry.payload)).status == 200
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("environment", "url", "proxy"),
    [
        ({}, "http://devlake:8080/api", None),
        ({"HTTP_PROXY": "http://proxy:3128"}, "http://devlake:8080/api", "http://proxy:3128"),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://devlake:8080/api", None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://devlake/api", "http://proxy:3128"),
        ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "devlake"},
         "http://devlake:8080/api", None),
        ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": ".svc"},
         "http://devlake.ns.svc:8080/api", None),
        ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "other"},
         "http://devlake:8080/api", "http://proxy:3128"),
    ],
)
def test_proxy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                          environment: dict[str, str], url: str,
                                          proxy: str | None) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    client = DevLakeClient(None, timeout_seconds=1)
    assert proxy_of(client, url) == proxy
    assert proxy_of(client, url) == proxy  # read once, when the client was built


def proxy_of(client: DevLakeClient, url: str) -> str | None:
    """The proxy httpx routes ``url`` through (None: a direct connection)."""
    transport = client.http._transport_for_url(httpx.URL(url))
    proxy = getattr(getattr(transport, "_pool", None), "_proxy_url", None)
    if proxy is None:
        return None
    return f"{proxy.scheme.decode()}://{proxy.host.decode()}:{proxy.port}"
