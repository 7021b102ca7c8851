"""The one way Applications are read from the Kubernetes API (watch, doctor, backfill).

A label selector or another API version is added here, once, for every reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, cast

from kubernetes.client import CustomObjectsApi

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "applications"
ALL_NAMESPACES = "*"

PAGE_SIZE = 500


def list_applications(api: CustomObjectsApi, namespace: str | None, **kwargs: Any) -> Any:
    """One LIST (or, with ``watch=True``, WATCH) call over ``namespace``'s Applications.

    ``namespace`` None or ``*`` means every namespace. ``kwargs`` go to the
    Kubernetes client as they are (``limit``, ``_continue``, ``watch``...).
    """
    if namespace is None or namespace == ALL_NAMESPACES:
        return api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
    return api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kwargs)


def iter_applications(api: CustomObjectsApi, namespaces: Iterable[str],
                      request_timeout_s: float = 60) -> Iterator[dict[str, Any]]:
    """Every Application of ``namespaces`` (``*`` for all), read page by page."""
    for namespace in namespaces:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": PAGE_SIZE, "_request_timeout": request_timeout_s}
            if token:
                kwargs["_continue"] = token
            page = cast(dict[str, Any], list_applications(api, namespace, **kwargs))
            yield from page.get("items", [])
            token = page.get("metadata", {}).get("continue")
            if not token:
                break
