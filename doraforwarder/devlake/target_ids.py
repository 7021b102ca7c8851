"""The id each DevLake target's copy of a deployment is sent under.

A sink concern: the sources give one id per deployment (``argocd/ids.py``); which copy of it a
target receives depends only on the target, so the planner (``devlake/plan.py``) asks here.
"""

from __future__ import annotations

from doraforwarder.records import DIGEST_PREFIX, MAX_ID_LENGTH, id_digest

TARGET_SEPARATOR = "@"
"""Between a deployment id and the team whose target copy it names."""


def target_deployment_id(deployment_id: str, team: str | None) -> str:
    """The id one target's copy of a deployment is sent under: ``<id>@<team>``, or ``<id>``.

    ``team`` is None for the global target: it keeps the id every version
    sent, so an existing global project's history stays one row per
    deployment. A team target gets its own id because DevLake stores one
    ``cicd_deployments`` row per raw id, and its DORA dashboard joins
    ``project_incident_deployment_relationships`` by deployment id without
    the project: with a shared id, a team's incident linked to the team's copy
    marks the global project's copy failed too (and the reverse). The team
    name, not the target's URL, names the copy, so re-pointing a team from
    ``project_id`` to the same connection's ``connection_name`` changes no id.
    An id that would exceed :data:`~doraforwarder.records.MAX_ID_LENGTH` becomes
    ``<component, cut>:sha256-<digest of the full id>``.
    """
    if team is None:
        return deployment_id
    full = f"{deployment_id}{TARGET_SEPARATOR}{team}"
    if len(full) <= MAX_ID_LENGTH:
        return full
    return f"{deployment_id.split(':')[0][:100]}:{DIGEST_PREFIX}{id_digest(full)}"
