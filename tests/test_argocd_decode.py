"""The msgspec decoding of watch lines and list pages: same views, same errors, same no-ops."""

from __future__ import annotations

import copy
import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from doraforwarder.argocd.decode import (
    AppDocument,
    decode_event,
    decode_object,
    decode_page,
    document_fingerprint,
    to_view,
)
from doraforwarder.argocd.intake import Intake, Observed
from doraforwarder.argocd.model import MalformedApplication
from doraforwarder.argocd.parse import parse_application
from doraforwarder.argocd.watcher import WatchScope
from doraforwarder.metrics import Metrics
from doraforwarder.testing.argocd_objects import (
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
from tests.test_argocd_model import MALFORMED, base


def _objects() -> list[dict[str, Any]]:
    """Valid Applications of every shape the model reads, at every step of their life."""
    objects: list[dict[str, Any]] = []
    app = LiveApp("svc", annotations={"doraforwarder.io/component": "svc",
                                      "doraforwarder.io/environment": "production"})
    objects.append(app.snapshot())
    objects += app.sync(sha("r1"), [image("svc", "r1")], record_transition=True)
    objects += app.fail(sha("r2"))
    objects.append(app.set_health("Degraded", record_transition=True))
    multi = [source("components/svc/production"), chart_source("svc", "1.2.3"), values_source()]
    many = LiveApp("multi", revision=[sha("m0"), "1.2.3", sha("v0")], sources=multi)
    objects.append(many.snapshot())
    objects += many.sync([sha("m1"), "1.2.4", sha("v1")])
    objects.append(application(
        "hydrated", source_hydrator=hydrator_spec("apps/svc"),
        hydrated=hydrator_status(sha("dry"), sha("hyd")),
        history=[history_entry(0, sha("hyd"), app.now - timedelta(minutes=1))],
        destination_name="prod-east-1", project="team-a"))
    objects.append(application("fresh", with_status=False))
    return objects


@pytest.mark.parametrize("index", range(len(_objects())))
def test_a_decoded_document_gives_the_models_view(index: int) -> None:
    obj = _objects()[index]
    document = decode_object(json.dumps(obj).encode())
    assert isinstance(document, AppDocument)
    assert to_view(document) == parse_application(obj)


@pytest.mark.parametrize(("case", "mutate", "field"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_objects_are_reported_exactly_as_the_model_reports_them(
        case: str, mutate: Any, field: str) -> None:
    obj = base()
    mutate(obj)
    with pytest.raises(MalformedApplication) as expected:
        parse_application(copy.deepcopy(obj))
    decoded = decode_object(json.dumps(obj).encode())
    with pytest.raises(MalformedApplication) as caught:
        to_view(decoded) if isinstance(decoded, AppDocument) else parse_application(decoded)
    assert str(caught.value) == str(expected.value)
    assert caught.value.field == field


def test_status_resources_and_other_unread_fields_are_not_decoded() -> None:
    obj = base()
    obj["status"]["resources"] = [{"kind": "Deployment", "name": f"d{n}"} for n in range(40)]
    obj["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    document = decode_object(json.dumps(obj).encode())
    assert isinstance(document, AppDocument)
    assert "resources" not in json.dumps(_builtins(document))
    assert "managedFields" not in json.dumps(_builtins(document))


def _builtins(document: AppDocument) -> Any:
    import msgspec

    return msgspec.to_builtins(document)


def test_a_null_annotation_still_fails_where_the_model_says_so() -> None:
    obj = base()
    obj["metadata"]["annotations"] = {"doraforwarder.io/component": None}
    decoded = decode_object(json.dumps(obj).encode())
    assert not isinstance(decoded, AppDocument)  # tolerant path: the model names the field
    with pytest.raises(MalformedApplication, match=r"doraforwarder\.io/component"):
        parse_application(decoded)


def test_events_error_and_bookmark_lines() -> None:
    kind, obj = decode_event(b'{"type":"ERROR","object":{"kind":"Status","code":410,'
                             b'"metadata":{}}}')
    assert kind == "ERROR" and obj["code"] == 410
    kind, obj = decode_event(b'{"type":"BOOKMARK","object":{"metadata":'
                             b'{"resourceVersion":"42"}}}')
    assert kind == "BOOKMARK" and isinstance(obj, AppDocument) and obj.resource_version == "42"
    with pytest.raises(ValueError):
        decode_event(b'{"type": "MODIFIED", "object": ')


def test_a_page_decodes_item_by_item_and_a_broken_item_stays_tolerant() -> None:
    good, broken = base(), base()
    broken["metadata"]["name"] = 7
    body = json.dumps({"metadata": {"resourceVersion": "9", "continue": "x"},
                       "items": [good, broken]}).encode()
    items, metadata = decode_page(body)
    assert metadata == {"resourceVersion": "9", "continue": "x"}
    assert isinstance(items[0], AppDocument) and items[1] == broken
    with pytest.raises(ValueError):
        decode_page(b'{"items": 3}')


def test_the_document_fingerprint_ignores_refreshes_and_follows_changes() -> None:
    app = LiveApp("svc")

    def digest(obj: dict[str, Any]) -> bytes | None:
        document = decode_object(json.dumps(obj).encode())
        assert isinstance(document, AppDocument)
        return document_fingerprint(document)

    assert digest(app.refresh()) == digest(app.refresh())
    steps = app.sync(sha("r1"), [image("svc", "r1")])
    assert len({digest(step) for step in steps}) == len(steps)
    moved = app.snapshot()
    moved["spec"]["source"]["path"] = "components/svc/staging"
    assert digest(moved) != digest(app.snapshot())
    assert digest(application("svc", with_status=False)) is not None


def _line(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "object": obj}).encode()


def test_the_intake_drops_decoded_refreshes_and_hands_over_changes() -> None:
    metrics = Metrics()
    jobs: list[Any] = []
    intake = Intake(lambda key, job, stop: jobs.append(job) or True, metrics,
                    lambda scope, present: None)
    app = LiveApp("svc")
    scope, stop = WatchScope("argocd"), threading.Event()

    def feed(event_type: str, obj: dict[str, Any]) -> None:
        kind, decoded = decode_event(_line(event_type, obj))
        assert isinstance(decoded, AppDocument)
        intake.event(scope, kind, decoded, stop)

    feed("ADDED", app.snapshot())
    for _ in range(5):
        feed("MODIFIED", app.refresh())
    assert len(jobs) == 1 and metrics.events_noop._value.get() == 5
    steps = app.sync(sha("r1"), [image("svc", "r1")])
    for step in steps:
        feed("MODIFIED", step)
    assert len(jobs) == 1 + len(steps)
    assert all(isinstance(job, Observed) for job in jobs)
    assert jobs[-1].view == parse_application(steps[-1])
    feed("DELETED", app.snapshot())
    assert jobs[-1].uid == app.snapshot()["metadata"].get("uid", "")


def test_a_decoded_malformed_app_warns_once() -> None:
    metrics = Metrics()
    jobs: list[Any] = []
    intake = Intake(lambda key, job, stop: jobs.append(job) or True, metrics,
                    lambda scope, present: None)
    obj = base()
    obj["status"]["sync"]["status"] = "Sideways"  # fits the schema, fails the model
    scope, stop = WatchScope("argocd"), threading.Event()
    with capture_logs() as logs:
        for _ in range(2):
            kind, decoded = decode_event(_line("MODIFIED", obj))
            assert isinstance(decoded, AppDocument)
            intake.event(scope, kind, decoded, stop)
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and warnings[0]["field"] == "status.sync.status"
    assert jobs == []
