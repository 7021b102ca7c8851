"""``doraforwarder run``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from doraforwarder.commands.common import add_command, load_and_configure
from doraforwarder.daemon import Daemon


def add_parser(subparsers: Any) -> None:
    parser = add_command(subparsers, "run", handle, help="run the daemon",
                         description="Watch, resolve, deliver until stopped.")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print each DevLake payload as a JSON line on stdout instead of sending it",
    )


def handle(args: argparse.Namespace) -> int:
    config = load_and_configure(args)
    return asyncio.run(Daemon(config, dry_run=args.dry_run).run())
