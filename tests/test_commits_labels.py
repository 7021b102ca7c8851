"""Commits from image labels through :class:`CommitResolver`: real registry, fake GitHub, Redis.

An image tagged ``v1.4.2`` or pinned by digest resolves to the commit its
labels name, in the repository its source label names, with the same GitHub
look-ups as a SHA tag. The labels are kept by digest, so a digest is read from
the registry once; a tag is turned into its digest with a ``HEAD`` every time
(tags move).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from structlog.testing import capture_logs

from doraforwarder.commits.oci import OCI_REVISION, OCI_SOURCE, OPENSHIFT_REVISION
from doraforwarder.commits.resolve import CommitResolver
from doraforwarder.config import LoadedConfig, Secrets, Settings
from doraforwarder.context import AppContext
from doraforwarder.keys import Keys
from doraforwarder.records import ResolvedCommit
from doraforwarder.testing.fake_github import FakeGitHub
from tests.registry_support import Registry, registry_missing
from tests.test_commits_resolve import deployment, expected

pytestmark = pytest.mark.skipif(registry_missing() is not None,
                                reason=registry_missing() or "")


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry") as started:
        yield started


@pytest.fixture
async def resolver_for(redis_client: aioredis.Redis, github: FakeGitHub,
                       registry: Registry) -> AsyncIterator[Any]:
    made: list[CommitResolver] = []

    def factory(rows: str = "head", **registry_settings: Any) -> CommitResolver:
        settings = Settings.model_validate({
            "integration": {"devlake": {"enabled": False, "deployment_commits": rows}},
            "github": {"api_url": github.url},
            "registry": {"enabled": True, "plain_http": [registry.host], **registry_settings},
        })
        context = AppContext(config=LoadedConfig(settings=settings, secrets=Secrets(),
                                                 source="test"),
                             redis=redis_client, keys=Keys("test"))
        resolver = CommitResolver(context)
        made.append(resolver)
        return resolver

    yield factory
    for resolver in made:
        await resolver.aclose()


async def resolve(resolver: CommitResolver, *args: Any, **kwargs: Any) -> list[ResolvedCommit]:
    return await asyncio.wait_for(resolver.resolve(deployment(*args, **kwargs), asyncio.Event()),
                                  timeout=20)


@contextmanager
def debug_logs() -> Iterator[None]:
    """Debug lines kept, whatever level an earlier test configured the process at."""
    before = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        yield
    finally:
        structlog.configure(wrapper_class=before)


def labels(sha: str, repo: str = "org/app") -> dict[str, str]:
    return {OCI_REVISION: sha, OCI_SOURCE: f"https://github.com/{repo}.git"}


async def test_version_tag_and_digest_give_the_commit_a_sha_tag_gives(
        github: FakeGitHub, registry: Registry, resolver_for: Any) -> None:
    gitops = github.add_repo("org/gitops", commits=1)[-1]
    app = github.add_repo("org/app", commits=3)
    digest = registry.push_image("org/app", "v1.4.2", labels(app[-1]))
    name = f"{registry.host}/org/app"
    want = [*expected(github, "org/gitops", gitops), *expected(github, "org/app", app[-1])]
    assert await resolve(resolver_for(), gitops, [f"{name}:v1.4.2"], id="a:1") == want
    assert await resolve(resolver_for(), gitops, [f"{name}@{digest}"], id="a:2") == want
    # The source label named the repository: no commit search.
    assert github.counts() == {"commit": 2}


async def test_labels_are_read_once_per_digest(
        github: FakeGitHub, registry: Registry, resolver_for: Any) -> None:
    gitops = github.add_repo("org/gitops", commits=1)[-1]
    app = github.add_repo("org/app", commits=1)
    digest = registry.push_image("org/app", "v1", labels(app[-1]))
    name = f"{registry.host}/org/app"
    await resolve(resolver_for(), gitops, [f"{name}:v1"], id="b:1")
    registry.close()  # from here on the registry answers nothing
    resolved = await resolve(resolver_for(), gitops, [f"{name}@{digest}"], id="b:2")
    assert resolved[-1].sha == app[-1]
    # A tag is asked for its digest each time: it may have moved.
    with capture_logs() as logs:
        resolved = await resolve(resolver_for(), gitops, [f"{name}:v1"], id="b:3")
    assert [c.repo_url for c in resolved] == ["https://github.com/org/gitops"]
    dropped = [e for e in logs if e["event"] == "image commit dropped: its labels could not "
               "be read"]
    assert len(dropped) == 1 and dropped[0]["image"] == f"{name}:v1"


async def test_range_rows_from_labels_of_both_versions(
        github: FakeGitHub, registry: Registry, resolver_for: Any) -> None:
    gitops = github.add_repo("org/gitops", commits=1)[-1]
    app = github.add_repo("org/app", commits=5)
    registry.push_image("org/app", "v1.4.1", labels(app[1]))
    registry.push_image("org/app", "v1.4.2", labels(app[4]))
    name = f"{registry.host}/org/app"
    commits = await resolve(resolver_for(rows="range"), gitops, [f"{name}:v1.4.2"],
                            [f"{name}:v1.4.1"])
    assert commits == [*expected(github, "org/gitops", gitops),
                       *expected(github, "org/app", *app[2:5])]


async def test_user_labels_first_then_openshift_and_search_without_source(
        github: FakeGitHub, registry: Registry, resolver_for: Any) -> None:
    gitops = github.add_repo("org/gitops", commits=1)[-1]
    app = github.add_repo("org/app", commits=2)
    registry.push_image("org/app", "custom", {"vcs-ref": app[0], OCI_REVISION: app[1]})
    registry.push_image("org/app", "openshift", {OPENSHIFT_REVISION: app[1]})
    name = f"{registry.host}/org/app"
    resolver = resolver_for(labels=[{"revision": "vcs-ref"}])
    commits = await resolve(resolver, gitops, [f"{name}:custom"], id="c:1")
    assert commits[-1] == expected(github, "org/app", app[0])[0]
    commits = await resolve(resolver, gitops, [f"{name}:openshift"], id="c:2")
    assert commits[-1] == expected(github, "org/app", app[1])[0]
    assert github.counts()["search"] == 2  # no source label: the commit search found it


async def test_image_without_labels_is_dropped_with_its_reason(
        github: FakeGitHub, registry: Registry, resolver_for: Any) -> None:
    gitops = github.add_repo("org/gitops", commits=1)[-1]
    registry.push_image("org/plain", "latest", {"maintainer": "someone"})
    resolver = resolver_for()
    with capture_logs() as logs:
        commits = await resolve(resolver, gitops, [f"{registry.host}/org/plain:latest"])
    assert len(commits) == 1
    assert any(e["event"] == "image commit dropped: its tag carries no SHA and its labels no "
               "commit" for e in logs)
    assert resolver.context.metrics.registry.get_sample_value(
        "doraforwarder_commits_unresolved_total", {"reason": "no_label"}) == 1


async def test_disabled_registry_is_never_asked(
        github: FakeGitHub, registry: Registry, resolver_for: Any) -> None:
    gitops = github.add_repo("org/gitops", commits=1)[-1]
    app = github.add_repo("org/app", commits=1)
    registry.push_image("org/app", "v1", labels(app[-1]))
    commits = await resolve(resolver_for(enabled=False), gitops,
                            [f"{registry.host}/org/app:v1"])
    assert len(commits) == 1


@pytest.mark.parametrize("skip", [[], ["*/mesh/proxy*"]])
async def test_skipped_images_never_reach_the_registry(
        github: FakeGitHub, registry: Registry, resolver_for: Any, skip: list[str]) -> None:
    gitops = github.add_repo("org/gitops", commits=1)[-1]
    app = github.add_repo("org/app", commits=1)
    registry.push_image("org/app", "v1", labels(app[-1]))
    sidecar = f"{registry.host}/mesh/proxyv2:1.20"  # never pushed: a look-up fails
    resolver = resolver_for(skip_images=skip)
    want = [*expected(github, "org/gitops", gitops), *expected(github, "org/app", app[-1])]
    with debug_logs(), capture_logs() as logs:
        for n in (1, 2):
            assert await resolve(resolver, gitops, [f"{registry.host}/org/app:v1", sidecar],
                                 id=f"s:{n}") == want
    failed = resolver.context.metrics.registry.get_sample_value(
        "doraforwarder_commits_unresolved_total", {"reason": "registry"})
    skipped = [e for e in logs if e["event"] == "image matches registry.skip_images: its "
               "labels are not read"]
    if skip:
        assert failed is None
        assert [(e["image"], e["log_level"]) for e in skipped] == [(sidecar, "debug")]
    else:
        assert failed == 2 and skipped == []
