"""The application inventory: its JSON and TOON shapes, the three auth modes, no API calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
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
from doraforwarder.inventory import (
    Inventory,
    inventory_document,
    inventory_json,
    inventory_toon,
    reference_split,
)
from doraforwarder.server import bound_port, build_app, cors_middleware
from doraforwarder.testing.argocd_objects import LiveApp, image
from doraforwarder.testing.fake_kube import FakeKube
from doraforwarder.testing.fake_kube_auth import SCOPES_EXTRA, KubeUser
from tests.conftest import write_config
from tests.test_argocd_watch import Harness, harness, kube  # noqa: F401 - fixtures

SECRET = "s3cret-token-value"


# --- TOON -----------------------------------------------------------------------------
# Each expected text is what toon-format/toon-go (the reference's library, at the version
# its go.mod pins) writes with length markers for the JSON value; Go sorts a map's keys,
# so the value is read with its keys sorted.
@pytest.mark.parametrize(
    ("value", "text"),
    [
        ('{"a":1,"b":"x"}',
         'a: 1\nb: x'),
        ('{"tags":["a","b"]}',
         'tags[#2]: a,b'),
        ('{"tags":[]}',
         'tags[#0]:'),
        ('{"o":{"k":true,"n":null}}',
         'o:\n  k: true\n  n: null'),
        ('{"rows":[{"a":1,"b":"x"},{"a":2,"b":"y"}]}',
         'rows[#2]{a,b}:\n  1,x\n  2,y'),
        ('{"rows":[{"a":1,"b":"x"},{"b":"y","a":2}]}',
         'rows[#2]{a,b}:\n  1,x\n  2,y'),
        ('{"s":""}',
         's: ""'),
        ('{"s":"a,b"}',
         's: "a,b"'),
        ('{"s":"true"}',
         's: "true"'),
        ('{"s":"42"}',
         's: "42"'),
        ('{"s":"-x"}',
         's: "-x"'),
        ('{"s":"a:b"}',
         's: "a:b"'),
        ('{"s":" q\\""}',
         's: " q\\""'),
        ('{"s":"line\\nbreak"}',
         's: "line\\nbreak"'),
        ('{"s":"quay.io/org/app@sha256"}',
         's: quay.io/org/app@sha256'),
        ('{"s":"#hash"}',
         's: #hash'),
        ('{"s":"05"}',
         's: "05"'),
        ('{"s":"1e5"}',
         's: "1e5"'),
        ('{"s":"+1"}',
         's: +1'),
        ('{"s":"a b"}',
         's: a b'),
        ('{"s":"x\\u00a0"}',
         's: "x\xa0"'),
        ('{"s":"caf\\u00e9"}',
         's: café'),
        ('{"weird key":1}',
         '"weird key": 1'),
        ('{"1abc":1}',
         '"1abc": 1'),
        ('{"a.b":1}',
         'a.b: 1'),
        ('{"items":[{"a":1,"l":[1,2]},{"a":2}]}',
         'items[#2]:\n  - a: 1\n    l[#2]: 1,2\n  - a: 2'),
        ('{"items":[{"l":[1,2],"a":1}]}',
         'items[#1]:\n  - a: 1\n    l[#2]: 1,2'),
        ('{"items":[{"o":{"x":1},"a":1}]}',
         'items[#1]:\n  - a: 1\n    o:\n      x: 1'),
        ('{"items":[{}]}',
         'items[#1]:\n  - {}'),
        ('{"items":[[1,2],[]]}',
         'items[#2]:\n  - [#2]: 1,2\n  - [#0]:'),
        ('{"items":[[{"a":1},{"a":2}]]}',
         'items[#1]:\n  - [#2]{a}:\n    1\n    2'),
        ('{"items":[[[1],[2]]]}',
         'items[#1]:\n  - [#2]:\n    - [#1]: 1\n    - [#1]: 2'),
        ('{"items":[{"l":[{"a":1},{"a":2}],"z":3}]}',
         'items[#1]:\n  - l[#2]{a}:\n    1\n    2\n    z: 3'),
        ('{"items":[{"l":[[1]],"z":3}]}',
         'items[#1]:\n  - l[#1]:\n    - [#1]: 1\n    z: 3'),
        ('[1,2]',
         '[#2]: 1,2'),
        ('[{"a":1},{"a":2}]',
         '[#2]{a}:\n  1\n  2'),
        ('[{"a":1},3]',
         '[#2]:\n  - a: 1\n  - 3'),
        ('[]',
         '[#0]:'),
        ('{}',
         ''),
        ('{"e":{}}',
         'e:'),
        ('"x"',
         'x'),
        ('{"n":-3,"f":1.5,"z":0}',
         'f: 1.5\nn: -3\nz: 0'),
    ],
)
def test_toon_encoding_matches_the_references_library(value: str, text: str) -> None:
    assert toon.encode(json.loads(value, object_pairs_hook=lambda pairs: dict(sorted(pairs)))) \
        == text


def test_toon_refuses_control_characters() -> None:
    with pytest.raises(ValueError, match="U\\+0001"):
        toon.encode({"s": "a\x01"})


# --- documents ------------------------------------------------------------------------
def sample_inventory() -> Inventory:
    """The apps of the expected answers below (written by the reference's own types)."""
    inventory = Inventory()
    inventory.put(namespace="build-service", name="build-service-kflux-prd-rh02",
                  component="build-service", cluster="kflux-prd-rh02", health="Healthy",
                  sync="Synced", forwarded=True, images=[
                      "quay.io/konflux-ci/build-service:0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
                      "registry.redhat.io/openshift4/ose-kube-rbac-proxy@sha256:abc"])
    inventory.put(namespace="integration-service", name="integration-service-stone-prd-m01",
                  component="integration-service", cluster="stone-prd-m01", health=None,
                  sync=None, images=["quay.io/x/y:v1"], forwarded=True)
    inventory.put(namespace="build-service", name="release-service-kflux-prd-rh02",
                  component="release-service", cluster="kflux-prd-rh02", health="Degraded",
                  sync="OutOfSync", images=[], forwarded=False)
    return inventory


# encoding/json and toon.Marshal(..., WithLengthMarkers(true)) of the reference's
# ApplicationsResponse holding the same apps (apis/argocd/handler.go).
REFERENCE_JSON = (
    '{"clusters":[{"cluster":"kflux-prd-rh02","applications":[{"namespace":"build-service","n'
    'ame":"build-service-kflux-prd-rh02","component":"build-service","health_status":"Healthy'
    '","health_value":1,"sync_status":"Synced","sync_value":1,"images":["quay.io/konflux-ci/b'
    'uild-service:0a1b2c3d4e5f60718293a4b5c6d7e8f901234567","registry.redhat.io/openshift4/os'
    'e-kube-rbac-proxy@sha256:abc"]},{"namespace":"build-service","name":"release-service-kfl'
    'ux-prd-rh02","component":"release-service","health_status":"Degraded","health_value":0,"'
    'sync_status":"OutOfSync","sync_value":0,"images":[]}],"count":2},{"cluster":"stone-prd-m'
    '01","applications":[{"namespace":"integration-service","name":"integration-service-stone'
    '-prd-m01","component":"integration-service","health_status":"","health_value":0,"sync_st'
    'atus":"","sync_value":0,"images":["quay.io/x/y:v1"]}],"count":1}],"total_count":3}'
)
REFERENCE_TOON = (
    'clusters[#2]:\n'
    '  - cluster: kflux-prd-rh02\n'
    '    applications[#2]:\n'
    '      - namespace: build-service\n'
    '        name: build-service-kflux-prd-rh02\n'
    '        component: build-service\n'
    '        health_status: Healthy\n'
    '        health_value: 1\n'
    '        sync_status: Synced\n'
    '        sync_value: 1\n'
    '        images[#2]: "quay.io/konflux-ci/build-service:0a1b2c3d4e5f60718293a4b5c6d7e8f901234567","registry.redhat.io/openshift4/ose-kube-rbac-proxy@sha256:abc"\n'
    '      - namespace: build-service\n'
    '        name: release-service-kflux-prd-rh02\n'
    '        component: release-service\n'
    '        health_status: Degraded\n'
    '        health_value: 0\n'
    '        sync_status: OutOfSync\n'
    '        sync_value: 0\n'
    '        images[#0]:\n'
    '    count: 2\n'
    '  - cluster: stone-prd-m01\n'
    '    applications[#1]:\n'
    '      - namespace: integration-service\n'
    '        name: integration-service-stone-prd-m01\n'
    '        component: integration-service\n'
    '        health_status: ""\n'
    '        health_value: 0\n'
    '        sync_status: ""\n'
    '        sync_value: 0\n'
    '        images[#1]: "quay.io/x/y:v1"\n'
    '    count: 1\n'
    'total_count: 3'
)
REFERENCE_ONE_JSON = (
    '{"clusters":[{"cluster":"unknown","applications":[{"namespace":"ns","name":"app","compon'
    'ent":"app","health_status":"Progressing","health_value":0,"sync_status":"Unknown","sync_'
    'value":0,"images":[]}],"count":1}],"total_count":1}'
)
REFERENCE_ONE_TOON = (
    'clusters[#1]:\n'
    '  - cluster: unknown\n'
    '    applications[#1]:\n'
    '      - namespace: ns\n'
    '        name: app\n'
    '        component: app\n'
    '        health_status: Progressing\n'
    '        health_value: 0\n'
    '        sync_status: Unknown\n'
    '        sync_value: 0\n'
    '        images[#0]:\n'
    '    count: 1\n'
    'total_count: 1'
)


def test_json_and_toon_are_the_references_bytes() -> None:
    document = inventory_document(sample_inventory().snapshot())
    assert inventory_json(document).decode() == REFERENCE_JSON
    assert inventory_toon(document) == REFERENCE_TOON
    one = Inventory()
    one.put(namespace="ns", name="app", component="app", cluster="unknown",
            health="Progressing", sync="Unknown", images=[], forwarded=True)
    document = inventory_document(one.snapshot())
    assert inventory_json(document).decode() == REFERENCE_ONE_JSON
    assert inventory_toon(document) == REFERENCE_ONE_TOON


def test_empty_inventory_and_go_escapes() -> None:
    # The reference answers "clusters":null when nothing is watched (a nil Go slice);
    # we answer [] (listed in docs/migration.md). Its TOON is the same: clusters[#0]:.
    assert inventory_json(inventory_document([])) == b'{"clusters":[],"total_count":0}'
    assert inventory_toon(inventory_document([])) == "clusters[#0]:\ntotal_count: 0"
    assert inventory_json({"s": "<a&b>\u2028é"}) == \
        b'{"s":"\\u003ca\\u0026b\\u003e\\u2028\xc3\xa9"}'


def test_equal_image_lists_are_shared() -> None:
    inventory = sample_inventory()
    inventory.put(namespace="a", name="b", component="b", cluster="c", health="Healthy",
                  sync="Synced", images=["quay.io/x/y:v1"], forwarded=True)
    entries = {entry.name: entry for entry in inventory.snapshot()}
    assert entries["b"].images is entries["integration-service-stone-prd-m01"].images
    inventory.remove("a", "b")
    assert len(inventory) == 3


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


def ours(name: str, **fields: Any) -> KubeUser:
    """A user whose token was issued for doraforwarder (``--audience doraforwarder``)."""
    return KubeUser(name, audiences=("doraforwarder",), **fields)


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
    assert toon_answer.headers["content-type"] == "text/plain"
    assert "  - cluster: prod-east\n    applications[#1]:\n      - namespace: argocd\n" \
        in toon_answer.text
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
    h.kube.reviewed_tokens = {"alice-token": ours("alice"), "bob-token": ours("bob"),
                              SECRET: ours("carol")}
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
        "dave-token": ours("dave", uid="u-dave",
                           groups=("system:authenticated", "release-team")),
        "erin-info-token": ours("erin", extra={SCOPES_EXTRA: ["user:info"]}),
        "erin-team-b-token": ours("erin", extra={SCOPES_EXTRA: ["role:view:team-b"]}),
        "erin-full-token": ours("erin", extra={SCOPES_EXTRA: ["user:full"]}),
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


# --- CORS (the reference's Fiber middleware: any origin) --------------------------------
# The expected headers are what Fiber v2.52.15's cors middleware, configured as the reference
# configures it, answers (measured); only Allow-Methods differs, on purpose (docs/migration.md).
async def test_cors_as_the_reference(watched: tuple[Harness, AppContext]) -> None:
    _, context = watched
    runner, url = await serve(context, StaticTokens([SECRET]))
    path = "/api/v1/argocd/applications"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            plain = await client.get(path, headers={"Authorization": f"Bearer {SECRET}"})
            browser = await client.get(path, headers={"Authorization": f"Bearer {SECRET}",
                                                      "Origin": "https://console.example"})
            refused = await client.get(path, headers={"Origin": "https://console.example"})
            unknown = await client.get("/nope", headers={"Origin": "https://console.example"})
            preflight = await client.options(path + ".toon", headers={
                "Origin": "https://console.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization"})
    finally:
        await runner.cleanup()
    assert "Access-Control-Allow-Origin" not in plain.headers
    assert browser.status_code == 200 and browser.headers["Access-Control-Allow-Origin"] == "*"
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == "*"
    assert unknown.status_code == 404 and unknown.headers["Access-Control-Allow-Origin"] == "*"
    assert preflight.status_code == 204 and preflight.content == b""
    assert {name: preflight.headers[name] for name in (
        "Vary", "Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
        "Access-Control-Allow-Headers")} == {
        "Vary": "Access-Control-Request-Method, Access-Control-Request-Headers, Origin",
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "GET,OPTIONS",
        "Access-Control-Allow-Headers": "Origin,Content-Type,Accept,Authorization"}


@pytest.mark.parametrize(
    ("origins", "origin", "allowed", "vary"),
    [
        ((), "https://a.example", None, None),  # cors_allow_origins: [] -> no CORS at all
        (("https://a.example",), "https://a.example", "https://a.example", "Origin"),
        (("https://a.example/",), "https://A.example", "https://a.example", "Origin"),
        (("https://a.example",), "https://b.example", None, "Origin"),
        (("*",), "https://b.example", "*", None),
    ],
)
async def test_cors_origins_are_configurable(
    tmp_path: Path, origins: tuple[str, ...], origin: str, allowed: str | None, vary: str | None,
) -> None:
    listed = ", ".join(f'"{o}"' for o in origins)
    settings = load_config(write_config(
        tmp_path, f"server: {{host: 127.0.0.1, cors_allow_origins: [{listed}]}}\n")).settings
    assert tuple(settings.server.cors_allow_origins) == origins
    app = web.Application(middlewares=[cors_middleware(origins)] if origins else [])

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app.router.add_get("/x", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bound_port(runner)}") as c:
            answer = await c.get("/x", headers={"Origin": origin})
    finally:
        await runner.cleanup()
    assert answer.headers.get("Access-Control-Allow-Origin") == allowed
    assert answer.headers.get("Vary") == vary


async def test_apps_not_forwarded_are_listed_under_their_names_component_and_cluster(
    harness: Harness,  # noqa: F811
) -> None:
    """Seen side by side: the reference lists an ignored component under the cluster its
    name ends with (``monitoring-prod-east``: component monitoring, cluster prod-east),
    not under the Application's destination."""
    harness.apply(
        LiveApp("monitoring-prod-east").snapshot(),
        LiveApp("api-prod-east").snapshot(),
        LiveApp("tool-nowhere", destination_name="in-cluster").snapshot(),
    )
    running = await harness.start(
        "known_clusters: [prod-east, east], components_to_ignore: [monitoring]")
    entries = {(e.name, e.component, e.cluster, e.forwarded)
               for e in running.context.inventory.snapshot()}
    assert entries == {
        ("monitoring-prod-east", "monitoring", "prod-east", False),
        ("api-prod-east", "api", "prod-east", True),
        # no known cluster in the name: the reference's handler takes the last two
        # dash-separated parts (apis/argocd/handler.go), not the destination
        ("tool-nowhere", "tool", "nowhere", False),
    }


# --- names as the reference's inventory derives them ----------------------------------
# Each row is what the reference's handler (apis/argocd/handler.go: extractComponentName,
# extractClusterName) answers with these known clusters, in this order.
KNOWN = ["east-1", "prod-east-1", "kflux-prd-rh02", "stone-prd-m01"]


@pytest.mark.parametrize(("name", "component", "cluster"), [
    ("build-service-prod-east-1", "build-service-prod", "east-1"),  # first listed, not longest
    ("build-service-kflux-prd-rh02", "build-service", "kflux-prd-rh02"),
    ("release-east-1", "release", "east-1"),
    ("api", "api", "unknown"),
    ("web-prod", "web", "prod"),
    ("argocd-apps", "argocd", "apps"),
    ("kflux-prd-rh02-monitoring-extra", "monitoring", "kflux-prd-rh02"),
    ("east-1", "east", "east-1"),
    ("-east-1", "", "east-1"),
    ("a-b-c", "b", "c"),
    ("x-stone-prd-m01", "x", "stone-prd-m01"),
])
def test_reference_split(name: str, component: str, cluster: str) -> None:
    assert reference_split(name, KNOWN) == (component, cluster)


async def test_inventory_names_apps_as_the_reference_with_known_clusters(
        harness: Harness) -> None:  # noqa: F811
    harness.apply(
        LiveApp("api-prod-east", images=[image("api", "a" * 40)],
                destination_name="somewhere").snapshot(),
        LiveApp("argocd-apps", destination_name="in-cluster").snapshot(),
        LiveApp("annotated-prod-east", destination_name="x",
                annotations={"doraforwarder.io/component": "web",
                             "doraforwarder.io/cluster": "east"}).snapshot(),
    )
    running = await harness.start("namespaces: [argocd], known_clusters: [prod-east]")
    named = {(e.name, e.component, e.cluster) for e in running.context.inventory.snapshot()}
    assert named == {("api-prod-east", "api", "prod-east"),
                     ("argocd-apps", "argocd", "apps"),
                     ("annotated-prod-east", "web", "east")}


def test_apps_in_a_cluster_follow_the_configured_namespace_order() -> None:
    inventory = Inventory()
    for namespace, name in (("b-ns", "x"), ("a-ns", "z"), ("a-ns", "y"), ("c-ns", "w")):
        inventory.put(namespace=namespace, name=name, component=name, cluster="one",
                      health="Healthy", sync="Synced", images=[], forwarded=True)
    def names(namespaces: list[str]) -> list[str]:
        document = inventory_document(inventory.snapshot(), namespaces)
        return [app["name"] for app in document["clusters"][0]["applications"]]
    # argocd.namespaces: [b-ns, a-ns]: the reference lists b-ns first; unlisted ones last
    assert names(["b-ns", "a-ns"]) == ["x", "y", "z", "w"]
    assert names([]) == ["y", "z", "x", "w"]  # ["*"]: by namespace, as the API lists them
