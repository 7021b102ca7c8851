"""Pure decisions of commit resolution: repository URLs, rules, plans, rate limits."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from doraforwarder.commits.images import TagMatcher
from doraforwarder.commits.plan import (
    Candidate,
    ImageChange,
    choose_repository,
    compare_pages,
    plan_image_changes,
    same_commit,
)
from doraforwarder.commits.ratelimit import (
    RateLimitInfo,
    Throttle,
    parse_rate_limit,
    resource_of,
    throttle_of,
)
from doraforwarder.commits.repos import (
    Blacklist,
    ImageRepositories,
    normalize_repo_url,
    owner_and_repo,
    prefix_matches,
    web_base_of,
)
from doraforwarder.config import ImageRepositoryRule, LoadedConfig, Secrets, validate_settings
from doraforwarder.context import AppContext
from doraforwarder.keys import Keys

REPO = "https://github.com/org/repo"


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://github.com/org/repo", REPO),
        ("https://github.com/Org/Repo", REPO),
        ("https://GitHub.com/ORG/REPO.git", REPO),
        ("https://github.com/org/repo/", REPO),
        ("https://github.com/org/repo.git/", REPO),
        ("http://github.com/org/repo", REPO),
        ("git@github.com:org/repo.git", REPO),
        ("git@github.com:Org/Repo", REPO),
        ("ssh://git@github.com/org/repo.git", REPO),
        ("ssh://git@github.com:22/org/repo.git", REPO),
        ("git://github.com/org/repo", REPO),
        ("github.com/org/repo", REPO),
        ("org/repo", REPO),
        ("  https://github.com/org/repo  ", REPO),
        ("https://user@github.com/org/repo", REPO),
        ("https://ghe.example.com/Team/Svc.git", "https://ghe.example.com/team/svc"),
        ("git@ghe.example.com:team/svc.git", "https://ghe.example.com/team/svc"),
        ("https://gitlab.com/group/sub/project.git", "https://gitlab.com/group/sub/project"),
        ("https://github.com/org", None),
        ("https://github.com/", None),
        ("", None),
        ("not a url", None),
    ],
)
def test_normalize_repo_url(url: str, normalized: str | None) -> None:
    assert normalize_repo_url(url) == normalized


def test_bare_owner_repo_belongs_to_the_configured_github() -> None:
    assert normalize_repo_url("team/svc", "https://ghe.example.com") == (
        "https://ghe.example.com/team/svc"
    )


@pytest.mark.parametrize(
    ("api_url", "web"),
    [
        ("https://api.github.com", "https://github.com"),
        ("https://api.github.com/", "https://github.com"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com"),
        ("https://GHE.example.com/api/v3/", "https://ghe.example.com"),
        ("http://127.0.0.1:8080", "https://github.com"),
    ],
)
def test_web_base_of(api_url: str, web: str) -> None:
    assert web_base_of(api_url) == web


@pytest.mark.parametrize(
    ("url", "web", "expected"),
    [
        (REPO, "https://github.com", ("org", "repo")),
        ("https://ghe.example.com/team/svc", "https://ghe.example.com", ("team", "svc")),
        ("https://ghe.example.com/team/svc", "https://github.com", None),
        ("https://gitlab.com/org/repo", "https://github.com", None),
        ("https://github.com/a/b/c", "https://github.com", None),
    ],
)
def test_owner_and_repo(url: str, web: str, expected: tuple[str, str] | None) -> None:
    assert owner_and_repo(url, web) == expected


BLACKLIST = Blacklist(["https://github.com/Org/Secret.git", "git@github.com:org/infra",
                       "https://github.com/vendored/", "garbage"])


@pytest.mark.parametrize(
    ("url", "blacklisted"),
    [
        ("https://github.com/org/secret", True),
        ("http://github.com/ORG/SECRET/", True),
        ("git@github.com:org/secret.git", True),
        ("https://github.com/org/infra", True),
        ("https://github.com/vendored/anything", True),
        ("https://github.com/org/secret-two", False),
        ("https://github.com/org/repo", False),
        ("https://github.com/vendoredx/anything", False),
        ("garbage", False),
    ],
)
def test_blacklist(url: str, blacklisted: bool) -> None:
    assert (url in BLACKLIST) is blacklisted


RULES = ImageRepositories([
    ImageRepositoryRule(prefix="quay.io/org/svc-worker", repo="org/worker"),
    ImageRepositoryRule(prefix="quay.io/org/svc", repo="https://github.com/Org/Svc.git"),
    ImageRepositoryRule(prefix="quay.io/tenant/", repo="git@github.com:tenant/monorepo"),
    ImageRepositoryRule(prefix="quay.io/build-", repo="org/builds"),
])


@pytest.mark.parametrize(
    ("image", "repo"),
    [
        ("quay.io/org/svc", "https://github.com/org/svc"),
        ("quay.io/org/svc/sub", "https://github.com/org/svc"),
        ("quay.io/org/svc-worker", "https://github.com/org/worker"),
        ("quay.io/org/svc-other", None),
        ("quay.io/org/sv", None),
        ("quay.io/tenant/a/b", "https://github.com/tenant/monorepo"),
        ("quay.io/build-tools", "https://github.com/org/builds"),
        ("docker.io/org/svc", None),
    ],
)
def test_image_repository_rules_first_match_wins(image: str, repo: str | None) -> None:
    assert RULES.repository_of(image) == repo


def test_invalid_rule_is_reported_not_used() -> None:
    rules = ImageRepositories([ImageRepositoryRule(prefix="quay.io/x", repo="nope")])
    assert rules.rules == [] and rules.invalid == ["nope"]


@pytest.mark.parametrize(
    ("prefix", "name", "matches"),
    [("a/b", "a/b", True), ("a/b", "a/b/c", True), ("a/b", "a/bc", False),
     ("a/b-", "a/b-c", True), ("a/", "a/b", True), ("", "a", False)],
)
def test_prefix_matches(prefix: str, name: str, matches: bool) -> None:
    assert prefix_matches(prefix, name) is matches


# --- plans ----------------------------------------------------------------------------------
A1, A2, B1 = "a" * 40, "a1" + "0" * 38, "b" * 40
MATCHER = TagMatcher([r"^on-pr-(?P<sha>[0-9a-f]{40})$"])


@pytest.mark.parametrize(
    ("images", "previous", "changes"),
    [
        ([f"q.io/o/a:{A1}"], [], [ImageChange("q.io/o/a", "first", A1)]),
        ([f"q.io/o/a:{A2}"], [f"q.io/o/a:{A1}"], [ImageChange("q.io/o/a", "changed", A2, A1)]),
        ([f"q.io/o/a:{A1}"], [f"q.io/o/a:{A1}"], []),
        ([f"q.io/o/a:{A1[:7]}"], [f"q.io/o/a:{A1}"], []),  # same commit, abbreviated
        ([f"q.io/o/a:{A1.upper()}"], [f"q.io/o/a:{A1}"], []),
        ([f"q.io/o/a:{A2}@sha256:{'c' * 64}"], [f"q.io/o/a:{A1}@sha256:{'d' * 64}"],
         [ImageChange("q.io/o/a", "changed", A2, A1)]),
        ([f"q.io/o/a:on-pr-{A2}"], [f"q.io/o/a:{A1}"],
         [ImageChange("q.io/o/a", "changed", A2, A1)]),
        ([f"q.io/o/a:{A2}"], ["q.io/o/a:latest"], [ImageChange("q.io/o/a", "first", A2)]),
        (["q.io/o/a:latest", "q.io/o/b:v1.2.3"], [], []),
        ([f"q.io/o/a:{A2}", f"q.io/o/b:{B1}"], [f"q.io/o/a:{A1}", f"q.io/o/b:{B1}"],
         [ImageChange("q.io/o/a", "changed", A2, A1)]),
        ([f"q.io/o/a:{A2}", f"q.io/o/a:{A2}"], [f"q.io/o/a:{A1}"],
         [ImageChange("q.io/o/a", "changed", A2, A1)]),
        ([f"q.io/o/a:{A2}"], [f"q.io/o/a:{A1}", f"q.io/o/a:{B1}"],
         [ImageChange("q.io/o/a", "first", A2)]),  # two bases: no single range
        ([f"reg:5000/o/a:{A2}"], [f"reg:5000/o/a:{A1}"],
         [ImageChange("reg:5000/o/a", "changed", A2, A1)]),
        ([f"q.io/o/a:{A2}"], [f"q.io/o/other:{A1}"], [ImageChange("q.io/o/a", "first", A2)]),
    ],
)
def test_plan_image_changes(images: list[str], previous: list[str],
                            changes: list[ImageChange]) -> None:
    assert plan_image_changes(images, previous, MATCHER) == changes


@pytest.mark.parametrize(("a", "b", "same"), [(A1, A1, True), (A1[:7], A1, True),
                                              (A1, A1[:7].upper(), True), (A1, A2, False)])
def test_same_commit(a: str, b: str, same: bool) -> None:
    assert same_commit(a, b) is same


SVC, FORK, GITOPS = "https://github.com/org/svc", "https://github.com/me/svc", \
    "https://github.com/org/gitops"


@pytest.mark.parametrize(
    ("candidates", "image", "choice", "reason"),
    [
        ([Candidate(SVC, A1)], "q.io/o/x", SVC, "found"),
        ([Candidate(FORK, A1, fork=True), Candidate(SVC, A1)], "q.io/o/x", SVC, "found"),
        ([Candidate(GITOPS, A1), Candidate(SVC, A1)], "q.io/o/x", SVC, "found"),
        ([Candidate(GITOPS + ".git", A1)], "q.io/o/x", None, "none"),
        ([Candidate(FORK, A1, fork=True)], "q.io/o/x", None, "none"),
        ([], "q.io/o/x", None, "none"),
        ([Candidate(SVC, A1), Candidate(SVC.upper(), A1)], "q.io/o/x", SVC, "found"),
        ([Candidate(SVC, A1), Candidate("https://github.com/org/api", A2)], "q.io/o/x", None,
         "ambiguous"),
        ([Candidate(SVC, A1), Candidate("https://github.com/org/api", A2)], "q.io/o/svc", SVC,
         "name-match"),
        ([Candidate(SVC, A1), Candidate("https://github.com/other/svc", A2)], "q.io/o/svc",
         None, "ambiguous"),
    ],
)
def test_choose_repository(candidates: list[Candidate], image: str, choice: str | None,
                           reason: str) -> None:
    result = choose_repository(candidates, [GITOPS], image)
    assert (result.repo_url, result.reason) == (choice, reason)


@pytest.mark.parametrize(
    ("total", "keep", "first", "pages"),
    [
        (0, 250, 0, []),
        (3, 250, 0, [1]),
        (100, 250, 0, [1]),
        (101, 250, 0, [1, 2]),
        (299, 250, 49, [1, 2, 3]),
        (600, 250, 350, [4, 5, 6]),
        (600, 5, 595, [6]),
        (250, 250, 0, [1, 2, 3]),
    ],
)
def test_compare_pages(total: int, keep: int, first: int, pages: list[int]) -> None:
    assert compare_pages(total, keep, 100) == (first, pages)


# --- rate limits ------------------------------------------------------------------------------
NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("status", "headers", "body", "throttle"),
    [
        (200, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(NOW + 5)}, "", None),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(NOW + 5)}, "",
         Throttle("primary", 5.0)),
        (429, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(NOW - 5)}, "",
         Throttle("primary", 0.0)),
        (403, {"retry-after": "30", "x-ratelimit-remaining": "10"}, "",
         Throttle("secondary", 30.0)),
        (429, {"retry-after": "0.25"}, "", Throttle("secondary", 0.25)),
        (403, {"x-ratelimit-remaining": "10"}, '{"message":"You have exceeded a secondary rate '
         'limit"}', Throttle("secondary", None)),
        (429, {}, "", Throttle("secondary", None)),
        (403, {"x-ratelimit-remaining": "10"}, '{"message":"Resource not accessible"}', None),
        (404, {"retry-after": "3"}, "", None),
    ],
)
def test_throttle_of(status: int, headers: dict[str, str], body: str,
                     throttle: Throttle | None) -> None:
    assert throttle_of(status, headers, body, NOW) == throttle


def test_parse_rate_limit_and_resource() -> None:
    assert resource_of("/search/commits") == "search"
    assert resource_of("/repos/o/r/commits/x") == "core"
    assert parse_rate_limit({"x-ratelimit-remaining": "7", "x-ratelimit-reset": "12.5"},
                            "core") == RateLimitInfo("core", 7, 12.5)
    assert parse_rate_limit({"x-ratelimit-resource": "search"}, "core") == RateLimitInfo(
        "search", None, None)


def test_board_blocks_until_reset_and_is_shared_per_daemon() -> None:
    config = LoadedConfig(settings=validate_settings({}, "test"), secrets=Secrets(),
                          source="test")
    one = AppContext(config=config, redis=aioredis.Redis(), keys=Keys("one"))
    other = AppContext(config=config, redis=aioredis.Redis(), keys=Keys("other"))
    board = one.github_rate_limits
    assert one.github_rate_limits is board and other.github_rate_limits is not board
    board.observe(RateLimitInfo("core", 0, NOW + 10), NOW)
    assert board.wait_needed("core", NOW) == 10
    assert board.wait_needed("search", NOW) == 0
    assert board.wait_needed("core", NOW + 10) == 0
    board.observe(RateLimitInfo("core", 4999, NOW + 3600), NOW)
    assert board.wait_needed("core", NOW) == 0
    assert one.metrics.github_rate_limit_remaining.labels("core")._value.get() == 4999
