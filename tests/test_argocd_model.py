"""Malformed Application objects: one clear error per field, counted, never fatal."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from doraforwarder.argocd.intake import Intake, Observed, metric_field
from doraforwarder.argocd.model import MalformedApplication, parse_time
from doraforwarder.argocd.parse import fingerprint, parse_application
from doraforwarder.argocd.watcher import WatchScope
from doraforwarder.metrics import Metrics
from doraforwarder.testing.argocd_objects import LiveApp, image, sha

Mutation = Callable[[dict[str, Any]], None]


def base() -> dict[str, Any]:
    app = LiveApp("svc")
    app.sync(sha("r1"), [image("svc", "r1")])
    return app.snapshot()


def setter(path: str, value: Any) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return mutate


def remover(path: str) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[last]
    return mutate


MALFORMED: list[tuple[str, Mutation, str]] = [
    ("metadata missing", remover("metadata"), "metadata"),
    ("metadata a string", setter("metadata", "svc"), "metadata"),
    ("no name", remover("metadata.name"), "metadata.name"),
    ("name not a string", setter("metadata.name", 7), "metadata.name"),
    ("empty namespace", setter("metadata.namespace", ""), "metadata.namespace"),
    ("annotations a list", setter("metadata.annotations", ["x"]),
     "metadata.annotations"),
    ("component annotation not a string",
     setter("metadata.annotations", {"doraforwarder.io/component": 3}),
     "metadata.annotations[doraforwarder.io/component]"),
    ("unknown environment annotation",
     setter("metadata.annotations", {"doraforwarder.io/environment": "moon"}),
     "metadata.annotations[doraforwarder.io/environment]"),
    ("resourceVersion a number", setter("metadata.resourceVersion", 12),
     "metadata.resourceVersion"),
    ("no spec", remover("spec"), "spec"),
    ("spec a list", setter("spec", []), "spec"),
    ("no source at all", remover("spec.source"), "spec.source"),
    ("source a string", setter("spec.source", "https://x"), "spec.source"),
    ("source without repoURL", remover("spec.source.repoURL"), "spec.source.repoURL"),
    ("sources not a list", setter("spec.sources", {"repoURL": "x"}), "spec.sources"),
    ("sources item not an object", setter("spec.sources", ["x"]), "spec.sources[0]"),
    ("destination a string", setter("spec.destination", "in-cluster"), "spec.destination"),
    ("destination server a number", setter("spec.destination.server", 443),
     "spec.destination.server"),
    ("status a string", setter("status", "ok"), "status"),
    ("sync a string", setter("status.sync", "Synced"), "status.sync"),
    ("unknown sync status", setter("status.sync.status", "Sideways"), "status.sync.status"),
    ("unknown health", setter("status.health.status", "Sick"), "status.health.status"),
    ("health status a number", setter("status.health.status", 1), "status.health.status"),
    ("history an object", setter("status.history", {"id": 1}), "status.history"),
    ("history entry a string", setter("status.history.0", "x"), "status.history[0]"),
    ("history entry without id", remover("status.history.1.id"), "status.history[1].id"),
    ("history id a string", setter("status.history.1.id", "1"), "status.history[1].id"),
    ("history id a boolean", setter("status.history.1.id", True), "status.history[1].id"),
    ("history id negative", setter("status.history.1.id", -1), "status.history[1].id"),
    ("history ids repeated", setter("status.history.1.id", 0), "status.history[1].id"),
    ("history entry without date", remover("status.history.1.deployedAt"),
     "status.history[1].deployedAt"),
    ("history date unparseable", setter("status.history.1.deployedAt", "yesterday"),
     "status.history[1].deployedAt"),
    ("history start date a number", setter("status.history.1.deployStartedAt", 5),
     "status.history[1].deployStartedAt"),
    ("history entry without revision", remover("status.history.1.revision"),
     "status.history[1].revision"),
    ("history revisions with a number", setter("status.history.1.revisions", ["a", 2]),
     "status.history[1].revisions[1]"),
    ("history revisions empty", setter("status.history.1.revisions", []),
     "status.history[1].revisions"),
    ("too much history", setter("status.history",
                                [{"id": i, "revision": "a", "deployedAt": "2025-01-01T00:00:00Z"}
                                 for i in range(1001)]), "status.history"),
    ("operationState a list", setter("status.operationState", []), "status.operationState"),
    ("operation phase unknown", setter("status.operationState.phase", "Dancing"),
     "status.operationState.phase"),
    ("operation phase missing", remover("status.operationState.phase"),
     "status.operationState.phase"),
    ("finished operation without finishedAt", remover("status.operationState.finishedAt"),
     "status.operationState.finishedAt"),
    ("operation startedAt garbage", setter("status.operationState.startedAt", "soon"),
     "status.operationState.startedAt"),
    ("summary a string", setter("status.summary", "images"), "status.summary"),
    ("images an object", setter("status.summary.images", {"a": 1}), "status.summary.images"),
    ("image not a string", setter("status.summary.images", ["quay.io/a:1", 42]),
     "status.summary.images[1]"),
    ("image empty", setter("status.summary.images", [""]), "status.summary.images[0]"),
    ("image with spaces", setter("status.summary.images", ["quay.io/a b"]),
     "status.summary.images[0]"),
    ("image absurdly long", setter("status.summary.images", ["q/" + "a" * 2000]),
     "status.summary.images[0]"),
    ("huge image list", setter("status.summary.images", [f"q/i:{i}" for i in range(501)]),
     "status.summary.images"),
    ("reconciledAt garbage", setter("status.reconciledAt", "now"), "status.reconciledAt"),
]


@pytest.mark.parametrize(("case", "mutate", "field"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_shapes_name_the_field(case: str, mutate: Mutation, field: str) -> None:
    obj = base()
    mutate(obj)
    with pytest.raises(MalformedApplication) as caught:
        parse_application(obj)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_not_an_object_at_all() -> None:
    with pytest.raises(MalformedApplication) as caught:
        parse_application(["not", "an", "app"])
    assert caught.value.field == "object"


def test_the_table_is_big_enough() -> None:
    assert len(MALFORMED) >= 30


def test_intake_skips_each_shape_with_one_warning_and_a_count_and_keeps_going() -> None:
    metrics = Metrics()
    submitted: list[str] = []
    intake = Intake(lambda key, job, stop: submitted.append(key) or True, metrics,
                    lambda scope, present: None)
    scope = WatchScope("argocd")
    stop = threading.Event()
    with capture_logs() as logs:
        for index, (_, mutate, _field) in enumerate(MALFORMED):
            obj = base()
            obj["metadata"]["name"] = f"app{index}"
            mutate(obj)
            for _ in range(2):  # the same broken object twice: one warning
                assert intake.event(scope, "MODIFIED", copy.deepcopy(obj), stop)
        intake.event(scope, "MODIFIED", base(), stop)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    # The two objects without usable metadata cannot be told apart: one warning for both.
    assert len(warnings) == len(MALFORMED) - 1
    assert all(w["field"] and w["app"] for w in warnings)
    assert submitted == ["argocd/svc"]
    counted = {sample.labels["field"] for metric in metrics.malformed_objects.collect()
               for sample in metric.samples if sample.name.endswith("_total") and sample.value}
    assert counted == {metric_field(field) for _, _, field in MALFORMED}


def test_refreshes_are_dropped_in_memory_and_real_changes_are_not() -> None:
    metrics = Metrics()
    jobs: list[Any] = []
    intake = Intake(lambda key, job, stop: jobs.append(job) or True, metrics,
                    lambda scope, present: None)
    app = LiveApp("svc")
    scope, stop = WatchScope("argocd"), threading.Event()
    intake.event(scope, "ADDED", app.snapshot(), stop)
    for _ in range(5):
        intake.event(scope, "MODIFIED", app.refresh(), stop)
    assert len(jobs) == 1 and metrics.events_noop._value.get() == 5
    for step in app.sync(sha("r1"), [image("svc", "r1")]):
        intake.event(scope, "MODIFIED", step, stop)
    assert len(jobs) == 6
    assert all(isinstance(job, Observed) for job in jobs)


def test_fingerprint_ignores_reconciled_at_but_not_settling() -> None:
    app = LiveApp("svc")
    steps = app.sync(sha("r1"), [image("svc", "r1")])
    succeeded, compared = steps[2], steps[3]
    assert fingerprint(succeeded) != fingerprint(compared)
    assert fingerprint(app.refresh()) == fingerprint(app.refresh())
    assert fingerprint({"metadata": None}) is None


@pytest.mark.parametrize(("field", "label"), [
    ("status.history[12].id", "status.history[].id"),
    ("spec.sources[0].repoURL", "spec.sources[].repoURL"),
    ("metadata.annotations[doraforwarder.io/component]",
     "metadata.annotations[doraforwarder.io/component]"),
])
def test_metric_labels_are_bounded(field: str, label: str) -> None:
    assert metric_field(field) == label


def test_fingerprint_is_a_small_digest_not_references_into_the_object() -> None:
    """One is kept per tracked app: it must not keep parts of the parsed object alive."""
    app = LiveApp("svc")
    digest = fingerprint(app.snapshot())
    assert isinstance(digest, bytes) and len(digest) == 16
    moved = app.snapshot()
    moved["spec"]["source"]["path"] = "components/svc/staging"
    assert fingerprint(moved) != digest


def test_creation_time_is_read_for_telling_a_predecessor_from_a_re_creation() -> None:
    obj = LiveApp("svc").snapshot()
    assert parse_application(obj).created_at is None
    obj["metadata"]["creationTimestamp"] = "2024-06-01T10:00:00Z"
    assert parse_application(obj).created_at == parse_time("2024-06-01T10:00:00Z")
    obj["metadata"]["creationTimestamp"] = "yesterday"  # only orders views: not worth a skip
    assert parse_application(obj).created_at is None


# --- fields read for multi-source, hydrator, retries and incidents ----------------------

def test_operation_revisions_are_the_resolved_ones() -> None:
    from doraforwarder.testing.argocd_objects import T0 as START
    from doraforwarder.testing.argocd_objects import operation_state
    obj = base()
    obj["status"]["operationState"] = operation_state(
        "Failed", "HEAD", START, START, "boom", resolved=sha("resolved"))
    operation = parse_application(obj).operation
    assert operation is not None and operation.revisions == (sha("resolved"),)
    del obj["status"]["operationState"]["syncResult"]
    operation = parse_application(obj).operation
    assert operation is not None and operation.revisions == ("HEAD",)


@pytest.mark.parametrize(("phase", "finished", "message", "retrying", "failed"), [
    ("Running", True, "x. Retrying attempt #2 at 10:05AM.", True, True),
    ("Running", False, "Retrying operation. Attempt #2", False, False),
    ("Running", True, "one or more tasks are running", False, False),
    ("Failed", True, "x (retried 2 times).", False, True),
    ("Error", True, "", False, True),
    ("Succeeded", True, "", False, False),
])
def test_failed_attempts_include_retried_ones(phase: str, finished: bool, message: str,
                                              retrying: bool, failed: bool) -> None:
    from doraforwarder.argocd.model import OperationView
    moment = parse_time("2025-01-01T10:00:00Z")
    operation = OperationView(phase, moment, moment if finished else None, message)
    assert (operation.retrying, operation.failed_attempt) == (retrying, failed)


def test_fields_for_rules_and_incidents_are_read() -> None:
    from doraforwarder.testing.argocd_objects import T0 as START
    from doraforwarder.testing.argocd_objects import application, chart_source
    obj = application("svc", project="team-a", destination_namespace="svc-prod",
                      health_since=START, sources=[chart_source("svc", "1.4.2")])
    view = parse_application(obj)
    assert (view.project, view.destination_namespace, view.health_since) == (
        "team-a", "svc-prod", START)
    assert view.sources[0].chart == "svc" and view.source_path == ""
    obj["status"]["health"]["lastTransitionTime"] = "garbage"  # orders times only: unknown
    assert parse_application(obj).health_since is None


def test_fingerprint_follows_what_the_new_decisions_read() -> None:
    from doraforwarder.testing.argocd_objects import application, hydrator_status
    obj = base()
    digest = fingerprint(obj)
    for mutate in (
        lambda o: o["status"]["health"].update(lastTransitionTime="2025-01-01T10:00:00Z"),
        lambda o: o["status"].update(sourceHydrator=hydrator_status(sha("d"), sha("h"))),
        lambda o: o["spec"].update(project="other"),
        lambda o: o["status"]["operationState"]["syncResult"].update(revision=sha("other")),
        lambda o: o.pop("status"),
    ):
        changed = copy.deepcopy(obj)
        mutate(changed)
        assert fingerprint(changed) != digest
    assert fingerprint(application("svc", with_status=False)) is not None
