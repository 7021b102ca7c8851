"""Durable delivery: the outbox stream, its entries, and how producers stage them.

Producers (deployment resolution, the WebRCA poller) never send anything
themselves: they stage outbox entries into the same Redis transaction
(``MULTI``/``EXEC`` pipeline) as the state change that produced them, so a
crash can neither lose a record nor produce it twice.

The package is split by role: :mod:`~doraforwarder.outbox.entries` (what an
entry is), :mod:`~doraforwarder.outbox.staging` (producers),
:mod:`~doraforwarder.outbox.ordering` (the per-issue order gate and its Lua),
:mod:`~doraforwarder.outbox.consuming` (acknowledging and dead-lettering) and
:mod:`~doraforwarder.outbox.admin` (``doraforwarder outbox``). Everything is
re-exported here.

The contract producers rely on
------------------------------

``stage_entries(pipe, keys, entries)`` queues commands on ``pipe``, which must
be a transaction pipeline the caller executes (``redis.pipeline(transaction=True)``,
optionally after ``WATCH``). Nothing is written before ``EXEC``; everything is
written at ``EXEC``. Per entry:

- ``order_key is None`` (deployments): one ``XADD`` to ``keys.outbox_stream``.
  Entries are independent; two entries for the same (target, record id) are
  harmless, DevLake upserts.
- ``order_key`` set (issues: ``f"issue:{target.key}:{issue_key}"``): one
  script call (``EVALSHA``) that gives the entry the next sequence number of its order key
  (``HINCRBY keys.delivery_order(order_key) staged``), adds it to the stream
  with that number, and indexes its stream id in the sorted set
  ``keys.delivery_queue(order_key)``. Entries of one order key are delivered
  strictly in staging order: an entry is sent only once every entry staged
  before it under the same key was delivered, dead-lettered or dropped. A
  ``kind="close"`` entry staged after the ``kind="issue"`` upsert with the same
  order key is therefore sent only after DevLake accepted the upsert.
- An entry whose sequence number is not above the last *delivered* one of its
  order key (``delivered`` in the same hash) is obsolete and dropped without
  sending: a requeued old state never overwrites a newer one.

Stream fields: ``entry`` (the :class:`OutboxEntry` JSON) and, for ordered
entries, ``seq``. Dead letters (``keys.dead_stream``) keep both plus
``outbox_id``, ``reason``, ``status``, ``body`` (truncated) and ``failed_at``,
so ``doraforwarder outbox requeue`` can put them back exactly as they were.
"""

from doraforwarder.devlake.routing import RecordKind, Target, TargetKind
from doraforwarder.outbox.admin import (
    OutboxStats,
    RepairError,
    drop,
    outbox_stats,
    read_stream,
    requeue,
    requeue_all,
)
from doraforwarder.outbox.consuming import ack_delivered, ack_delivered_many, dead_letter
from doraforwarder.outbox.entries import (
    BODY_LIMIT,
    OutboxEntry,
    StreamItem,
    dead_fields,
    redis_seconds,
)
from doraforwarder.outbox.ordering import Gate, OrderGate, order_gate
from doraforwarder.outbox.staging import stage_dead, stage_entries
from doraforwarder.streams import consumer_name, ensure_group, raw_entries, read_group_entries

__all__ = [
    "BODY_LIMIT", "Gate", "OrderGate", "OutboxEntry", "OutboxStats", "RecordKind", "RepairError",
    "StreamItem", "Target", "TargetKind", "ack_delivered", "ack_delivered_many",
    "consumer_name", "dead_fields", "dead_letter", "drop", "ensure_group", "order_gate",
    "outbox_stats", "raw_entries", "read_group_entries", "read_stream", "redis_seconds",
    "requeue",
    "requeue_all", "stage_dead", "stage_entries",
]
