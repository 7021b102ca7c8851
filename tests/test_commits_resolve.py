"""Commit resolution against the fake GitHub over real HTTP, with a real redis-server.

Each test shows the exact commit list and the exact API calls it cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from structlog.testing import capture_logs

from doraforwarder.commits.github import slim
from doraforwarder.commits.resolve import CommitResolver
from doraforwarder.config import LoadedConfig, Secrets, Settings
from doraforwarder.context import AppContext
from doraforwarder.keys import Keys
from doraforwarder.records import DetectedDeployment, GitSource, ResolvedCommit
from doraforwarder.testing.fake_github import FakeGitHub
from doraforwarder.testing.http_fake import free_port

WEB = "https://github.com"
GITOPS = f"{WEB}/org/gitops"
SVC = f"{WEB}/org/svc"
STARTED = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture
def history(github: FakeGitHub) -> dict[str, list[str]]:
    """org/gitops (3 commits) and org/svc (6 commits), linear."""
    return {"gitops": github.add_repo("org/gitops", commits=3),
            "svc": github.add_repo("org/svc", commits=6)}


def make_context(redis: aioredis.Redis, github: FakeGitHub, *, token: str | None = None,
                 blacklist: tuple[str, ...] = (), rows: str = "range",
                 **github_settings: Any) -> AppContext:
    """Most tests here show ``range`` rows (the look-ups it costs); ``rows="head"`` the rest."""
    settings = Settings.model_validate({
        "integration": {"devlake": {"enabled": False, "deployment_commits": rows}},
        "argocd": {"repository_blacklist": list(blacklist)},
        "github": {"api_url": github.url, **github_settings},
        "delivery": {"initial_backoff": "10ms", "max_backoff": "50ms"},
    })
    secrets = Secrets(github_token=SecretStr(token) if token else None)
    return AppContext(config=LoadedConfig(settings=settings, secrets=secrets, source="test"),
                      redis=redis, keys=Keys("test"))


@pytest.fixture
async def resolver_for(
    redis_client: aioredis.Redis, github: FakeGitHub
) -> AsyncIterator[Any]:
    made: list[CommitResolver] = []

    def factory(**settings: Any) -> CommitResolver:
        resolver = CommitResolver(make_context(redis_client, github, **settings))
        made.append(resolver)
        return resolver

    yield factory
    for resolver in made:
        await resolver.aclose()


def deployment(gitops_sha: str, images: list[str], previous: list[str] | None = None, *,
               id: str = "svc:rev:1", app: str = "svc-prod",
               sources: list[GitSource] | None = None,
               detected_at: datetime | None = None) -> DetectedDeployment:
    return DetectedDeployment(
        id=id, app_namespace="argocd", app_name=app, component="svc", cluster="prod",
        environment="PRODUCTION", result="SUCCESS", revision=gitops_sha,
        sources=sources if sources is not None else [GitSource(repo_url=GITOPS + ".git",
                                                               revision=gitops_sha)],
        started_at=STARTED, deployed_at=STARTED + timedelta(minutes=1),
        images=images, previous_images=previous or [],
        detected_at=detected_at or datetime.now(UTC),
    )


def expected(github: FakeGitHub, repo: str, *shas: str) -> list[ResolvedCommit]:
    """The commits as the fake knows them (author dates and messages included)."""
    commits = []
    for sha in shas:
        fake = github.commit(repo, sha)
        assert fake.author_date is not None
        commits.append(ResolvedCommit(repo_url=f"{WEB}/{repo}", sha=sha, message=fake.message,
                                      author_date=fake.author_date,
                                      url=f"{WEB}/{repo}/commit/{sha}"))
    return commits


def image(sha: str, name: str = "quay.io/org/svc") -> str:
    return f"{name}:{sha}"


def waiting(resolver: CommitResolver) -> float:
    """The rate-limit wait gauge, as /metrics shows it."""
    value = resolver.context.metrics.registry.get_sample_value(
        "doraforwarder_github_rate_limit_wait_seconds")
    assert value is not None
    return value


async def resolve(resolver: CommitResolver, target: DetectedDeployment) -> list[ResolvedCommit]:
    return await asyncio.wait_for(resolver.resolve(target, asyncio.Event()), timeout=20)


# --- the main paths -------------------------------------------------------------------------------
async def test_first_deployment_of_an_image_is_its_commit(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    gitops, svc = history["gitops"][-1], history["svc"][-1]
    commits = await resolve(resolver_for(), deployment(gitops, [image(svc)]))
    assert commits == [*expected(github, "org/gitops", gitops), *expected(github, "org/svc", svc)]
    assert github.counts() == {"commit": 2, "search": 1}


async def test_changed_image_is_the_compare_range_oldest_first(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    gitops, svc = history["gitops"][-1], history["svc"]
    target = deployment(gitops, [image(svc[5])], [image(svc[1])])
    commits = await resolve(resolver_for(), target)
    assert commits == [*expected(github, "org/gitops", gitops),
                       *expected(github, "org/svc", *svc[2:6])]
    assert github.counts() == {"commit": 1, "search": 1, "compare": 1}


async def test_long_range_is_paginated_and_capped_at_max_commits(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    big = github.add_repo("org/big", commits=300)
    resolver = resolver_for(image_repositories=[{"prefix": "quay.io/org/big", "repo": "org/big"}])
    with capture_logs() as logs:
        commits = await resolve(resolver, deployment(history["gitops"][-1],
                                                     [image(big[299], "quay.io/org/big")],
                                                     [image(big[0], "quay.io/org/big")]))
    assert [c.sha for c in commits[1:]] == big[50:300]  # the newest 250 of 299, oldest first
    assert commits[1:] == expected(github, "org/big", *big[50:300])
    assert github.counts() == {"commit": 1, "compare": 3}  # pages 1, 2, 3 of 100
    assert resolver.context.metrics.commits_truncated._value.get() == 1
    assert any(log["event"].startswith("commit range longer") and log["total"] == 299
               and log["kept"] == 250 for log in logs)


async def test_max_commits_setting_caps_the_range(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    svc = history["svc"]
    commits = await resolve(resolver_for(max_commits=2),
                            deployment(history["gitops"][-1], [image(svc[5])], [image(svc[0])]))
    assert [c.sha for c in commits[1:]] == svc[4:6]


@pytest.mark.parametrize("shape", ["behind", "diverged"])
async def test_rollback_or_force_push_is_only_the_current_commit(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any, shape: str
) -> None:
    svc = history["svc"]
    if shape == "behind":
        previous, current = svc[5], svc[2]
    else:
        side = github.add_commits("org/svc", 2, parent=svc[2])
        previous, current = svc[5], side[1]
    gitops = history["gitops"][-1]
    commits = await resolve(resolver_for(),
                            deployment(gitops, [image(current)], [image(previous)]))
    assert commits == [*expected(github, "org/gitops", gitops),
                       *expected(github, "org/svc", current)]
    assert github.counts() == {"commit": 2, "search": 1, "compare": 1}


async def test_unchanged_and_untagged_images_contribute_nothing(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    gitops, svc = history["gitops"][-1], history["svc"][3]
    images = [image(svc), "quay.io/org/web:latest", "quay.io/org/cli:v1.2.3"]
    commits = await resolve(resolver_for(), deployment(gitops, images, [image(svc[:7])]))
    assert commits == expected(github, "org/gitops", gitops)
    assert github.counts() == {"commit": 1}


async def test_image_repository_rule_skips_the_search(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    resolver = resolver_for(image_repositories=[
        {"prefix": "quay.io/org/svc", "repo": "git@github.com:Org/Svc.git"}])
    gitops, svc = history["gitops"][-1], history["svc"][2]
    commits = await resolve(resolver, deployment(gitops, [image(svc)]))
    assert commits == [*expected(github, "org/gitops", gitops), *expected(github, "org/svc", svc)]
    assert github.counts() == {"commit": 2}


async def test_search_skips_forks_and_the_gitops_repository(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    svc = history["svc"][4]
    github.add_repo("someone/svc", fork_of="org/svc")
    github.add_commit("org/gitops", sha=svc, message="vendored svc")  # same SHA in gitops repo
    gitops = history["gitops"][-1]
    commits = await resolve(resolver_for(), deployment(gitops, [image(svc)]))
    assert commits == [*expected(github, "org/gitops", gitops), *expected(github, "org/svc", svc)]
    assert github.counts() == {"commit": 2, "search": 1}


async def test_commit_only_in_a_fork_or_the_gitops_repo_is_dropped(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    github.add_repo("someone/svc", fork_of="org/svc")
    lonely = github.add_commits("someone/svc", 1)[0]
    in_gitops = history["gitops"][0]
    gitops = history["gitops"][-1]
    resolver = resolver_for()
    with capture_logs() as logs:
        commits = await resolve(resolver, deployment(
            gitops, [image(lonely), image(in_gitops, "quay.io/org/config")]))
    assert commits == expected(github, "org/gitops", gitops)
    assert github.counts() == {"commit": 1, "search": 2}
    unresolved = resolver.context.metrics.commits_unresolved.labels("no_repository")
    assert unresolved._value.get() == 2
    assert sum("image commit dropped" in log["event"] for log in logs) == 2


async def test_ambiguous_short_sha_is_dropped_unless_the_image_names_the_repo(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    github.add_repo("org/alpha")
    github.add_repo("org/beta")
    alpha = github.add_commit("org/alpha", sha="deadbee" + "1" * 33, message="alpha change")
    github.add_commit("org/beta", sha="deadbee" + "2" * 33, message="beta change")
    gitops = history["gitops"][-1]
    resolver = resolver_for()
    commits = await resolve(resolver, deployment(gitops, [image("deadbee", "quay.io/org/gamma")]))
    assert commits == expected(github, "org/gitops", gitops)
    assert resolver.context.metrics.commits_unresolved.labels("ambiguous")._value.get() == 1
    assert github.counts() == {"commit": 1, "search": 1}

    commits = await resolve(resolver, deployment(
        gitops, [image("DEADBEE", "quay.io/org/alpha")], id="alpha:rev:1", app="alpha-prod"))
    assert commits == [*expected(github, "org/gitops", gitops),
                       *expected(github, "org/alpha", alpha)]
    # The search answer was cached; the abbreviated commit was fetched once.
    assert github.counts() == {"commit": 2, "search": 1}


async def test_repeated_compare_is_answered_304_from_the_etag(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    svc, gitops = history["svc"], history["gitops"][-1]
    resolver = resolver_for()
    first = await resolve(resolver, deployment(gitops, [image(svc[5])], [image(svc[2])]))
    second = await resolve(resolver, deployment(gitops, [image(svc[5])], [image(svc[2])],
                                                id="svc:rev:2", app="svc-prod-2"))
    assert first == second == [*expected(github, "org/gitops", gitops),
                               *expected(github, "org/svc", *svc[3:6])]
    assert github.count("compare") == 2 and github.count("compare", status=304) == 1
    assert [r.conditional for r in github.requests if r.kind == "compare"] == [False, True]
    assert github.counts() == {"commit": 1, "search": 1, "compare": 2}


async def test_cache_is_reused_across_deployments(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    svc, gitops = history["svc"][3], history["gitops"]
    await resolve(resolver_for(), deployment(gitops[1], [image(svc)]))
    assert github.counts() == {"commit": 2, "search": 1}
    github.reset_requests()
    # Another worker, another app: same image commit, new gitops revision.
    commits = await resolve(resolver_for(), deployment(gitops[2], [image(svc)], id="b:rev:1",
                                                       app="svc-stage"))
    assert commits == [*expected(github, "org/gitops", gitops[2]),
                       *expected(github, "org/svc", svc)]
    assert github.counts() == {"commit": 1}  # no search, no second look-up of the image commit


async def test_the_same_deployment_resolves_once(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    target = deployment(history["gitops"][-1], [image(history["svc"][1])])
    resolver = resolver_for()
    first = await resolve(resolver, target)
    calls = github.count()
    assert await resolve(resolver, target) == first
    assert github.count() == calls
    # The same id with other inputs (a corrected redelivery) is resolved anew.
    corrected = target.model_copy(update={"images": [image(history["svc"][2])]})
    assert (await resolve(resolver, corrected))[-1].sha == history["svc"][2]
    assert github.count() == calls + 2  # search and commit of the new image


# --- rate limits, failures, deadlines ---------------------------------------------------------------
async def test_primary_rate_limit_waits_for_the_reset_then_succeeds(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    gitops, svc = history["gitops"][-1], history["svc"][-1]
    github.exhaust("core", reset_in=1.5)  # slack for a slow machine before the first request
    resolver = resolver_for()
    with capture_logs() as logs:
        commits = await resolve(resolver, deployment(gitops, [image(svc)]))
    assert commits == [*expected(github, "org/gitops", gitops), *expected(github, "org/svc", svc)]
    assert github.count("commit", status=403) >= 1
    assert github.count("commit", status=200) == 2
    waits = [log for log in logs if log["event"] == "GitHub rate limit reached, waiting"]
    assert waits and all(log["limit"] == "primary" and 0 < log["wait_seconds"] <= 1.51
                         for log in waits)
    metrics = resolver.context.metrics
    assert metrics.github_rate_limit_remaining.labels("core")._value.get() > 0
    assert metrics.github_rate_limit_remaining.labels("search")._value.get() == 29
    assert waiting(resolver) == 0


async def test_last_request_of_the_window_makes_the_next_one_wait_without_a_403(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    github.set_limit("core", 5000, remaining=1, reset_in=1.5)  # outlasts the first resolve
    gitops = history["gitops"]
    resolver = resolver_for()
    await resolve(resolver, deployment(gitops[1], []))
    with capture_logs() as logs:
        commits = await resolve(resolver, deployment(gitops[2], [], id="svc:rev:2"))
    assert commits == expected(github, "org/gitops", gitops[2])
    assert github.count(status=403) == 0 and github.count("commit", status=200) == 2
    assert [log.get("status") for log in logs if "rate limit" in log["event"]] == [None]


@pytest.mark.parametrize("status", [403, 429])
async def test_secondary_rate_limit_waits_retry_after_then_succeeds(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any, status: int
) -> None:
    github.secondary_limit("search", status=status, retry_after=0.05)
    gitops, svc = history["gitops"][-1], history["svc"][-1]
    with capture_logs() as logs:
        commits = await resolve(resolver_for(), deployment(gitops, [image(svc)]))
    assert commits == [*expected(github, "org/gitops", gitops), *expected(github, "org/svc", svc)]
    assert github.count("search", status=status) == 1 and github.count("search", status=200) == 1
    assert [log["limit"] for log in logs if "rate limit" in log["event"]] == ["secondary"]


async def test_server_errors_and_dropped_connections_are_retried(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    github.fail("commit", status=502, times=2)
    github.drop("search", times=1)
    github.fail("search", status=503, times=1)
    gitops, svc = history["gitops"][-1], history["svc"][-1]
    resolver = resolver_for()
    commits = await resolve(resolver, deployment(gitops, [image(svc)]))
    assert commits == [*expected(github, "org/gitops", gitops), *expected(github, "org/svc", svc)]
    assert github.count("commit", status=502) == 2 and github.count("commit", status=200) == 2
    assert github.count("search", status=503) == 1 and github.count("search", status=200) == 1
    assert github.count("search") == 3  # one dropped, one 503, one answer
    requests = resolver.context.metrics.github_requests
    assert requests.labels("search", "error")._value.get() == 1


async def test_unknown_commit_is_dropped_never_given_another_repository(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    other = github.add_repo("org/other", commits=1)[0]
    resolver = resolver_for(image_repositories=[{"prefix": "quay.io/org/svc", "repo": SVC}])
    gitops = history["gitops"][-1]
    unknown = "0123456789abcdef0123456789abcdef01234567"
    with capture_logs() as logs:
        commits = await resolve(resolver, deployment(
            gitops, [image(other), image(unknown, "quay.io/org/ghost")]))
    # The rule says org/svc, which has no such commit: it is not looked up elsewhere.
    assert commits == expected(github, "org/gitops", gitops)
    assert github.count("commit", status=404) == 1
    assert github.counts() == {"commit": 2, "search": 1}
    metrics = resolver.context.metrics.commits_unresolved
    assert metrics.labels("not_found")._value.get() == 1
    assert metrics.labels("no_repository")._value.get() == 1
    assert {log.get("sha") for log in logs if "dropped" in log["event"]} == {other, unknown}
    # The empty search answer is cached (negative TTL): no second search.
    await resolve(resolver, deployment(gitops, [image(unknown, "quay.io/org/ghost")],
                                       id="ghost:1", app="ghost"))
    assert github.count("search") == 1
    ttl = await resolver.context.redis.pttl(resolver.context.keys.github_repo_of_sha(unknown))
    assert 0 < ttl <= 3600 * 1000


async def test_deadline_sends_the_gitops_commit_and_what_else_resolved(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    github.fail("search", status=503, times=10_000)
    gitops, svc = history["gitops"][-1], history["svc"][-1]
    resolver = resolver_for(resolve_timeout="300ms")
    commits = await resolve(resolver, deployment(gitops, [image(svc)]))
    assert commits == expected(github, "org/gitops", gitops)
    assert resolver.context.metrics.commits_unresolved.labels("timeout")._value.get() == 1
    assert github.count("search", status=200) == 0


async def test_deadline_with_github_down_still_sends_the_gitops_commit(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    github.fail("*", status=500, times=10_000)
    gitops = history["gitops"][-1]
    with capture_logs() as logs:
        commits = await resolve(resolver_for(resolve_timeout="200ms"),
                                deployment(gitops, [image(history["svc"][-1])]))
    assert commits == [ResolvedCommit(repo_url=GITOPS, sha=gitops, message="",
                                      author_date=STARTED, url=f"{GITOPS}/commit/{gitops}")]
    assert any(log["event"].startswith("gitops commit details unavailable") for log in logs)


async def test_deadline_counts_from_detection_not_from_this_attempt(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    """Detected an hour ago (say, before a restart): no waiting at all any more."""
    github.fail("search", status=503, times=10_000)
    gitops, svc = history["gitops"][-1], history["svc"][-1]
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    commits = await resolve(resolver_for(), deployment(gitops, [image(svc)],
                                                       detected_at=long_ago))
    assert commits == expected(github, "org/gitops", gitops)
    assert github.count("search") == 1  # one last attempt, no retries


async def test_stop_interrupts_a_rate_limit_wait(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    github.exhaust("core", reset_in=600)
    resolver = resolver_for()
    stop = asyncio.Event()
    target = deployment(history["gitops"][-1], [image(history["svc"][-1])])
    task = asyncio.create_task(resolver.resolve(target, stop))
    for _ in range(500):
        if waiting(resolver) > 0:
            break
        await asyncio.sleep(0.01)
    assert waiting(resolver) > 500
    stop.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    assert await resolver.context.redis.keys("test:gh:resolved:*") == []  # nothing cached


# --- the rest of the contract ------------------------------------------------------------------
async def test_blacklisted_repositories_are_removed_and_not_queried(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    resolver = resolver_for(blacklist=("http://GitHub.com/org/gitops.git/", "git@github.com:org/svc"))
    commits = await resolve(resolver, deployment(history["gitops"][-1],
                                                 [image(history["svc"][-1])]))
    assert commits == []
    assert github.counts() == {"search": 1}


async def test_multi_source_app_includes_every_git_source_and_dedupes(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    values = github.add_repo("org/values", commits=1)[0]
    gitops, svc = history["gitops"][-1], history["svc"][-1]
    sources = [GitSource(repo_url="https://github.com/Org/GitOps", revision=gitops),
               GitSource(repo_url="https://charts.example.com", revision="1.4.2"),  # Helm
               GitSource(repo_url="git@github.com:org/values.git", revision=values)]
    images = [image(svc), image(svc, "quay.io/org/svc-worker"), image(svc.upper())]
    commits = await resolve(resolver_for(), deployment(gitops, images, sources=sources))
    chart = ResolvedCommit(repo_url="https://charts.example.com", sha="1.4.2",
                           message="chart 1.4.2", author_date=STARTED)
    assert commits == [*expected(github, "org/gitops", gitops), chart,
                       *expected(github, "org/values", values),
                       *expected(github, "org/svc", svc)]
    assert github.counts() == {"commit": 3, "search": 1}


async def test_missing_author_date_falls_back_to_committer_date(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    committed = datetime(2025, 3, 3, 3, 3, tzinfo=UTC)
    sha = github.add_commit("org/svc", message="no author date", author_date=None,
                            committer_date=committed)
    commits = await resolve(resolver_for(), deployment(history["gitops"][-1], [image(sha)]))
    assert commits[-1].author_date == committed and commits[-1].message == "no author date"


async def test_token_is_sent_and_a_rejected_token_shows_in_readiness(
    redis_client: aioredis.Redis,
) -> None:
    with FakeGitHub(token="s3cr3t-token") as github:
        gitops = github.add_repo("org/gitops", commits=1)[0]
        good = CommitResolver(make_context(redis_client, github, token="s3cr3t-token"))
        commits = await resolve(good, deployment(gitops, []))
        assert commits[0].message == "gitops: change 1"
        assert all(r.authorized for r in github.requests)
        await good.aclose()

        await redis_client.flushall()
        bad_context = make_context(redis_client, github, token="wrong-token",
                                   resolve_timeout="2s")  # room for two tries on a slow machine
        bad = CommitResolver(bad_context)
        with capture_logs() as logs:
            commits = await resolve(bad, deployment(gitops, [], detected_at=datetime.now(UTC)))
        await bad.aclose()
        refused = github.count(status=401)
    # Retried (slowly) until github.resolve_timeout, then sent with what is known.
    assert refused >= 2
    assert commits[0].message == "" and commits[0].author_date == STARTED
    assert not bad_context.readiness.is_ready("github")
    assert [e["event"] for e in logs].count(
        "GitHub refused the request; deployments wait for commits until github.resolve_timeout"
    ) == 1
    assert "s3cr3t" not in repr(logs) and "wrong-token" not in repr(logs)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_token_refused_for_a_while_loses_no_commit(
    redis_client: aioredis.Redis, status: int
) -> None:
    with FakeGitHub(token="s3cr3t-token") as github:
        gitops = github.add_repo("org/gitops", commits=1)[0]
        svc = github.add_repo("org/svc", commits=3)
        github.fail("*", status=status, times=3)
        context = make_context(redis_client, github, token="s3cr3t-token")
        resolver = CommitResolver(context)
        with capture_logs() as logs:
            commits = await resolve(resolver, deployment(
                gitops, [f"quay.io/org/svc:{svc[2]}"], detected_at=datetime.now(UTC)))
        await resolver.aclose()
        refused = github.count(status=status)
    assert refused == 3
    assert [c.sha for c in commits] == [gitops, svc[2]]
    assert commits[0].message == "gitops: change 1"
    assert any(e["log_level"] == "error" and e.get("status") == status for e in logs)
    assert context.readiness.is_ready("github")  # ready again after the first success


async def test_without_a_token_it_says_so_once(redis_client: aioredis.Redis,
                                               github: FakeGitHub) -> None:
    context = make_context(redis_client, github)
    with capture_logs() as logs:
        first, second = CommitResolver(context), CommitResolver(context)
    await first.aclose()
    await second.aclose()
    assert sum("GITHUB_TOKEN is not set" in log["event"] for log in logs) == 1


async def test_github_enterprise_urls(redis_client: aioredis.Redis) -> None:
    """A GitHub Enterprise at 127.0.0.1: API under /api/v3, web pages on the same host."""
    ghe = "https://127.0.0.1"
    with FakeGitHub(web_url=ghe, path_prefix="/api/v3") as github:
        gitops = github.add_repo("team/gitops", commits=1)[0]
        svc = github.add_repo("team/svc", commits=2)
        resolver = CommitResolver(make_context(redis_client, github))
        assert resolver.web_base == ghe
        target = deployment(gitops, [image(svc[1], "registry:5000/team/svc")],
                            [image(svc[0], "registry:5000/team/svc")],
                            sources=[GitSource(repo_url="git@127.0.0.1:team/gitops.git",
                                               revision=gitops)])
        commits = await resolve(resolver, target)
        await resolver.aclose()
        assert github.counts() == {"commit": 1, "search": 1, "compare": 1}
    assert [(c.repo_url, c.sha) for c in commits] == [(f"{ghe}/team/gitops", gitops),
                                                      (f"{ghe}/team/svc", svc[1])]
    assert commits[1].url == f"{ghe}/team/svc/commit/{svc[1]}"


def test_only_the_fields_read_reach_redis() -> None:
    commit = {"sha": "a" * 40, "html_url": "u", "files": [{"patch": "x" * 10_000}],
              "commit": {"message": "m", "tree": {}, "author": {"date": "d", "email": "e"},
                         "committer": {"date": "c"}}}
    slim_commit = {"sha": "a" * 40, "html_url": "u", "commit": {
        "message": "m", "author": {"date": "d"}, "committer": {"date": "c"}}}
    assert slim("commit", commit) == slim_commit
    assert slim("compare", {"status": "ahead", "total_commits": 1, "ahead_by": 1,
                            "files": [{}], "commits": [commit]}) == {
        "status": "ahead", "total_commits": 1, "ahead_by": 1, "commits": [slim_commit]}
    assert slim("search", {"total_count": 1, "items": [
        {"sha": "b", "repository": {"html_url": "r", "fork": True, "owner": {}}, "commit": {}}]}
    ) == {"total_count": 1, "items": [{"sha": "b", "repository": {"html_url": "r", "fork": True}}]}
    with pytest.raises(TypeError):
        slim("commit", ["not", "an", "object"])


async def test_redis_down_means_cache_misses_not_lost_commits(
    github: FakeGitHub, history: dict[str, list[str]]
) -> None:
    down = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}", decode_responses=True)
    resolver = CommitResolver(make_context(down, github))
    gitops, svc = history["gitops"][-1], history["svc"][-1]
    commits = await resolve(resolver, deployment(gitops, [image(svc)]))
    await resolver.aclose()
    await down.aclose()
    assert commits == [*expected(github, "org/gitops", gitops), *expected(github, "org/svc", svc)]
    errors = resolver.context.metrics.redis_errors
    assert errors.labels("github_search")._value.get() >= 1


# --- head rows (the default) ------------------------------------------------------------------


async def test_head_rows_are_the_deployed_commits_without_any_compare(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    gitops, svc = history["gitops"][-1], history["svc"]
    other = github.add_repo("org/sidecar", commits=2)
    target = deployment(gitops, [image(svc[5]), image(other[0], "quay.io/org/sidecar"),
                                 image(svc[5])],
                        [image(svc[1]), image(other[0], "quay.io/org/sidecar")])
    commits = await resolve(resolver_for(rows="head"), target)
    assert commits == [*expected(github, "org/gitops", gitops),
                       *expected(github, "org/svc", svc[5]),
                       *expected(github, "org/sidecar", other[0])]
    assert github.count("compare") == 0


async def test_head_rows_for_chart_versions_keep_the_source_repository(
    github: FakeGitHub, history: dict[str, list[str]], resolver_for: Any
) -> None:
    gitops = history["gitops"][-1]
    sources = [GitSource(repo_url="https://Charts.Example.com/stable/", revision="1.4.2",
                         chart="svc"),
               GitSource(repo_url="git@github.com:Org/GitOps.git", revision=gitops)]
    target = deployment(gitops, ["quay.io/org/svc:v1.2.3"], sources=sources)
    commits = await resolve(resolver_for(rows="head"), target)
    assert [(c.repo_url, c.sha) for c in commits] == [
        ("https://charts.example.com/stable", "1.4.2"), (GITOPS, gitops)]
    assert commits[0].author_date == STARTED
