"""``alertmanager``: incidents from Alertmanager's webhook, and which alerts count.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import (
    ByteSize,
    Field,
    field_validator,
)

from doraforwarder.config.fields import (
    Duration,
    Section,
)

ALERT_MATCHER = re.compile(
    r'\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>.*?)\s*')
"""One Alertmanager matcher: ``name=value``, ``!=``, ``=~`` (regex), ``!~``; the value may be
double-quoted as Alertmanager writes it (``severity="critical"``)."""


class AlertmanagerConfig(Section):
    """``alertmanager``: which alerts received on ``POST /api/v1/alertmanager`` are incidents."""

    enabled: bool = False
    matchers: list[str] = Field(default_factory=lambda: ["severity=critical"])
    """Alertmanager matchers every alert must satisfy to be an incident (all of them);
    ``[]``: every alert received. A label an alert lacks matches as the empty string."""
    component_label: str = "component"
    """The label naming the component: routed like a deployment of that component (the
    global target and the teams whose ``argocd_components`` hold it)."""
    title: str = "{alertname}"
    """The issue title: ``{name}`` is replaced by the annotation, else the label, ``name``
    (``"{alertname}: {summary}"``); a title left empty is the alert name."""
    incident_key: Literal["fingerprint", "group_key"] = "fingerprint"
    """One incident per firing alert (``fingerprint``) or per firing alert group
    (``group_key``, Alertmanager's ``groupKey``)."""
    max_body: ByteSize = Field(default=ByteSize(2**20), ge=1)
    """Largest notification accepted (``1MiB``); a larger one is answered 413."""
    state_ttl: Duration = timedelta(days=30)
    """How long what was seen of an alert (or group) is kept after its last notification."""

    @field_validator("matchers")
    @classmethod
    def _valid_matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            match = ALERT_MATCHER.fullmatch(text)
            if match is None:
                raise ValueError(f"{text!r} is not a matcher (name=value, name!=value, "
                                 "name=~regex or name!~regex)")
            if match.group("op") in ("=~", "!~"):
                raw = match.group("value")
                if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                    raw = raw[1:-1]
                try:
                    re.compile(raw)
                except re.error as exc:
                    raise ValueError(f"{text!r}: invalid regular expression: {exc}") from None
        return value

    @field_validator("component_label")
    @classmethod
    def _label_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"{value!r} is not a label name")
        return value
