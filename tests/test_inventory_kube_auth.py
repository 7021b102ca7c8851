"""``api_auth: kubernetes`` against the fake API server (issue 19, finding 8).

The TokenReview names our audiences (a token for the API server is no key
to the inventory), every review has a timeout, unknown tokens cannot make
the daemon flood the API server with reviews, and the access review asks
for ``list`` (the inventory is a list; the reader Role grants no ``get``).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from doraforwarder.apiauth import (
    API_SERVER_AUDIENCES,
    KubernetesAccess,
    KubernetesReviews,
    Refused,
    build_authorizer,
)
from doraforwarder.argocd.kube import build_api_client
from doraforwarder.context import AppContext
from doraforwarder.testing.fake_kube_auth import KubeUser
from tests.test_argocd_watch import Harness, harness, kube  # noqa: F401 - fixtures
from tests.test_inventory import app_names, ours, serve, watched  # noqa: F401 - fixtures

PATH = "/api/v1/argocd/applications"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def reviews(context: AppContext, **options: object) -> KubernetesReviews:
    return KubernetesReviews(lambda: build_api_client(context.settings.argocd), **options)  # type: ignore[arg-type]


async def test_token_review_asks_for_our_audience(
        watched: tuple[Harness, AppContext]) -> None:  # noqa: F811
    """A token issued for the API server (any ServiceAccount's) is refused by default."""
    h, context = watched
    h.kube.reviewed_tokens = {"api-token": KubeUser("alice"), "our-token": ours("alice")}
    h.kube.access = {"alice": {"argocd", "team-b"}}
    runner, url = await serve(context, build_authorizer(context.settings.model_copy(
        update={"server": context.settings.server.model_copy(update={"api_auth": "kubernetes"})})))
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            api = await client.get(PATH, headers={"Authorization": "Bearer api-token"})
            our = await client.get(PATH, headers={"Authorization": "Bearer our-token"})
    finally:
        await runner.cleanup()
    assert api.status_code == 401 and "api-token" not in api.text
    assert our.status_code == 200 and app_names(our.json()) == ["api-prod", "web-prod"]

    # audiences: [] accepts what the API server accepts (the old behaviour, on purpose)
    open_access = KubernetesAccess(reviews(context, audiences=API_SERVER_AUDIENCES))
    assert await open_access.allowed_namespaces("Bearer api-token", ["argocd"]) == {"argocd"}


async def test_a_review_that_does_not_answer_is_503_within_the_timeout(
        watched: tuple[Harness, AppContext]) -> None:  # noqa: F811
    h, context = watched
    h.kube.reviewed_tokens = {"our-token": ours("alice")}
    hold = h.kube.hold_next(kind="tokenreview")
    authorizer = KubernetesAccess(reviews(context, timeout_s=0.3))
    started = time.monotonic()
    try:
        async with asyncio.timeout(10):
            with pytest.raises(Refused) as refused:
                await authorizer.allowed_namespaces("Bearer our-token", ["argocd"])
    finally:
        hold.release()
    assert refused.value.status == 503
    assert time.monotonic() - started < 3


async def test_unknown_tokens_are_rate_limited(
        watched: tuple[Harness, AppContext]) -> None:  # noqa: F811
    h, context = watched
    h.kube.reviewed_tokens = {"our-token": ours("alice")}
    h.kube.access = {"alice": {"argocd"}}
    clock = Clock()
    authorizer = KubernetesAccess(reviews(context), unknown_per_minute=3, clock=clock)
    assert await authorizer.allowed_namespaces("Bearer our-token", ["argocd"]) == {"argocd"}
    for n in range(3):
        with pytest.raises(Refused) as refused:
            await authorizer.allowed_namespaces(f"Bearer random-{n}", ["argocd"])
        assert refused.value.status == 401
    assert h.kube.requests["tokenreview"] == 4
    for n in range(3, 50):  # a flood of random tokens: no review reaches the API server
        with pytest.raises(Refused) as refused:
            await authorizer.allowed_namespaces(f"Bearer random-{n}", ["argocd"])
        assert refused.value.status == 429 and refused.value.retry_after == 20
    assert h.kube.requests["tokenreview"] == 4
    # a known token is still answered (from the cache), and the bucket refills
    assert await authorizer.allowed_namespaces("Bearer our-token", ["argocd"]) == {"argocd"}
    clock.now += 20
    with pytest.raises(Refused) as refused:
        await authorizer.allowed_namespaces("Bearer random-again", ["argocd"])
    assert refused.value.status == 401
    assert h.kube.requests["tokenreview"] == 5

    runner, url = await serve(context, authorizer)
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            limited = await client.get(PATH, headers={"Authorization": "Bearer random-x"})
    finally:
        await runner.cleanup()
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "20"
    assert "random-x" not in limited.text


async def test_the_access_review_asks_for_list(
        watched: tuple[Harness, AppContext]) -> None:  # noqa: F811
    """The reader Role grants list and watch, no get: a review for get refuses everyone."""
    h, context = watched
    h.kube.reviewed_tokens = {"our-token": ours("alice")}
    h.kube.access = {"alice": {"argocd"}}
    authorizer = KubernetesAccess(reviews(context))
    assert await authorizer.allowed_namespaces("Bearer our-token", ["argocd", "team-b"]) \
        == {"argocd"}
