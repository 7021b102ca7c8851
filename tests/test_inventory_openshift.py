"""``server.api_auth: openshift``: the reference's check, against a fake user API over HTTP.

The fake answers ``GET /apis/user.openshift.io/v1/users/~`` as OCM and OpenShift do: the
user named by the bearer token, 401 for a token it does not know.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from doraforwarder.apiauth import OpenShiftUsers, Refused, build_authorizer
from doraforwarder.config import ConfigError, load_config
from doraforwarder.context import AppContext
from tests.conftest import write_config
from tests.test_argocd_watch import Harness, harness, kube  # noqa: F401 - fixtures
from tests.test_inventory import app_names, serve, watched  # noqa: F401 - fixtures

PATH = "/apis/user.openshift.io/v1/users/~"
ALICE = "sha256~alice-fake-token-0001"
BOB = "sha256~bob-fake-token-0002"


def jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none'})}.{part(claims)}.c2ln"


SSO = jwt({"email": "carol@redhat.com", "preferred_username": "carol"})


class FakeUserAPI:
    """Users by token; ``status``/``stall`` make every answer fail or hang."""

    def __init__(self) -> None:
        self.users = {ALICE: "alice@redhat.com", BOB: "bob@example.com", SSO: "carol"}
        self.headers: list[str] = []
        self.status = 200
        self.stall = asyncio.Event()
        self.stalling = False
        self.url = ""

    async def user(self, request: web.Request) -> web.Response:
        self.headers.append(request.headers.get("Authorization", ""))
        if self.stalling:
            await self.stall.wait()
        if self.status != 200:
            return web.json_response({"kind": "Status"}, status=self.status)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.users:
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        return web.json_response({"kind": "User", "apiVersion": "user.openshift.io/v1",
                                  "metadata": {"name": self.users[token]}})


@pytest.fixture
async def user_api() -> AsyncIterator[FakeUserAPI]:
    fake = FakeUserAPI()
    app = web.Application()
    app.router.add_get(PATH, fake.user)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    fake.stall.set()
    await runner.cleanup()


def authorizer_for(tmp_path: Path, fake: FakeUserAPI, extra: str = "") -> OpenShiftUsers:
    settings = load_config(write_config(
        tmp_path, "server: {host: 0.0.0.0, api_auth: openshift, "
                  f'openshift: {{api_url: "{fake.url}/"{extra}}}}}\n')).settings
    authorizer = build_authorizer(settings)
    assert isinstance(authorizer, OpenShiftUsers)
    return authorizer


async def test_openshift_users_over_http(watched: tuple[Harness, AppContext],  # noqa: F811
                                         user_api: FakeUserAPI, tmp_path: Path) -> None:
    _, context = watched
    authorizer = authorizer_for(tmp_path, user_api)
    runner, url = await serve(context, authorizer)
    path = "/api/v1/argocd/applications"

    async def get(token: str | None, suffix: str = "") -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await client.get(path + suffix, headers=headers)

    try:
        async with httpx.AsyncClient(base_url=url) as client:
            alice = await get(ALICE)
            alice_toon = await get(ALICE, ".toon")
            bob = await get(BOB)
            carol = await get(SSO)
            stranger = await get("sha256~stranger-0003")
            missing = await get(None)
            malformed = await client.get(path, headers={"Authorization": "Basic eA=="})
    finally:
        await runner.cleanup()
    assert alice.status_code == 200 and app_names(alice.json()) == ["api-prod", "web-prod"]
    assert alice_toon.status_code == 200 and "total_count: 2" in alice_toon.text
    assert bob.status_code == 403
    # the reference's sentences and bytes (apis/argocd/handler.go, Fiber's c.JSON)
    assert bob.content == \
        b'{"error":"Access denied. Only @redhat.com email addresses are allowed"}'
    assert stranger.content == b'{"error":"Invalid or expired token"}'
    assert missing.content == b'{"error":"Authorization header is required"}'
    assert malformed.content == \
        b'{"error":"Invalid Authorization header format. Expected: Bearer \\u003ctoken\\u003e"}'
    assert bob.headers["Content-Type"] == "application/json"
    assert carol.status_code == 200  # the user's name is no address: the token's email claim
    assert stranger.status_code == 401 and missing.status_code == 401
    for answer in (bob, stranger, missing):
        assert "fake-token" not in answer.text and "stranger" not in answer.text
    # the user API saw each token as the caller's bearer token; alice's second request
    # came from the cache of admitted tokens
    assert user_api.headers == [f"Bearer {t}" for t in (ALICE, BOB, SSO, "sha256~stranger-0003")]
    assert authorizer.lookups == 4


async def test_only_admitted_tokens_are_cached_and_only_for_the_ttl(
        user_api: FakeUserAPI) -> None:
    now = [0.0]
    authorizer = OpenShiftUsers(user_api.url + PATH, ["redhat.com"], ttl=60,
                                clock=lambda: now[0])
    for _ in range(3):
        assert await authorizer.allowed_namespaces(f"Bearer {ALICE}", []) is None
    assert authorizer.lookups == 1
    now[0] = 61
    await authorizer.allowed_namespaces(f"Bearer {ALICE}", [])
    assert authorizer.lookups == 2
    for _ in range(2):
        with pytest.raises(Refused) as refused:
            await authorizer.allowed_namespaces(f"Bearer {BOB}", [])
        assert refused.value.status == 403
    assert authorizer.lookups == 4  # refusals are asked again: a fix upstream counts at once
    user_api.users[BOB] = "bob@redhat.com"
    await authorizer.allowed_namespaces(f"Bearer {BOB}", [])


@pytest.mark.parametrize(("status", "stall", "code"), [
    (500, False, 503), (403, False, 401), (200, True, 503)])
async def test_user_api_failures(user_api: FakeUserAPI, tmp_path: Path, status: int,
                                 stall: bool, code: int) -> None:
    authorizer = authorizer_for(tmp_path, user_api, ", timeout: 200ms")
    user_api.status, user_api.stalling = status, stall
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Refused) as refused:
        await authorizer.allowed_namespaces(f"Bearer {ALICE}", [])
    assert refused.value.status == code and ALICE not in refused.value.message
    assert loop.time() - started < 5  # the timeout, not the stall, ends a hanging call


@pytest.mark.parametrize(("domains", "admitted"), [
    ("[redhat.com]", {"alice@redhat.com"}),
    ("['@RedHat.com', example.com]", {"alice@redhat.com", "bob@example.com"}),
])
async def test_email_domains(user_api: FakeUserAPI, tmp_path: Path, domains: str,
                             admitted: set[str]) -> None:
    authorizer = authorizer_for(tmp_path, user_api, f", email_domains: {domains}")
    user_api.users["sha256~sub"] = "eve@sub.redhat.com"
    user_api.users["sha256~fake"] = "mallory@redhat.com.evil.example"
    user_api.users["sha256~none"] = "system:admin"
    passed = set()
    for token, email in list(user_api.users.items()):
        if token == SSO:
            continue
        try:
            await authorizer.allowed_namespaces(f"Bearer {token}", [])
        except Refused as refused:
            assert refused.status == 403
        else:
            passed.add(email)
    assert passed == admitted


def test_openshift_settings(tmp_path: Path) -> None:
    server = load_config(write_config(tmp_path, "server: {api_auth: openshift}\n")
                         ).settings.server
    assert server.openshift.user_url == \
        "https://api.openshift.com/apis/user.openshift.io/v1/users/~"  # the reference's
    assert server.openshift.email_domains == ["redhat.com"]
    for bad in ("{email_domains: []}", "{email_domains: [a@b.c]}", "{api_url: api.example}"):
        with pytest.raises(ConfigError, match=r"server\.openshift"):
            load_config(write_config(tmp_path, f"server: {{openshift: {bad}}}\n"))
