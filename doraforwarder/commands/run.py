"""``doraforwarder run``: the daemon."""

from __future__ import annotations

import argparse
import asyncio

from doraforwarder.commands.common import load_and_configure
from doraforwarder.config import ConfigError, LoadedConfig, missing_devlake_keys
from doraforwarder.daemon import Daemon
from doraforwarder.logging import get_logger

log = get_logger("run")


def check_forwarding(config: LoadedConfig, dry_run: bool) -> None:
    """Say at start what the configuration forwards: a warning when nothing goes to DevLake,
    :class:`ConfigError` (exit 2) naming each variable that holds no key for a target."""
    if dry_run:
        return
    if not config.settings.integration.devlake.enabled:
        log.warning("integration.devlake.enabled is false: nothing will be forwarded to "
                    "DevLake; set it to true, with base_url and a target, to send "
                    "deployments and incidents", config=config.source)
        return
    missing = missing_devlake_keys(config)
    if missing:
        needs = "; ".join(f"{name} (or {name}_FILE) for {', '.join(targets)}"
                          for name, targets in missing.items())
        raise ConfigError(f"integration.devlake is enabled but no DevLake API key is set: "
                          f"{needs}; set it from a Secret, or run with --dry-run")


def handle(args: argparse.Namespace) -> int:
    config = load_and_configure(args)
    check_forwarding(config, args.dry_run)
    return asyncio.run(Daemon(config, dry_run=args.dry_run).run())
