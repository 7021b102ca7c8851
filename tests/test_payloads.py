"""The DevLake contract models: every rule of shared/reference/devlake-webhook.md."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from doraforwarder.devlake.payloads import (
    MAX_DEPLOYMENT_COMMITS,
    DeploymentPayload,
    IssuePayload,
    build_deployment_payload,
    contract_body,
    fit_commit_rows,
    format_devlake_date,
    row_started,
    unchecked_deployment_body,
)
from doraforwarder.records import ResolvedCommit
from doraforwarder.testing.fake_devlake_bodies import check_deployment, check_issue
from tests.devlake_support import T0, commit, deployment_payload, detected, issue_payload


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2020, 1, 1, 12, 0, tzinfo=UTC), "2020-01-01T12:00:00+00:00"),
        (datetime(2020, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
         "2020-01-01T12:00:00+00:00"),
        (datetime(2020, 1, 1, 12, 0), "2020-01-01T12:00:00+00:00"),  # naive = UTC
        (datetime(2020, 1, 1, 12, 0, 0, 999999, tzinfo=UTC), "2020-01-01T12:00:00+00:00"),
    ],
)
def test_dates_are_utc_with_explicit_offset(value: datetime, expected: str) -> None:
    assert format_devlake_date(value) == expected


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``body`` with ``path`` (``a.0.b``) set to ``value`` (or removed if ...)."""
    import copy

    copied = copy.deepcopy(body)
    node: Any = copied
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return copied


VALID_DEPLOYMENT = deployment_payload("svc:rev:1")

DEPLOYMENT_CASES = [
    ("valid", VALID_DEPLOYMENT, None),
    ("no id", _with(VALID_DEPLOYMENT, "id", ...), "id"),
    ("empty id", _with(VALID_DEPLOYMENT, "id", ""), "id"),
    ("no startedDate", _with(VALID_DEPLOYMENT, "startedDate", ...), "startedDate"),
    ("no finishedDate", _with(VALID_DEPLOYMENT, "finishedDate", ...), "finishedDate"),
    ("bad date", _with(VALID_DEPLOYMENT, "startedDate", "yesterday"), "startedDate"),
    ("started after finished",
     _with(VALID_DEPLOYMENT, "startedDate", "2024-05-01T13:00:00+00:00"), "after"),
    ("unknown environment", _with(VALID_DEPLOYMENT, "environment", "PROD"), "environment"),
    ("lower-case environment", _with(VALID_DEPLOYMENT, "environment", "production"),
     "environment"),
    ("unknown result", _with(VALID_DEPLOYMENT, "result", "MAYBE"), "result"),
    ("empty commits", _with(VALID_DEPLOYMENT, "deploymentCommits", []), "deploymentCommits"),
    ("no commits", _with(VALID_DEPLOYMENT, "deploymentCommits", ...), "deploymentCommits"),
    ("commit without sha", _with(VALID_DEPLOYMENT, "deploymentCommits.0.commitSha", ...),
     "commitSha"),
    ("commit with empty repo", _with(VALID_DEPLOYMENT, "deploymentCommits.0.repoUrl", ""),
     "repoUrl"),
    ("commit without startedDate",
     _with(VALID_DEPLOYMENT, "deploymentCommits.0.startedDate", ...), "startedDate"),
    ("snake_case key", _with(VALID_DEPLOYMENT, "started_date", "2024-05-01T11:00:00+00:00"),
     "started_date"),
    ("unknown key", _with(VALID_DEPLOYMENT, "colour", "blue"), "colour"),
]


@pytest.mark.parametrize(("case", "body", "error"), DEPLOYMENT_CASES,
                         ids=[c[0] for c in DEPLOYMENT_CASES])
def test_deployment_contract(case: str, body: dict[str, Any], error: str | None) -> None:
    if error is None:
        assert contract_body("deployment", body) == body
    else:
        with pytest.raises(ValidationError, match=error):
            contract_body("deployment", body)


VALID_ISSUE = issue_payload("INC-1", "DONE")

ISSUE_CASES = [
    ("valid", VALID_ISSUE, None),
    ("valid todo", issue_payload("INC-1"), None),
    ("no issueKey", _with(VALID_ISSUE, "issueKey", ...), "issueKey"),
    ("no title", _with(VALID_ISSUE, "title", ""), "title"),
    ("bad status", _with(VALID_ISSUE, "status", "RESOLVED"), "status"),
    ("no originalStatus", _with(VALID_ISSUE, "originalStatus", ...), "originalStatus"),
    ("empty originalStatus", _with(VALID_ISSUE, "originalStatus", ""), "originalStatus"),
    ("no createdDate", _with(VALID_ISSUE, "createdDate", ...), "createdDate"),
    ("resolved before created",
     _with(VALID_ISSUE, "resolutionDate", "2024-05-01T09:00:00+00:00"), "resolutionDate"),
    ("negative lead time", _with(VALID_ISSUE, "leadTimeMinutes", -1), "leadTimeMinutes"),
    ("unknown key", _with(VALID_ISSUE, "owner", "me"), "owner"),
]


@pytest.mark.parametrize(("case", "body", "error"), ISSUE_CASES, ids=[c[0] for c in ISSUE_CASES])
def test_issue_contract(case: str, body: dict[str, Any], error: str | None) -> None:
    if error is None:
        assert contract_body("issue", body) == body
    else:
        with pytest.raises(ValidationError, match=error):
            contract_body("issue", body)


def test_close_has_no_body_and_unknown_kind_is_refused() -> None:
    assert contract_body("close", {}) == {}
    with pytest.raises(ValidationError):
        contract_body("close", {"issueKey": "x"})
    with pytest.raises(KeyError):
        contract_body("pull_request", {})


def test_bodies_are_camel_case_and_leave_out_absent_optionals() -> None:
    payload = IssuePayload(issue_key="K", title="t", status="TODO", original_status="open",
                           created_date=T0)
    assert payload.body() == {"issueKey": "K", "title": "t", "status": "TODO",
                              "originalStatus": "open",
                              "createdDate": "2024-05-01T12:00:00+00:00"}


def test_built_deployment_follows_the_reference_and_passes_devlake_checks() -> None:
    deployment = detected("build-service", n=3)
    commits = [commit("c" * 40, minutes_before=30), commit("d" * 40, minutes_before=-5)]
    body = build_deployment_payload(deployment, commits, "range").body()
    deployed = format_devlake_date(deployment.deployed_at)
    assert body["id"] == deployment.id
    assert body["displayTitle"] == (
        "ArgoCD Deployment | Component: build-service | Cluster: prod-east-1 | Environment: "
        "PRODUCTION | Revision: rev3 | Status: SUCCESS | Deployed: 2024-05-01 12:03:00 UTC"
    )
    assert body["name"] == "deploy build-service to prod-east-1 (production)"
    assert body["finishedDate"] == deployed
    first, second = body["deploymentCommits"]
    assert first["startedDate"] == "2024-05-01T11:30:00+00:00"  # the author date
    assert first["finishedDate"] == deployed
    assert first["refName"] == "main" and first["commitMsg"] == "fix things"
    # A commit "authored" after the deployment (clock skew) cannot have a negative lead time.
    assert second["startedDate"] == deployed
    check_deployment(body)  # the fake checks like DevLake: no exception


def test_head_rows_carry_the_deployment_start_finish_and_result() -> None:
    deployment = detected("build-service", n=3).model_copy(update={"result": "FAILURE"})
    commits = [commit("c" * 40, minutes_before=30), commit("d" * 40, minutes_before=-5)]
    body = build_deployment_payload(deployment, commits).body()  # head is the default
    for row in body["deploymentCommits"]:
        assert row["startedDate"] == format_devlake_date(deployment.started_at)
        assert row["finishedDate"] == format_devlake_date(deployment.deployed_at)
        assert row["result"] == "FAILURE"
    check_deployment(body)


@pytest.mark.parametrize(("mode", "start_offset", "authored_offset", "expected_offset"), [
    ("head", -2, -60, -2),    # the deployment's own start, whatever the commit's age
    ("head", 5, -60, 0),      # a start after the finish is clamped to the finish
    ("range", -2, -60, -60),  # the author date
    ("range", -2, 10, 0),     # authored "after" the deployment (skew): the finish
])
def test_row_started_dates(mode: str, start_offset: int, authored_offset: int,
                           expected_offset: int) -> None:
    deployment = detected().model_copy(update={
        "started_at": T0 + timedelta(minutes=start_offset), "deployed_at": T0})
    row = commit().model_copy(update={"author_date": T0 + timedelta(minutes=authored_offset)})
    assert row_started(deployment, row, mode) == T0 + timedelta(minutes=expected_offset)


def test_no_commits_is_refused_and_the_unchecked_body_is_kept_for_dead_letters() -> None:
    deployment = detected()
    with pytest.raises(ValidationError, match="deployment_commits"):
        build_deployment_payload(deployment, [])
    raw = unchecked_deployment_body(deployment, [])
    assert raw["id"] == deployment.id and raw["deploymentCommits"] == []


def test_issue_model_output_passes_the_fake_checks() -> None:
    body = IssuePayload.model_validate(issue_payload("INC-9", "DONE")).body()
    check_issue(body)


def test_deployment_model_accepts_python_names_too() -> None:
    payload = DeploymentPayload.model_validate(deployment_payload("x"))
    assert payload.deployment_commits[0].commit_sha == "a" * 40


def _ranged(repo: str, count: int, newest_minutes_before: int = 0) -> list[ResolvedCommit]:
    """``count`` commits of ``repo``, oldest first as a compare lists them (the head last)."""
    return [ResolvedCommit(repo_url=f"https://github.com/org/{repo}", sha=f"{repo}{n:039x}",
                           author_date=T0 - timedelta(minutes=newest_minutes_before + count - n))
            for n in range(count)]


@pytest.mark.parametrize(("sizes", "limit", "expected"), [
    ({"a": 3}, 5, ["a0", "a1", "a2"]),                     # fits: untouched
    ({"a": 5}, 5, ["a0", "a1", "a2", "a3", "a4"]),         # exactly the limit
    ({"a": 6}, 5, ["a1", "a2", "a3", "a4", "a5"]),         # the oldest goes, the head stays
    ({"a": 4, "b": 4}, 5, ["a3", "b0", "b1", "b2", "b3"]),  # a keeps its head, b is newer
    ({"a": 6, "b": 1}, 3, ["a4", "a5", "b0"]),             # a lone head is kept, however old
    ({"a": 1, "b": 1, "c": 1}, 2, ["b0", "c0"]),           # more repositories than rows
])
def test_fit_commit_rows_keeps_heads_then_the_newest_in_order(
        sizes: dict[str, int], limit: int, expected: list[str]) -> None:
    commits: list[ResolvedCommit] = []
    for offset, (repo, count) in enumerate(sizes.items()):  # each repository newer than the last
        commits += _ranged(repo, count, newest_minutes_before=1000 * (len(sizes) - offset))
    kept = fit_commit_rows(commits, limit)
    assert [f"{c.sha[0]}{int(c.sha[1:], 16)}" for c in kept] == expected


def test_a_deployment_past_devlake_row_limit_is_sent_with_its_newest_rows() -> None:
    """DevLake refuses more than 2114 rows every time (500, nothing stored): the body keeps
    the heads and the newest commits, so the deployment still counts on the dashboard."""
    commits = _ranged("a", 2000, newest_minutes_before=5) + _ranged("b", 300)
    body = build_deployment_payload(detected(), commits, "range").body()
    check_deployment(body)
    shas = [row["commitSha"] for row in body["deploymentCommits"]]
    assert len(shas) == MAX_DEPLOYMENT_COMMITS == 2114
    assert commits[1999].sha in shas and commits[-1].sha in shas  # both heads
    assert commits[0].sha not in shas  # the oldest of the range is what goes
    assert unchecked_deployment_body(detected(), commits, "range")["deploymentCommits"] == \
        body["deploymentCommits"]
