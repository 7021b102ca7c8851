"""Reading deployment ids and dedupe claims back (they are built in ``argocd/detect.py``)."""

from __future__ import annotations

from datetime import UTC, datetime


def claim_deployed_at(claim: str) -> datetime | None:
    """When the deployment holding a dedupe claim (``"<app> <id>"``) happened, from its id.

    The id is ``<component>:<revision>:<epoch>[...]``; None when it does not
    carry a readable time.
    """
    _, _, deployment_id = claim.partition(" ")
    parts = deployment_id.split(":")
    if len(parts) >= 3 and parts[2].isdigit():
        return datetime.fromtimestamp(int(parts[2]), UTC)
    return None
