"""Applications deleted while no process watched them, found after a first complete list.

A process knows only the Applications it has seen since it started, so the
re-list rule of :meth:`~doraforwarder.argocd.intake.Intake.listed_done`
(absent from a complete list: deleted) cannot see an app deleted while the
daemon was stopped: no process has it in memory, only its state in Redis
remembers it. Without this scan that state would never get ``deleted_at``
(so never expire after ``argocd.state_ttl``) and an incident it had open
would stay open in DevLake for ever.

After the *first complete* list of a scope (a list cut short decides
nothing: the source calls this only from the list's completion), the stored
states of the scope are enumerated with ``SCAN ... MATCH`` (batched, never
``KEYS``; in cluster mode every key shares one hash tag, so the one primary
the client talks to holds them all), and an app is *gone* when:

- its namespace is inside the scope (a namespace this process does not
  watch may be another daemon's, sharing the ``key_prefix``: it is never
  touched);
- it was not in that list, and the intake has not seen it since (an app
  created after the list, whose first state the watch already wrote, is
  alive);
- its state is still live: not expired meanwhile, readable, not already
  marked deleted (by an earlier run or by another replica).

Each gone app then takes the ordinary deletion path (the source queues a
:class:`~doraforwarder.argocd.intake.Deleted` on its lane: the uid rule,
the incident resolution, one transaction), which is idempotent across
replicas starting together: the second to commit reads ``deleted_at`` and
writes nothing.

The limit: a state records its namespace, name and uid, not which
Kubernetes cluster (kubeconfig, context) it came from. Two daemons sharing
one ``key_prefix`` and watching the same namespace in different clusters
would take each other's apps for gone; they already share those apps'
state keys on the live path, so such a set-up is unsupported anyway (give
each its own ``storage.redis.key_prefix``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection

import redis.asyncio as aioredis

from doraforwarder.argocd.state import CorruptState, load_state
from doraforwarder.argocd.watcher import WatchScope
from doraforwarder.keys import Keys

AppName = tuple[str, str]
"""(namespace, name)."""

SCAN_BATCH = 500


def stored_alive(raw: str | bytes | None) -> bool:
    """Whether a stored state still describes an app believed to exist.

    False when it expired between the SCAN and the read (None), when it no
    longer parses (the deletion path could not read it either: it is left
    to the operator, as the live path leaves it), or when it is already
    marked deleted.
    """
    try:
        state = load_state(raw)
    except CorruptState:
        return False
    return state is not None and state.deleted_at is None


async def find_gone(
    redis: aioredis.Redis,
    keys: Keys,
    scope: WatchScope,
    present: Collection[AppName],
    seen: Callable[[str, str], bool],
    *,
    batch: int = SCAN_BATCH,
) -> AsyncIterator[list[AppName]]:
    """The apps of ``scope`` stored in Redis but gone, one list per SCAN batch.

    ``present`` is what the complete list held, ``seen`` tells whether the
    intake has met an app since. Only the candidates (stored, in scope, not
    present, not seen) are read back, so a start where nothing was deleted
    costs the SCAN alone. SCAN may return a key twice: callers dedupe.
    """
    pattern = keys.app_state_pattern(scope.namespace)
    cursor = 0
    while True:
        cursor, found = await redis.scan(cursor, match=pattern, count=batch)
        candidates: list[AppName] = []
        for key in found:
            app = keys.parse_app_state(key.decode() if isinstance(key, bytes) else str(key))
            if (
                app is not None
                and scope.contains(app[0])
                and app not in present
                and not seen(*app)
            ):
                candidates.append(app)
        if candidates:
            raws = await redis.mget([keys.app_state(*app) for app in candidates])
            gone = [app for app, raw in zip(candidates, raws, strict=True) if stored_alive(raw)]
            if gone:
                yield gone
        if int(cursor) == 0:
            return
