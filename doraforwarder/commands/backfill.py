"""``doraforwarder backfill``: replay ArgoCD's kept history as deployments, idempotently."""

from __future__ import annotations

import argparse
import asyncio
import sys

from redis.exceptions import RedisError

from doraforwarder.argocd.kube import KubeAccessError
from doraforwarder.commands.common import load_and_configure
from doraforwarder.config import ConfigError, LoadedConfig
from doraforwarder.context import AppContext
from doraforwarder.keys import Keys
from doraforwarder.ops.backfill import Backfill, Selection, list_applications, render, summary
from doraforwarder.ops.checks import error_text
from doraforwarder.redis_errors import redis_failure
from doraforwarder.storage import connect


def handle(args: argparse.Namespace) -> int:
    config = load_and_configure(args)
    if not config.settings.argocd.enabled:
        raise ConfigError(f"argocd.enabled is false in {config.source}: nothing to backfill")
    return asyncio.run(_backfill(config, args))


async def _backfill(config: LoadedConfig, args: argparse.Namespace) -> int:
    settings = config.settings
    context = AppContext(config=config, redis=connect(settings.storage.redis),
                         keys=Keys(settings.storage.redis.keyspace), dry_run=args.dry_run)
    selection = Selection(since=args.since, namespace=args.namespace, component=args.component)
    backfill = Backfill(context, selection)
    stop = asyncio.Event()
    try:
        try:
            objects = await asyncio.to_thread(
                lambda: list(list_applications(settings.argocd, args.namespace)))
        except KubeAccessError:
            raise
        except Exception as exc:  # unreachable API server, refused token, TLS
            print(f"doraforwarder backfill: cannot list Applications: {error_text(exc)}",
                  file=sys.stderr)
            return 1
        try:
            kept, duplicates = await backfill.plan(objects)
        except RedisError as exc:
            print(f"doraforwarder backfill: {redis_failure(exc, settings.storage.redis)}",
                  file=sys.stderr)
            return 1
        print(f"backfill: {len(objects)} applications, {len(kept)} deployments selected, "
              f"{len(duplicates)} duplicates", file=sys.stderr, flush=True)
        if args.dry_run:
            outcomes = await backfill.print_payloads(kept, stop)
            print(summary(config, outcomes, duplicates, backfill.by_reference), file=sys.stderr)
            return 0
        outcomes = await backfill.stage(kept)
        staged = sum(1 for o in outcomes if o.action == "staged")
        apps = len({o.deployment.app for o in outcomes})
        print(f"backfill: {apps}/{len(objects)} applications done, {staged} records staged",
              file=sys.stderr, flush=True)
        print(render(outcomes, duplicates, backfill.by_reference))
        drained = True
        if any(o.action == "staged" for o in outcomes):
            drained = await backfill.drain(stop, args.wait)
        print(summary(config, outcomes, duplicates, backfill.by_reference))
        if not drained:
            print("delivery not finished: the rest stays queued in Redis for the daemon")
        return 0
    finally:
        await context.redis.aclose()
