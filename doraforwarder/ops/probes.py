"""``doraforwarder doctor``: can this process read Applications where it will watch them?

Builds the same client the source uses and lists one Application per
configured scope, so a missing kubeconfig, a wrong context, a bad token or a
missing RBAC rule shows up as one failed check with the fix, before the
daemon runs. Then it asks the API server about every permission the
configuration needs (:func:`~doraforwarder.ops.permissions.required_permissions`:
watch too, which a list cannot show, and the reviews of ``api_auth:
kubernetes``) with one SelfSubjectAccessReview each, and names what is missing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes.client import (
    AuthorizationV1Api,
    CustomObjectsApi,
    V1ResourceAttributes,
    V1SelfSubjectAccessReview,
    V1SelfSubjectAccessReviewSpec,
)
from kubernetes.client.exceptions import ApiException

from doraforwarder.argocd.kube import build_api_client
from doraforwarder.argocd.listing import list_applications
from doraforwarder.config import LoadedConfig
from doraforwarder.ops.checks import Check
from doraforwarder.ops.permissions import Permission, required_permissions

RBAC_HINT = ("grant list and watch on applications.argoproj.io to the service account "
             "(manifests/base/rbac.yaml)")
PERMISSIONS_CHECK = "kubernetes permissions"
REQUEST_TIMEOUT_S = 10


async def probe_kubernetes(config: LoadedConfig) -> list[Check]:
    return await asyncio.to_thread(_probe, config)


def _probe(config: LoadedConfig) -> list[Check]:
    argocd = config.settings.argocd
    try:
        client = build_api_client(argocd)
    except Exception as exc:
        return [
            Check(
                "kubernetes config",
                "fail",
                f"{type(exc).__name__}: {exc}",
                "set argocd.kubeconfig / KUBECONFIG, or run in a pod with a service account",
            )
        ]
    checks = [Check("kubernetes config", "pass", f"API server {client.configuration.host}")]
    try:
        reachable = True
        if argocd.enabled:
            listed, reachable = _list_each_scope(client, argocd.namespaces)
            checks += listed
        if reachable:
            checks.append(check_permissions(client, required_permissions(config.settings)))
    finally:
        client.close()  # type: ignore[no-untyped-call]
    return checks


def _list_each_scope(client: Any, namespaces: list[str]) -> tuple[list[Check], bool]:
    """A list of one Application per scope; and False when the API server was unreachable."""
    checks: list[Check] = []
    reachable = True
    api = CustomObjectsApi(client)
    for namespace in namespaces:
        name = f"applications in {namespace}"
        try:
            answer = list_applications(api, namespace, limit=1,
                                       _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            hint = RBAC_HINT if exc.status in (401, 403) else "check the API server address"
            checks.append(Check(name, "fail", f"HTTP {exc.status} {exc.reason}", hint))
            continue
        except Exception as exc:
            reachable = False
            checks.append(Check(name, "fail", f"{type(exc).__name__}: {exc}",
                                "check the API server address and the network policy"))
            continue
        assert isinstance(answer, dict)
        more = bool(answer.get("metadata", {}).get("continue"))
        found = len(answer.get("items") or [])
        detail = "readable" + (", applications found" if found or more else ", none yet")
        checks.append(Check(name, "pass" if found or more else "warn", detail,
                            "" if found else "no Application there: check argocd.namespaces"))
    return checks, reachable


def may(client: Any, permission: Permission) -> bool:
    """The API server's answer to a SelfSubjectAccessReview for ``permission``."""
    review = AuthorizationV1Api(client).create_self_subject_access_review(
        V1SelfSubjectAccessReview(spec=V1SelfSubjectAccessReviewSpec(
            resource_attributes=V1ResourceAttributes(
                verb=permission.verb, group=permission.group, resource=permission.resource,
                namespace=permission.namespace or "",
            ))),
        _request_timeout=REQUEST_TIMEOUT_S,
    )
    return bool(review.status is not None and review.status.allowed)


def check_permissions(client: Any, needed: list[Permission]) -> Check:
    """One check: every permission in ``needed`` allowed, or the ones missing, by name."""
    if not needed:
        return Check(PERMISSIONS_CHECK, "skip", "the configuration needs none")
    missing: list[Permission] = []
    for permission in needed:
        try:
            if not may(client, permission):
                missing.append(permission)
        except ApiException as exc:
            return Check(PERMISSIONS_CHECK, "warn",
                         f"cannot ask the API server (SelfSubjectAccessReview: HTTP "
                         f"{exc.status} {exc.reason})",
                         "check by hand: " + "; ".join(p.can_i() for p in needed))
        except Exception as exc:
            return Check(PERMISSIONS_CHECK, "warn",
                         f"cannot ask the API server ({type(exc).__name__}: {exc})",
                         "check by hand: " + "; ".join(p.can_i() for p in needed))
    if missing:
        return Check(PERMISSIONS_CHECK, "fail",
                     "missing: " + "; ".join(p.describe() for p in missing),
                     "apply the RBAC of manifests/ for this configuration (docs/kubernetes.md); "
                     "check with: " + "; ".join(p.can_i() for p in missing))
    return Check(PERMISSIONS_CHECK, "pass",
                 f"all {len(needed)} allowed: " + "; ".join(p.describe() for p in needed))
