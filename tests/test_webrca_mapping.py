"""Pure decisions of the WebRCA source: item checks, mapping, fingerprints, pagination."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from doraforwarder.devlake.issues import build_issue_payload, fingerprint, issue_status, resolution
from doraforwarder.devlake.payloads import IssuePayload
from doraforwarder.webrca.pages import (
    HARD_PAGE_LIMIT,
    PageRead,
    is_last_page,
    page_limit,
    read_page,
)
from doraforwarder.webrca.parse import MalformedIncident, parse_incident, wanted_product

URL = "https://web-rca.devshift.net/incident/{incident_id}"
CREATED = "2025-03-01T10:00:00Z"


def item(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "incident_id": "ITN-2025-00001", "summary": "Builds fail", "description": "d",
        "products": ["konflux"], "status": "investigating", "severity": "major",
        "created_at": CREATED, "updated_at": "2025-03-01T12:00:00Z",
        "last_changed_at": "2025-03-01T11:00:00Z", "resolved_at": None,
    }
    base.update(fields)
    return base


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(("webrca", "devlake"), [
    ("open", "TODO"),
    ("new", "TODO"),
    ("unknown", "TODO"),
    ("investigating", "IN_PROGRESS"),
    ("Investigating", "IN_PROGRESS"),
    ("monitoring", "IN_PROGRESS"),
    ("identified", "IN_PROGRESS"),
    ("resolved", "DONE"),
    ("closed", "DONE"),
    ("CLOSED", "DONE"),
])
def test_status_mapping(webrca: str, devlake: str) -> None:
    assert issue_status(webrca) == devlake


@pytest.mark.parametrize(("fields", "expected"), [
    ({"status": "resolved", "resolved_at": "2025-03-02T08:00:00Z"}, ("2025-03-02T08:00:00+00:00", "resolved_at")),
    ({"status": "closed", "resolved_at": None}, ("2025-03-01T11:00:00+00:00", "last_changed_at")),
    ({"status": "resolved", "resolved_at": "", "last_changed_at": None}, ("2025-03-01T12:00:00+00:00", "updated_at")),
    ({"status": "resolved", "resolved_at": None, "last_changed_at": None, "updated_at": None}, None),
    # Never before creation: DevLake rejects resolutionDate < createdDate.
    ({"status": "resolved", "resolved_at": "2025-02-01T00:00:00Z"}, (CREATED.replace("Z", "+00:00"), "resolved_at")),
    # Open incidents have no resolution, whatever the fields say.
    ({"status": "investigating", "resolved_at": "2025-03-02T08:00:00Z"}, None),
    ({"status": "open"}, None),
    # Other offsets and Go's nanoseconds end up in UTC.
    ({"status": "resolved", "resolved_at": "2025-03-02T10:00:00.123456789+02:00"}, ("2025-03-02T08:00:00.123456+00:00", "resolved_at")),
])
def test_resolution_date_fallbacks(fields: dict[str, Any], expected: tuple[str, str] | None) -> None:
    result = resolution(parse_incident(item(**fields)))
    if expected is None:
        assert result is None
    else:
        assert result == (at(expected[0]), expected[1])


@pytest.mark.parametrize(("products", "wanted", "component"), [
    (["konflux"], [], "konflux"),
    (["rhtap", "konflux"], [], "rhtap"),
    ([], [], ""),
    (["konflux"], ["konflux"], "konflux"),
    (["rhtap", "konflux"], ["konflux"], "konflux"),
    (["rhtap", "konflux"], ["konflux", "rhtap"], "konflux"),
    (["rhtap"], ["konflux"], None),
    ([], ["konflux"], None),
    (["Konflux"], ["konflux"], None),
])
def test_product_filter_and_component(products: list[str], wanted: list[str],
                                      component: str | None) -> None:
    assert wanted_product(products, wanted) == component


@pytest.mark.parametrize(("bad", "what"), [
    ("not a dict", "not_an_object"),
    (item(incident_id=None), "missing_incident_id"),
    (item(incident_id="  "), "missing_incident_id"),
    ({k: v for k, v in item().items() if k != "incident_id"}, "missing_incident_id"),
    (item(created_at=None), "missing_created_at"),
    ({k: v for k, v in item().items() if k != "created_at"}, "missing_created_at"),
    (item(created_at="yesterday"), "bad_date"),
    (item(resolved_at="soon"), "bad_date"),
    (item(updated_at=12345), "bad_date"),
    (item(products={"name": "konflux"}), "bad_products"),
    (item(summary={"text": "x"}), "bad_summary"),
])
def test_malformed_items_are_named(bad: Any, what: str) -> None:
    with pytest.raises(MalformedIncident) as caught:
        parse_incident(bad)
    assert caught.value.what == what


def test_lenient_fields() -> None:
    incident = parse_incident(item(status=None, products="konflux", severity=None, summary=""))
    assert incident.status == "unknown"
    assert incident.products == ("konflux",)
    payload = build_issue_payload(incident, "konflux", URL)
    assert payload.title == "ITN-2025-00001"  # empty summary: the key is the title
    assert payload.original_status == "unknown"
    assert payload.status == "TODO"
    assert payload.severity is None


def test_payload_of_a_resolved_incident() -> None:
    incident = parse_incident(item(status="resolved", resolved_at="2025-03-02T08:00:00Z"))
    body = build_issue_payload(incident, "konflux", URL).body()
    assert body == {
        "issueKey": "ITN-2025-00001",
        "title": "Builds fail",
        "description": "d",
        "type": "INCIDENT",
        "status": "DONE",
        "originalStatus": "resolved",
        "createdDate": "2025-03-01T10:00:00+00:00",
        "resolutionDate": "2025-03-02T08:00:00+00:00",
        "severity": "major",
        "component": "konflux",
        "url": "https://web-rca.devshift.net/incident/ITN-2025-00001",
    }
    IssuePayload.model_validate(body)


def test_payload_of_an_open_incident_has_no_resolution_and_no_empty_component() -> None:
    body = build_issue_payload(parse_incident(item(products=[])), "", URL).body()
    assert body["status"] == "IN_PROGRESS"
    assert "resolutionDate" not in body
    assert "component" not in body


def fp(fields: dict[str, Any], targets: tuple[str, ...] = ("connection_id:1",)) -> str:
    incident = parse_incident(item(**fields))
    return fingerprint(incident, build_issue_payload(incident, "konflux", URL), targets)


@pytest.mark.parametrize(("change", "same"), [
    ({"updated_at": "2025-03-05T00:00:00Z"}, True),
    ({"timeline": [{"event": "note"}]}, True),
    ({"status": "monitoring"}, False),
    ({"status": "resolved", "resolved_at": "2025-03-02T00:00:00Z"}, False),
    ({"summary": "Builds fail in us-east"}, False),
    ({"severity": "critical"}, False),
    ({"description": "root cause found"}, False),
])
def test_fingerprint_sees_real_changes_only(change: dict[str, Any], same: bool) -> None:
    assert (fp({}) == fp(change)) is same


def test_fingerprint_ignores_updated_at_even_as_resolution_fallback() -> None:
    resolved = {"status": "resolved", "resolved_at": None, "last_changed_at": None}
    bumped = dict(resolved, updated_at="2025-03-09T00:00:00Z")
    assert fp(resolved) == fp(bumped)
    assert fp(resolved) != fp(dict(resolved, resolved_at="2025-03-02T00:00:00Z"))


def test_fingerprint_covers_the_targets() -> None:
    assert fp({}) != fp({}, ("connection_id:1", "connection_id:6"))
    assert fp({}, ("a", "b")) == fp({}, ("b", "a"))


# --- pages -----------------------------------------------------------------------

@pytest.mark.parametrize(("text", "problem", "items", "total"), [
    ('{"items": [{"a": 1}], "total": 1}', None, 1, 1),
    ('{"items": [], "total": 0}', None, 0, 0),
    ('{"items": []}', None, 0, None),
    ('{"items": [], "total": "12"}', None, 0, None),
    ('{"items": [], "total": -1}', None, 0, None),
    ('{"items": ', "invalid_json", 0, None),
    ("<html>gateway</html>", "invalid_json", 0, None),
    ("[1, 2]", "invalid_json", 0, None),
    ('{"total": 5}', "missing_items", 0, 5),
    ('{"items": {"a": 1}}', "missing_items", 0, None),
])
def test_read_page(text: str, problem: str | None, items: int, total: int | None) -> None:
    page = read_page(text, 3)
    assert (page.number, page.problem, len(page.items), page.total) == (3, problem, items, total)


@pytest.mark.parametrize(("total", "size", "limit"), [
    (None, 100, HARD_PAGE_LIMIT),
    (0, 100, 1),
    (100, 100, 1),
    (101, 100, 2),
    (250, 100, 3),
    (10**9, 100, HARD_PAGE_LIMIT),
])
def test_page_limit(total: int | None, size: int, limit: int) -> None:
    assert page_limit(total, size) == limit


@pytest.mark.parametrize(("page", "limit", "total", "last"), [
    (PageRead(1, items=[1] * 100), 3, 250, False),
    (PageRead(2, items=[1] * 100), 3, 250, False),
    (PageRead(3, items=[1] * 50), 3, 250, True),
    (PageRead(2, items=[1] * 40), 5, 450, True),       # short page wins over total
    (PageRead(3, items=[1] * 100), 3, 250, True),      # full page at the limit: stop
    (PageRead(1, problem="invalid_json"), HARD_PAGE_LIMIT, None, True),   # nothing known
    (PageRead(1, problem="invalid_json"), 3, 250, False),                 # total says more
    (PageRead(3, problem="missing_items"), 3, 250, True),
])
def test_is_last_page(page: PageRead, limit: int, total: int | None, last: bool) -> None:
    assert is_last_page(page, 100, limit, total) is last
