"""The application inventory: its JSON and TOON shapes, the three auth modes, no API calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from doraforwarder import toon
from doraforwarder.apiauth import (
    Authorizer,
    KubernetesAccess,
    KubernetesReviews,
    OpenAccess,
    Refused,
    StaticTokens,
    bearer_token,
    build_authorizer,
    tokens_from_environment,
)
from doraforwarder.argocd.kube import build_api_client
from doraforwarder.config import load_config
from doraforwarder.context import AppContext
from doraforwarder.inventory import Inventory, inventory_document, inventory_toon
from doraforwarder.server import bound_port, build_app
from doraforwarder.testing.argocd_objects import LiveApp, image
from doraforwarder.testing.fake_kube import SCOPES_EXTRA, FakeKube, KubeUser
from tests.conftest import write_config
from tests.test_argocd_watch import Harness, harness, kube  # noqa: F401 - fixtures

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SECRET = "s3cret-token-value"


# --- TOON -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": 1, "b": "x"}, "a: 1\nb: x\n"),
        ({"tags": ["a", "b"]}, "tags[2]: a,b\n"),
        ({"tags": []}, "tags[0]:\n"),
        ({"o": {"k": True, "n": None}}, "o:\n  k: true\n  n: null\n"),
        ({"rows": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}, "rows[2]{a,b}:\n  1,x\n  2,y\n"),
        ({"s": ""}, 's: ""\n'),
        ({"s": "a,b"}, 's: "a,b"\n'),
        ({"s": "true"}, 's: "true"\n'),
        ({"s": "42"}, 's: "42"\n'),
        ({"s": "-x"}, 's: "-x"\n'),
        ({"s": "a:b"}, 's: "a:b"\n'),
        ({"s": ' q"'}, 's: " q\\""\n'),
        ({"s": "line\nbreak"}, 's: "line\\nbreak"\n'),
        ({"s": "quay.io/org/app@sha256"}, "s: quay.io/org/app@sha256\n"),
        ({"weird key": 1}, '"weird key": 1\n'),
        ({"f": 1.5, "g": 2.0}, "f: 1.5\ng: 2\n"),
        (
            {"items": [{"a": 1, "l": [1, 2]}, {"a": 2}]},
            "items[2]:\n  - a: 1\n    l[2]: 1,2\n  - a: 2\n",
        ),
        ([1, 2], "[2]: 1,2\n"),
    ],
)
def test_toon_encoding(value: Any, text: str) -> None:
    assert toon.encode(value) == text


# --- documents ------------------------------------------------------------------------
def sample_inventory() -> Inventory:
    inventory = Inventory()
    inventory.put(namespace="argocd", name="api-prod-east", component="api", cluster="prod-east",
                  health="Healthy", sync="Synced", images=["quay.io/o/api:v1", "quay.io/o/s:v2"],
                  forwarded=True)
    inventory.put(namespace="team-b", name="web-prod-west", component="web", cluster="prod-west",
                  health="Degraded", sync="OutOfSync", images=[], forwarded=True)
    inventory.put(namespace="argocd", name="web-prod-east", component="web", cluster="prod-east",
                  health=None, sync=None, images=["quay.io/o/api:v1", "quay.io/o/s:v2"],
                  forwarded=False)
    return inventory


def test_json_document_groups_by_cluster() -> None:
    inventory = sample_inventory()
    entries = inventory.snapshot()
    assert entries[0].images is entries[1].images  # equal image lists are shared
    document = inventory_document(entries, now=NOW)
    assert document == {
        "generated_at": "2025-01-01T12:00:00Z",
        "total": 3,
        "clusters": [
            {"cluster": "prod-east", "total": 2, "applications": [
                {"namespace": "argocd", "name": "api-prod-east", "component": "api",
                 "health": "Healthy", "health_value": 1, "sync": "Synced", "sync_value": 1,
                 "forwarded": True, "images": ["quay.io/o/api:v1", "quay.io/o/s:v2"]},
                {"namespace": "argocd", "name": "web-prod-east", "component": "web",
                 "health": "Unknown", "health_value": 0, "sync": "Unknown", "sync_value": 0,
                 "forwarded": False, "images": ["quay.io/o/api:v1", "quay.io/o/s:v2"]},
            ]},
            {"cluster": "prod-west", "total": 1, "applications": [
                {"namespace": "team-b", "name": "web-prod-west", "component": "web",
                 "health": "Degraded", "health_value": 0, "sync": "OutOfSync", "sync_value": 0,
                 "forwarded": True, "images": []},
            ]},
        ],
    }
    inventory.remove("argocd", "web-prod-east")
    assert len(inventory) == 2


def test_toon_document_is_one_table_row_per_app() -> None:
    text = inventory_toon(inventory_document(sample_inventory().snapshot(), now=NOW))
    assert text == (
        'generated_at: "2025-01-01T12:00:00Z"\n'
        "total: 3\n"
        "clusters[2]:\n"
        "  - cluster: prod-east\n"
        "    total: 2\n"
        "    applications[2]{namespace,name,component,health,health_value,sync,sync_value,"
        "forwarded,images}:\n"
        "      argocd,api-prod-east,api,Healthy,1,Synced,1,true,\"quay.io/o/api:v1 quay.io/o/s:v2\"\n"
        "      argocd,web-prod-east,web,Unknown,0,Unknown,0,false,\"quay.io/o/api:v1 quay.io/o/s:v2\"\n"
        "  - cluster: prod-west\n"
        "    total: 1\n"
        "    applications[1]{namespace,name,component,health,health_value,sync,sync_value,"
        "forwarded,images}:\n"
        '      team-b,web-prod-west,web,Degraded,0,OutOfSync,0,true,""\n'
    )


# --- auth units -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "ok"),
    [(None, False), ("", False), ("Basic abc", False), ("Bearer", False), ("Bearer a b", False),
     ("bearer abc", False), ("Bearer abc", True), ("Bearer a.b-c_d~e+f/g==", True)],
)
def test_bearer_header_parsing(header: str | None, ok: bool) -> None:
    if ok:
        assert bearer_token(header) == header.split(" ", 1)[1]  # type: ignore[union-attr]
    else:
        with pytest.raises(Refused) as refused:
            bearer_token(header)
        assert refused.value.status == 401


def test_tokens_from_environment(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text("# comment\nfile-one\n\nfile-two, file-three\n")
    env = {"API_TOKENS": " env-one ,,env-two", "API_TOKENS_FILE": str(file)}
    assert tokens_from_environment(env) == ["env-one", "env-two", "file-one", "file-two",
                                            "file-three"]
    with pytest.raises(ValueError, match="API_TOKENS_FILE"):
        tokens_from_environment({"API_TOKENS_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    ("server", "mode", "warned"),
    [
        ("{host: 127.0.0.1}", "none", False),
        ("{host: localhost}", "none", False),
        ("{host: 0.0.0.0}", "token", True),  # no token configured: warned
        ("{}", "token", True),
        ("{host: 0.0.0.0, api_auth: none}", "none", True),
        ("{host: 127.0.0.1, api_auth: token}", "token", True),
        ("{host: 0.0.0.0, api_auth: kubernetes}", "kubernetes", False),
    ],
)
def test_mode_defaults_and_warnings(tmp_path: Path, server: str, mode: str, warned: bool) -> None:
    settings = load_config(write_config(tmp_path, f"server: {server}\n")).settings
    with capture_logs() as logs:
        authorizer = build_authorizer(settings)
    assert authorizer.mode == mode
    assert bool([entry for entry in logs if entry["log_level"] == "warning"]) == warned


# --- end to end over HTTP, from a running ArgoCD source -------------------------------
@pytest.fixture
async def watched(harness: Harness) -> AsyncIterator[tuple[Harness, AppContext]]:  # noqa: F811
    harness.apply(
        LiveApp("api-prod", images=[image("api", "a" * 40)],
                destination_name="prod-east").snapshot(),
        LiveApp("web-prod", namespace="team-b", destination_name="prod-west").snapshot(),
    )
    running = await harness.start("namespaces: [argocd, team-b]")
    yield harness, running.context


async def serve(context: AppContext, authorizer: Authorizer) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(build_app(context, authorizer))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{bound_port(runner)}"


def app_names(body: dict[str, Any]) -> list[str]:
    return [app["name"] for cluster in body["clusters"] for app in cluster["applications"]]


def api_reads(kube: FakeKube) -> int:  # noqa: F811
    return sum(kube.requests[kind] for kind in ("list", "get"))


async def test_open_access_serves_json_and_toon_without_api_calls(
    watched: tuple[Harness, AppContext],
) -> None:
    h, context = watched
    before = api_reads(h.kube)
    runner, url = await serve(context, OpenAccess())
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            body = (await client.get("/api/v1/argocd/applications")).json()
            toon_answer = await client.get("/api/v1/argocd/applications.toon")
    finally:
        await runner.cleanup()
    assert app_names(body) == ["api-prod", "web-prod"]
    api = body["clusters"][0]["applications"][0]
    assert (body["clusters"][0]["cluster"], api["health_value"], api["sync_value"]) == \
        ("prod-east", 1, 1)
    assert api["images"] == [image("api", "a" * 40)]
    assert toon_answer.headers["content-type"].startswith("text/toon")
    assert "applications[1]{namespace,name,component" in toon_answer.text
    assert api_reads(h.kube) == before
    assert h.kube.requests["tokenreview"] == 0


async def test_static_tokens(watched: tuple[Harness, AppContext]) -> None:
    _, context = watched
    runner, url = await serve(context, StaticTokens([SECRET, "other"]))
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            path = "/api/v1/argocd/applications"
            good = await client.get(path, headers={"Authorization": f"Bearer {SECRET}"})
            bad = await client.get(path, headers={"Authorization": f"Bearer {SECRET}x"})
            missing = await client.get(path)
            malformed = await client.get(path, headers={"Authorization": SECRET})
            toon_bad = await client.get(path + ".toon",
                                        headers={"Authorization": "Bearer nope"})
            health = await client.get("/api/v1/health")
    finally:
        await runner.cleanup()
    assert good.status_code == 200 and app_names(good.json()) == ["api-prod", "web-prod"]
    for refused in (bad, missing, malformed, toon_bad):
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert SECRET not in refused.text and "nope" not in refused.text
    assert health.status_code == 200  # only the inventory is protected


async def test_kubernetes_reviews(watched: tuple[Harness, AppContext]) -> None:
    h, context = watched
    h.kube.reviewed_tokens = {"alice-token": "alice", "bob-token": "bob", SECRET: "carol"}
    h.kube.access = {"alice": {"argocd", "team-b"}, "bob": {"team-b"}}
    authorizer = KubernetesAccess(
        KubernetesReviews(lambda: build_api_client(context.settings.argocd))
    )
    runner, url = await serve(context, authorizer)
    before = api_reads(h.kube)
    path = "/api/v1/argocd/applications"

    async def get(token: str | None, suffix: str = "") -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await client.get(path + suffix, headers=headers)

    try:
        async with httpx.AsyncClient(base_url=url) as client:
            alice = await get("alice-token")
            alice_again = await get("alice-token", ".toon")
            bob = await get("bob-token")
            carol = await get(SECRET)
            unknown = await get("stranger")
            missing = await get(None)
    finally:
        await runner.cleanup()
    assert alice.status_code == 200 and app_names(alice.json()) == ["api-prod", "web-prod"]
    assert alice_again.status_code == 200 and "web-prod" in alice_again.text
    assert bob.status_code == 200 and app_names(bob.json()) == ["web-prod"]
    assert carol.status_code == 403 and SECRET not in carol.text
    assert unknown.status_code == 401 and "stranger" not in unknown.text
    assert missing.status_code == 401
    # alice's second request came from the cache: one review of each token, one access
    # review per (token, namespace); no Application was read to answer.
    assert h.kube.requests["tokenreview"] == 4
    assert h.kube.requests["subjectaccessreview"] == 6
    assert api_reads(h.kube) == before
    assert all(SECRET not in json.dumps(entry) for entry in h.kube.request_log)


async def test_kubernetes_reviews_carry_the_groups_and_extra_of_the_token(
    watched: tuple[Harness, AppContext],
) -> None:
    """The access review names the token's groups and extra, as the API server needs.

    The API server judges a SubjectAccessReview only from what it names: without
    the groups, a user allowed through a group (every ServiceAccount of a
    namespace, an OIDC team) is refused; without the extra, an OpenShift token
    scoped to ``user:info`` (or to one namespace's role) reads with all of its
    user's rights.
    """
    h, context = watched
    h.kube.reviewed_tokens = {
        "dave-token": KubeUser("dave", uid="u-dave",
                               groups=("system:authenticated", "release-team")),
        "erin-info-token": KubeUser("erin", extra={SCOPES_EXTRA: ["user:info"]}),
        "erin-team-b-token": KubeUser("erin", extra={SCOPES_EXTRA: ["role:view:team-b"]}),
        "erin-full-token": KubeUser("erin", extra={SCOPES_EXTRA: ["user:full"]}),
    }
    h.kube.group_access = {"release-team": {"argocd"}}
    h.kube.access = {"erin": {"argocd", "team-b"}}
    authorizer = KubernetesAccess(
        KubernetesReviews(lambda: build_api_client(context.settings.argocd))
    )
    runner, url = await serve(context, authorizer)
    path = "/api/v1/argocd/applications"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            answers = {token: await client.get(path, headers={"Authorization": f"Bearer {token}"})
                       for token in h.kube.reviewed_tokens}
    finally:
        await runner.cleanup()
    dave = answers["dave-token"]
    assert dave.status_code == 200 and app_names(dave.json()) == ["api-prod"], \
        "allowed through a group: the review must name the token's groups"
    assert answers["erin-info-token"].status_code == 403, \
        "a user:info token reads no Application: the review must carry the token's extra"
    scoped = answers["erin-team-b-token"]
    assert scoped.status_code == 200 and app_names(scoped.json()) == ["web-prod"]
    full = answers["erin-full-token"]
    assert full.status_code == 200 and app_names(full.json()) == ["api-prod", "web-prod"]


async def test_kubernetes_review_unavailable_is_503(watched: tuple[Harness, AppContext]) -> None:
    h, context = watched
    h.kube.fail_next(1, 500, kind="tokenreview")
    authorizer = KubernetesAccess(
        KubernetesReviews(lambda: build_api_client(context.settings.argocd))
    )
    with pytest.raises(Refused) as refused:
        await authorizer.allowed_namespaces("Bearer anything", ["argocd"])
    assert refused.value.status == 503
