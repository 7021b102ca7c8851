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

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
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
            health=sys.intern(health or "Unknown"),
            sync=sys.intern(sync or "Unknown"),
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


def _app(entry: InventoryEntry) -> dict[str, Any]:
    return {
        "namespace": entry.namespace,
        "name": entry.name,
        "component": entry.component,
        "health": entry.health,
        "health_value": entry.health_value,
        "sync": entry.sync,
        "sync_value": entry.sync_value,
        "forwarded": entry.forwarded,
        "images": list(entry.images),
    }


def inventory_document(
    entries: list[InventoryEntry], *, now: datetime | None = None
) -> dict[str, Any]:
    """The JSON answer: apps grouped by cluster, clusters and apps in a stable order."""
    clusters: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        clusters.setdefault(entry.cluster, []).append(_app(entry))
    moment = now or datetime.now(UTC)
    return {
        "generated_at": moment.isoformat().replace("+00:00", "Z"),
        "total": len(entries),
        "clusters": [
            {"cluster": cluster, "total": len(apps), "applications": apps}
            for cluster, apps in sorted(clusters.items())
        ],
    }


def inventory_toon(document: dict[str, Any]) -> str:
    """The JSON answer in TOON, each app one table row.

    An app's image list becomes one space-separated string (image references
    never contain spaces), so the applications stay a table instead of falling
    back to one block per app.
    """
    flat = {
        **document,
        "clusters": [
            {
                **cluster,
                "applications": [
                    {**app, "images": " ".join(app["images"])} for app in cluster["applications"]
                ],
            }
            for cluster in document["clusters"]
        ],
    }
    return toon.encode(flat)
