"""Every Redis key the daemon uses, in one place.

One module owns the key names so no two parts of the daemon invent the same
key, and an operator can read here what lives in Redis. All keys start with
``storage.redis.key_prefix`` (default ``dora-metrics``, as in the reference).

Streams (durable queues, consumer groups):

- ``deployments``: detected deployments waiting for commit resolution.
- ``outbox``: one entry per (record, DevLake target), waiting for delivery.
- ``dead``: entries DevLake refused for good (400/404/422) or that failed
  validation; inspect and requeue with ``doraforwarder outbox``.
"""

from __future__ import annotations

import hashlib
import re

DEPLOYMENTS_GROUP = "resolvers"
OUTBOX_GROUP = "delivery"


class Keys:
    """Key builders under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip(":")

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # --- ArgoCD state (owner: argocd) ---------------------------------------
    def app_state(self, namespace: str, name: str) -> str:
        """JSON state of one Application: baseline, pending decisions, failures seen."""
        return self._key("app", f"{namespace}/{name}")

    def app_state_pattern(self, namespace: str | None = None) -> str:
        """SCAN ``MATCH`` pattern of every :meth:`app_state` key (of ``namespace`` alone, given).

        The literal parts are glob-escaped, so a prefix or namespace holding
        ``*?[]\\`` matches itself only.
        """
        base = glob_escape(self._key("app", ""))
        return base + (f"{glob_escape(namespace)}/*" if namespace is not None else "*")

    def parse_app_state(self, key: str) -> tuple[str, str] | None:
        """(namespace, name) of an :meth:`app_state` key; None for any other key."""
        prefix = self._key("app", "")
        if not key.startswith(prefix):
            return None
        namespace, _, name = key[len(prefix):].partition("/")
        return (namespace, name) if name else None

    def dedupe(self, scope_key: str) -> str:
        """Deployment id already produced for a component+revision (TTL = dedupe window)."""
        return self._key("dedupe", scope_key)

    # --- Streams (owner: pipeline / outbox) ----------------------------------
    @property
    def deployments_stream(self) -> str:
        return self._key("stream", "deployments")

    @property
    def outbox_stream(self) -> str:
        return self._key("stream", "outbox")

    @property
    def dead_stream(self) -> str:
        return self._key("stream", "dead")

    def delivery_order(self, order_key: str) -> str:
        """Hash of sequence numbers that keeps per-issue order (owner: outbox)."""
        return self._key("order", order_key)

    def delivery_lock(self, order_key: str) -> str:
        return self._key("lock", "order", order_key)

    def delivery_queue(self, order_key: str) -> str:
        """Sorted set: outbox ids still outstanding for ``order_key``, scored by sequence."""
        return self._key("order-queue", order_key)

    # --- GitHub caches (owner: commits) ---------------------------------------
    def github_repo_of_sha(self, sha: str) -> str:
        return self._key("gh", "repo", sha.lower())

    def github_commit(self, repo: str, sha: str) -> str:
        return self._key("gh", "commit", _short_hash(repo), sha.lower())

    def github_etag(self, url: str) -> str:
        return self._key("gh", "etag", _short_hash(url))

    def image_labels(self, image: str, digest: str) -> str:
        """The labels of an image by its digest (immutable: a registry is asked once)."""
        return self._key("oci", "labels", _short_hash(image), digest.lower())

    def resolved_commits(self, deployment_id: str) -> str:
        return self._key("gh", "resolved", _short_hash(deployment_id))

    # --- WebRCA (owner: webrca) -------------------------------------------------
    @property
    def incident_fingerprints(self) -> str:
        """Hash: incident_id -> fingerprint of what DevLake was last given.

        Shared by every incident source (WebRCA and Alertmanager, through
        ``incident_staging``; their incident ids cannot collide). Named
        ``webrca:fingerprints`` from when WebRCA was the only one: renaming it
        would lose the stored fingerprints on upgrade (every open incident
        sent again), so the name stays.
        """
        return self._key("webrca", "fingerprints")

    @property
    def webrca_lease(self) -> str:
        return self._key("webrca", "lease")

    @property
    def webrca_last_poll(self) -> str:
        return self._key("webrca", "last-poll")

    # --- Alertmanager (owner: alertmanager) ----------------------------------------
    def alertmanager_subject(self, subject: str) -> str:
        """JSON: the latest episode of an alert (``fp:<fingerprint>``) or alert group
        (``group:<digest>``), with a TTL of ``alertmanager.state_ttl``."""
        return self._key("alertmanager", "subject", subject)

    def alertmanager_subject_pattern(self) -> str:
        """SCAN ``MATCH`` pattern of every :meth:`alertmanager_subject` key (glob-escaped)."""
        return glob_escape(self._key("alertmanager", "subject", "")) + "*"

    @property
    def backfilled(self) -> str:
        """Set of deployment ids ``doraforwarder backfill`` staged (owner: backfill)."""
        return self._key("backfill", "staged")

    # --- The reference's keys (read, never written: argocd/reference_marks.py) -------
    def reference_revision_sent(self, revision: str, component: str) -> str:
        """``devlake-revision:<revision>:<component>``: the reference sent that deployment."""
        return self._key("devlake-revision", revision, component)

    # --- Replicas -----------------------------------------------------------------
    def lock(self, name: str) -> str:
        return self._key("lock", name)

    @property
    def redis_marker(self) -> str:
        """Hash written once and never deleted: its absence means Redis lost its data
        (owner: storage.RedisWatch)."""
        return self._key("marker")


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern (SCAN ``MATCH``)."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _short_hash(text: str) -> str:
    """Stable short digest, so URLs and ids never bloat key names."""
    return hashlib.sha256(text.encode()).hexdigest()[:24]
