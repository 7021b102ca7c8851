"""Multi-source, source-hydrator and not-yet-reconciled Applications (pure decisions)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from doraforwarder.argocd.dedupe import apply_dedupe
from doraforwarder.argocd.detect import decide
from doraforwarder.argocd.ids import revision_key
from doraforwarder.argocd.intake import Intake, Observed
from doraforwarder.argocd.model import MalformedApplication, SourceView
from doraforwarder.argocd.parse import parse_application
from doraforwarder.argocd.state import AppState
from doraforwarder.argocd.watcher import WatchScope
from doraforwarder.config import ArgoCDConfig
from doraforwarder.metrics import Metrics
from doraforwarder.records import DetectedDeployment, GitSource
from doraforwarder.testing.argocd_objects import (
    GITOPS_REPO,
    LiveApp,
    application,
    chart_source,
    history_entry,
    hydrator_spec,
    hydrator_status,
    image,
    sha,
    source,
    values_source,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
CONFIG = ArgoCDConfig(namespaces=["argocd"])
CHARTS = "https://charts.example.com"
I0, I1 = image("svc", "initial"), image("svc", "r1")


def run(objects: list[dict[str, Any]], config: ArgoCDConfig = CONFIG,
        state: AppState | None = None) -> tuple[AppState | None, list[DetectedDeployment]]:
    produced: list[DetectedDeployment] = []
    for obj in objects:
        decision = decide(parse_application(obj), state, config, NOW)
        produced.extend(decision.deployments)
        state = decision.state
    return state, produced


# --- multi-source ---------------------------------------------------------------------

def chart_and_values(name: str = "svc", **kwargs: Any) -> LiveApp:
    return LiveApp(name, revision=["1.4.2", sha("v0")],
                   sources=[chart_source("svc", "1.4.2"), values_source()], **kwargs)


MULTI: list[tuple[str, list[str], list[str], list[tuple[str, str]]]] = [
    # (case, revisions synced, images, [(revision, id revision key)] sent)
    ("a values-only change is a deployment", ["1.4.2", sha("v1")], [I0],
     [(sha("v1"), f"1.4.2+{sha('v1')[:12]}")]),
    ("a chart-only change is a deployment", ["1.5.0", sha("v0")], [I0],
     [(sha("v0"), f"1.5.0+{sha('v0')[:12]}")]),
    ("both change", ["1.5.0", sha("v1")], [I1], [(sha("v1"), f"1.5.0+{sha('v1')[:12]}")]),
    ("nothing changed: nothing sent", ["1.4.2", sha("v0")], [I0], []),
]


@pytest.mark.parametrize(("case", "revisions", "images", "want"), MULTI,
                         ids=[c[0] for c in MULTI])
def test_multi_source_identity_covers_every_revision(
    case: str, revisions: list[str], images: list[str], want: list[tuple[str, str]]
) -> None:
    app = chart_and_values(images=[I0])
    _, records = run([app.snapshot(), *app.sync(revisions, images)])
    deployed_at = app.last_entry["deployedAt"]
    assert [(r.revision, r.id.split(":")[1]) for r in records] == want
    for record in records:
        assert record.id.endswith(str(int(datetime.fromisoformat(deployed_at).timestamp())))
        assert record.sources == [
            GitSource(repo_url=CHARTS, revision=revisions[0], chart="svc"),
            GitSource(repo_url=GITOPS_REPO, revision=revisions[1]),
        ]


def test_history_entries_are_read_as_argocd_writes_them() -> None:
    app = chart_and_values()
    entry = app.last_entry
    assert entry["revision"] == "" and entry["source"] == {"repoURL": ""}
    [parsed] = parse_application(app.snapshot()).history
    assert parsed.revisions == ("1.4.2", sha("v0"))
    assert parsed.sources == (SourceView(CHARTS, "", "1.4.2", "svc"),
                              SourceView(GITOPS_REPO, "", "main"))
    assert parsed.revision == sha("v0")  # the first git source: the gitops commit


def test_a_git_first_multi_source_app_keeps_its_first_revision() -> None:
    sources = [source("components/svc/production"),
               source("charts/svc", repo_url="https://github.com/example/charts")]
    app = LiveApp("svc", revision=[sha("a0"), sha("b0")], sources=sources)
    _, [record] = run([app.snapshot(), *app.sync([sha("a0"), sha("b1")], [I1])])
    assert record.revision == sha("a0")
    assert record.id.split(":")[1] == revision_key([sha("a0"), sha("b1")])


def test_one_chart_with_other_values_in_two_clusters_is_two_deployments() -> None:
    records = []
    for cluster, values in (("east", "ve"), ("west", "vw")):
        app = chart_and_values(f"svc-{cluster}")
        config = ArgoCDConfig(namespaces=["argocd"], known_clusters=["east", "west"])
        _, [record] = run([app.snapshot(), *app.sync(["1.5.0", sha(values)], [I1])], config)
        records.append(record)
    outcome = apply_dedupe(records, {}, ArgoCDConfig(namespaces=["argocd"]))
    assert [r.app_name for r in outcome.kept] == ["svc-east", "svc-west"]


def test_the_same_revisions_in_two_clusters_are_one_deployment() -> None:
    records = []
    for cluster in ("east", "west"):
        app = chart_and_values(f"svc-{cluster}")
        config = ArgoCDConfig(namespaces=["argocd"], known_clusters=["east", "west"])
        _, [record] = run([app.snapshot(), *app.sync(["1.5.0", sha("v1")], [I1])], config)
        records.append(record)
    outcome = apply_dedupe(records, {}, ArgoCDConfig(namespaces=["argocd"]))
    assert [r.app_name for r in outcome.kept] == ["svc-east"]


# --- source hydrator --------------------------------------------------------------------

@pytest.mark.parametrize(("dry", "hydrated", "want"), [
    (sha("d1"), sha("h1"), GitSource(repo_url=GITOPS_REPO, revision=sha("d1"),
                                     path="apps/svc/prod")),
    # the last hydration produced another commit: its dry commit is not this one's
    (sha("d2"), sha("h2-other"), None),
    (None, None, None),
])
def test_hydrator_apps_deploy_their_dry_commit_when_known(
    dry: str | None, hydrated: str | None, want: GitSource | None
) -> None:
    app = LiveApp("svc", revision=sha("h0"), source_hydrator=hydrator_spec("apps/svc/prod"))
    first = app.snapshot()
    if dry is not None and hydrated is not None:
        app.status["sourceHydrator"] = hydrator_status(dry, hydrated)
    _, [record] = run([first, *app.sync(sha("h1"), [I1])])
    fallback = GitSource(repo_url=GITOPS_REPO, revision=sha("h1"), path="apps/svc/prod")
    assert record.sources == [want or fallback]
    assert record.revision == (want or fallback).revision
    assert record.environment == "PRODUCTION"


def test_hydrator_app_identity_comes_from_the_dry_source() -> None:
    obj = application("svc", source_hydrator=hydrator_spec("apps/svc/staging",
                                                             sync_path="hydrated/svc"))
    view = parse_application(obj)
    assert view.sources == (SourceView(GITOPS_REPO, "apps/svc/staging", "main"),)
    assert view.hydrator is not None
    assert view.hydrator.sync == SourceView(GITOPS_REPO, "hydrated/svc",
                                            "environments/production")
    decision = decide(view, None, CONFIG, NOW)
    assert decision.state is None and decision.reasons == [
        "skipped: environment STAGING is not forwarded"]


def test_hydrator_failed_attempt_reports_the_dry_commit() -> None:
    app = LiveApp("svc", revision=sha("h0"), source_hydrator=hydrator_spec("apps/svc/prod"))
    first = app.snapshot()
    app.status["sourceHydrator"] = hydrator_status(sha("d1"), sha("h1"))
    _, [record] = run([first, *app.fail("environments/production", resolved=sha("h1"))])
    assert record.result == "FAILURE" and record.revision == sha("d1")


@pytest.mark.parametrize(("spec", "field"), [
    ({"syncSource": {"targetBranch": "env/prod", "path": "x"}}, "spec.sourceHydrator.drySource"),
    ({"drySource": {"repoURL": GITOPS_REPO, "path": "x"}}, "spec.sourceHydrator.syncSource"),
    ({"drySource": {"repoURL": GITOPS_REPO, "path": "x"}, "syncSource": {"path": "x"}},
     "spec.sourceHydrator.syncSource.targetBranch"),
    ("hydrate", "spec.sourceHydrator"),
])
def test_malformed_hydrator_specs_name_the_field(spec: Any, field: str) -> None:
    obj = application("svc")
    del obj["spec"]["source"]
    obj["spec"]["sourceHydrator"] = spec
    with pytest.raises(MalformedApplication) as caught:
        parse_application(obj)
    assert caught.value.field == field


# --- not reconciled yet -----------------------------------------------------------------

def test_an_application_without_status_waits_quietly() -> None:
    fresh = application("svc", with_status=False)
    view = parse_application(fresh)
    assert not view.has_status
    decision = decide(view, None, CONFIG, NOW)
    assert decision.waiting and decision.state is None and not decision.changed
    assert decision.deployments == [] and not decision.stale
    app = LiveApp("svc")
    state, _ = run([app.snapshot()])
    later = decide(view, state, CONFIG, NOW)  # status wiped: still nothing moves
    assert later.waiting and later.state == state and not later.changed


def test_intake_hands_over_unreconciled_apps_without_counting_them_malformed() -> None:
    metrics = Metrics()
    jobs: list[Any] = []
    intake = Intake(lambda key, job, stop: jobs.append(job) or True, metrics,
                    lambda scope, present: None)
    scope, stop = WatchScope("argocd"), threading.Event()
    intake.event(scope, "ADDED", application("svc", with_status=False), stop)
    reconciled = LiveApp("svc").snapshot()
    intake.event(scope, "MODIFIED", reconciled, stop)
    assert [isinstance(job, Observed) and job.view.has_status for job in jobs] == [False, True]
    counted = [sample for metric in metrics.malformed_objects.collect()
               for sample in metric.samples if sample.value]
    assert counted == []


def test_history_entry_builder_keeps_single_source_entries_unchanged() -> None:
    entry = history_entry(3, sha("x"), NOW, sources=[source("a")])
    assert entry["revision"] == sha("x") and "revisions" not in entry
