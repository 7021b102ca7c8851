"""The DORA model against hand-computed dashboard numbers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from doraforwarder.testing.dora import DoraModel, ceil_minutes, lower_median
from doraforwarder.testing.fake_devlake import FakeDevLake
from doraforwarder.testing.fake_github import FakeGitHub

REPO_URL = "https://github.com/org/svc"


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2025, 1, day, hour, minute, second, tzinfo=UTC)


def iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def deployment(record_id: str, sha: str, started: datetime, finished: datetime,
               **extra: Any) -> dict[str, Any]:
    row = {"repoUrl": REPO_URL, "commitSha": sha, "startedDate": iso(started),
           "finishedDate": iso(finished)}
    row.update(extra.pop("row", {}))
    return {"id": record_id, "startedDate": iso(started), "finishedDate": iso(finished),
            "deploymentCommits": [row], **extra}


@pytest.fixture
def world() -> Iterator[tuple[FakeDevLake, FakeGitHub]]:
    with FakeDevLake(token=None, connections={1: "svc"}) as devlake, FakeGitHub() as github:
        devlake.add_project("P", connections=[1])
        yield devlake, github


def post(devlake: FakeDevLake, route: str, body: dict[str, Any]) -> None:
    answer = httpx.post(f"{devlake.url}/plugins/webhook/connections/1/{route}", json=body)
    assert answer.status_code == 200, answer.text


def scenario(devlake: FakeDevLake, github: FakeGitHub) -> None:
    (c0,) = github.add_repo("org/svc", 1)
    p1 = github.add_commit("org/svc", message="pr1", parent=c0, author_date=at(2, 8))
    m1 = github.add_commit("org/svc", message="merge pr1", parents=[c0, p1],
                           author_date=at(2, 9))
    p2 = github.add_commit("org/svc", message="pr2", parent=m1, author_date=at(2, 10))
    m2 = github.add_commit("org/svc", message="merge pr2", parents=[m1, p2],
                           author_date=at(2, 12))
    github.add_pull_request("org/svc", 1, commits=[p1], merge_commit_sha=m1,
                            created_at=at(2, 8, 30), first_review_at=at(2, 8, 45, 30),
                            merged_at=at(2, 9))
    github.add_pull_request("org/svc", 2, head=p2, merge_commit_sha=m2,
                            created_at=at(2, 10, 30), merged_at=at(2, 12))
    github.add_pull_request("org/svc", 3, commits=[], created_at=at(2, 11))  # never merged
    post(devlake, "deployments", deployment("d1", c0, at(2, 7), at(2, 7, 10)))   # baseline
    post(devlake, "deployments", deployment("d2", m1, at(2, 11), at(2, 11, 20)))  # ships PR 1
    post(devlake, "deployments", deployment("d3", c0, at(3, 8), at(3, 8, 5)))     # rollback
    post(devlake, "deployments", deployment("d4", m2, at(3, 9), at(3, 9, 30)))    # PR 1 again + 2
    post(devlake, "deployments", deployment("failed", m2, at(3, 10), at(3, 10, 5),
                                            row={"result": "FAILURE"}))
    post(devlake, "deployments", deployment("staging", m2, at(3, 10), at(3, 10, 6),
                                            environment="STAGING"))
    post(devlake, "issues", {"issueKey": "INC-1", "title": "down", "status": "DONE",
                             "originalStatus": "resolved", "type": "INCIDENT",
                             "createdDate": iso(at(3, 8, 10)),
                             "resolutionDate": iso(at(3, 8, 55))})
    post(devlake, "issues", {"issueKey": "BUG-1", "title": "a bug", "status": "TODO",
                             "originalStatus": "open", "type": "BUG",
                             "createdDate": iso(at(3, 8, 20))})


def test_rollback_and_redeploy_scenario(world: tuple[FakeDevLake, FakeGitHub]) -> None:
    devlake, github = world
    scenario(devlake, github)
    numbers = DoraModel(devlake, github).project("P")
    assert (numbers.deployments, numbers.deployment_days) == (4, 2)
    assert numbers.days == [date(2025, 1, 2), date(2025, 1, 3)]
    # PR 1 is in d2's and d4's diffs: credited to d2, the earliest started.
    # cycle = coding 30 + created->merged 30 + deploy 09:00->11:20 140
    # PR 2: coding 30 + created->merged 90 + deploy (2nd 12:00 -> 3rd 09:30) 1290
    assert numbers.lead_times_minutes == {"org/svc#1": 200, "org/svc#2": 1410}
    first = next(t for t in numbers.pull_requests if t.number == 1)
    assert (first.deployment_id, first.coding, first.pickup, first.review, first.deploy) == (
        "d2", 30, 16, 15, 140)
    assert numbers.median_lead_time_minutes == 200
    # INC-1 (created 3rd 08:10) follows the rollback d3 (finished 08:05).
    assert [(link.issue_key, link.deployment_id) for link in numbers.incident_links] == [
        ("INC-1", "d3")]
    assert numbers.incidents == 1
    assert numbers.change_failure_rate == 0.25
    assert numbers.time_to_restore_minutes == 45
    assert numbers.failed_deployment_recovery_minutes == 50
    assert numbers.warnings == []
    assert "4 deployments on 2 days" in numbers.summary()


def test_ties_are_flagged(world: tuple[FakeDevLake, FakeGitHub]) -> None:
    devlake, github = world
    shas = github.add_repo("org/svc", 3)
    for index, sha in enumerate(shas):
        post(devlake, "deployments", deployment(f"d{index}", sha, at(2, 7), at(2, 8)))
    numbers = DoraModel(devlake, github).project("P")
    assert numbers.deployments == 3 and numbers.deployment_days == 1
    assert len(numbers.warnings) == 2 and "same time" in numbers.warnings[0]


def test_incident_before_any_deployment_and_close_without_resolution(
        world: tuple[FakeDevLake, FakeGitHub]) -> None:
    devlake, github = world
    (c0,) = github.add_repo("org/svc", 1)
    post(devlake, "issues", {"issueKey": "INC-0", "title": "early", "status": "TODO",
                             "originalStatus": "open", "type": "INCIDENT",
                             "createdDate": iso(at(1, 12))})
    post(devlake, "deployments", deployment("d1", c0, at(2, 7), at(2, 8)))
    answer = httpx.post(f"{devlake.url}/plugins/webhook/connections/1/issue/INC-0/close")
    assert answer.status_code == 200
    numbers = DoraModel(devlake, github).project("P")
    assert numbers.incident_links[0].deployment_id is None
    assert numbers.change_failure_rate == 0.0
    assert numbers.time_to_restore_minutes is None  # close sets no resolution date


def test_incident_in_another_project_counts_through_the_shared_id(
        world: tuple[FakeDevLake, FakeGitHub]) -> None:
    devlake, github = world
    (c0,) = github.add_repo("org/svc", 1)
    devlake.add_connection(2, "team")
    devlake.add_project("Team", connections=[2])
    body = deployment("shared", c0, at(2, 7), at(2, 8))
    post(devlake, "deployments", body)
    assert httpx.post(f"{devlake.url}/plugins/webhook/connections/2/deployments",
                      json=body).status_code == 200
    assert httpx.post(f"{devlake.url}/plugins/webhook/connections/2/issues", json={
        "issueKey": "I", "title": "t", "status": "TODO", "originalStatus": "open",
        "type": "INCIDENT", "createdDate": iso(at(2, 9))}).status_code == 200
    assert DoraModel(devlake, github).project("P").change_failure_rate == 1.0


def test_recovery_counts_every_project_link_to_the_projects_deployments(
        world: tuple[FakeDevLake, FakeGitHub]) -> None:
    """DevLake v1.0.3's recovery panel joins incident links of every project to this
    project's deployments by id (seen on the real server): Team's median takes P's link."""
    devlake, github = world
    (c0,) = github.add_repo("org/svc", 1)
    devlake.add_connection(2, "team")
    devlake.add_project("Team", connections=[2])
    body = deployment("shared", c0, at(2, 7), at(2, 8))
    for connection in (1, 2):
        assert httpx.post(f"{devlake.url}/plugins/webhook/connections/{connection}/deployments",
                          json=body).status_code == 200
    for connection, key, resolved in ((1, "P-1", at(2, 9, 30)), (2, "T-1", at(2, 13))):
        assert httpx.post(f"{devlake.url}/plugins/webhook/connections/{connection}/issues", json={
            "issueKey": key, "title": "t", "status": "DONE", "originalStatus": "resolved",
            "type": "INCIDENT", "createdDate": iso(at(2, 9)),
            "resolutionDate": iso(resolved)}).status_code == 200
    team = DoraModel(devlake, github).project("Team")
    assert [link.recovery for link in team.incident_links] == [300]
    assert team.failed_deployment_recovery_minutes == 90  # lower median of [90, 300]
    assert team.time_to_restore_minutes == 240  # its own incidents only: [240]
    assert DoraModel(devlake, github).project("P").failed_deployment_recovery_minutes == 90


@pytest.mark.parametrize(("values", "median"), [
    ([], None), ([7], 7), ([1, 2], 1), ([1, 2, 3], 2), ([1, 2, 3, 4], 2), ([5, 5, 9], 5),
    ([9, 1, 5, 3, 7], 5),
])
def test_lower_median(values: list[int], median: int | None) -> None:
    assert lower_median(values) == median


@pytest.mark.parametrize(("minutes", "expected"), [(0, 0), (0.01, 1), (14.5, 15), (-1, None)])
def test_ceil_minutes(minutes: float, expected: int | None) -> None:
    start = at(2, 0)
    assert ceil_minutes(start, start + timedelta(minutes=minutes)) == expected
