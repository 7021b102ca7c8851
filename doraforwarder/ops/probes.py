"""``doraforwarder doctor``: can this process read Applications where it will watch them?

Builds the same client the source uses and lists one Application per
configured scope, so a missing kubeconfig, a wrong context, a bad token or a
missing RBAC rule shows up as one failed check with the fix, before the
daemon runs.
"""

from __future__ import annotations

import asyncio

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from doraforwarder.argocd.kube import build_api_client
from doraforwarder.argocd.listing import list_applications
from doraforwarder.config import LoadedConfig
from doraforwarder.ops.checks import Check

RBAC_HINT = "grant get, list and watch on applications.argoproj.io to the service account"


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
    api = CustomObjectsApi(client)
    try:
        for namespace in argocd.namespaces:
            name = f"applications in {namespace}"
            try:
                answer = list_applications(api, namespace, limit=1, _request_timeout=10)
            except ApiException as exc:
                hint = RBAC_HINT if exc.status in (401, 403) else "check the API server address"
                checks.append(Check(name, "fail", f"HTTP {exc.status} {exc.reason}", hint))
                continue
            except Exception as exc:
                checks.append(
                    Check(
                        name,
                        "fail",
                        f"{type(exc).__name__}: {exc}",
                        "check the API server address and the network policy",
                    )
                )
                continue
            assert isinstance(answer, dict)
            more = bool(answer.get("metadata", {}).get("continue"))
            found = len(answer.get("items") or [])
            detail = "readable" + (", applications found" if found or more else ", none yet")
            checks.append(
                Check(
                    name,
                    "pass" if found or more else "warn",
                    detail,
                    "" if found else "no Application there: check argocd.namespaces",
                )
            )
    finally:
        client.close()  # type: ignore[no-untyped-call]
    return checks
