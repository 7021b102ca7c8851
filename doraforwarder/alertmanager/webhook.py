"""Alertmanager's webhook notification (``version: "4"``), read strictly enough to trust.

Alertmanager posts one notification per alert group and flush: the group's
key and status, and every alert of the group with its own status, labels,
annotations, ``startsAt``, ``endsAt`` (zero while firing: Alertmanager hides
a firing alert's end) and fingerprint. A body that is not such a document is
one :class:`BadNotification` (answered 400: Alertmanager does not retry 4xx,
and a retry would not fix it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from doraforwarder.records import utc

AlertStatus = Literal["firing", "resolved"]
GO_ZERO_YEAR = 1
"""Go's zero ``time.Time`` (``0001-01-01T00:00:00Z``): no time."""


class BadNotification(ValueError):
    """The body is not an Alertmanager notification of version 4; the message says why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Alert(_Model):
    status: AlertStatus
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(min_length=1)

    @field_validator("starts_at")
    @classmethod
    def _starts_utc(cls, value: datetime) -> datetime:
        return utc(value)

    @field_validator("ends_at")
    @classmethod
    def _ends_utc(cls, value: datetime | None) -> datetime | None:
        if value is None or value.year <= GO_ZERO_YEAR:
            return None
        return utc(value)

    @property
    def resolved_at(self) -> datetime | None:
        """When a resolved alert ended (never before it started); None while firing."""
        if self.status != "resolved":
            return None
        return max(self.ends_at or self.starts_at, self.starts_at)


class Notification(_Model):
    version: Literal["4"]
    group_key: str = Field(alias="groupKey", min_length=1)
    status: AlertStatus
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts", ge=0)
    alerts: list[Alert]


def parse_notification(body: bytes) -> Notification:
    """The notification in ``body``, else :class:`BadNotification` with one clear line."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadNotification(f"the body is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise BadNotification("the body is not a JSON object")
    version = document.get("version")
    if version != "4":
        raise BadNotification(f"webhook version {version!r} is not supported (Alertmanager's "
                              "version \"4\" is)")
    try:
        return Notification.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise BadNotification(f"{where}: {first['msg']}{more}") from None


def now() -> datetime:
    return datetime.now(UTC)
