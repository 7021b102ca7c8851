"""The application inventory: what each watched Application looks like now, in memory.

The ArgoCD source records every Application it parses (and forgets deleted
ones); the HTTP server reads a snapshot. Nothing here calls an API: the
inventory is only as fresh as the watch, which is the point (serving it costs
the cluster nothing).

Memory stays small with many Applications: one slotted entry per app holding
only what the inventory shows, with its strings interned and equal image
lists shared, so a thousand apps on ten clusters hold each namespace, cluster,
status and image reference once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from doraforwarder import toon


@dataclass(frozen=True, slots=True)
class InventoryEntry:
    namespace: str
    name: str
    component: str
    cluster: str
    health: str
    sync: str
    images: tuple[str, ...]
    forwarded: bool
    """False when the app is watched but not forwarded (ignored component, environment)."""

    @property
    def health_value(self) -> int:
        return 1 if self.health == "Healthy" else 0

    @property
    def sync_value(self) -> int:
        return 1 if self.sync == "Synced" else 0


class Inventory:
    """Apps by (namespace, name); written by the ArgoCD source, read by the server.

    Both run on the event loop, so no lock is needed.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], InventoryEntry] = {}
        self._images: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def put(
        self,
        *,
        namespace: str,
        name: str,
        component: str,
        cluster: str,
        health: str | None,
        sync: str | None,
        images: Iterable[str],
        forwarded: bool,
    ) -> None:
        image_key = tuple(sys.intern(image) for image in images)
        shared = self._images.setdefault(image_key, image_key)
        key = (sys.intern(namespace), name)
        self._entries[key] = InventoryEntry(
            namespace=key[0],
            name=name,
            component=sys.intern(component),
            cluster=sys.intern(cluster),
            health=sys.intern(health or ""),
            sync=sys.intern(sync or ""),
            images=shared,
            forwarded=forwarded,
        )
        self._prune_images()

    def remove(self, namespace: str, name: str) -> None:
        if self._entries.pop((namespace, name), None) is not None:
            self._prune_images()

    def snapshot(self) -> list[InventoryEntry]:
        """Every entry, ordered by cluster, namespace and name."""
        return sorted(self._entries.values(), key=lambda e: (e.cluster, e.namespace, e.name))

    def _prune_images(self) -> None:
        # The image-list table only grows when lists change; rebuild it when it holds
        # far more lists than apps, so it cannot keep old lists alive for long.
        if len(self._images) > 2 * len(self._entries) + 64:
            self._images = {e.images: e.images for e in self._entries.values()}


def reference_split(name: str, known_clusters: list[str]) -> tuple[str, str]:
    """(component, cluster) as the reference's inventory handler derives them from a name.

    Its rule, kept for identical answers: the cluster is the first known cluster (in
    configuration order) the name contains, else the name's last dash-separated part,
    else ``unknown``; the component is the name without the first known cluster it ends
    with (``-<cluster>``), else the second-to-last part, else the name itself. The
    forwarding path uses :func:`doraforwarder.argocd.identity.split_known_cluster`.
    """
    parts = name.split("-")
    cluster = next((c for c in known_clusters if c in name),
                   parts[-1] if len(parts) >= 2 else "unknown")
    component = next((name.removesuffix(f"-{c}") for c in known_clusters
                      if name.endswith(f"-{c}")),
                     parts[-2] if len(parts) >= 2 else name)
    return component, cluster


def _app(entry: InventoryEntry) -> dict[str, Any]:
    """One application, with the reference's keys in the reference's order."""
    return {
        "namespace": entry.namespace,
        "name": entry.name,
        "component": entry.component,
        "health_status": entry.health,
        "health_value": entry.health_value,
        "sync_status": entry.sync,
        "sync_value": entry.sync_value,
        "images": list(entry.images),
    }


def inventory_document(entries: list[InventoryEntry],
                       namespaces: Sequence[str] = ()) -> dict[str, Any]:
    """The reference's answer: ``{"clusters": [{"cluster", "applications", "count"}],
    "total_count"}``, clusters by name and apps by namespace and name (the reference's
    cluster order changes from one request to the next; ours is stable).

    With no application the reference answers ``"clusters": null``; we answer ``[]``,
    which every client that copes with the reference's non-empty answers reads too.
    Inside a cluster, apps come by namespace in ``namespaces`` order (the reference lists
    ``argocd.namespaces`` one after the other), then by name, as the API lists them.
    """
    rank = {namespace: index for index, namespace in enumerate(namespaces)}
    ordered = sorted(entries, key=lambda e: (e.cluster, rank.get(e.namespace, len(rank)),
                                             e.namespace, e.name))
    clusters: dict[str, list[dict[str, Any]]] = {}
    for entry in ordered:
        clusters.setdefault(entry.cluster, []).append(_app(entry))
    return {
        "clusters": [
            {"cluster": cluster, "applications": apps, "count": len(apps)}
            for cluster, apps in sorted(clusters.items())
        ],
        "total_count": len(entries),
    }


_GO_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                    "\u2028": "\\u2028", "\u2029": "\\u2029"}


def inventory_json(document: dict[str, Any]) -> bytes:
    """The document as Go's ``encoding/json`` writes it (the reference's bytes).

    Compact, keys in document order, non-ASCII as UTF-8, and ``<``, ``>``, ``&``,
    U+2028 and U+2029 escaped as Go escapes them.
    """
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in _GO_HTML_ESCAPES.items():
        text = text.replace(char, escaped)
    return text.encode()


def inventory_toon(document: dict[str, Any]) -> str:
    """The document in TOON as the reference writes it: length markers, images as a list."""
    return toon.encode(document)
