"""How the fake DevLake reads a webhook body: Go's date layouts, decoding, validation.

Apart from the server so the contract our payloads must meet (DevLake
v1.0.3's date layouts, the 400s of decoding and of validation) can be checked
on a payload alone, without a request (``tests/test_payloads.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

ENVIRONMENTS = ("PRODUCTION", "STAGING", "TESTING", "DEVELOPMENT")
ISSUE_STATUSES = ("TODO", "DONE", "IN_PROGRESS")


# --- dates -------------------------------------------------------------------------------

_FRACTION = r"(?:\.\d+)?"
_DATE = r"\d{4}-\d{2}-\d{2}"
_TIME = r"\d{2}:\d{2}:\d{2}"
# DevLake v1.0.3 picks one Go layout by the end of the string (first match wins),
# then parses the whole string with it; Go accepts a fraction after the seconds
# even when the layout has none, except where the layout fixes its digits.
_LAYOUTS: tuple[tuple[str, str], ...] = (
    (r"[+-]\d{4}$", rf"{_DATE}T{_TIME}{_FRACTION}[+-]\d{{4}}"),
    (r"\d{3}[+-]\d{2}:\d{2}$", rf"{_DATE}T{_TIME}\.\d{{3}}[+-]\d{{2}}:\d{{2}}"),
    (r"[+-]\d{2}:\d{2}$", rf"{_DATE}T{_TIME}{_FRACTION}[+-]\d{{2}}:\d{{2}}"),
    (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$", rf"{_DATE} {_TIME}"),
    (r"[+-]\d{2}-\d{2}$", _DATE),
    (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}$", rf"{_DATE} \d{{2}}:\d{{2}}"),
)
_RFC3339 = rf"{_DATE}T{_TIME}{_FRACTION}(?:Z|[+-]\d{{2}}:\d{{2}})"
_COMPILED_LAYOUTS = tuple((re.compile(selector), re.compile(whole))
                          for selector, whole in _LAYOUTS)
_COMPILED_RFC3339 = re.compile(_RFC3339)


def parse_devlake_date(value: object) -> datetime | None:
    """A date as DevLake v1.0.3's webhook plugin parses it (aware, UTC); None if refused.

    Layouts without a zone are UTC. Microseconds with a ``+00:00`` offset are
    refused: v1.0.3 reads them with the milliseconds layout.
    """
    if not isinstance(value, str) or not value:
        return None
    for selector, whole in _COMPILED_LAYOUTS:
        if selector.search(value):
            return _parse(value) if whole.fullmatch(value) else None
    return _parse(value) if _COMPILED_RFC3339.fullmatch(value) else None


def _parse(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# --- bodies -------------------------------------------------------------------------------


class Invalid(Exception):
    """A body DevLake refuses with 400 (struct validation: DevLake's error body)."""


class DecodeError(Invalid):
    """A body DevLake cannot decode (a bad date or type): 400 with a bare JSON string."""


def _decode_string(body: Mapping[str, Any], name: str, where: str) -> None:
    if body.get(name) is not None and not isinstance(body[name], str):
        raise DecodeError(f"1 error(s) decoding:\n\n* '{where}{name}' expected type "
                          f"'string', got {type(body[name]).__name__}")


def _decode_date(body: Mapping[str, Any], name: str, where: str) -> None:
    value = body.get(name)
    if value in (None, ""):
        return
    if parse_devlake_date(value) is None:
        raise DecodeError(f"1 error(s) decoding:\n\n* error decoding '{where}{name}': "
                          f"cannot parse {value!r} as a date")


def _required(body: Mapping[str, Any], name: str, where: str) -> None:
    if body.get(name) in (None, ""):
        raise Invalid(f"input json error: {where}{name} is required")


def check_deployment(body: Any) -> None:
    """DevLake's decoding and checks of a webhook deployment (``WebhookDeploymentReq``)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise DecodeError("input json error: the body must be a JSON object")
    for name in ("id", "environment", "result", "displayTitle", "name",
                 "originalEnvironment"):
        _decode_string(body, name, "")
    for name in ("startedDate", "finishedDate", "createdDate"):
        _decode_date(body, name, "")
    commits = body.get("deploymentCommits")
    if commits is not None and not isinstance(commits, list):
        raise DecodeError("1 error(s) decoding:\n\n* 'deploymentCommits': source data must "
                          "be an array or slice")
    for index, commit in enumerate(commits or []):
        where = f"deploymentCommits[{index}]."
        if not isinstance(commit, dict):
            raise DecodeError(f"1 error(s) decoding:\n\n* '{where[:-1]}' expected a map")
        for name in ("repoUrl", "commitSha", "refName", "commitMsg", "displayTitle", "name",
                     "result", "status", "repoId"):
            _decode_string(commit, name, where)
        for name in ("startedDate", "finishedDate", "createdDate"):
            _decode_date(commit, name, where)
    _required(body, "id", "")
    _required(body, "startedDate", "")
    _required(body, "finishedDate", "")
    environment = body.get("environment")
    if environment not in (None, "") and environment not in ENVIRONMENTS:
        raise Invalid(f"input json error: environment must be one of {' '.join(ENVIRONMENTS)}")
    for index, commit in enumerate(commits or []):
        where = f"deploymentCommits[{index}]."
        for name in ("repoUrl", "commitSha", "startedDate", "finishedDate"):
            _required(commit, name, where)
    if not commits:
        raise Invalid("deployment_commits is empty")


def check_issue(body: Any) -> None:
    """DevLake's decoding and checks of a webhook issue (``WebhookIssueRequest``)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise DecodeError("input json error: the body must be a JSON object")
    for name in ("issueKey", "title", "status", "originalStatus", "type", "url",
                 "description", "epicKey", "parentIssueKey", "priority", "creatorId",
                 "creatorName", "assigneeId", "assigneeName", "severity", "component"):
        _decode_string(body, name, "")
    for name in ("createdDate", "resolutionDate", "updatedDate"):
        _decode_date(body, name, "")
    point = body.get("storyPoint")
    if point is not None and (isinstance(point, bool) or not isinstance(point, int | float)):
        raise DecodeError("1 error(s) decoding:\n\n* 'storyPoint' expected type 'float64'")
    lead = body.get("leadTimeMinutes")
    if lead is not None and (isinstance(lead, bool) or not isinstance(lead, int) or lead < 0):
        raise DecodeError("1 error(s) decoding:\n\n* 'leadTimeMinutes' expected type 'uint'"
                          " (leadTimeMinutes must be an unsigned integer)")
    for name in ("originalEstimateMinutes", "timeSpentMinutes", "timeRemainingMinutes"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise DecodeError(f"1 error(s) decoding:\n\n* '{name}' expected type 'int64'")
    for name in ("issueKey", "title"):
        _required(body, name, "")
    if body.get("status") not in ISSUE_STATUSES:
        raise Invalid(f"input json error: status must be one of {' '.join(ISSUE_STATUSES)}")
    for name in ("originalStatus", "createdDate"):
        _required(body, name, "")
