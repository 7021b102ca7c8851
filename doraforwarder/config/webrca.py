"""``webrca``: polling Red Hat's WebRCA incidents (SSO token, products, interval).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import (
    Field,
    field_validator,
)

from doraforwarder.config.fields import (
    Duration,
    Section,
)

SSO_ENDPOINT = (
    "https://sso.redhat.com/auth/realms/redhat-external/protocol/openid-connect/token"
)


REFERENCE_PRODUCTS = ("konflux",)
"""The only product whose incidents the reference forwards (with component ``konflux``)."""


class WebRCAConfig(Section):
    enabled: bool = False
    api_url: str = "https://api.openshift.com/api/web-rca/v1/incidents"
    interval: Duration = timedelta(minutes=30)
    token: str = Field(default="", repr=False, exclude=True)
    """The reference's place for the WebRCA offline token: used only when ``OFFLINE_TOKEN``
    (and ``OFFLINE_TOKEN_FILE``) is unset, with a warning; never printed."""
    token_url: str = SSO_ENDPOINT
    client_id: str = "cloud-services"
    products: list[str] = Field(default_factory=lambda: list(REFERENCE_PRODUCTS))
    """Incidents of these products are forwarded, filed under the first one listed that
    they touch. Absent: ``[konflux]``, what the reference hard-codes (its file has no such
    key), so its users forward what they forwarded before. ``[]``: every incident."""

    @property
    def products_defaulted(self) -> bool:
        """True when the file does not set ``products`` (the reference's ``konflux`` only)."""
        return "products" not in self.model_fields_set
    incident_url: str = "https://web-rca.devshift.net/incident/{incident_id}"
    close_resolved: bool = False
    page_size: int = Field(default=100, ge=1, le=1000)
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("incident_url")
    @classmethod
    def _has_placeholder(cls, value: str) -> str:
        if "{incident_id}" not in value:
            raise ValueError("incident_url must contain the placeholder {incident_id}")
        return value
