"""Deployment ids, dedupe keys, claims and incident keys (pure, table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from doraforwarder.argocd import detect, ids
from doraforwarder.argocd.ids import (
    Claim,
    claim_value,
    deployment_dedupe_key,
    deployment_id,
    incident_key,
    parse_claim,
    revision_key,
)
from doraforwarder.config import ArgoCDConfig
from doraforwarder.devlake.target_ids import target_deployment_id
from doraforwarder.records import DetectedDeployment, GitSource
from doraforwarder.testing.argocd_objects import sha

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
A, B = sha("a"), sha("b")


@pytest.mark.parametrize(("revisions", "want"), [
    ([A], A),  # single source: unchanged, so existing ids stay the same
    (["1.4.2"], "1.4.2"),
    ([A, B], f"{A[:12]}+{B[:12]}"),
    (["1.4.2", A], f"1.4.2+{A[:12]}"),
    ([A.upper(), B], f"{A.upper()[:12]}+{B[:12]}"),
    ([], "unknown"),
])
def test_revision_key(revisions: list[str], want: str) -> None:
    assert revision_key(revisions) == want


@pytest.mark.parametrize("revisions", [
    ["1.0.0+build.5", A],  # '+' inside a revision would make the join ambiguous
    ["v1:2", A],
    ["x" * 80, "y" * 80],  # too long
])
def test_revision_key_falls_back_to_a_digest(revisions: list[str]) -> None:
    key = revision_key(revisions)
    assert key.startswith("sha256-") and len(key) == 47
    assert key != revision_key([*revisions[:-1], revisions[-1] + "z"])


def test_long_chart_versions_are_not_cut_into_a_collision() -> None:
    one = revision_key(["1.2.3-rc.1000000001", A])
    two = revision_key(["1.2.3-rc.1000000002", A])
    assert one != two


def test_single_source_ids_keep_their_format() -> None:
    assert deployment_id("svc", A, NOW) == f"svc:{A}:1735732800"
    assert deployment_id("svc", A, NOW, cluster="east", failed=True) == (
        f"svc:{A}:1735732800:east:failed")


def test_ids_stay_under_255_characters() -> None:
    many = revision_key([sha(i) for i in range(30)])
    assert len(deployment_id("svc", many, NOW, cluster="east")) < 255
    huge = deployment_id("c" * 200, "r" * 200, NOW, cluster="k" * 200, failed=True)
    assert len(huge) < 255 and huge.startswith("c" * 100 + ":sha256-")
    assert huge != deployment_id("c" * 200, "r" * 199, NOW, cluster="k" * 200, failed=True)


@pytest.mark.parametrize(("team", "want"), [
    (None, f"svc:{A}:1735732800"),  # the global target: the id every version sent
    ("team-a", f"svc:{A}:1735732800@team-a"),
    ("global", f"svc:{A}:1735732800@global"),  # a team called so is still a team
])
def test_target_deployment_id(team: str | None, want: str) -> None:
    assert target_deployment_id(deployment_id("svc", A, NOW), team) == want


def test_target_deployment_ids_stay_under_255_characters_and_apart() -> None:
    long_id = deployment_id("c" * 60, "r" * 120, NOW, cluster="k" * 60)
    a, b = (target_deployment_id(long_id, t * 40) for t in "ab")
    assert len(long_id) < 255 and len(a) < 255 and len(b) < 255
    assert a != b and a.startswith("c" * 60 + ":sha256-")


def _deployment(sources: list[GitSource], revision: str = A, failed: bool = False,
                ) -> DetectedDeployment:
    return DetectedDeployment(
        id="x", app_namespace="argocd", app_name="svc-east", component="svc", cluster="east",
        environment="PRODUCTION", result="FAILURE" if failed else "SUCCESS", revision=revision,
        sources=sources, history_id=None if failed else 1, started_at=NOW, deployed_at=NOW)


@pytest.mark.parametrize(("sources", "scope", "failed", "want"), [
    ([], "component", False, f"svc:{A}"),
    ([GitSource(repo_url="r", revision=A)], "component", False, f"svc:{A}"),
    ([GitSource(repo_url="r", revision=A)], "cluster", True, f"svc:{A}:east:failed"),
    ([GitSource(repo_url="c", revision="1.4.2", chart="svc"),
      GitSource(repo_url="r", revision=A)], "component", False, f"svc:1.4.2+{A[:12]}"),
])
def test_deployment_dedupe_key_covers_every_source(
    sources: list[GitSource], scope: str, failed: bool, want: str
) -> None:
    config = ArgoCDConfig(namespaces=["argocd"], dedupe_scope=scope)
    assert deployment_dedupe_key(_deployment(sources, failed=failed), config) == want


@pytest.mark.parametrize(("value", "want"), [
    (claim_value("argocd/svc", "svc:a:1"), Claim("argocd/svc", "svc:a:1")),
    ("argocd/svc", Claim("argocd/svc", "")),
])
def test_claims_round_trip(value: str, want: Claim) -> None:
    assert parse_claim(value) == want


def test_incident_key() -> None:
    assert incident_key("argocd", "svc", NOW) == "argocd:argocd/svc:1735732800"


def test_detect_still_exports_the_id_functions() -> None:
    for name in ("deployment_id", "dedupe_key", "scope_cluster", "deployment_dedupe_key",
                 "claim_value"):
        assert getattr(detect, name) is getattr(ids, name)
        assert name in detect.__all__
