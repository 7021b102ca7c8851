"""``doraforwarder run``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from doraforwarder.commands.common import (
    add_config_argument,
    add_logging_arguments,
    load_and_configure,
)
from doraforwarder.daemon import Daemon


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run", help="run the daemon", description="Watch, resolve, deliver until stopped."
    )
    add_config_argument(parser)
    add_logging_arguments(parser)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print each DevLake payload as a JSON line on stdout instead of sending it",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    config = load_and_configure(args)
    return asyncio.run(Daemon(config, dry_run=args.dry_run).run())
