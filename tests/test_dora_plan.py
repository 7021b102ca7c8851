"""Planning for the dashboard: a deployment id per target, ArgoCD incidents, row decisions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from doraforwarder.commits.images import TagMatcher
from doraforwarder.commits.plan import is_git_sha, no_commit_reason, plan_head_images, row_repo_url
from doraforwarder.config import DevLakeConfig
from doraforwarder.devlake.plan import Planner
from doraforwarder.outbox.entries import OutboxEntry
from doraforwarder.records import DetectedIncident, GitSource
from tests.devlake_support import T0, commit, detected, devlake_section

TEAMS = [{"name": "a", "project_id": "2", "argocd_components": ["build-service"]},
         {"name": "b", "project_name": "b", "argocd_components": ["build-service"]}]


def planner() -> Planner:
    return Planner(DevLakeConfig.model_validate(devlake_section("http://devlake", teams=TEAMS)))


def test_each_team_target_gets_its_own_deployment_id_the_global_one_keeps_it() -> None:
    """DevLake keeps one cicd_deployments row per raw id and its change failure rate panel
    joins incident links by deployment id across projects: a shared id let a team's incident
    mark the global project's copy failed (tests/dora_long_scenario.py: 5/13 for 4/13)."""
    plan = planner().plan_deployment(detected("build-service"), [commit()])
    deployment_id = plan.deployment.id
    assert [(e.target.key, e.record_id, e.payload["id"]) for e in plan.entries] == [
        ("connection_id:1", deployment_id, deployment_id),
        ("connection_id:2", f"{deployment_id}@a", f"{deployment_id}@a"),
        ("project_name:b", f"{deployment_id}@b", f"{deployment_id}@b"),
    ]
    # the rest of the body is the same for every target
    assert len({str({**e.payload, "id": ""}) for e in plan.entries}) == 1


def test_dead_letters_carry_the_target_id_too() -> None:
    plan = planner().plan_without_commits(detected("build-service"), "no_source")
    entries = [OutboxEntry.from_fields(d) for d in plan.dead]
    assert [(e.record_id, e.payload["id"]) for e in entries] == [
        (plan.deployment.id, plan.deployment.id),
        (f"{plan.deployment.id}@a", f"{plan.deployment.id}@a"),
        (f"{plan.deployment.id}@b", f"{plan.deployment.id}@b")]


def test_a_team_on_the_global_target_or_named_global_is_told_apart_by_target() -> None:
    """The global target's copy is the one whose target is the global target, not the one
    whose team is called "global"; a team naming the global target shares its entry."""
    teams = [{"name": "global", "project_id": "2", "argocd_components": ["build-service"]},
             {"name": "same", "project_id": "1", "argocd_components": ["build-service"]}]
    plan = Planner(DevLakeConfig.model_validate(
        devlake_section("http://devlake", teams=teams))).plan_deployment(
            detected("build-service"), [commit()])
    deployment_id = plan.deployment.id
    assert [(e.target.key, e.payload["id"]) for e in plan.entries] == [
        ("connection_id:1", deployment_id), ("connection_id:2", f"{deployment_id}@global")]


def test_argocd_incident_goes_to_the_component_connections_with_a_stable_key() -> None:
    incident = DetectedIncident(
        key="argocd:argocd/build-service-prod:1714564800", app_namespace="argocd",
        app_name="build-service-prod", component="build-service", cluster="prod",
        environment="PRODUCTION", status="resolved", created_at=T0,
        resolved_at=T0 + timedelta(minutes=30), title="build-service Degraded in prod")
    entries = planner().plan_detected_incident(incident)
    # a project target too (the real DevLake run lost team projects' Degraded incidents)
    assert [e.target.key for e in entries] == ["connection_id:1", "connection_id:2",
                                               "project_name:b"]
    body = entries[0].payload
    assert body["issueKey"] == incident.key and body["type"] == "INCIDENT"
    assert body["status"] == "DONE" and body["resolutionDate"] == "2024-05-01T12:30:00+00:00"
    assert body["createdDate"] == "2024-05-01T12:00:00+00:00"
    opened = planner().plan_detected_incident(incident.model_copy(
        update={"status": "open", "resolved_at": None}))
    assert opened[0].payload["status"] == "TODO" and "resolutionDate" not in opened[0].payload
    assert opened[0].order_key == entries[0].order_key


def test_argocd_incident_resolved_is_closed_too_when_close_resolved_is_on() -> None:
    """``webrca.close_resolved`` is the planner's: ArgoCD's Degraded incidents get the close
    call after their resolved upsert, in the same order key, as WebRCA and alert incidents."""
    section = {**devlake_section("http://devlake", teams=TEAMS[:1])}
    closing = Planner(DevLakeConfig.model_validate(section), close_resolved=True)
    incident = DetectedIncident(
        key="argocd:argocd/build-service-prod:1714564800", app_namespace="argocd",
        app_name="build-service-prod", component="build-service", cluster="prod",
        environment="PRODUCTION", status="resolved", created_at=T0,
        resolved_at=T0 + timedelta(minutes=30), title="build-service Degraded in prod")
    entries = closing.plan_detected_incident(incident)
    assert [(e.target.key, e.kind) for e in entries] == [
        ("connection_id:1", "issue"), ("connection_id:1", "close"),
        ("connection_id:2", "issue"), ("connection_id:2", "close")]
    assert entries[0].order_key == entries[1].order_key
    assert entries[1].record_id == incident.key
    opened = closing.plan_detected_incident(incident.model_copy(
        update={"status": "open", "resolved_at": None}))
    assert [e.kind for e in opened] == ["issue", "issue"]


@pytest.mark.parametrize(("revision", "git"), [
    ("a" * 40, True), ("abc1234", True), ("1.4.2", False), ("HEAD", False), ("v1", False)])
def test_is_git_sha(revision: str, git: bool) -> None:
    assert is_git_sha(revision) is git


@pytest.mark.parametrize(("url", "row"), [
    ("git@github.com:Org/Repo.git", "https://github.com/org/repo"),
    ("https://github.com/org/repo/", "https://github.com/org/repo"),
    ("org/repo", "https://github.com/org/repo"),
    ("https://Charts.Example.com/", "https://charts.example.com"),
    ("oci://quay.io/charts", "oci://quay.io/charts"),
    ("", None),
])
def test_row_repo_url(url: str, row: str | None) -> None:
    assert row_repo_url(url) == row


def test_head_images_include_unchanged_ones_once_per_sha() -> None:
    a, b = "a" * 40, "b" * 40
    images = [f"quay.io/o/x:{a}", f"quay.io/o/x:{a}", f"quay.io/o/y:{b}", "quay.io/o/z:v1.2"]
    heads = plan_head_images(images, TagMatcher())
    assert [(h.image, h.head) for h in heads] == [("quay.io/o/x", a), ("quay.io/o/y", b)]


@pytest.mark.parametrize(("sources", "images", "labels", "reason"), [
    ([], [], False, "no_source"),
    ([], ["quay.io/o/x:v1"], False, "no_source"),
    ([], ["quay.io/o/x:" + "a" * 40], False, "unresolved"),
    ([GitSource(repo_url="", revision="main")], [], False, "unresolved"),
    # With registry.enabled, an image without a SHA tag may carry its commit in its labels.
    ([], ["quay.io/o/x:v1"], True, "unresolved"),
    ([], [], True, "no_source"),
    # ... unless registry.skip_images names it: its labels are never read.
    ([], ["quay.io/mesh/proxyv2:1.20"], True, "no_source"),
    ([], ["quay.io/mesh/proxyv2:1.20", "quay.io/o/x:v1"], True, "unresolved"),
    ([], ["quay.io/mesh/proxyv2:" + "a" * 40], True, "unresolved"),
])
def test_no_commit_reason(sources: list[GitSource], images: list[str], labels: bool,
                          reason: str) -> None:
    deployment = detected().model_copy(update={"sources": sources, "images": images})
    assert no_commit_reason(deployment, TagMatcher(), labels=labels,
                            skip_images=["*/mesh/*"]) == reason
